"""The steering rules of a running gateway: applied with the dead-man switch armed,
switched on reload, fallback engaged and released, and the switch kept alive.

`KernelSteering` applies and removes a ruleset as one unit; `LiveSteering` adds what a
running daemon needs on top (see `fallback.py` for the sets and why):

- the ruleset is always rendered with the current `SteeringState`, so replacing it on a
  reload keeps a fallback engaged and the sessions it keeps;
- `switch()` replaces the tables with those of a new configuration in one nft
  transaction (host settings it needs are made first, so no packet meets a rule whose
  routing is missing);
- `engage()` / `release()` change the fallback state in one transaction each.

`AliveKeeper` renews the `alive` element from a thread, through one long-lived `nft -i`
process (a line costs about 0.2 ms of CPU there, against 5 ms and 20 ms of wall time for
a fresh `nft` process). A thread rather than the event loop, because a busy loop (a burst
of handshakes) may be late by more than the timeout, and that would fail open and cut
every live session. But the thread renews only while the event loop shows a recent
heartbeat: a loop that hangs for `LOOP_STALL_LIMIT` seconds stops the renewals, and the
bridge forwards untouched again - a hung proxy must not hold the bridge either.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterable

from gateway.config.model import GatewayConfig
from netfilter.errors import NetfilterError
from netfilter.fallback import (
    ALIVE_REFRESH_INTERVAL,
    ALIVE_TIMEOUT,
    FlowTuple,
    SteeringState,
    render_engage,
    render_proxied_change,
    render_refresh,
    render_release,
)
from netfilter.model import Ruleset
from netfilter.nft_backend import NftBackend
from netfilter.plan import steering
from netfilter.routing import link_address
from netfilter.steering import KernelSteering
from netfilter.sysctl import SysctlState, prepare_steering, restore

logger = logging.getLogger(__name__)

# A loop that has not run for this long is hung, not busy: stop renewing `alive` and let
# the bridge fail open. Well below systemd's WatchdogSec (see systemd/tlsgw.service), so
# the bridge is forwarding long before the watchdog restarts the service.
LOOP_STALL_LIMIT = 3.0


class LiveSteering(KernelSteering):
    """KernelSteering for the daemon: rules rendered with `state()`, switchable, with fallback."""

    def __init__(self, config: GatewayConfig, state: Callable[[], SteeringState],
                 bridge_mac: str | None = None, netns: str | None = None) -> None:
        super().__init__(config, bridge_mac=bridge_mac, netns=netns)
        self.state = state
        # The bridge table - and so the fallback sets - is nft's with either backend
        # (netfilter/iptables_backend.py says why).
        self.nft = NftBackend(netns)
        self.shell = NftShell(netns)
        """The long-lived `nft -i` for renewals and per-session changes."""
        self._extra_sysctls: list[SysctlState] = []

    @property
    def table(self) -> str:
        return self.config.gateway.netfilter.table

    @property
    def ruleset(self) -> Ruleset:
        # Never cached: the state changes while the daemon runs.
        return self.plan(self.config)

    def plan(self, config: GatewayConfig) -> Ruleset:
        if self._bridge_mac is None:
            self._bridge_mac = link_address(self.config.gateway.bridge, self.netns)
        return steering(config, self._bridge_mac, self.state())

    def check_switch(self, config: GatewayConfig) -> Ruleset:
        """The ruleset `config` would apply, checked by nft; changes nothing.

        Raises:
            NetfilterError: a setting that needs a restart changed, or nft refuses the rules.
        """
        old, new = self.config.gateway, config.gateway
        changed = [name for name, a, b in (("gateway.bridge", old.bridge, new.bridge),
                                           ("gateway.netfilter", old.netfilter, new.netfilter))
                   if a != b]
        if changed:
            raise NetfilterError("reload", f"{' and '.join(changed)} changed; restart tlsgw to change them")
        ruleset = self.plan(config)
        self.backend.check(ruleset)
        return ruleset

    def switch(self, config: GatewayConfig) -> None:
        """Replace the rules with those of `config` in one transaction (after `check_switch`)."""
        ruleset = self.check_switch(config)
        extra = prepare_steering(ruleset, self.netns)  # rp_filter of ports new to this config
        try:
            self.backend.apply(ruleset)
        except BaseException:
            restore(extra)
            raise
        self._extra_sysctls.append(extra)
        self.config = config
        logger.info("steering rules switched to the new configuration")

    def remove(self) -> None:
        try:
            super().remove()
        finally:
            while self._extra_sysctls:
                restore(self._extra_sysctls.pop())

    def engage(self, proxied: Iterable[FlowTuple]) -> None:
        """Fallback on: `proxied` keep their divert, every other new flow passes untouched."""
        self.nft.load_script(render_engage(self.table, proxied))

    def release(self) -> None:
        self.nft.load_script(render_release(self.table))

    def change_proxied(self, add: Iterable[FlowTuple], remove: Iterable[FlowTuple]) -> None:
        """Sessions that appeared (upstream legs set up during a fallback) or ended; fire
        and forget through `shell` (nft's errors are logged there)."""
        line = render_proxied_change(self.table, add, remove)
        if line:
            self.shell.send(line)


class NftShell:
    """One long-lived `nft -i`: each line written is one transaction. Errors nft prints
    are logged (with the line they answer when it can be told) and counted."""

    def __init__(self, netns: str | None = None, nft: str = "nft") -> None:
        self.argv = (["ip", "netns", "exec", netns] if netns else []) + [nft, "-i"]
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._start_failed = False  # log a failing start once, not on every renewal
        self.errors = 0

    def send(self, line: str) -> bool:
        """Write one line; (re)starts nft when needed. False if nft could not take it."""
        with self._lock:
            for _ in range(2):
                process = self._process if self._process and self._process.poll() is None else self._start()
                if process is None or process.stdin is None:
                    return False
                try:
                    process.stdin.write(line.encode() + b"\n")
                    process.stdin.flush()
                    return True
                except (BrokenPipeError, OSError):
                    self._process = None
            return False

    def _start(self) -> subprocess.Popen[bytes] | None:
        try:
            process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, close_fds=True)
        except OSError as exc:
            if not self._start_failed:
                logger.error("cannot start %s: %s", " ".join(self.argv), exc.strerror)
            self._start_failed = True
            return None
        self._start_failed = False
        threading.Thread(target=self._read_errors, args=(process,), name="nft-errors", daemon=True).start()
        self._process = process
        return process

    def _read_errors(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            text = raw.decode(errors="replace").rstrip()
            if text.startswith("Error:"):
                self.errors += 1
                logger.error("nft: %s", text)

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except OSError:
                    pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class AliveKeeper:
    """Renews the dead-man element every `interval` while the event loop beats."""

    def __init__(self, table: str, shell: NftShell, *, interval: float = ALIVE_REFRESH_INTERVAL,
                 timeout: float = ALIVE_TIMEOUT, stall_limit: float = LOOP_STALL_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.shell = shell
        self.interval = interval
        self.timeout = timeout
        self.stall_limit = stall_limit
        self.clock = clock
        self._last_beat = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.stalled = False

    def beat(self) -> None:
        """Called from the event loop: proof that it still runs."""
        self._last_beat = self.clock()

    def renew_once(self) -> bool:
        """One renewal, unless the loop is stalled; True if one was sent."""
        if self.clock() - self._last_beat > self.stall_limit:
            if not self.stalled:
                logger.error("event loop has not run for %.1fs: no longer renewing %r, the bridge "
                             "fails open", self.stall_limit, "alive")
            self.stalled = True
            return False
        if self.stalled:
            logger.warning("event loop runs again: renewing %r", "alive")
            self.stalled = False
        sent = self.shell.send(render_refresh(self.table, self.timeout))
        if sent:
            self.renewals += 1
        return sent

    def start(self) -> None:
        self.beat()
        self.renew_once()
        self._thread = threading.Thread(target=self._run, name="tlsgw-alive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.renew_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
