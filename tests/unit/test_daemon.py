"""Pieces of the daemon that need no kernel (issue 6): when a reload must switch the
rules, and the session tracking around each handler."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.config.model import FailMode, GatewayConfig, PortRange
from gateway.daemon import TrackedHandler, steering_inputs
from gateway.observability.counters import Counters
from gateway.observability.sessions import SessionTable
from tests.support.steering_samples import full, one_segment


def _gateway(cfg: GatewayConfig, **changes: object) -> GatewayConfig:
    return dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, **changes))


def test_rules_switch_when_steering_inputs_change() -> None:
    cfg = full()
    assert steering_inputs(cfg) == steering_inputs(full())
    assert steering_inputs(cfg) != steering_inputs(_gateway(cfg, listen_port=9443))
    assert steering_inputs(cfg) != steering_inputs(_gateway(cfg, fail_mode=FailMode.CLOSED))
    proxy = cfg.server_proxies[0]
    moved = dataclasses.replace(cfg, server_proxies=(
        dataclasses.replace(proxy, detection_ports=(PortRange(9443, 9443),)), *cfg.server_proxies[1:]))
    assert steering_inputs(cfg) != steering_inputs(moved)


def test_policy_only_changes_keep_the_rules() -> None:
    cfg = one_segment()
    renamed = dataclasses.replace(cfg, decryption_policies=())
    assert steering_inputs(cfg) == steering_inputs(renamed)


class FakeConn:
    def __init__(self, peer: tuple[str, int] | None) -> None:
        self.peer = peer
        self.closed = False

    def getpeername(self) -> tuple[str, int]:
        if self.peer is None:
            raise OSError(107, "Transport endpoint is not connected")
        return self.peer

    def getsockname(self) -> tuple[str, int]:
        return ("192.0.2.20", 443)

    def close(self) -> None:
        self.closed = True


class FakeHandler:
    def __init__(self, sessions: SessionTable) -> None:
        self.counters = Counters()
        self.segment = one_segment().gateway.segments[0]
        self.sessions = sessions
        self.seen: list[int] = []
        self.gate = asyncio.Event()

    async def handle(self, conn: FakeConn) -> None:
        self.seen.append(len(self.sessions))
        await self.gate.wait()
        raise RuntimeError("a handler bug")  # the session must still be closed


def test_session_lives_exactly_as_long_as_its_handler() -> None:
    sessions = SessionTable()
    handler = FakeHandler(sessions)
    tracked = TrackedHandler(handler, sessions)  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.ensure_future(tracked.handle(FakeConn(("192.0.2.10", 40000))))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert tracked.active == 1 and tracked.sessions.listing()[0]["client"] == "192.0.2.10:40000"
        handler.gate.set()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert handler.seen == [1]
    assert tracked.active == 0 and len(tracked.sessions) == 0


def test_connection_reset_in_the_accept_queue_is_closed_and_counted() -> None:
    handler = FakeHandler(SessionTable())
    conn = FakeConn(None)
    asyncio.run(TrackedHandler(handler, SessionTable()).handle(conn))  # type: ignore[arg-type]
    assert conn.closed and handler.seen == [] and handler.counters.get("refused.peer_gone") == 1
