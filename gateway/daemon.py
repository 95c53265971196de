"""The gateway's lifecycle: load and validate, start listeners, apply rules, serve, and on
the way out leave the bridge in fallback.

Order matters. Everything that can fail on bad input (YAML, names, certificates, keys)
is done before the kernel is touched, so a bad configuration changes nothing. Listeners
are bound and the control socket answers before the steering rules go in, so that no
steered SYN ever finds no socket; READY goes to systemd only after the rules are in.

Fail-open (see netfilter/fallback.py): the rules carry a dead-man switch that a thread
renews while the event loop beats (`AliveKeeper`). If the process dies the kernel stops
diverting within `ALIVE_TIMEOUT`, with nobody's help. Fallback - `tlsgw bypass on`, or
the gateway itself when accept() runs out of descriptors - makes new flows bypass in the
kernel while the sessions already proxied keep their divert: their tuples are read from
the kernel (`netfilter.connections`) and kept in the `proxied` set, reconciled every
second while fallback lasts.

Reload (SIGHUP or `tlsgw reload`) is all-or-nothing: a new Runtime is built completely
(in a worker thread, so renewals and sessions go on); when the steering inputs changed,
the new rules are checked by nft and the new listeners bound before anything is
switched; then the rules are replaced in one nft transaction and the Runtime swapped.
Flows in flight keep the Runtime they started with, and their listener: a listener
whose segment is gone stops getting new flows and is closed when its last one ends.

With `gateway.workers` above one (issue 8, `gateway/workers/pool.py`) this process opens
no listener: worker processes serve the same ports with SO_REUSEPORT, and this process
keeps everything that exists once (rules, fallback, control socket, metrics, tunnels)
and sums the workers' counts. A reload is validated here first; then every worker
prepares it (bad for one: aborted in all, nothing changed), the rules switch, and every
worker commits.

Keys kept only in memory (issue 4, `pki.persist_keys: false`): `tlsgw cert import` hands
them over the control socket (`import-keys`, admin only), this process keeps them in
`ProcessMaterial.memory_keys` and sends them to every worker with each configuration; the
CLI then asks for a reload, so the certificate comes into service all-or-nothing. They
are never written or logged. A certificate marked so whose key this process lacks (after
a restart) takes its proxy out of service (see `gateway.runtime`); every load says so.

On stop (SIGTERM, SIGINT) the sessions in flight first get a drain period
(`gateway.drain_timeout`, `gateway.policy.drain`): new flows cross the bridge untouched at
once (the fallback above, cause `drain`), the live ones go on until they end, the time is
up or a second signal comes. With worker processes the count is theirs, and they serve on
untouched meanwhile: the drain happens in the kernel's steering, which lives here. Then,
with `fail_mode: open`, the rules go, then what is left of the sessions is cancelled (and
counted in the log); the workers are stopped by PID last. With `fail_mode: closed` the
rules stay; renewals stop and the dead-man switch turns them into drops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__, gc_policy
from gateway.config.load import load_config, parse_config, read_config_text
from gateway.config.model import FailMode, GatewayConfig, Segment
from gateway.control.permissions import Peer, Role, locked_policy_changes
from gateway.control.protocol import Command, ControlFailure, ErrorCode, Request
from gateway.control.server import ControlServer
from gateway.errors import PkiError, TlsgwError
from gateway.notify import Notifier, watchdog_interval
from gateway.observability.counters import Counters
from gateway.observability.flowlog import InspectionLog
from gateway.observability.history import TrafficHistory
from gateway.observability.logquery import LogQuery, QueryError
from gateway.observability.metrics import render_prometheus, stats_view
from gateway.observability.sessions import SessionTable
from gateway.pki.memory_keys import keys_from_wire
from gateway.policy.drain import DRAIN_POLL_INTERVAL, Drain, DrainEnd, DrainPlan
from gateway.policy.fallback import Cause, FallbackState, OverloadDetector
from gateway.policy.limits import ConcurrencyLimit
from gateway.proxy.flow import FlowHandler
from gateway.proxy.listener import serve
from gateway.proxy.sockets import transparent_listener
from gateway.runtime import ProcessMaterial, Runtime, build_runtime
from gateway.tls.ciphers import weakenings as tls_weakenings
from gateway.tunnel.tun import TunnelService
from gateway.workers.pool import WorkerError, WorkerPool, ensure_ports_free, usable_cpus
from gateway.workers.sizing import resolve_workers, uses_worker_processes
from netfilter.connections import own_flow_tuples
from netfilter.errors import NetfilterError
from netfilter.fallback import (
    ALIVE_REFRESH_INTERVAL,
    ALIVE_TIMEOUT,
    FlowTuple,
    SteeringState,
)
from netfilter.live import AliveKeeper, LiveSteering

logger = logging.getLogger(__name__)

# Issue 3: certificate expiry is reported at start and daily.
EXPIRY_CHECK_INTERVAL = 24 * 60 * 60.0
# Housekeeping: overload detection, the kept sessions of a fallback, retiring listeners,
# the per-minute traffic history. Once a second is enough for each of them.
HOUSEKEEPING_INTERVAL = 1.0
SESSIONS_LIMIT = 10_000  # rows in one `tlsgw sessions` answer


class TrackedHandler:
    """Puts every accepted connection of one listener into the session table for as long
    as its handler runs, whatever the handler does with it."""

    def __init__(self, handler: FlowHandler, sessions: SessionTable) -> None:
        self.handler = handler
        self.sessions = sessions
        self.active = 0

    @property
    def counters(self) -> Counters:
        return self.handler.counters

    async def handle(self, conn: socket.socket) -> None:
        try:
            client, server = conn.getpeername()[:2], conn.getsockname()[:2]
        except OSError:  # reset while in the accept queue: nothing to serve
            self.handler.counters.add("refused.peer_gone")
            conn.close()
            return
        session = self.sessions.open(self.handler.segment.name, client, server)
        self.active += 1
        try:
            await self.handler.handle(conn)
        finally:
            self.active -= 1
            self.sessions.close(session)


@dataclass(slots=True)
class ListenerSlot:
    port: int
    sock: socket.socket
    tracked: TrackedHandler
    task: asyncio.Task[None] | None = None
    retiring: bool = False


@dataclass(slots=True)
class ReloadRecord:
    at: str
    ok: bool
    message: str


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(slots=True)
class Daemon:
    config_path: str
    apply_rules: bool = True
    runtime: Runtime | None = None
    counters: Counters = field(default_factory=Counters)
    process: ProcessMaterial = field(default_factory=ProcessMaterial)
    sessions: SessionTable = field(default_factory=SessionTable)
    concurrency: ConcurrencyLimit = field(default_factory=ConcurrencyLimit)
    history: TrafficHistory = field(default_factory=TrafficHistory)
    fallback: FallbackState = field(default_factory=FallbackState)
    overload: OverloadDetector = field(default_factory=OverloadDetector)
    notifier: Notifier = field(default_factory=Notifier.from_environment)
    listeners: dict[int, ListenerSlot] = field(default_factory=dict)
    steering: LiveSteering | None = None
    keeper: AliveKeeper | None = None
    tunnels: TunnelService | None = None
    log: InspectionLog | None = None
    pool: WorkerPool | None = None
    """Issue 8: the worker processes that serve when `gateway.workers` is above one (this
    process then opens no listener); None when this process serves."""
    config_text: str = ""
    """The text of the configuration in service: what a worker (re)started gets."""
    started: float = field(default_factory=time.time)
    last_reload: ReloadRecord | None = None
    drain: Drain | None = None
    """The drain in progress while stopping (None before and after it)."""
    _kept: set[FlowTuple] = field(default_factory=set)
    _group: asyncio.TaskGroup | None = None
    _kernel_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _stop_now: asyncio.Event = field(default_factory=asyncio.Event)
    """A second stop signal: end the drain at once."""

    def current(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def load(self, text: str | None = None) -> Runtime:
        """`text`: the file's content, read by the caller (so that workers get the very
        text validated here); None reads the file."""
        config = load_config(self.config_path) if text is None else parse_config(text, source=self.config_path)
        warn_weakenings(config)
        runtime = build_runtime(config, self.process)
        for issue in runtime.missing_keys:  # issue 4: on every load, as the weakenings
            logger.warning("%s", issue)
        return runtime

    def steering_state(self) -> SteeringState:
        return SteeringState(alive_timeout=ALIVE_TIMEOUT, fallback=self.fallback.engaged, proxied=tuple(self._kept))

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self.config_text = read_config_text(self.config_path)
        self.runtime = self.load(self.config_text)
        config = self.runtime.config
        workers = resolve_workers(config.gateway.workers, usable_cpus())
        if uses_worker_processes(workers):
            self.pool = WorkerPool(workers, verbose=logger.isEnabledFor(logging.DEBUG))
            if config.gateway.tunnels.enabled:
                logger.warning("gateway.workers %d with tunnels: flows served by worker processes are logged "
                               "without their tunnel details (the tunnel table lives in the main process)", workers)
        self.log = InspectionLog(config.gateway.inspection_log)
        if self.apply_rules and config.gateway.tunnels.enabled:  # issue 7
            self.tunnels = TunnelService(config, self.counters)
        control = ControlServer(config.gateway.control.socket, config.gateway.control.group, self.control)
        metrics = None
        loop = asyncio.get_running_loop()
        try:
            if self.pool is None:
                for index, segment in enumerate(config.gateway.segments):
                    self._open_listener(config.gateway.listen_port + index, segment)
            await control.start()
            if self.pool is not None:
                # After the control socket, which refuses a second tlsgw: SO_REUSEPORT
                # would let its workers join our ports. They bind before any rule steers.
                ensure_ports_free(config.gateway.listen_port + i for i in range(len(config.gateway.segments)))
                await self.pool.start(self.config_text, self.config_path, self.process.memory_keys.to_wire())
            if config.gateway.metrics is not None:
                from gateway.control.metrics_http import MetricsServer

                metrics = MetricsServer(str(config.gateway.metrics.address), config.gateway.metrics.port,
                                        self.render_metrics)
                await metrics.start()
            self._restore_manual_bypass(config)
            self.history.sample(dt.datetime.now(dt.timezone.utc), self.counters.snapshot())  # the zero line
            if self.apply_rules:
                self.steering = LiveSteering(config, self.steering_state)
                self.keeper = AliveKeeper(self.steering.table, self.steering.shell)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_stop_signal, signum)
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            async with asyncio.TaskGroup() as group:
                self._group = group
                for slot in self.listeners.values():
                    self._serve(slot)
                housekeeping = [group.create_task(self.warn_expiry()), group.create_task(self._heartbeat()),
                                group.create_task(self._housekeeping()), group.create_task(self._watchdog())]
                if self.steering is not None and self.keeper is not None:
                    self.steering.apply()
                    self.keeper.start()
                if self.tunnels is not None:
                    self.tunnels.start()
                    housekeeping.append(group.create_task(self.tunnels.serve()))
                try:
                    segments = len(config.gateway.segments)
                    status = f"serving {segments} segment(s)" + (
                        f" with {self.pool.count} worker processes" if self.pool is not None else "") + (
                        "; fallback engaged" if self.fallback.engaged else "")
                    logger.info("tlsgw serving %d segment(s)%s; inspection log %s", segments,
                                f" with {self.pool.count} worker processes" if self.pool is not None else "",
                                config.gateway.inspection_log)
                    gc_policy.settle_after_startup()
                    self.notifier.ready(status)
                    await self._stop.wait()
                    left = await self._drain()
                    if left:
                        logger.warning("stopping: cutting %d session(s) still in flight", left)
                    else:
                        logger.info("stopping: no session in flight")
                finally:
                    self._leave_rules()
                    if self.tunnels is not None:  # tunnels fail open: the bridge carries them untouched
                        self.tunnels.stop()
                    if self.pool is not None:  # after the rules, as the sessions of this process
                        await self.pool.stop()
                    for task in housekeeping:
                        task.cancel()
                    for slot in self.listeners.values():
                        if slot.task is not None:
                            slot.task.cancel()
        finally:
            self._group = None
            if self.keeper is not None:
                self.keeper.stop()
            if self.tunnels is not None:
                self.tunnels.stop()
            if self.steering is not None:
                self.steering.shell.close()
            if self.pool is not None:  # no-op after a normal stop; a failed start-up stops them here
                await self.pool.stop()
                self.pool.close()
            await control.close()
            if metrics is not None:
                await metrics.close()
            for slot in self.listeners.values():
                slot.sock.close()
            self.log.close()
            self.notifier.close()

    def _on_stop_signal(self, signum: int) -> None:
        if not self._stop.is_set():
            self._stop.set()
        elif self.drain is not None and not self._stop_now.is_set():
            logger.warning("%s again: ending the drain now", signal.Signals(signum).name)
            self._stop_now.set()

    async def _drain(self) -> int:
        """Let the sessions in flight finish while new flows pass untouched, for up to
        `gateway.drain_timeout` (see `gateway.policy.drain`). Returns how many are still
        in flight, which the stop then cuts."""
        gw = self.current().config.gateway
        plan = DrainPlan.for_stop(gw.drain_timeout, gw.fail_mode, self.steering is not None)
        live = await self._count_live(DRAIN_POLL_INTERVAL)
        if not plan.enabled or not live:
            self.notifier.stopping()
            return live
        self.drain = drain = Drain(plan, time.monotonic(), time.time())
        self.notifier.stopping(f"draining {live} session(s) for up to {plan.timeout:g}s")
        try:
            if plan.bypass_new_flows:
                try:
                    await self.set_fallback(Cause.DRAIN, True)
                except TlsgwError as exc:
                    logger.error("stopping: new flows cannot be turned away from tlsgw (%s); not draining", exc)
                    return await self._count_live(DRAIN_POLL_INTERVAL)
                logger.warning("stopping: new flows cross the bridge untouched; waiting up to %gs "
                               "(gateway.drain_timeout) for %d session(s) in flight; a second SIGTERM or "
                               "SIGINT ends them at once", plan.timeout, live)
            else:
                logger.warning("stopping: waiting up to %gs (gateway.drain_timeout) for %d session(s) in flight; "
                               "new flows are still inspected meanwhile (%s); a second SIGTERM or SIGINT ends "
                               "them at once", plan.timeout, live,
                               "fail_mode closed" if self.steering is not None else "--no-rules")
            while (end := drain.end(time.monotonic(), live, self._stop_now.is_set())) is None:
                wait = min(DRAIN_POLL_INTERVAL, drain.remaining(time.monotonic()))
                try:
                    await asyncio.wait_for(self._stop_now.wait(), wait)
                except TimeoutError:
                    pass
                live = await self._count_live(max(drain.remaining(time.monotonic()), DRAIN_POLL_INTERVAL))
            if end is DrainEnd.EMPTY and plan.bypass_new_flows:
                await self._linger(drain)
            logger.info("drain ended after %.1fs: %s", time.monotonic() - drain.started, end.value)
            return live
        finally:
            self.drain = None

    async def _linger(self, drain: Drain) -> None:
        """Every session has ended, but a socket closed last may still be sending its final
        bytes (a server that closed first: the end of its response is in our send queue).
        Its tuple stays in the kept set while it delivers (`netfilter.connections`); wait
        for the kept set to empty, within what is left of the drain, before the rules go."""
        while drain.remaining(time.monotonic()) > 0 and not self._stop_now.is_set():
            await self._reconcile_kept()
            if not self._kept:
                return
            try:
                await asyncio.wait_for(self._stop_now.wait(), min(DRAIN_POLL_INTERVAL,
                                                                  drain.remaining(time.monotonic())))
            except TimeoutError:
                pass

    async def _count_live(self, limit: float) -> int:
        """Sessions in flight now, the workers' included; a worker slower than `limit`
        seconds to answer counts with its last report (at most a second old)."""
        if self.pool is not None:
            try:
                async with asyncio.timeout(limit):
                    await self.pool.refresh()
            except TimeoutError:
                pass
        return self._live_sessions()

    def _leave_rules(self) -> None:
        """fail_mode open: remove the rules now. closed: leave them to the dead-man switch."""
        if self.keeper is not None:
            self.keeper.stop()
        if self.steering is None:
            return
        if self.current().config.gateway.fail_mode is FailMode.CLOSED:
            logger.warning("fail_mode closed: steered flows are dropped while tlsgw is stopped")
            return
        try:
            self.steering.remove()
        except TlsgwError as exc:
            logger.error("removing the steering rules failed: %s; they stop diverting within %.1fs anyway",
                         exc, ALIVE_TIMEOUT)

    def _open_listener(self, port: int, segment: Segment) -> ListenerSlot:
        handler = FlowHandler(segment, self.current, self.log, self.counters)  # type: ignore[arg-type]
        # Issue 6: the proxy attaches each flow's record to the session table (SNI, outcome
        # and bytes in `tlsgw sessions`) and checks one concurrency limit for all segments.
        handler.sessions = self.sessions
        handler.concurrency = self.concurrency
        # Issue 7: tunnel details for the flow log (FlowRecord.tunnel), by the accepted 4-tuple.
        handler.tunnels = self.tunnels.flows if self.tunnels is not None else None
        slot = ListenerSlot(port, transparent_listener(port), TrackedHandler(handler, self.sessions))
        self.listeners[port] = slot
        logger.info("segment %s: listening on TPROXY port %d", segment.name, port)
        return slot

    def _serve(self, slot: ListenerSlot) -> None:
        assert self._group is not None
        slot.task = self._group.create_task(serve(slot.sock, slot.tracked))  # type: ignore[arg-type]

    def _restore_manual_bypass(self, config: GatewayConfig) -> None:
        path = Path(config.gateway.control.bypass_file)
        if path.exists():
            self.fallback.set(Cause.MANUAL, True, path.stat().st_mtime)
            logger.warning("manual fallback is on (since %s, %s): new flows bypass inspection until "
                           "`tlsgw bypass off`", _iso(path.stat().st_mtime), path)

    # -- periodic work ----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Proof for the renewal thread that the loop runs."""
        while True:
            if self.keeper is not None:
                self.keeper.beat()
            await asyncio.sleep(ALIVE_REFRESH_INTERVAL)

    async def _watchdog(self) -> None:
        interval = watchdog_interval(os.environ, os.getpid())
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                now = time.time()
                counters = self.total_counters()
                self.history.sample(dt.datetime.now(dt.timezone.utc), counters)
                change = self.overload.observe(counters.get("refused.capacity", 0), time.monotonic())
                if change is not None:
                    if change:
                        logger.warning("overload: accept() is failing for lack of resources; engaging fallback")
                    else:
                        logger.info("overload over: releasing the overload fallback")
                    await self.set_fallback(Cause.OVERLOAD, change, now)
                if (self.fallback.engaged or self._kept) and self.steering is not None:
                    await self._reconcile_kept()
                self._retire_listeners()
            except Exception:  # housekeeping must not cancel the listeners in the same TaskGroup
                logger.exception("housekeeping failed")

    async def _reconcile_kept(self) -> None:
        """Forget the kept tuples of sockets that closed. While fallback lasts, also keep
        those that appeared (an upstream leg that connected just after the switch); after
        a reload, sessions started since are steered by the new rules and need no keeping."""
        async with self._kernel_lock:
            if self.steering is None:
                return
            now = set(await asyncio.to_thread(own_flow_tuples, self._worker_pids(), frozenset(self._kept)))
            wanted = now if self.fallback.engaged else now & self._kept
            add, remove = wanted - self._kept, self._kept - wanted
            if add or remove:
                self.steering.change_proxied(add, remove)
                self._kept = wanted

    def _worker_pids(self) -> list[int]:
        """Whose sockets a fallback keeps diverted besides this process's (issue 8)."""
        return self.pool.pids() if self.pool is not None else []

    def total_counters(self) -> dict[str, int]:
        """This process's counters plus every worker's (issue 8)."""
        if self.pool is None:
            return self.counters.snapshot()
        return self.pool.totals.counters(self.counters.snapshot())

    def _live_sessions(self) -> int:
        return len(self.sessions) + (self.pool.totals.active if self.pool is not None else 0)

    def _accepted_total(self) -> int:
        return self.sessions.opened + (self.pool.totals.opened if self.pool is not None else 0)

    def _retire_listeners(self) -> None:
        for port, slot in list(self.listeners.items()):
            if slot.retiring and slot.tracked.active == 0:
                if slot.task is not None:
                    slot.task.cancel()
                slot.sock.close()
                del self.listeners[port]
                logger.info("listener on port %d closed (its segment was removed)", port)

    async def warn_expiry(self) -> None:
        """Log certificates that expire within 30 days, or have, now and every day after."""
        while True:
            try:
                for warning in self.current().expiry_warnings(dt.datetime.now(dt.timezone.utc)):
                    logger.warning("%s", warning)
            except Exception:  # a failed check must not cancel the listeners in the same TaskGroup
                logger.exception("certificate expiry check failed")
            await asyncio.sleep(EXPIRY_CHECK_INTERVAL)

    # -- fallback -------------------------------------------------------------------------

    async def set_fallback(self, cause: Cause, on: bool, now: float | None = None) -> None:
        """Engage or release one cause; the kernel follows when the overall state changes.

        Raises:
            NetfilterError: nft refused; the state is as before.
        """
        async with self._kernel_lock:
            before = dict(self.fallback.since)
            if not self.fallback.set(cause, on, time.time() if now is None else now):
                return
            if self.steering is None:
                return
            try:
                if self.fallback.engaged:
                    kept = await asyncio.to_thread(own_flow_tuples, self._worker_pids())
                    await asyncio.to_thread(self.steering.engage, kept)
                    self._kept = set(kept)
                    logger.warning("fallback engaged (%s): new flows bypass inspection; %d live session "
                                   "tuple(s) kept", cause.value, len(kept))
                else:
                    await asyncio.to_thread(self.steering.release)
                    # The kept tuples stay until their sockets close (housekeeping).
                    logger.warning("fallback released (%s): new flows are inspected again", cause.value)
            except BaseException:
                self.fallback.since = before
                raise

    # -- reload ----------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        if self._group is not None:
            self._group.create_task(self._reload_on_signal())

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload(Role.ADMIN)  # only root or tlsgw's own user can send it a signal
        except ControlFailure as exc:
            logger.error("reload refused, configuration unchanged: %s", exc.message)
        except Exception:  # a task of the serving TaskGroup: a bug here must not stop the gateway
            logger.exception("reload failed")

    async def reload(self, role: Role) -> dict[str, Any]:
        """Raises: ControlFailure (config / denied / failed); nothing changed then."""
        if self._stop.is_set():  # the rules and listeners are on their way out
            raise ControlFailure(ErrorCode.FAILED, "tlsgw is stopping; start it again to load the configuration")
        async with self._kernel_lock:
            self.notifier.reloading()
            try:
                result = await self._reload(role)
            except ControlFailure as exc:
                self.last_reload = ReloadRecord(_iso(time.time()), False, exc.message)
                raise
            finally:
                self.notifier.reloaded(f"serving {len(self.current().config.gateway.segments)} segment(s)")
            self.last_reload = ReloadRecord(_iso(time.time()), True, result["message"])
            return result

    async def _reload(self, role: Role) -> dict[str, Any]:
        try:
            text = await asyncio.to_thread(read_config_text, self.config_path)
            new = await asyncio.to_thread(self.load, text)
        except TlsgwError as exc:  # ConfigError, or a certificate the file names (PkiError)
            raise ControlFailure(ErrorCode.CONFIG, str(exc)) from exc
        old = self.current().config
        if role < Role.ADMIN:
            locked = locked_policy_changes(old, new.config)
            if locked:
                raise ControlFailure(ErrorCode.DENIED, "only tlsgw-admin may apply changes to locked policies: "
                                     + "; ".join(locked))
        for name, before, after in (("gateway.inspection_log", old.gateway.inspection_log,
                                     new.config.gateway.inspection_log),
                                    ("gateway.control", old.gateway.control, new.config.gateway.control),
                                    ("gateway.metrics", old.gateway.metrics, new.config.gateway.metrics),
                                    ("gateway.tunnels", old.gateway.tunnels, new.config.gateway.tunnels),
                                    ("gateway.workers", old.gateway.workers, new.config.gateway.workers)):
            if before != after:
                logger.warning("reload: %s changed; that takes effect at the next restart", name)
        if self.pool is not None:  # issue 8: every worker builds it and binds new ports, or none does
            try:
                await self.pool.prepare(text, self.config_path, self.process.memory_keys.to_wire())
            except WorkerError as exc:
                raise ControlFailure(ErrorCode.FAILED, f"a worker process refused the configuration: {exc}") from exc
        rules_changed = steering_inputs(old) != steering_inputs(new.config)
        try:
            if rules_changed:
                await self._switch_steering(new.config)
        except BaseException:
            if self.pool is not None:
                await self.pool.abort()
            raise
        if self.tunnels is not None:  # issue 7: new policies select new tunneled flows
            self.tunnels.reconfigure(new.config)
        self.runtime = new
        self.config_text = text
        problems = await self.pool.commit() if self.pool is not None else []
        for problem in problems:
            logger.error("reload: %s; it is restarted with the new configuration", problem)
        message = (f"configuration reloaded from {self.config_path}"
                   + ("; steering rules and listeners switched" if rules_changed else "")
                   + (f"; {len(problems)} worker process(es) failed to switch and are restarted" if problems else "")
                   + (f"; {len(new.missing_keys)} certificate reference(s) lack a key kept only in memory, their "
                      "policies are out of service (tlsgw status)" if new.missing_keys else ""))
        logger.info("%s", message)
        return {"message": message, "rules_changed": rules_changed,
                "missing_keys": [str(issue) for issue in new.missing_keys]}

    async def _switch_steering(self, config: GatewayConfig) -> None:
        """New listeners first, then the rules in one transaction; undone if either fails."""
        wanted = {config.gateway.listen_port + i: s for i, s in enumerate(config.gateway.segments)}
        if self.steering is not None:
            try:
                await asyncio.to_thread(self.steering.check_switch, config)
            except NetfilterError as exc:
                raise ControlFailure(ErrorCode.FAILED, f"new steering rules refused: {exc}") from exc
        opened: list[ListenerSlot] = []
        kept_before = set(self._kept)
        try:
            for port, segment in wanted.items():
                if self.pool is None and port not in self.listeners:  # workers opened theirs in prepare
                    opened.append(self._open_listener(port, segment))
            if self.steering is not None:
                # Sessions in flight keep their divert whatever the new rules steer: a
                # disabled policy or a port no longer inspected does not cut them.
                self._kept |= set(await asyncio.to_thread(own_flow_tuples, self._worker_pids()))
                await asyncio.to_thread(self.steering.switch, config)
        except (OSError, TlsgwError) as exc:
            self._kept = kept_before
            for slot in opened:
                slot.sock.close()
                del self.listeners[slot.port]
            raise ControlFailure(ErrorCode.FAILED, f"switching the steering rules failed: {exc}") from exc
        if self.steering is not None:
            # Sockets that appeared between the scan and the switch (a few milliseconds).
            late = set(await asyncio.to_thread(own_flow_tuples, self._worker_pids())) - self._kept
            if late:
                self.steering.change_proxied(late, ())
                self._kept |= late
        for port, slot in self.listeners.items():
            if port in wanted:
                slot.tracked.handler.segment = wanted[port]
                slot.retiring = False
                if slot.task is None:
                    self._serve(slot)
            else:
                slot.retiring = True

    # -- control socket ------------------------------------------------------------------------

    async def control(self, request: Request, peer: Peer, role: Role) -> Any:
        command = request.command
        if self.pool is not None and command in (Command.STATUS, Command.STATS):
            await self.pool.refresh()  # the workers' counts as of now, not of their last report
        if command is Command.STATUS:
            return self.status()
        if command is Command.STATS:
            return self.stats(request.params)
        if command is Command.SESSIONS:
            limit = request.params.get("limit", SESSIONS_LIMIT)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ControlFailure(ErrorCode.INVALID, "limit: expected a positive integer")
            if self.pool is not None:
                return await self.pool.sessions(min(limit, SESSIONS_LIMIT))
            return {"active": len(self.sessions), "sessions": self.sessions.listing(min(limit, SESSIONS_LIMIT))}
        if command is Command.LOG:
            return await self.query_log(request.params)
        if command is Command.RELOAD:
            logger.info("reload requested by uid %d (pid %d, role %s)", peer.uid, peer.pid, role.label)
            return await self.reload(role)
        if command is Command.BYPASS:
            return await self.bypass(request.params, peer)
        if command is Command.IMPORT_KEYS:
            return await self.import_keys(request.params, peer)
        raise ControlFailure(ErrorCode.UNKNOWN, f"no handler for {command.value}")  # pragma: no cover

    async def import_keys(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Keep private keys in memory only (issue 4). Each comes with its certificate and
        is checked against it; they serve from the next reload on (the CLI asks for one
        once the certificates are in the store). Never logs or echoes a key."""
        pki = self.current().config.pki
        pki_dir = params.get("pki_dir")
        if pki_dir is not None and os.path.abspath(str(pki_dir)) != os.path.abspath(pki.dir):
            raise ControlFailure(ErrorCode.INVALID, f"this gateway's certificate store is {pki.dir} (pki.dir), "
                                                    f"not {pki_dir}: use the same configuration as the gateway")
        try:
            keys = keys_from_wire(params.get("keys"), require_certificate=True)
        except PkiError as exc:
            raise ControlFailure(ErrorCode.INVALID, str(exc)) from exc
        if not keys:
            raise ControlFailure(ErrorCode.INVALID, "keys: no key given")
        async with self._kernel_lock:  # not while a reload reads the keys
            self.process.memory_keys = self.process.memory_keys.with_keys(keys)
        names = [name for name, _ in keys]
        logger.info("private key(s) of certificate(s) %s received from uid %d (pid %d); kept in memory only "
                    "(pki.persist_keys is %s)", ", ".join(map(repr, names)), peer.uid, peer.pid,
                    "true" if pki.persist_keys else "false")
        return {"names": names, "held": len(self.process.memory_keys),
                "message": f"the gateway (pid {os.getpid()}) keeps {len(names)} private key(s) in memory only"}

    def status(self) -> dict[str, Any]:
        config = self.current().config
        gw = config.gateway
        return {
            "version": __version__,
            "pid": os.getpid(),
            "config": self.config_path,
            "started": _iso(self.started),
            "uptime_s": round(time.time() - self.started, 1),
            "state": "draining" if self.drain is not None else "stopping" if self._stop.is_set() else "serving",
            "drain": None if self.drain is None else self.drain.view(time.monotonic()),
            "mode": {
                "client_inspection": gw.ssl_inspection.client,
                "server_inspection": gw.ssl_inspection.server,
                "fail_mode": gw.fail_mode.value,
                "rules": "managed" if self.steering is not None else "external (--no-rules)",
                "max_concurrent": gw.limits.max_concurrent,
                "on_exceed": gw.limits.on_exceed.value,
            },
            "fallback": {**self.fallback.view(), "kept_tuples": len(self._kept)},
            "segments": [{"name": s.name, "client_port": s.client_port, "server_port": s.server_port,
                          "profile": s.profile, "listen_port": gw.listen_port + i}
                         for i, s in enumerate(gw.segments)],
            "policies": [{"profile": p.name, "kind": kind, "name": pol.name, "enabled": pol.enabled,
                          "locked": pol.locked,
                          "out_of_service": (p.name, kind, pol.name) in self.current().out_of_service,
                          "proxy": pol.server_proxy if kind == "server" else pol.client_proxy}  # type: ignore[union-attr]
                         for p in config.profiles
                         for kind, policies in (("server", p.server_policies), ("client", p.client_policies))
                         for pol in policies],
            "sessions": {"active": self._live_sessions(), "decrypting": self._decrypting(),
                         "accepted_total": self._accepted_total()},
            "workers": self.pool.view() if self.pool is not None else [],
            "keys": {  # issue 4: keys kept only in memory; never the keys themselves
                "persist": config.pki.persist_keys,
                "in_memory": self.process.memory_keys.held(),
                "missing": [{"path": i.path, "message": i.message} for i in self.current().missing_keys],
                "out_of_service": [{"profile": p, "kind": k, "name": n}
                                   for p, k, n in sorted(self.current().out_of_service)],
            },
            "last_reload": None if self.last_reload is None else {
                "at": self.last_reload.at, "ok": self.last_reload.ok, "message": self.last_reload.message},
            "health": {
                "alive_renewals": self.keeper.renewals if self.keeper else None,
                "loop_stalled": self.keeper.stalled if self.keeper else None,
                "nft_errors": self.steering.shell.errors if self.steering else None,
                "tasks": len(asyncio.all_tasks()),
                "open_fds": len(os.listdir("/proc/self/fd")),
            },
        }

    def stats(self, params: dict[str, Any]) -> dict[str, Any]:
        counters = self.total_counters()
        self.history.sample(dt.datetime.now(dt.timezone.utc), counters)  # up to this moment
        answer: dict[str, Any] = {"counters": counters, "view": stats_view(counters)}
        if self.pool is not None:  # issue 8: each worker's share (live workers, since their start)
            answer["workers"] = [{"index": w["index"], "pid": w["pid"], "counters": w["counters"]}
                                 for w in self.pool.view()]
        minutes = params.get("history")
        if minutes is not None:
            if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
                raise ControlFailure(ErrorCode.INVALID, "history: expected a number of minutes")
            current = self.history.current()
            answer["history"] = self.history.view(minutes or None)
            answer["current_minute"] = None if current is None else {
                "minute": current.minute, "seen": current.seen, "decrypted": current.decrypted,
                "bytes": current.bytes, "bytes_decrypted": current.bytes_decrypted}
        return answer

    async def query_log(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            query = LogQuery.from_params(params, dt.datetime.now(dt.timezone.utc))
        except QueryError as exc:
            raise ControlFailure(ErrorCode.INVALID, str(exc)) from exc
        path = self.current().config.gateway.inspection_log

        def scan() -> list[dict[str, Any]]:
            try:
                with open(path, encoding="utf-8", errors="replace") as lines:
                    return query.run(lines)
            except FileNotFoundError:
                return []

        try:
            records = await asyncio.to_thread(scan)
        except OSError as exc:
            raise ControlFailure(ErrorCode.FAILED, f"inspection log {path}: {exc.strerror}") from exc
        return {"log": path, "query": query.to_params(), "records": records}

    async def bypass(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        state = params.get("state")
        if state not in ("on", "off"):
            raise ControlFailure(ErrorCode.INVALID, "state: expected on or off")
        if self.steering is None:
            raise ControlFailure(ErrorCode.FAILED, "this tlsgw does not manage the steering rules (--no-rules)")
        on = state == "on"
        path = Path(self.current().config.gateway.control.bypass_file)
        try:
            await self.set_fallback(Cause.MANUAL, on)
        except TlsgwError as exc:
            raise ControlFailure(ErrorCode.FAILED, f"bypass {state}: {exc}") from exc
        try:
            if on:
                path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                path.write_text(f"manual fallback engaged by uid {peer.uid} (pid {peer.pid}) at "
                                f"{_iso(time.time())}\n")
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("bypass %s: cannot record it in %s (%s); it will not survive a restart",
                         state, path, exc.strerror)
        logger.warning("manual bypass %s by uid %d (pid %d)", state, peer.uid, peer.pid)
        return {"fallback": self.fallback.view(), "kept_tuples": len(self._kept)}

    def _decrypting(self) -> int:
        if self.pool is not None:
            return self.pool.decrypting()
        return self.concurrency.active  # shared by every segment's handler

    def render_metrics(self) -> str:
        counters = self.total_counters()
        self.history.sample(dt.datetime.now(dt.timezone.utc), counters)
        current = self.history.current()
        gauges = {
            "uptime_seconds": time.time() - self.started,
            "sessions_active": self._live_sessions(),
            "sessions_decrypting": self._decrypting(),
            "fallback_manual": 1 if self.fallback.holds(Cause.MANUAL) else 0,
            "fallback_overload": 1 if self.fallback.holds(Cause.OVERLOAD) else 0,
            "fallback_drain": 1 if self.fallback.holds(Cause.DRAIN) else 0,
        }
        last = None if current is None else {"seen": current.seen, "decrypted": current.decrypted}
        return render_prometheus(counters, gauges, last)


def steering_inputs(config: GatewayConfig) -> tuple[object, ...]:
    """What the kernel rules and listeners are built from; when a reload changes these, the
    rules and listeners are switched too."""
    gw = config.gateway
    return (gw.bridge, gw.segments, gw.listen_port, gw.netfilter, gw.ssl_inspection, gw.fail_mode,
            tuple(config.client_detection_ports(s) for s in gw.segments),
            tuple(_server_steering(config, s) for s in gw.segments))


def _server_steering(config: GatewayConfig, segment: Segment) -> tuple[object, ...]:
    """Server policies steer by their proxies' destinations and ports (netfilter.plan)."""
    found = []
    for policy in config.profile(segment.profile).server_policies:
        if policy.enabled:
            proxy = config.server_proxy(policy.server_proxy)
            found.append((proxy.destinations, proxy.detection_ports))
    return tuple(found)


def warn_weakenings(config: GatewayConfig) -> None:
    """Every deliberate weakening is logged at WARNING on each load (STYLE.md D)."""
    for proxy in config.client_proxies:
        if not proxy.block_invalid_certificates:
            logger.warning("client proxy %r: block_invalid_certificates is off; invalid upstream "
                           "certificates are shown to clients under the untrusted CA", proxy.name)
        if not proxy.block_expired_certificates:
            logger.warning("client proxy %r: block_expired_certificates is off; expired upstream "
                           "certificates are shown to clients under the untrusted CA", proxy.name)
        for weakening in tls_weakenings(proxy.protocols, proxy.cipher_suites):
            logger.warning("client proxy %r: %s", proxy.name, weakening)
        if proxy.min_key_length < 2048:
            logger.warning("client proxy %r: min_key_length %d accepts weak upstream keys",
                           proxy.name, proxy.min_key_length)
    for server_proxy in config.server_proxies:
        for weakening in tls_weakenings(server_proxy.protocols, server_proxy.cipher_suites):
            logger.warning("server proxy %r: %s", server_proxy.name, weakening)
    if not config.pki.encrypt_keys:  # issue 4
        logger.warning("pki.encrypt_keys is false: private keys written to %s are not encrypted at rest",
                       config.pki.dir)
    if config.gateway.fail_mode is FailMode.CLOSED:
        logger.warning("fail_mode closed: while tlsgw is not running, the flows it inspects are dropped")
