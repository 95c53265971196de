"""The daemon's drain on stop, without a kernel: sessions are entries of its session table,
the steering is a fake that records what the kernel would have been told."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Iterable
from types import SimpleNamespace

import pytest

from gateway.config.model import FailMode, GatewayConfig
from gateway.control.permissions import Role
from gateway.control.protocol import ControlFailure
from gateway.daemon import Daemon
from gateway.notify import Notifier
from gateway.policy.fallback import Cause
from netfilter.fallback import FlowTuple


class FakeSteering:
    def __init__(self) -> None:
        self.engaged: list[list[FlowTuple]] = []

    def engage(self, proxied: Iterable[FlowTuple]) -> None:
        self.engaged.append(list(proxied))

    def release(self) -> None:  # pragma: no cover - a drain never releases
        raise AssertionError("a drain must not release the fallback")

    def change_proxied(self, add: Iterable[FlowTuple], remove: Iterable[FlowTuple]) -> None:
        pass


def daemon(drain_timeout: float, fail_mode: FailMode = FailMode.OPEN, steering: bool = True) -> Daemon:
    config = GatewayConfig()
    config = dataclasses.replace(config, gateway=dataclasses.replace(
        config.gateway, drain_timeout=drain_timeout, fail_mode=fail_mode))
    d = Daemon("tlsgw.yaml", apply_rules=False, notifier=Notifier(None))
    d.runtime = SimpleNamespace(config=config)  # type: ignore[assignment]
    if steering:
        d.steering = FakeSteering()  # type: ignore[assignment]
    return d


def test_drain_waits_for_the_last_session_with_new_flows_bypassed() -> None:
    d = daemon(60.0)
    session = d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))

    async def scenario() -> int:
        d._on_stop_signal(signal.SIGTERM)
        drain = asyncio.create_task(d._drain())
        for _ in range(200):  # bounded: until the drain has begun
            if d.drain is not None and d.steering.engaged:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        assert d.drain is not None and d.drain.plan.bypass_new_flows
        assert d.fallback.holds(Cause.DRAIN)
        assert not drain.done()  # the session is still in flight
        d.sessions.close(session)
        return await asyncio.wait_for(drain, 10)

    assert asyncio.run(scenario()) == 0
    assert d.drain is None  # over: `tlsgw status` no longer says draining
    assert len(d.steering.engaged) == 1  # type: ignore[union-attr]


def test_second_signal_ends_the_drain_with_the_sessions_left() -> None:
    d = daemon(60.0)
    d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))

    async def scenario() -> int:
        d._on_stop_signal(signal.SIGTERM)
        drain = asyncio.create_task(d._drain())
        for _ in range(200):
            if d.drain is not None:
                break
            await asyncio.sleep(0.01)
        d._on_stop_signal(signal.SIGINT)
        return await asyncio.wait_for(drain, 10)

    assert asyncio.run(scenario()) == 1


def test_drain_ends_at_its_timeout() -> None:
    d = daemon(0.3)
    d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    assert asyncio.run(asyncio.wait_for(d._drain(), 10)) == 1


def test_zero_timeout_cuts_at_once_without_touching_the_kernel() -> None:
    d = daemon(0.0)
    d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    assert asyncio.run(d._drain()) == 1
    assert d.steering.engaged == []  # type: ignore[union-attr]
    assert not d.fallback.engaged


def test_nothing_in_flight_stops_at_once() -> None:
    d = daemon(60.0)
    assert asyncio.run(asyncio.wait_for(d._drain(), 10)) == 0
    assert d.steering.engaged == []  # type: ignore[union-attr]


def test_fail_closed_drains_without_letting_new_flows_pass() -> None:
    d = daemon(0.3, fail_mode=FailMode.CLOSED)
    d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    assert asyncio.run(asyncio.wait_for(d._drain(), 10)) == 1
    assert d.steering.engaged == []  # type: ignore[union-attr]
    assert not d.fallback.engaged


def test_no_reload_while_stopping() -> None:
    """The rules and listeners are on their way out: a reload would switch them back in."""
    d = daemon(60.0)
    d._on_stop_signal(signal.SIGTERM)
    with pytest.raises(ControlFailure) as caught:
        asyncio.run(d.reload(Role.ADMIN))
    assert "stopping" in caught.value.message


def test_drain_lingers_while_a_closed_socket_still_delivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last session has ended, but its socket is an orphan still sending the end of a
    response: its tuple stays kept (netfilter.connections), and the rules wait for it."""
    d = daemon(60.0)
    session = d.sessions.open("lan-wan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    leg = FlowTuple("192.0.2.10", 40000, "192.0.2.20", 443)
    delivering = [True]

    def kernel(worker_pids: Iterable[int] = (), kept: frozenset[FlowTuple] = frozenset()) -> list[FlowTuple]:
        return [leg] if delivering[0] and (leg in kept or not kept) else []

    monkeypatch.setattr("gateway.daemon.own_flow_tuples", kernel)

    async def scenario() -> int:
        d._on_stop_signal(signal.SIGTERM)
        drain = asyncio.create_task(d._drain())
        for _ in range(200):
            if d.drain is not None and d.steering.engaged:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        d.sessions.close(session)
        await asyncio.sleep(0.6)  # several polls with no session left
        assert not drain.done() and d._kept == {leg}
        delivering[0] = False  # acknowledged: the orphan is gone
        return await asyncio.wait_for(drain, 10)

    assert asyncio.run(scenario()) == 0
    assert d._kept == set()
