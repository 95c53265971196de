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
"""

from __future__ import annotations

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


class TlsEndpoint:
    """A pyOpenSSL connection in memory-BIO mode, on either side of the proxy."""

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.handshake_done = False
        self.closed = False
        # pyOpenSSL keeps the SSL object and both BIOs alive as long as `connection`.
        self._ssl = connection._ssl
        self._into_ssl = connection._into_ssl
        self._from_ssl = connection._from_ssl

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
