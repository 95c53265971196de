"""Policy routing for TPROXY (DESIGN.md section 3 step 4), through pyroute2.

A TPROXYed packet keeps its foreign destination address; the firewall mark set with it
selects a routing table whose only route is `local 0.0.0.0/0 dev lo`, so the kernel
delivers the packet locally (to the transparent socket) instead of forwarding it:

    ip rule add fwmark <mark> lookup <table>
    ip route add local 0.0.0.0/0 dev lo table <table>

`ensure_*` and `remove_*` are idempotent and touch exactly these two objects: a rule is
ours when its mark (with a full mask), table and action match; the route when it is the
local default route through lo in that table.

pyroute2 0.9 runs its own asyncio loop under a synchronous API and refuses to start
inside a running loop; when called from one (the daemon), the work runs on a short-lived
thread and the caller blocks until it is done - these are one-off setup calls.

Error handling: a kernel refusal becomes NetfilterError with the equivalent `ip` command
and the kernel's errno; a missing namespace is errno ENOENT.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from netfilter.errors import NetfilterError

T = TypeVar("T")

FULL_MASK = 0xFFFFFFFF
RTN_LOCAL = 2  # route type "local" (linux/rtnetlink.h)
FR_ACT_TO_TBL = 1  # rule action "lookup <table>" (linux/fib_rules.h)
RT_SCOPE_HOST = 254


@dataclass(frozen=True, slots=True)
class PolicyRoutingState:
    """Which of the two objects exist; both True once `ensure_policy_routing` has run."""

    rule: bool
    route: bool


def ensure_policy_routing(mark: int, table: int, netns: str | None = None) -> None:
    """Add the fwmark rule and the local default route unless they are already there.

    Raises:
        NetfilterError: the kernel refused (errno kept), or `netns` does not exist.
    """
    _outside_event_loop(lambda: _ensure(mark, table, netns))


def remove_policy_routing(mark: int, table: int, netns: str | None = None) -> None:
    """Delete every copy of the fwmark rule and the local default route; absent is fine."""
    _outside_event_loop(lambda: _remove(mark, table, netns))


def read_policy_routing(mark: int, table: int, netns: str | None = None) -> PolicyRoutingState:
    def read() -> PolicyRoutingState:
        with _ipr(netns) as ipr:
            return PolicyRoutingState(bool(_our_rules(ipr, mark, table)), bool(_our_routes(ipr, table)))

    return _outside_event_loop(read)


def link_address(ifname: str, netns: str | None = None) -> str:
    """The MAC address of `ifname` (the bridge's own MAC, which the bridge divert needs)."""

    def read() -> str:
        with _ipr(netns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise NetfilterError(f"ip link show {ifname}", "no such interface", errno=errno.ENODEV)
            (link,) = ipr.get_links(found[0])
            return str(link.get("IFLA_ADDRESS")).lower()

    return _outside_event_loop(read)


def _ensure(mark: int, table: int, netns: str | None) -> None:
    with _ipr(netns) as ipr:
        if not _our_rules(ipr, mark, table):
            with _kernel_call(f"ip rule add fwmark {mark:#x} lookup {table}", tolerate_exists=True):
                ipr.rule("add", family=socket.AF_INET, fwmark=mark, fwmask=FULL_MASK, table=table)
        if not _our_routes(ipr, table):
            with _kernel_call(f"ip route add local 0.0.0.0/0 dev lo table {table}", tolerate_exists=True):
                ipr.route(
                    "add",
                    family=socket.AF_INET,
                    dst="0.0.0.0/0",
                    type="local",
                    scope="host",
                    oif=_loopback(ipr),
                    table=table,
                )


def _remove(mark: int, table: int, netns: str | None) -> None:
    with _ipr(netns) as ipr:
        for rule in _our_rules(ipr, mark, table):
            with _kernel_call(f"ip rule del fwmark {mark:#x} lookup {table}", tolerate_missing=True):
                ipr.rule(
                    "del",
                    family=socket.AF_INET,
                    fwmark=mark,
                    fwmask=FULL_MASK,
                    table=table,
                    priority=rule.get("FRA_PRIORITY"),
                )
        if _our_routes(ipr, table):
            with _kernel_call(f"ip route del local 0.0.0.0/0 dev lo table {table}", tolerate_missing=True):
                ipr.route(
                    "del",
                    family=socket.AF_INET,
                    dst="0.0.0.0/0",
                    type="local",
                    scope="host",
                    oif=_loopback(ipr),
                    table=table,
                )


def _our_rules(ipr: IPRoute, mark: int, table: int) -> list[Any]:
    found = []
    for rule in ipr.get_rules(family=socket.AF_INET):
        if (
            rule.get("FRA_FWMARK") == mark
            and rule.get("FRA_FWMASK", FULL_MASK) == FULL_MASK
            and (rule.get("FRA_TABLE") or rule["table"]) == table
            and rule["action"] == FR_ACT_TO_TBL
        ):
            found.append(rule)
    return found


def _our_routes(ipr: IPRoute, table: int) -> list[Any]:
    lo = _loopback(ipr)
    return [
        route
        for route in ipr.get_routes(family=socket.AF_INET, table=table)
        if route["type"] == RTN_LOCAL
        and route["dst_len"] == 0
        and route.get("RTA_OIF") == lo
        and (route.get("RTA_TABLE") or route["table"]) == table
    ]


def _loopback(ipr: IPRoute) -> int:
    found = ipr.link_lookup(ifname="lo")
    if not found:
        raise NetfilterError("ip link show lo", "no loopback device", errno=errno.ENODEV)
    return int(found[0])


@contextmanager
def _ipr(netns: str | None) -> Iterator[IPRoute]:
    try:
        # flags=0: never create the namespace as a side effect (pyroute2's default does).
        ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
    except OSError as exc:
        raise NetfilterError(f"ip netns exec {netns}", exc.strerror or str(exc), errno=exc.errno) from exc
    try:
        yield ipr
    finally:
        ipr.close()


@contextmanager
def _kernel_call(command: str, *, tolerate_exists: bool = False, tolerate_missing: bool = False) -> Iterator[None]:
    """Translate a netlink refusal; a lost race with an identical add/delete is success."""
    try:
        yield
    except NetlinkError as exc:
        if (tolerate_exists and exc.code == errno.EEXIST) or (
            tolerate_missing and exc.code in (errno.ENOENT, errno.ESRCH)
        ):
            return
        raise NetfilterError(command, str(exc.args[1]) if len(exc.args) > 1 else str(exc), errno=exc.code) from exc


def _outside_event_loop(work: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="tlsgw-routing")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
