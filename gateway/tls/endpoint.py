"""One TLS endpoint over memory BIOs: bytes from the network in, bytes to the network and
plaintext out. No sockets, so the proxy's hard cases can be driven in tests with a real
OpenSSL peer on the other side of two byte buffers.

Theory of operation. OpenSSL is given a pair of memory BIOs instead of a socket. Whatever
arrives from the peer is written into the incoming BIO (`feed`); OpenSSL consumes it when
we call `handshake`, `read_plaintext` or `write_plaintext`, and leaves whatever it wants to
send in the outgoing BIO, which the I/O shell drains with `data_to_send` after *every*
call (TLS 1.3 sends tickets and key updates after the handshake, even while "reading").
`WantReadError` only ever means "feed me more bytes"; with memory BIOs there is no
WantWrite because the outgoing BIO grows as needed.

The data path (feed, read_plaintext, write_plaintext, data_to_send) calls OpenSSL through
pyOpenSSL's own cffi binding directly, because pyOpenSSL's methods signal "no more data"
by raising exceptions built from the error queue, several per TLS record; that was most of
the relay's CPU (issue 8). Only real errors go through pyOpenSSL's error mapping
(`Connection._raise_ssl_error`), so failures read the same as before. The handshake,
rare by comparison, stays on the public API.

After the handshake the relay does the socket I/O itself, around the same memory BIOs:
`fill` reads what the kernel has into the incoming BIO with one recv_into() of up to
256 KiB, and `flush` sends the outgoing BIO's contents with one send() straight from
OpenSSL's buffer. Large reads and writes matter more than copies on this path: every
write() becomes packets that the kernel pushes through the bridge and the peer's stack,
and fewer, larger ones cost much less per byte (issue 8). The BIOs' buffers grow to the
largest burst and never shrink, so after a large one they are swapped for fresh ones
(`renew_bios`): an idle connection keeps only OpenSSL's own state.
"""

from __future__ import annotations

import enum
from typing import Protocol

from OpenSSL import SSL
from OpenSSL._util import ffi, lib

# How much plaintext or ciphertext one call moves at most. 64 KiB keeps the number of
# Python-level iterations per MB small (16 KiB records, four per call) without holding
# large buffers per idle connection.
CHUNK = 64 * 1024


class TlsClosed(Exception):
    """The peer sent close_notify (or the transport ended) while plaintext was expected."""


class TlsFailure(Exception):
    """OpenSSL rejected the peer; `detail` is OpenSSL's own reason for `gateway.tls.alerts`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def openssl_reason(error: SSL.Error) -> str:
    """OpenSSL's error queue as one line, e.g. 'tlsv1 alert unknown ca'."""
    parts: list[str] = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and len(item) >= 3:
            parts.append(str(item[2]))
    return "; ".join(parts) or (str(error) or type(error).__name__)


# One scratch buffer for every endpoint of the process: each call copies out what it
# read before returning, and endpoints are only used from the event loop's thread. A
# buffer per endpoint cost 64 KiB per leg of every idle connection (issue 8).
_SCRATCH = ffi.new("char[]", CHUNK)
# The same for what the relay reads from sockets (recv_into), and the pointer that
# BIO_get_mem_data fills in.
INCOMING_SIZE = 256 * 1024
_INCOMING = bytearray(INCOMING_SIZE)
_INCOMING_PTR = ffi.from_buffer(_INCOMING)
_DATA = ffi.new("char **")
# Renew the BIOs of a quiet connection once this much has gone through them: their
# buffers are then likely to have grown past what an idle connection should keep.
RENEW_AFTER = 64 * 1024


class NonBlockingSocket(Protocol):
    """What `fill` and `flush` need of a socket (the I/O shell passes a real one; this
    module stays free of socket imports so that it can be tested on byte buffers)."""

    def recv_into(self, buffer: bytearray, /) -> int: ...

    def send(self, data: memoryview | bytes, /) -> int: ...


class Signal(enum.Enum):
    """What a read returned instead of bytes."""

    WANT_READ = "want read"
    EOF = "eof"


class TlsEndpoint:
    """A pyOpenSSL connection in memory-BIO mode, on either side of the proxy."""

    __slots__ = ("_burst", "_from_ssl", "_into_ssl", "_ssl", "closed", "connection", "handshake_done")

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.handshake_done = False
        self.closed = False
        # pyOpenSSL keeps the SSL object and both BIOs alive as long as `connection`.
        self._ssl = connection._ssl
        self._into_ssl = connection._into_ssl
        self._from_ssl = connection._from_ssl
        self._burst = 0
        """Bytes through the BIOs since they were last renewed."""

    def feed(self, data: bytes) -> None:
        if data:
            lib.BIO_write(self._into_ssl, data, len(data))  # a memory BIO takes everything
        else:
            # Transport EOF: let OpenSSL report an unexpected EOF instead of waiting forever.
            self.connection.bio_shutdown()

    def data_to_send(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            count = lib.BIO_read(self._from_ssl, _SCRATCH, CHUNK)
            if count <= 0:
                break
            chunks.append(ffi.buffer(_SCRATCH, count)[:])
        return b"".join(chunks)

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete. Raises TlsFailure."""
        if self.handshake_done:
            return True
        try:
            self.connection.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.ZeroReturnError as exc:
            raise TlsFailure("peer closed the connection during the handshake") from exc
        except SSL.SysCallError as exc:
            raise TlsFailure("peer closed the connection during the handshake") from exc
        except SSL.Error as exc:
            raise TlsFailure(openssl_reason(exc)) from exc
        self.handshake_done = True
        return True

    def read_plaintext(self) -> bytes:
        """All plaintext available now (possibly b''). Raises TlsClosed at close_notify
        when no data comes with it (otherwise the data is returned and `closed` is set)."""
        chunks: list[bytes] = []
        while True:
            count = lib.SSL_read(self._ssl, _SCRATCH, CHUNK)
            if count > 0:
                chunks.append(ffi.buffer(_SCRATCH, count)[:])
                continue
            error = lib.SSL_get_error(self._ssl, count)
            if error == lib.SSL_ERROR_WANT_READ:
                break
            try:
                self.connection._raise_ssl_error(self._ssl, count)
            except SSL.WantReadError:
                break
            except (SSL.ZeroReturnError, SSL.SysCallError) as exc:
                self.closed = True
                if chunks:
                    break
                raise TlsClosed() from exc
            except SSL.Error as exc:
                raise TlsFailure(openssl_reason(exc)) from exc
            raise TlsFailure(f"SSL_read failed with error {error}")
        return b"".join(chunks)

    def write_plaintext(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            piece = view[:CHUNK]
            sent = lib.SSL_write(self._ssl, ffi.from_buffer(piece), len(piece))
            if sent <= 0:
                try:
                    self.connection._raise_ssl_error(self._ssl, sent)
                except SSL.Error as exc:
                    raise TlsFailure(openssl_reason(exc)) from exc
                raise TlsFailure("SSL_write failed")
            view = view[sent:]

    # -- the relay's socket I/O around the memory BIOs -----------------------------------

    def receive(self) -> bytes | Signal:
        """One record's plaintext from what `fill` has put in, WANT_READ when a `fill` is
        needed, EOF at close_notify or the transport's end. Raises TlsFailure for a
        protocol error."""
        count = lib.SSL_read(self._ssl, _SCRATCH, CHUNK)
        if count > 0:
            return ffi.buffer(_SCRATCH, count)[:]
        error = lib.SSL_get_error(self._ssl, count)
        if error == lib.SSL_ERROR_WANT_READ:
            return Signal.WANT_READ
        try:
            self.connection._raise_ssl_error(self._ssl, count)
        except SSL.WantReadError:
            return Signal.WANT_READ
        except (SSL.ZeroReturnError, SSL.SysCallError):
            self.closed = True
            return Signal.EOF
        except SSL.Error as exc:
            raise TlsFailure(openssl_reason(exc)) from exc
        raise TlsFailure(f"SSL_read failed with error {error}")

    def fill(self, sock: NonBlockingSocket) -> int:
        """Read what the socket has into the incoming BIO: the byte count, 0 at the
        transport's end (OpenSSL is told), -1 when nothing is there yet."""
        try:
            count = sock.recv_into(_INCOMING)
        except (BlockingIOError, InterruptedError):
            return -1
        if count == 0:
            lib.BIO_set_mem_eof_return(self._into_ssl, 0)
            return 0
        lib.BIO_write(self._into_ssl, _INCOMING_PTR, count)
        self._burst += count
        return count

    def flush(self, sock: NonBlockingSocket) -> bool:
        """Send what OpenSSL has written to the outgoing BIO; True when all of it is out,
        False when the socket is full (call again once it is writable)."""
        pending = lib.BIO_get_mem_data(self._from_ssl, _DATA)
        if pending <= 0:
            return True
        try:
            sent = sock.send(ffi.buffer(_DATA[0], pending))
        except (BlockingIOError, InterruptedError):
            return False
        self._burst += sent
        while sent > 0:  # consume what went out (the BIO holds at least that much)
            taken = lib.BIO_read(self._from_ssl, _SCRATCH, min(sent, CHUNK))
            if taken <= 0:
                raise TlsFailure("outgoing TLS buffer shorter than what was sent")
            sent -= taken
        return lib.BIO_get_mem_data(self._from_ssl, _DATA) <= 0

    def trim(self, always: bool = False) -> bool:
        """Swap both BIOs for fresh ones if they are empty and a burst went through them
        since the last time (or `always`: right after the handshake, whose flights they
        still hold room for), releasing the buffers it grew. Not after every burst:
        regrowing costs reallocations on busy connections, so the relay calls this on
        quiet ones. SSL_set_bio frees the old pair."""
        if self._burst <= RENEW_AFTER and not always:
            return False
        if (lib.BIO_get_mem_data(self._into_ssl, _DATA) > 0
                or lib.BIO_get_mem_data(self._from_ssl, _DATA) > 0):
            return False
        incoming, outgoing = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
        if incoming == ffi.NULL or outgoing == ffi.NULL:
            for bio in (incoming, outgoing):
                if bio != ffi.NULL:
                    lib.BIO_free(bio)
            return False  # out of memory: keep the old ones, they work
        lib.SSL_set_bio(self._ssl, incoming, outgoing)
        self._into_ssl = self.connection._into_ssl = incoming
        self._from_ssl = self.connection._from_ssl = outgoing
        self._burst = 0
        return True

    def close(self) -> None:
        """Queue close_notify; harmless if the session is already broken."""
        try:
            self.connection.shutdown()
        except SSL.Error:
            pass

    # Facts for the flow log, valid after the handshake.
    @property
    def version(self) -> str:
        return self.connection.get_protocol_version_name()

    @property
    def cipher(self) -> str | None:
        return self.connection.get_cipher_name()

    @property
    def alpn(self) -> str | None:
        proto = self.connection.get_alpn_proto_negotiated()
        return proto.decode("ascii", "replace") if proto else None
