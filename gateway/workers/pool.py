"""The main process's side of the worker processes (issue 8, `gateway.workers` above 1).

Theory of operation. The kernel spreads TPROXYed connections over every listener bound
to a port with SO_REUSEPORT (checked on these machines: 10 and 10 of 20 over two
processes), so N processes can serve one port with no hand-off between them. The work is
split by what must exist once:

    main process                               worker i  (python -m gateway.workers)
    ------------                               --------
    configuration: loaded and validated        parses the text the main process validated
    rules, dead-man switch, fallback           SO_REUSEPORT listener on each TPROXY port
    control socket, metrics, systemd notify    flows, forge cache, live sessions
    counters of all (sum of reports)    <----  its counters, every second and on request
    tunnels (packets), expiry warnings         its decrypting count in a shared slot

Each worker is a fresh interpreter (not a fork of the main process, which has threads
and an event loop by then), started with its end of a socketpair and the shared
concurrency counts as inherited descriptors. It asks the kernel for SIGKILL when the
main process dies, and the main process stops every worker by PID on its way out, so no
worker outlives it.

Start-up and reload are two-phase over each worker's channel: `prepare` (build the
Runtime, bind any new listener; nothing swapped), then `commit` everywhere, or `abort`
everywhere if any worker failed. The main process validates the file itself first, so a
bad configuration never reaches a worker; a worker that still fails (a port taken, a
key it cannot read) makes the reload fail and changes nothing. Listeners are bound by
the workers before the main process switches the rules, as in one process.

Private keys kept only in memory (issue 4, `pki.persist_keys: false`) travel with the
configuration, as PEM over the channel (never through a file, never logged): every
`prepare` carries the main process's keys, and a restarted worker gets those of the
configuration in service.

Stop: the main process drains first (`gateway.drain_timeout`, see `gateway.daemon`). The
workers know nothing of it: the kernel already lets new flows bypass, the sessions they
hold go on, and the main process counts them (`refresh`) until none is left or the time
is up. Then the rules go and each worker gets SIGTERM, which cuts what it still holds.

A worker that exits or stops reporting is restarted with back-off (`backoff.py`), with
the configuration in service, and its last counts are kept (`aggregate.py`). While it is
down the kernel gives its share of new connections to the others; the connections it
held are lost with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gateway
from gateway.errors import TlsgwError
from gateway.workers.aggregate import WorkerTotals, merge_sessions
from gateway.workers.backoff import RestartBackoff
from gateway.workers.protocol import (
    MAX_LINE_BYTES,
    Call,
    ChannelError,
    Op,
    Reply,
    Report,
    ReportKind,
    WorkerStats,
    decode,
    encode,
)
from gateway.workers.shared import SharedCounts

logger = logging.getLogger(__name__)

# A worker's start-up: a Python interpreter, the imports, the certificate store opened
# and every TLS context built - seconds on a loaded 2-core box, so a generous bound.
PREPARE_TIMEOUT = 60.0
# Answers that need no loading (stats, sessions, commit, abort) come within milliseconds
# from a healthy worker; one that takes this long is counted as not answering.
CALL_TIMEOUT = 10.0
# SIGTERM lets a worker close its listeners and sessions; one that has not exited after
# this long is killed.
STOP_GRACE = 5.0
# Reports come every second; thirty without one means the worker's event loop is stuck
# (its share of new connections would hang): it is killed and restarted.
STALL_TIMEOUT = 30.0
SUPERVISE_INTERVAL = 1.0
REAP_POLL = 0.05
# systemd must hear only from the main process (NotifyAccess=main).
_PRIVATE_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


class WorkerError(TlsgwError):
    """A worker could not start, or failed a call; the message names it."""


def usable_cpus() -> int:
    """CPUs this process may run on (`gateway.workers: auto`)."""
    return len(os.sched_getaffinity(0))


def ensure_ports_free(ports: Iterable[int]) -> None:
    """Refuse ports some other socket listens on.

    Workers bind with SO_REUSEPORT, which lets a listener join any group of the same user
    on that port - another tlsgw's, say - instead of failing as the single process does.
    A bind without SO_REUSEPORT still fails where anyone listens, so try one first.

    Raises:
        WorkerError: naming the port.
    """
    for port in ports:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listeners: TIME_WAIT is no owner
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            raise WorkerError(f"TPROXY port {port}: {exc.strerror} (another program, or another tlsgw, "
                              "listens there)") from None
        finally:
            probe.close()


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass(slots=True)
class WorkerProcess:
    """One running worker process (a restart makes a new one with the same index)."""

    index: int
    popen: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    last_heard: float = field(default_factory=time.monotonic)
    serving: bool = False
    """Committed its first configuration; from then on an exit means a restart."""
    pending: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    exit: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.pid})"


class WorkerPool:
    def __init__(self, count: int, verbose: bool = False) -> None:
        self.count = count
        self.verbose = verbose
        self.counts = SharedCounts.create()
        self.totals = WorkerTotals()
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts = [0] * count
        self.last_exit: list[str | None] = [None] * count
        self._backoff = [RestartBackoff() for _ in range(count)]
        self._text = ""
        self._source = ""
        self._keys: list[dict[str, str]] = []
        """The in-memory keys (wire form) of the configuration in service."""
        self._prepared: list[WorkerProcess] | None = None
        self._prepared_config: tuple[str, str, list[dict[str, str]]] | None = None
        self._lock = asyncio.Lock()
        """Held by a reload from prepare to commit or abort, and by a restart: a restarted
        worker gets the configuration in service, before or after a reload, never between."""
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- start and stop ----------------------------------------------------------------------

    async def start(self, text: str, source: str, keys: list[dict[str, str]] | None = None) -> None:
        """Start every worker with this configuration (and these in-memory keys, wire
        form of `gateway.pki.memory_keys`) and wait until all serve.

        Raises:
            WorkerError: naming each worker that failed; none is left running then.
        """
        self._text, self._source, self._keys = text, source, list(keys or [])
        async with self._lock:
            results = await asyncio.gather(*(self._bring_up(i) for i in range(self.count)), return_exceptions=True)
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise WorkerError("worker processes did not start: " + "; ".join(failures))
        self._task(self._supervise())
        logger.info("%d worker processes serving (pids %s)", self.count,
                    ", ".join(str(w.pid) for w in self.workers.values()))

    async def stop(self) -> None:
        """SIGTERM to every worker by PID, SIGKILL to those still there after STOP_GRACE.
        Idempotent."""
        if self._stopping and not self.workers and not self._tasks:
            return
        self._stopping = True
        workers = list(self.workers.values())
        for worker in workers:
            if worker.popen.poll() is None:
                worker.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            while worker.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(REAP_POLL)
            if worker.popen.poll() is None:
                logger.warning("%s did not stop within %.0fs; killing it", worker.name, STOP_GRACE)
                worker.popen.kill()
                await asyncio.to_thread(worker.popen.wait)
            worker.writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                # Our own cancellation of the task, unless this coroutine is being
                # cancelled itself: then stop here too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # noqa: BLE001 - a failed helper task; stopping anyway
                logger.exception("worker pool task failed")
        self.workers.clear()
        self._tasks.clear()

    def close(self) -> None:
        self.counts.close()

    # -- one worker --------------------------------------------------------------------------

    async def _bring_up(self, index: int) -> WorkerProcess:
        """Start worker `index` with the configuration in service. Caller holds the lock.

        Raises: WorkerError (the worker is gone then)."""
        worker = await self._open(index)
        try:
            await self._call(worker, Op.PREPARE, {"config": self._text, "source": self._source, "keys": self._keys},
                             PREPARE_TIMEOUT)
            await self._call(worker, Op.COMMIT, {}, CALL_TIMEOUT)
        except WorkerError:
            if worker.popen.poll() is None:
                worker.popen.kill()
            raise
        worker.serving = True
        return worker

    async def _open(self, index: int) -> WorkerProcess:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # -P: the working directory is not searched, so a `gateway` directory there cannot
        # stand in for the package this process runs.
        argv = [sys.executable, "-P", "-m", "gateway.workers", "--index", str(index),
                "--channel-fd", str(child_end.fileno()), "--shared-fd", str(self.counts.fd),
                "--parent", str(os.getpid())] + (["--verbose"] if self.verbose else [])
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENVIRONMENT}
        package_root = Path(gateway.__file__).resolve().parent.parent
        if package_root.name not in ("site-packages", "dist-packages"):
            # Run from a source tree: the worker imports the very same tree. (An installed
            # package is found on the interpreter's own path; putting a site directory in
            # PYTHONPATH would put it before the standard library.)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH")) if p)
        self.counts.set(index, 0)  # a dead predecessor's decrypting sessions died with it
        try:
            # From the event loop's thread, always: PR_SET_PDEATHSIG fires when the
            # *thread* that started the worker ends, and this one lives as long as we do.
            popen = subprocess.Popen(argv, pass_fds=(child_end.fileno(), self.counts.fd), env=env)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_end, limit=MAX_LINE_BYTES)
        except BaseException:
            popen.kill()
            parent_end.close()
            raise
        worker = WorkerProcess(index, popen, reader, writer)
        self.workers[index] = worker
        self._task(self._read(worker))
        return worker

    async def _call(self, worker: WorkerProcess, op: Op, params: dict[str, Any], timeout: float) -> Any:
        """Raises: WorkerError naming the worker (it refused, died or did not answer)."""
        if worker.exit is not None:
            raise WorkerError(f"{worker.name} {worker.exit}")
        ident = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        worker.pending[ident] = future
        try:
            async with asyncio.timeout(timeout):  # a stuck worker's full socket buffer too
                worker.writer.write(encode(Call(ident, op, params)))
                await worker.writer.drain()
                reply = await future
        except TimeoutError:
            raise WorkerError(f"{worker.name} did not answer {op.value} within {timeout:.0f}s") from None
        except (ConnectionError, OSError) as exc:
            raise WorkerError(f"{worker.name}: channel closed ({exc.__class__.__name__})") from None
        finally:
            worker.pending.pop(ident, None)
        if not reply.ok:
            raise WorkerError(f"{worker.name}: {reply.error}")
        return reply.result

    async def _read(self, worker: WorkerProcess) -> None:
        try:
            while line := await worker.reader.readline():
                worker.last_heard = time.monotonic()
                try:
                    message = decode(line)
                    if isinstance(message, Reply):
                        future = worker.pending.get(message.id)
                        if future is not None and not future.done():
                            future.set_result(message)
                    elif isinstance(message, Report) and message.kind is ReportKind.STATS:
                        self.totals.update(worker.index, WorkerStats.from_dict(message.data))
                except ChannelError as exc:
                    logger.error("%s: %s", worker.name, exc)
        except (ConnectionError, OSError, ValueError):  # ValueError: a line over the limit
            pass
        await self._exited(worker)

    async def _exited(self, worker: WorkerProcess) -> None:
        returncode = await self._reap(worker)
        worker.exit = exit_description(returncode)
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerError(f"{worker.name} {worker.exit}"))
        worker.writer.close()
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        self.totals.retire(worker.index)
        self.counts.set(worker.index, 0)
        self.last_exit[worker.index] = f"{_iso(time.time())}: pid {worker.pid} {worker.exit}"
        if self._stopping or not worker.serving:
            return  # stopping, or a start-up failure: the caller reports it
        ran_for = time.monotonic() - worker.started
        delay = self._backoff[worker.index].delay_after_exit(ran_for)
        logger.error("%s %s after %.0fs; restarting it in %.0fs", worker.name, worker.exit, ran_for, delay)
        self._task(self._restart(worker.index, delay))

    async def _reap(self, worker: WorkerProcess) -> int:
        """The exit status; the channel closed, so the process is exiting or must."""
        deadline = time.monotonic() + STOP_GRACE
        while (returncode := worker.popen.poll()) is None:
            if time.monotonic() >= deadline:
                logger.error("%s closed its channel but did not exit; killing it", worker.name)
                worker.popen.kill()
                return await asyncio.to_thread(worker.popen.wait)
            await asyncio.sleep(REAP_POLL)
        return returncode

    async def _restart(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._stopping:
                return
            try:
                worker = await self._bring_up(index)
            except WorkerError as exc:
                retry = self._backoff[index].delay_after_exit(0.0)
                logger.error("restarting worker %d failed: %s; trying again in %.0fs", index, exc, retry)
                self._task(self._restart(index, retry))
                return
        self.restarts[index] += 1
        logger.warning("%s restarted (restart %d)", worker.name, self.restarts[index])

    async def _supervise(self) -> None:
        """Kill a worker whose event loop stopped reporting; `_read` then restarts it."""
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                if worker.serving and worker.exit is None and now - worker.last_heard > STALL_TIMEOUT:
                    logger.error("%s has not reported for %.0fs; killing it", worker.name, now - worker.last_heard)
                    worker.popen.kill()
                    worker.last_heard = now  # once: its exit comes through the channel

    def _task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker pool task failed", exc_info=task.exception())

    # -- reload ----------------------------------------------------------------------------

    async def prepare(self, text: str, source: str, keys: list[dict[str, str]] | None = None) -> None:
        """Phase one of a reload in every worker (with the in-memory keys to serve it
        with); on success the caller must `commit` or `abort`, and no restart runs in between.

        Raises:
            WorkerError: naming each worker that refused; every worker was aborted then.
        """
        await self._lock.acquire()
        try:
            workers = [w for w in self.workers.values() if w.serving and w.exit is None]
            results = await asyncio.gather(
                *(self._call(w, Op.PREPARE, {"config": text, "source": source, "keys": list(keys or [])},
                             PREPARE_TIMEOUT) for w in workers),
                return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                await self._abort(workers)
                for failure in failures:
                    if not isinstance(failure, WorkerError):
                        raise failure
                raise WorkerError("; ".join(map(str, failures)))
        except BaseException:
            self._lock.release()
            raise
        self._prepared = workers
        self._prepared_config = (text, source, list(keys or []))

    async def commit(self) -> list[str]:
        """Phase two: every prepared worker serves the new configuration, and workers
        started from now on get it. Returns the problems (a worker that died meanwhile;
        it is restarted with the new configuration)."""
        assert self._prepared is not None and self._prepared_config is not None
        workers, (self._text, self._source, self._keys) = self._prepared, self._prepared_config
        self._prepared = self._prepared_config = None
        try:
            results = await asyncio.gather(*(self._call(w, Op.COMMIT, {}, CALL_TIMEOUT) for w in workers),
                                           return_exceptions=True)
        finally:
            self._lock.release()
        return [str(r) for r in results if isinstance(r, BaseException)]

    async def abort(self) -> None:
        """Undo `prepare` in every worker."""
        workers, self._prepared = self._prepared or [], None
        self._prepared_config = None
        try:
            await self._abort(workers)
        finally:
            self._lock.release()

    async def _abort(self, workers: list[WorkerProcess]) -> None:
        results = await asyncio.gather(*(self._call(w, Op.ABORT, {}, CALL_TIMEOUT) for w in workers),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.error("reload abort: %s", result)

    # -- what the workers tell ----------------------------------------------------------------

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers.values() if w.exit is None]

    async def refresh(self) -> None:
        """Fresh counts from every worker (the reports are up to a second old); a worker
        that does not answer keeps its last report."""
        workers = [w for w in self.workers.values() if w.serving and w.exit is None]
        results = await asyncio.gather(*(self._call(w, Op.STATS, {}, CALL_TIMEOUT) for w in workers),
                                       return_exceptions=True)
        for worker, result in zip(workers, results):
            if isinstance(result, BaseException):
                logger.warning("stats: %s", result)
                continue
            try:
                self.totals.update(worker.index, WorkerStats.from_dict(result))
            except ChannelError as exc:
                logger.error("%s: %s", worker.name, exc)

    async def sessions(self, limit: int) -> dict[str, Any]:
        workers = [w for w in self.workers.values() if w.serving and w.exit is None]
        results = await asyncio.gather(*(self._call(w, Op.SESSIONS, {"limit": limit}, CALL_TIMEOUT)
                                         for w in workers), return_exceptions=True)
        answers = []
        for worker, result in zip(workers, results):
            if isinstance(result, BaseException) or not isinstance(result, dict):
                logger.warning("sessions: %s", result)
                continue
            answers.append((worker.pid, result))
        return merge_sessions(answers, limit)

    def decrypting(self) -> int:
        return self.counts.total()

    def view(self) -> list[dict[str, Any]]:
        """One row per worker index for `tlsgw status` and `tlsgw stats`."""
        rows = []
        for index in range(self.count):
            worker = self.workers.get(index)
            stats = self.totals.of(index)
            rows.append({
                "index": index,
                "pid": worker.pid if worker is not None else None,
                "state": ("serving" if worker.serving else "starting") if worker is not None else "restarting",
                "started": _iso(worker.started_at) if worker is not None else None,
                "restarts": self.restarts[index],
                "last_exit": self.last_exit[index],
                "sessions_active": stats.active if stats is not None else 0,
                "decrypting": self.counts.get(index),
                "counters": stats.counters if stats is not None else {},
            })
        return rows
