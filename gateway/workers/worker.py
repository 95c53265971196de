"""One worker process: the listeners, flows, counters and live sessions of its share of
the connections, driven by the main process over its channel (see `protocol.py`).

A worker owns nothing process-wide: no rules, no control socket, no notifications to
systemd. It binds its own SO_REUSEPORT listener on every segment's TPROXY port, so the
kernel spreads new connections over the workers; it appends its flows to the shared
inspection log (whole lines with one O_APPEND write each, so lines of different workers
never interleave) and reports its counts every REPORT_INTERVAL.

It stops on SIGTERM (the main process stopping it, after its drain: the sessions still
held then are cut), when the channel closes (the main process is gone), or by SIGKILL
from the kernel when the main process dies (PR_SET_PDEATHSIG, set in `__main__` before
anything else).

Error handling: a failed prepare (configuration, certificate store, a port in use) is
answered as an error and changes nothing; a bug in answering a call is logged and
answered as an internal error. A crash of the whole worker is the main process's to
notice and repair (it restarts the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from gateway import gc_policy
from gateway.config.load import parse_config
from gateway.config.model import Segment
from gateway.daemon import ListenerSlot, TrackedHandler
from gateway.errors import TlsgwError
from gateway.observability.counters import Counters
from gateway.observability.flowlog import InspectionLog
from gateway.observability.sessions import SessionTable
from gateway.pki.memory_keys import MemoryKeys
from gateway.proxy.flow import FlowHandler
from gateway.proxy.listener import serve
from gateway.proxy.sockets import transparent_listener
from gateway.runtime import ProcessMaterial, Runtime, build_runtime
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
from gateway.workers.shared import SharedConcurrency, SharedCounts

logger = logging.getLogger(__name__)

# Once a second: the main process's per-minute history and overload detection sample
# the totals once a second too, and a crash loses at most this much counting.
REPORT_INTERVAL = 1.0
SESSIONS_LIMIT = 10_000  # as the daemon's: rows in one `tlsgw sessions` answer


class CallRefused(TlsgwError):
    """A call that cannot be done in the worker's present state."""


@dataclass(slots=True)
class Prepared:
    runtime: Runtime
    memory_keys: MemoryKeys
    """The in-memory keys it was built with (issue 4)."""
    wanted: dict[int, Segment]
    """Listen port -> segment, for the prepared configuration."""
    opened: dict[int, ListenerSlot] = field(default_factory=dict)
    """Listeners bound for it that were not open before."""


class Worker:
    def __init__(self, index: int, channel: socket.socket, counts: SharedCounts) -> None:
        self.index = index
        self.channel = channel
        self.counters = Counters()
        self.sessions = SessionTable()
        self.concurrency = SharedConcurrency(counts, index)
        self.process = ProcessMaterial()
        self.runtime: Runtime | None = None
        self.log: InspectionLog | None = None
        self.listeners: dict[int, ListenerSlot] = {}
        self._prepared: Prepared | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()

    def current(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        reader, self._writer = await asyncio.open_unix_connection(sock=self.channel, limit=MAX_LINE_BYTES)
        gc_policy.settle_after_startup()
        serving = asyncio.create_task(self._serve(reader))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            serving.cancel()  # no-op when it ended by itself
            with contextlib.suppress(asyncio.CancelledError):
                await serving  # re-raises a crash of the serving group: exit non-zero, be restarted
        finally:
            stop.cancel()
            serving.cancel()
            for slot in self.listeners.values():
                slot.sock.close()
            self._discard_prepared()
            if self.log is not None:
                self.log.close()
            self._writer.close()

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._report())
            group.create_task(self._housekeeping())
            await self._read_calls(reader, group)
            self._stop.set()  # the channel closed: the main process is gone

    async def _read_calls(self, reader: asyncio.StreamReader, group: asyncio.TaskGroup) -> None:
        while line := await reader.readline():
            try:
                message = decode(line)
            except ChannelError as exc:
                logger.error("channel: %s", exc)
                continue
            if isinstance(message, Call):
                group.create_task(self._answer(message))

    async def _send(self, message: Reply | Report) -> None:
        assert self._writer is not None
        self._writer.write(encode(message))
        await self._writer.drain()

    async def _report(self) -> None:
        while True:
            try:
                await self._send(Report(ReportKind.STATS, self.stats()))
            except (ConnectionError, OSError):
                self._stop.set()
                return
            await asyncio.sleep(REPORT_INTERVAL)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            for port, slot in list(self.listeners.items()):
                if slot.retiring and slot.tracked.active == 0:
                    if slot.task is not None:
                        slot.task.cancel()
                    slot.sock.close()
                    del self.listeners[port]
                    logger.info("listener on port %d closed (its segment was removed)", port)

    # -- calls -------------------------------------------------------------------------------

    async def _answer(self, call: Call) -> None:
        try:
            reply = Reply(call.id, True, await self.do(call))
        except (TlsgwError, OSError) as exc:
            reply = Reply(call.id, False, error=str(exc))
        except Exception as exc:  # a bug: answered, and the worker keeps serving
            logger.exception("%s failed", call.op.value)
            reply = Reply(call.id, False, error=f"internal error: {exc.__class__.__name__}: {exc}")
        try:
            await self._send(reply)
        except (ConnectionError, OSError):
            self._stop.set()

    async def do(self, call: Call) -> Any:
        if call.op is Op.STATS:
            return self.stats()
        if call.op is Op.SESSIONS:
            limit = call.params.get("limit", SESSIONS_LIMIT)
            return {"active": len(self.sessions), "sessions": self.sessions.listing(min(int(limit), SESSIONS_LIMIT))}
        if call.op is Op.PREPARE:
            return await self.prepare(str(call.params.get("config", "")), str(call.params.get("source", "")),
                                      call.params.get("keys", []))
        if call.op is Op.COMMIT:
            return self.commit()
        if call.op is Op.ABORT:
            self._discard_prepared()
            return {}
        raise CallRefused(f"no handler for {call.op.value}")  # pragma: no cover

    def stats(self) -> dict[str, Any]:
        return WorkerStats(self.counters.snapshot(), len(self.sessions), self.sessions.opened,
                           self.concurrency.active).to_dict()

    async def prepare(self, text: str, source: str, keys: object = ()) -> dict[str, Any]:
        """`keys`: the private keys kept only in memory, as `MemoryKeys.to_wire` wrote them.

        Raises: ConfigError, PkiError (the configuration, its certificates, a key),
        OSError (a listener cannot be bound); nothing changed then."""
        self._discard_prepared()
        memory_keys = MemoryKeys.from_wire(keys)
        config = await asyncio.to_thread(parse_config, text, source)
        runtime = await asyncio.to_thread(build_runtime, config, self.process, memory_keys)
        if self.log is None:  # the first configuration names the log, as for the main process
            self.log = InspectionLog(config.gateway.inspection_log)
        prepared = Prepared(runtime, memory_keys,
                            {config.gateway.listen_port + i: s for i, s in enumerate(config.gateway.segments)})
        try:
            for port, segment in prepared.wanted.items():
                if port not in self.listeners:
                    prepared.opened[port] = self._open_listener(port, segment)
        except BaseException:
            for slot in prepared.opened.values():
                slot.sock.close()
            raise
        self._prepared = prepared
        return {"pid": os.getpid(), "ports": sorted(prepared.wanted)}

    def commit(self) -> dict[str, Any]:
        prepared = self._prepared
        if prepared is None:
            raise CallRefused("commit without a prepared configuration")
        self._prepared = None
        first = self.runtime is None
        self.runtime = prepared.runtime
        self.process.memory_keys = prepared.memory_keys
        self.listeners.update(prepared.opened)
        for port, slot in self.listeners.items():
            if port in prepared.wanted:
                slot.tracked.handler.segment = prepared.wanted[port]
                slot.retiring = False
                if slot.task is None:
                    assert self._group is not None
                    slot.task = self._group.create_task(serve(slot.sock, slot.tracked))  # type: ignore[arg-type]
            else:
                slot.retiring = True
        if first:
            logger.info("serving ports %s", ", ".join(map(str, sorted(prepared.wanted))))
        return {"pid": os.getpid(), "memory_keys": len(prepared.memory_keys)}

    def _open_listener(self, port: int, segment: Segment) -> ListenerSlot:
        assert self.log is not None
        handler = FlowHandler(segment, self.current, self.log, self.counters)
        handler.sessions = self.sessions
        handler.concurrency = self.concurrency
        try:
            sock = transparent_listener(port, reuse_port=True)
        except OSError as exc:
            raise CallRefused(f"segment {segment.name}: TPROXY port {port}: {exc.strerror or exc}") from exc
        return ListenerSlot(port, sock, TrackedHandler(handler, self.sessions))

    def _discard_prepared(self) -> None:
        if self._prepared is not None:
            for slot in self._prepared.opened.values():
                slot.sock.close()
            self._prepared = None
