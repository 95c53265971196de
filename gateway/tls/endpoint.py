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
"""

from __future__ import annotations

from OpenSSL import SSL

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


class TlsEndpoint:
    """A pyOpenSSL connection in memory-BIO mode, on either side of the proxy."""

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.handshake_done = False
        self.closed = False

    def feed(self, data: bytes) -> None:
        if data:
            self.connection.bio_write(data)
        else:
            # Transport EOF: let OpenSSL report an unexpected EOF instead of waiting forever.
            self.connection.bio_shutdown()

    def data_to_send(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.connection.bio_read(CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
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
        """All plaintext available now (possibly b''). Raises TlsClosed at close_notify."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.connection.recv(CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                if chunks:
                    break
                raise TlsClosed() from None
            except SSL.SysCallError as exc:
                self.closed = True
                if chunks:
                    break
                raise TlsClosed() from exc
            except SSL.Error as exc:
                raise TlsFailure(openssl_reason(exc)) from exc
            chunks.append(chunk)
        return b"".join(chunks)

    def write_plaintext(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.connection.send(view[:CHUNK])
            except SSL.Error as exc:
                raise TlsFailure(openssl_reason(exc)) from exc
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
