"""The kernel settings bridge steering depends on, set with their old values remembered.

DESIGN.md section 3: `net.bridge.bridge-nf-call-iptables` must be 0 (with 1, br_netfilter
runs the IP hooks again in bridge context and the TPROXYed SYN is answered with a RST),
and reverse-path filtering must be off on `all`, the bridge and its ports (the kernel
uses the maximum of `all` and the interface's value, so both must be 0; diverted return
traffic would otherwise be dropped as spoofed).

Keys are paths below /proc/sys with '/' separators (`net/ipv4/conf/br0.10/rp_filter`):
the dotted `sysctl` notation is ambiguous for interface names that contain dots.

/proc/sys/net shows the network namespace of the *thread* that opens it, so for a named
namespace the reads and writes run on a short-lived thread that first joins it with
setns(2); the rest of the process stays where it was. This works from the host and from
inside `ip netns exec`.

Error handling: every failure is a NetfilterError naming the key, with errno. Setting
is all or nothing: after a failure, the keys already changed are put back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from netfilter.errors import NetfilterError
from netfilter.model import Ruleset

T = TypeVar("T")

PROC_SYS = "/proc/sys"
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` keeps its namespace handles
CLONE_NEWNET = 0x40000000
BRIDGE_NF_CALL_IPTABLES = "net/bridge/bridge-nf-call-iptables"


def rp_filter_key(ifname: str) -> str:
    return f"net/ipv4/conf/{ifname}/rp_filter"


@dataclass(frozen=True, slots=True)
class SysctlChange:
    key: str
    previous: str
    value: str


@dataclass(frozen=True, slots=True)
class SysctlState:
    """What `set_sysctls` changed, so `restore` can put it back."""

    netns: str | None
    changes: tuple[SysctlChange, ...]

    def previous(self, key: str) -> str | None:
        return next((c.previous for c in self.changes if c.key == key), None)


def steering_sysctls(ruleset: Ruleset) -> tuple[tuple[str, str], ...]:
    """The (key, value) pairs the ruleset relies on; pure."""
    interfaces = dict.fromkeys(["all", *((ruleset.bridge,) if ruleset.bridge else ()), *ruleset.rp_filter_off])
    return ((BRIDGE_NF_CALL_IPTABLES, "0"), *((rp_filter_key(i), "0") for i in interfaces))


def prepare_steering(ruleset: Ruleset, netns: str | None = None) -> SysctlState:
    """Set what `steering_sysctls` lists; bridge-nf-call-iptables only when br_netfilter is loaded."""
    return set_sysctls(steering_sysctls(ruleset), netns, optional=frozenset({BRIDGE_NF_CALL_IPTABLES}))


def read_sysctl(key: str, netns: str | None = None) -> str:
    return _in_netns(netns, lambda: _read(key))


def write_sysctl(key: str, value: str, netns: str | None = None) -> None:
    _in_netns(netns, lambda: _write(key, value))


def set_sysctls(
    settings: Iterable[tuple[str, str]], netns: str | None = None, *, optional: frozenset[str] = frozenset()
) -> SysctlState:
    """Set each key, remembering its previous value; keys in `optional` are skipped when absent.

    Raises:
        NetfilterError: a key is missing (errno ENOENT) or refused; nothing stays changed.
    """
    wanted = tuple(settings)

    def work() -> SysctlState:
        done: list[SysctlChange] = []
        try:
            for key, value in wanted:
                if key in optional and not os.path.exists(_path(key)):
                    continue
                previous = _read(key)
                _write(key, value)
                done.append(SysctlChange(key, previous, value))
        except NetfilterError:
            for change in reversed(done):
                try:
                    _write(change.key, change.previous)
                except NetfilterError:
                    pass  # the original failure is the one to report
            raise
        return SysctlState(netns, tuple(done))

    return _in_netns(netns, work)


def restore(state: SysctlState) -> None:
    """Put back every previous value; keys whose interface has gone since are skipped.

    Raises:
        NetfilterError: for the first key that could not be restored (the others are
            still attempted).
    """

    def work() -> None:
        first: NetfilterError | None = None
        for change in reversed(state.changes):
            try:
                _write(change.key, change.previous)
            except NetfilterError as exc:
                if exc.errno != errno.ENOENT and first is None:
                    first = exc
        if first is not None:
            raise first

    _in_netns(state.netns, work)


def _path(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise NetfilterError(f"sysctl {key}", "not a key below /proc/sys", errno=errno.EINVAL)
    return os.path.join(PROC_SYS, *parts)


def _read(key: str) -> str:
    try:
        with open(_path(key), encoding="ascii") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise NetfilterError(f"sysctl {key}", exc.strerror or str(exc), errno=exc.errno) from exc


def _write(key: str, value: str) -> None:
    try:
        with open(_path(key), "w", encoding="ascii") as handle:
            handle.write(value)
    except OSError as exc:
        raise NetfilterError(f"sysctl -w {key}={value}", exc.strerror or str(exc), errno=exc.errno) from exc


def _in_netns(netns: str | None, work: Callable[[], T]) -> T:
    """Run `work` on a thread that has joined `netns`; the thread dies with its namespace."""
    if netns is None:
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            _join_netns(netns)
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"tlsgw-netns-{netns}")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _join_netns(netns: str) -> None:
    if "/" in netns or netns in (".", ".."):
        raise NetfilterError(f"ip netns exec {netns}", "not a namespace name", errno=errno.EINVAL)
    try:
        fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetfilterError(f"ip netns exec {netns}", exc.strerror or str(exc), errno=exc.errno) from exc
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise NetfilterError(f"ip netns exec {netns}", os.strerror(code), errno=code)
    finally:
        os.close(fd)
