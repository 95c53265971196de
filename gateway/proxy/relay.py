"""The relay after the handshakes: bytes from one leg, transformed, out of the other.

Protocol callbacks rather than stream reads: once a session is established, each leg's
transport is handed a small `asyncio.Protocol` and every chunk is processed inside
`data_received`, with no future, task or `await` per read. The stream-based pumps this
replaces spent most of their CPU in that per-read machinery (issue 8 profile).

Per direction a `Transform` turns what arrived on the source leg into bytes for the
source (TLS tickets, key updates, alerts) and for the destination, and says whether the
direction has ended (EOF, or a TLS close_notify, possibly in the same read as the last
data). Ending one direction half-closes the other leg (close_notify, then FIN) and the
other direction carries on, so request/response protocols that close one way first work.
Back-pressure: when a destination transport's buffer is full, the source is paused until
it drains. The relay ends when both directions have ended, on the first error, or when
one leg has been idle (nothing received from it or sent to it) for its side's timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.tls.endpoint import TlsClosed, TlsEndpoint, TlsFailure


@dataclass(frozen=True, slots=True)
class Step:
    to_source: bytes
    to_destination: bytes
    ended: bool


class Transform(Protocol):
    def process(self, data: bytes, eof: bool) -> Step: ...


class RawTransform:
    """Bytes through untouched (the not-decrypted path)."""

    def __init__(self, count: Callable[[int], None]) -> None:
        self.count = count

    def process(self, data: bytes, eof: bool) -> Step:
        if data:
            self.count(len(data))
        return Step(b"", data, eof)


class TlsTransform:
    """Decrypt from the source endpoint, observe, re-encrypt into the destination endpoint."""

    def __init__(self, source: TlsEndpoint, destination: TlsEndpoint, observe: Callable[[bytes], None]) -> None:
        self.source = source
        self.destination = destination
        self.observe = observe

    def process(self, data: bytes, eof: bool) -> Step:
        if data or eof:
            self.source.feed(data)
        try:
            plain = self.source.read_plaintext()
            ended = eof or self.source.closed
        except TlsClosed:
            plain, ended = b"", True
        to_source = self.source.data_to_send()
        if plain:
            self.observe(plain)
            self.destination.write_plaintext(plain)
        if ended:
            self.destination.close()
        return Step(to_source, self.destination.data_to_send(), ended)


class _End(asyncio.Protocol):
    def __init__(self, relay: Relay, index: int) -> None:
        self.relay = relay
        self.index = index

    def data_received(self, data: bytes) -> None:
        self.relay._arrived(self.index, data, eof=False)

    def eof_received(self) -> bool:
        self.relay._arrived(self.index, b"", eof=True)
        return True  # keep the transport open: the other direction may still write to it

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._lost(self.index, exc)

    def pause_writing(self) -> None:
        self.relay._set_paused(self.index, True)

    def resume_writing(self) -> None:
        self.relay._set_paused(self.index, False)


class Relay:
    """Relays between two established legs (asyncio streams) until both directions end.

    `transforms[0]` handles what leg 0 receives (its output goes to leg 1), and vice versa.
    """

    def __init__(self, legs: tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter],
                                   tuple[asyncio.StreamReader, asyncio.StreamWriter]],
                 transforms: tuple[Transform, Transform], idle_timeouts: tuple[float, float]) -> None:
        self.readers = (legs[0][0], legs[1][0])
        # Held for the relay's lifetime: a StreamWriter that is garbage-collected closes its
        # transport, which would end the relay under the caller's feet.
        self.writers = (legs[0][1], legs[1][1])
        self.transports = (legs[0][1].transport, legs[1][1].transport)
        self.transforms = transforms
        self.idle_timeouts = idle_timeouts
        self.ended = [False, False]
        self.error: BaseException | None = None
        self.timed_out: int | None = None
        """The leg (0 or 1) whose idle timeout ended the relay, if one did."""
        now = time.monotonic()
        self._last_activity = [now, now]
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Returns when the relay is over; raises nothing for peer behaviour (errors and
        timeouts are in `error` / `timed_out` for the flow record)."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        pending: list[tuple[int, bytes, bool]] = []
        for index, (reader, transport) in enumerate(zip(self.readers, self.transports)):
            # Take over the transport from the stream: whatever the stream had already
            # buffered is processed first, then callbacks deliver the rest.
            buffered = bytes(reader._buffer)  # noqa: SLF001 - asyncio exposes no public way
            reader._buffer.clear()  # noqa: SLF001
            pending.append((index, buffered, reader.at_eof() or reader._eof))  # noqa: SLF001
            transport.set_protocol(_End(self, index))
            reader._buffer = bytearray()  # noqa: SLF001 - release what the handshake grew
            if not transport.is_reading():
                transport.resume_reading()
        # TLS may hold records that arrived with the handshake's last flight: process
        # every direction once even with no new bytes.
        for index, buffered, eof in pending:
            self._arrived(index, buffered, eof)
        self._timer = loop.call_later(min(self.idle_timeouts), self._check_idle)
        try:
            await self._done
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _check_idle(self) -> None:
        if self._done is None or self._done.done():
            return
        now = time.monotonic()
        remaining = []
        for leg, (last, timeout) in enumerate(zip(self._last_activity, self.idle_timeouts)):
            if now - last >= timeout:
                self.timed_out = leg
                self._finish()
                return
            remaining.append(timeout - (now - last))
        self._timer = asyncio.get_running_loop().call_later(min(remaining), self._check_idle)

    def _arrived(self, index: int, data: bytes, eof: bool) -> None:
        if self.ended[index] or (self._done is not None and self._done.done()):
            return
        source, destination = self.transports[index], self.transports[1 - index]
        try:
            step = self.transforms[index].process(data, eof)
        except TlsFailure as exc:
            self.error = exc
            self._finish()
            return
        now = time.monotonic()
        self._last_activity[index] = now
        if step.to_source and not source.is_closing():
            source.write(step.to_source)
        if step.to_destination and not destination.is_closing():
            destination.write(step.to_destination)
            self._last_activity[1 - index] = now
        if step.ended:
            self.ended[index] = True
            if destination.can_write_eof() and not destination.is_closing():
                try:
                    destination.write_eof()
                except OSError:
                    pass
            if all(self.ended):
                self._finish()

    def _lost(self, index: int, exc: Exception | None) -> None:
        if exc is not None:
            self.error = exc
        if not self.ended[index]:
            # The leg went away without an orderly end: the relay cannot go on.
            self._finish()

    def _set_paused(self, index: int, paused: bool) -> None:
        """Leg `index` cannot take more writes: stop reading from the other leg meanwhile."""
        other = self.transports[1 - index]
        if other.is_closing():
            return
        if paused:
            other.pause_reading()
        else:
            other.resume_reading()
