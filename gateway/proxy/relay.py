"""The relay after the handshakes: bytes from one leg, observed, out of the other.

Straight on the file descriptors rather than asyncio transports or streams: the event loop
only says "readable" or "writable" (`add_reader` / `add_writer`) and the relay does the
reads and writes itself, in large pieces: one recv of up to 256 KiB, every record in it
decrypted and re-encrypted, one send. The transport-based relay this replaces kept a
transport and a stream per leg alive on idle connections, copied every byte into and out
of bytes objects, and spent much of its CPU per read in that machinery (issue 8).

A `Side` is one leg's I/O: `PlainSide` (the not-decrypted path: bytes as they are) or
`TlsSide` (plaintext through the leg's TLS endpoint). Per direction, what a side receives
is shown to that direction's observer (byte counters, the HTTP observer) and written to
the other side, which sends it at the end of the read burst. Back-pressure: what the
destination's socket does not take stays in the side (the TLS endpoint's outgoing BIO)
and the source is not read until the destination is writable and has sent it all, so no
more than one burst is held per direction. The end of one direction (EOF or close_notify)
half-closes the other leg (close_notify, then FIN) once its data is out, and the other
direction carries on, so request/response protocols that close one way first work. The
relay ends when both directions have ended, on the first error, or when one leg has been
idle (nothing received from it or sent to it) for its side's timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Protocol

from gateway.tls.endpoint import CHUNK, INCOMING_SIZE, Signal, TlsEndpoint, TlsFailure

# Reads per readiness event at most, so that one busy direction cannot starve the others
# of the event loop: 16 TLS records or 1 MiB of plain bytes, a few hundred microseconds.
READS_PER_EVENT = 16
# How often a relay looks at its legs for the idle timeout and to release the TLS
# buffers of a leg that has gone quiet, in seconds at most.
TICK_SECONDS = 10.0


class Side(Protocol):
    sock: socket.socket

    def start_reading(self) -> None: ...

    def receive(self) -> bytes | Signal: ...

    def write(self, data: bytes) -> None: ...

    def backed_up(self) -> bool: ...

    def flush(self) -> bool: ...

    def finish(self) -> bool: ...

    def probably_more(self, data: bytes) -> bool: ...

    def trim(self, always: bool = False) -> bool: ...


class PlainSide:
    """A leg whose bytes are relayed as they are: each read is sent at once."""

    __slots__ = ("_backlog", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._backlog: list[bytes] = []

    def start_reading(self) -> None:
        pass

    def receive(self) -> bytes | Signal:
        try:
            data = self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return Signal.WANT_READ
        return data if data else Signal.EOF

    def write(self, data: bytes) -> None:
        if not self._backlog:
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
        if data:
            self._backlog.append(data)

    def backed_up(self) -> bool:
        return bool(self._backlog)

    def flush(self) -> bool:
        if self._backlog:
            data = b"".join(self._backlog)
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
            self._backlog = [data] if data else []
        return not self._backlog

    def finish(self) -> bool:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return True

    def probably_more(self, data: bytes) -> bool:
        return len(data) == CHUNK  # else the kernel had no more: its next event will say

    def trim(self, always: bool = False) -> bool:
        return False


class TlsSide:
    """A leg in TLS, through its endpoint's memory BIOs."""

    __slots__ = ("_closing", "_renewed", "_socket_empty", "endpoint", "sock")

    def __init__(self, sock: socket.socket, endpoint: TlsEndpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self._closing = False
        self._renewed = False
        self._socket_empty = False

    def start_reading(self) -> None:
        self._socket_empty = False

    def receive(self) -> bytes | Signal:
        while True:
            result = self.endpoint.receive()
            if result is not Signal.WANT_READ or self._socket_empty:
                return result
            count = self.endpoint.fill(self.sock)
            if count < 0:
                self._socket_empty = True
                return Signal.WANT_READ
            # A short read took everything the kernel had: the next WANT_READ waits for
            # the event loop instead of trying a recv that would only say EAGAIN.
            self._socket_empty = 0 < count < INCOMING_SIZE

    def write(self, data: bytes) -> None:
        self.endpoint.write_plaintext(data)

    def flush(self) -> bool:
        if not self.endpoint.flush(self.sock):
            return False
        if not self._renewed:
            # The first time all is out: drop the buffers the handshake's flights grew.
            self._renewed = self.endpoint.trim(always=True)
        return True

    def finish(self) -> bool:
        if not self._closing:
            self.endpoint.close()  # close_notify into the outgoing BIO
            self._closing = True
        if not self.endpoint.flush(self.sock):
            return False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return True

    def backed_up(self) -> bool:
        return False  # records wait in the outgoing BIO until the burst's flush

    def probably_more(self, data: bytes) -> bool:
        # Further records may sit in the incoming BIO, where no event would announce them;
        # asking costs no system call once the socket is known to be empty.
        return True

    def trim(self, always: bool = False) -> bool:
        return self.endpoint.trim(always)


class Relay:
    """Relays between two established legs until both directions end.

    `observers[0]` sees what leg 0 sends (on its way to leg 1), and vice versa.
    """

    # One per intercepted connection, alive as long as it is: no __dict__ (issue 8).
    __slots__ = ("_backlog", "_done", "_fds", "_finished", "_finishing", "_last_activity", "_loop", "_reading",
                 "_holding", "_timer", "_writing", "ended", "error", "idle_timeouts", "observers", "sides",
                 "timed_out")

    def __init__(self, sides: tuple[Side, Side], observers: tuple[Callable[[bytes], None], Callable[[bytes], None]],
                 idle_timeouts: tuple[float, float], prompt: tuple[bool, bool] = (True, True)) -> None:
        """`prompt[i]`: send what leg i's TLS endpoint still holds from its handshake as
        the relay starts, rather than with the first data for it (see FlowHandler._handshake)."""
        self.sides = sides
        self._holding = [not p for p in prompt]
        """Leg i keeps what its handshake left unsent until data goes to it (or a tick)."""
        self.observers = observers
        self.idle_timeouts = idle_timeouts
        self.ended = [False, False]
        """Whether what leg i sends has ended (EOF or close_notify)."""
        self.error: BaseException | None = None
        self.timed_out: int | None = None
        """The leg (0 or 1) whose idle timeout ended the relay, if one did."""
        self._fds = (sides[0].sock.fileno(), sides[1].sock.fileno())
        self._backlog = [False, False]
        """Leg i has bytes its socket has not taken yet."""
        self._finishing = [False, False]
        self._finished = [False, False]
        self._reading = [False, False]
        self._writing = [False, False]
        now = time.monotonic()
        self._last_activity = [now, now]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Returns when the relay is over; raises nothing for peer behaviour (errors and
        timeouts are in `error` / `timed_out` for the flow record)."""
        self._loop = loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        try:
            # What the handshakes left: TLS records that came with the last flight (a
            # request right behind the client's Finished), session tickets to send.
            for index in (0, 1):
                self._read(index)
            for index in (0, 1):
                if not self._holding[index]:
                    self._flush(index)
            self._settle()
            if not self._done.done():
                self._timer = loop.call_later(self._tick(), self._check_idle)
                await self._done
        except (TlsFailure, OSError) as exc:
            self.error = exc
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            # Before anyone closes the sockets: the loop must not watch a closed descriptor.
            for index in (0, 1):
                if self._reading[index]:
                    loop.remove_reader(self._fds[index])
                if self._writing[index]:
                    loop.remove_writer(self._fds[index])
            self._reading = [False, False]
            self._writing = [False, False]

    # -- events ----------------------------------------------------------------------------

    def _readable(self, index: int) -> None:
        if self._done is None or self._done.done():
            return
        try:
            self._read(index)
            self._settle()
        except (TlsFailure, OSError) as exc:
            self._fail(exc)

    def _writable(self, index: int) -> None:
        if self._done is None or self._done.done():
            return
        try:
            if self._flush(index):
                # The source was not read while this leg was full, and what it had
                # buffered (TLS records already read) raises no event: read it now.
                self._read(1 - index)
            self._settle()
        except (TlsFailure, OSError) as exc:
            self._fail(exc)

    def _tick(self) -> float:
        return min(TICK_SECONDS, *self.idle_timeouts)

    def _check_idle(self) -> None:
        if self._done is None or self._done.done():
            return
        now = time.monotonic()
        remaining = [self._tick()]
        for leg, (last, timeout) in enumerate(zip(self._last_activity, self.idle_timeouts)):
            quiet = now - last
            if quiet >= timeout:
                self.timed_out = leg
                self._finish_relay()
                return
            if quiet >= TICK_SECONDS and self._flush(leg):  # held tickets go out now at the latest
                self.sides[leg].trim()
            remaining.append(timeout - quiet)
        assert self._loop is not None
        self._settle()
        self._timer = self._loop.call_later(min(remaining), self._check_idle)

    # -- the work ----------------------------------------------------------------------------

    def _read(self, index: int) -> None:
        """Read a burst from leg `index`, write it to the other leg, send it there."""
        other = 1 - index
        if self.ended[index] or self._backlog[other]:
            return
        side, destination = self.sides[index], self.sides[other]
        observe = self.observers[index]
        side.start_reading()
        moved = False
        for _ in range(READS_PER_EVENT):
            data = side.receive()
            if data is Signal.WANT_READ:
                break
            if data is Signal.EOF:
                self.ended[index] = True
                self._finishing[other] = True
                break
            assert isinstance(data, bytes)
            observe(data)
            destination.write(data)
            moved = True
            if destination.backed_up() or not side.probably_more(data):
                break
        else:
            # The burst limit, not the data, ended the loop: come back after the others.
            assert self._loop is not None
            self._loop.call_soon(self._readable, index)
        if moved:
            self._last_activity[index] = self._last_activity[other] = time.monotonic()
            self._flush(other)
        if not self._holding[index]:
            self._flush(index)  # what OpenSSL wrote while reading (alerts, key updates)

    def _flush(self, index: int) -> bool:
        self._holding[index] = False
        done = self.sides[index].flush()
        self._backlog[index] = not done
        return done

    def _settle(self) -> None:
        """Half-close what is due, end the relay when all is done, and watch exactly the
        descriptors that have something to wait for."""
        for index in (0, 1):
            if self._finishing[index] and not self._finished[index] and not self._backlog[index]:
                self._finished[index] = self.sides[index].finish()
                self._backlog[index] = not self._finished[index]
        if all(self.ended) and all(self._finished):
            self._finish_relay()
        if self._done is None or self._done.done():
            return
        loop = self._loop
        assert loop is not None
        for index in (0, 1):
            reading = not self.ended[index] and not self._backlog[1 - index]
            writing = self._backlog[index]
            if reading != self._reading[index]:
                if reading:
                    loop.add_reader(self._fds[index], self._readable, index)
                else:
                    loop.remove_reader(self._fds[index])
                self._reading[index] = reading
            if writing != self._writing[index]:
                if writing:
                    loop.add_writer(self._fds[index], self._writable, index)
                else:
                    loop.remove_writer(self._fds[index])
                self._writing[index] = writing

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._finish_relay()

    def _finish_relay(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
