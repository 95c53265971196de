"""Incremental, pure parsing of a TLS ClientHello.

Theory of operation: before tlsgw decides anything about a flow it needs what the client
said in its first flight: the server name (SNI), ALPN, offered versions. Those arrive as
bytes in arbitrary TCP reads, and the ClientHello may itself be spread over several TLS
records (RFC 8446 section 5.1 lets a handshake message be fragmented). So the parser is fed
whatever arrived and answers either `None` (need more bytes) or a `ClientHello`; it never
reads a socket and never waits.

    bytes ──► [record layer] ──handshake fragments──► [handshake buffer] ──► ClientHello
                 │ type 22, version 3.x,                  │ type 1, length ≤ limit
                 │ 0 < length ≤ 2^14                      └─ body fully parsed, every
                 └─ anything else: ClientHelloError          length checked

Anything that is not a TLS handshake record carrying a ClientHello raises
`ClientHelloError` as soon as the evidence is in: plain text (`GET /`) fails on its first
byte, an SSLv2-format hello on its third. The caller decides what a failure means for the
flow (typically: relay untouched, or block, and log the reason given here).

Every byte fed is kept in order and returned as `ClientHello.raw`: after the decision the
proxy replays exactly those bytes to whichever TLS endpoint handles the flow, so nothing
the client sent (including bytes that followed the ClientHello in the same read) is lost.
"""

from __future__ import annotations

import struct

from dataclasses import dataclass, field

from gateway.config import names
from gateway.config.model import TlsVersion
from gateway.errors import TlsgwError

# Real ClientHellos are far smaller than the protocol allows (2^24 bytes): a browser's,
# with a post-quantum key share, ECH and padding, is under 4 KiB; a resumption with many
# PSK identities stays under 16 KiB. Go's crypto/tls refuses any handshake message over
# 64 KiB (`maxHandshake`); OpenSSL refuses ClientHellos over 131396 bytes. 64 KiB of wire
# bytes therefore keeps every client a real server would talk to, and bounds what one
# connection can make tlsgw buffer before a decision is taken.
CLIENTHELLO_MAX_BYTES = 65536
"""Most bytes (record headers included) read while waiting for the ClientHello to complete."""

RECORD_HEADER_LENGTH = 5
MAX_RECORD_PAYLOAD = 2**14
"""RFC 8446 5.1 / RFC 5246 6.2.1: a plaintext record fragment is at most 2^14 bytes."""

CONTENT_TYPE_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_SIGNATURE_ALGORITHMS = 13
EXT_HEARTBEAT = 15
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_EARLY_DATA = 42
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D

_CONTENT_TYPE_NAMES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data", 24: "heartbeat"}
_WIRE_VERSIONS = {
    0x0300: TlsVersion.SSL3,
    0x0301: TlsVersion.TLS1_0,
    0x0302: TlsVersion.TLS1_1,
    0x0303: TlsVersion.TLS1_2,
    0x0304: TlsVersion.TLS1_3,
}


class ClientHelloError(TlsgwError):
    """The client's first bytes are not a well-formed TLS ClientHello; the message says why."""


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa): noise a client adds on purpose."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the client offered, as sent (wire order, GREASE values included)."""

    record_version: int
    """Version field of the first record header (0x0301 for most clients, whatever they offer)."""
    legacy_version: int
    """ClientHello.legacy_version: the highest version of a pre-1.3 client; 0x0303 for TLS 1.3 clients."""
    random: bytes = field(repr=False)
    session_id: bytes = field(repr=False)
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[int, ...]
    """Extension types in the order sent."""
    sni: str | None
    """server_name host name, lowercase without a trailing dot; None if absent."""
    alpn: tuple[str, ...]
    """ALPN protocol names decoded as Latin-1, so `name.encode("latin-1")` gives the wire bytes
    back exactly (GREASE ALPN values are not ASCII)."""
    supported_versions: tuple[int, ...]
    """The supported_versions extension (RFC 8446 4.2.1) when present; otherwise
    `(legacy_version,)`, since a pre-1.3 client names only its highest version."""
    supported_groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    has_session_ticket: bool
    """The session_ticket extension is present (RFC 5077), possibly carrying a ticket."""
    raw: bytes = field(repr=False)
    """Every byte fed to the parser, in order, to replay to the TLS endpoint chosen for the flow."""
    key_share_groups: tuple[int, ...] = ()
    """The groups the key_share extension (RFC 8446 4.2.8) carries a share for, in order."""

    @property
    def offered_tls_versions(self) -> tuple[TlsVersion, ...]:
        """The versions tlsgw knows among those offered, lowest first (GREASE and unknown dropped)."""
        return tuple(sorted({_WIRE_VERSIONS[v] for v in self.supported_versions if v in _WIRE_VERSIONS}))

    @property
    def highest_version(self) -> int:
        """The highest non-GREASE wire version offered (0x0304 = TLS 1.3)."""
        return max((v for v in self.supported_versions if not is_grease(v)), default=self.legacy_version)

    @property
    def has_early_data(self) -> bool:
        """TLS 1.3 0-RTT data may follow the ClientHello (it cannot be inspected before the handshake)."""
        return EXT_EARLY_DATA in self.extensions

    @property
    def has_pre_shared_key(self) -> bool:
        return EXT_PRE_SHARED_KEY in self.extensions

    @property
    def has_encrypted_client_hello(self) -> bool:
        """With ECH the SNI seen here is only the public name of the client-facing server."""
        return EXT_ENCRYPTED_CLIENT_HELLO in self.extensions


class ClientHelloParser:
    """Feed the client's bytes as they arrive; one parser per connection.

    After `feed` has returned a ClientHello or raised, the parser is finished: feeding it
    again raises the same error, or RuntimeError after a success (a bug in the caller).
    """

    __slots__ = ("_buffer", "_offset", "_handshake", "_record_version", "_result", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        """Every byte fed so far."""
        self._offset = 0
        """Start of the first record not yet consumed."""
        self._handshake = bytearray()
        """Handshake-layer bytes reassembled from the records consumed so far."""
        self._record_version: int | None = None
        self._result: ClientHello | None = None
        self._error: ClientHelloError | None = None

    @property
    def raw(self) -> bytes:
        """Every byte fed so far (also available after an error, to relay or log)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> ClientHello | None:
        """Add bytes; return the ClientHello once complete, None while more bytes are needed.

        Raises:
            ClientHelloError: the bytes cannot be the start of a TLS ClientHello, a length
                is inconsistent, or `CLIENTHELLO_MAX_BYTES` were read without completing it.
        """
        if self._error is not None:
            raise self._error
        if self._result is not None:
            raise RuntimeError("the ClientHello is already complete; relay further bytes instead")
        self._buffer += data
        try:
            result = self._advance()
        except ClientHelloError as e:
            self._error = e
            raise
        self._result = result
        return result

    def _advance(self) -> ClientHello | None:
        buf = self._buffer
        while True:
            available = len(buf) - self._offset
            if available == 0:
                break
            self._check_record_start(available)
            if available < RECORD_HEADER_LENGTH:
                break
            start = self._offset
            length = int.from_bytes(buf[start + 3 : start + 5], "big")
            if length == 0:
                raise ClientHelloError("empty handshake record (TLS forbids zero-length handshake fragments)")
            if length > MAX_RECORD_PAYLOAD:
                raise ClientHelloError(f"record length {length} exceeds the TLS limit of {MAX_RECORD_PAYLOAD}")
            if available < RECORD_HEADER_LENGTH + length:
                break
            if self._record_version is None:
                self._record_version = int.from_bytes(buf[start + 1 : start + 3], "big")
            self._handshake += buf[start + RECORD_HEADER_LENGTH : start + RECORD_HEADER_LENGTH + length]
            self._offset = start + RECORD_HEADER_LENGTH + length
            message_length = self._check_handshake_header()
            if message_length is not None and len(self._handshake) >= 4 + message_length:
                if len(self._handshake) > 4 + message_length:
                    raise ClientHelloError(
                        f"{len(self._handshake) - 4 - message_length} bytes of handshake data follow the "
                        "ClientHello in its last record"
                    )
                return _parse_body(bytes(self._handshake[4:]), self._record_version, bytes(buf))
        if len(buf) > CLIENTHELLO_MAX_BYTES:
            raise ClientHelloError(f"no complete ClientHello in the first {CLIENTHELLO_MAX_BYTES} bytes")
        return None

    def _check_record_start(self, available: int) -> None:
        """Fail as early as the first bytes of a record allow."""
        buf, start = self._buffer, self._offset
        content_type = buf[start]
        if content_type != CONTENT_TYPE_HANDSHAKE:
            if start == 0 and content_type & 0x80 and available < 3:
                return  # maybe an SSLv2-format hello: its third byte tells, name it precisely
            raise ClientHelloError(self._not_handshake(content_type, available))
        if available >= 2 and buf[start + 1] != 3:
            raise ClientHelloError(f"record version major {buf[start + 1]} is not 3 (SSL 3.0 and TLS)")

    def _not_handshake(self, content_type: int, available: int) -> str:
        start = self._offset
        if start > 0:
            name = _CONTENT_TYPE_NAMES.get(content_type, f"unknown ({content_type})")
            return f"a record of type {name} arrived before the ClientHello was complete"
        if content_type & 0x80 and available >= 3 and self._buffer[2] == 1:
            return "SSLv2-format ClientHello: SSL 2.0 hellos are not supported"
        head = bytes(self._buffer[:16])
        if all(0x20 <= b < 0x7F or b in b"\r\n\t" for b in head):
            return f"not TLS: the client sent plain text {head!r}"
        if content_type in _CONTENT_TYPE_NAMES:
            return f"the first record is {_CONTENT_TYPE_NAMES[content_type]}, not a handshake"
        return f"not TLS: first byte {content_type:#04x} is not a TLS record type"

    def _check_handshake_header(self) -> int | None:
        """The ClientHello's declared body length, once its 4-byte header is in."""
        hs = self._handshake
        if len(hs) < 4:
            return None
        if hs[0] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(f"handshake message type {hs[0]} is not ClientHello ({HANDSHAKE_CLIENT_HELLO})")
        length = int.from_bytes(hs[1:4], "big")
        if 4 + length + RECORD_HEADER_LENGTH > CLIENTHELLO_MAX_BYTES:
            raise ClientHelloError(
                f"ClientHello declares {length} bytes; with its headers that exceeds the limit of "
                f"{CLIENTHELLO_MAX_BYTES} bytes"
            )
        return length


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse bytes that must hold a whole ClientHello (tests, captures).

    Raises:
        ClientHelloError: malformed, or incomplete.
    """
    hello = ClientHelloParser().feed(data)
    if hello is None:
        raise ClientHelloError(f"incomplete ClientHello ({len(data)} bytes)")
    return hello


# ---------------------------------------------------------------------------------------
# The handshake body (RFC 8446 4.1.2, RFC 5246 7.4.1.2).


class _Cursor:
    """Reads big-endian fields from a bytes slice; running short is a ClientHelloError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def take(self, n: int, what: str) -> bytes:
        if self._pos + n > len(self._data):
            raise ClientHelloError(f"truncated {what}: {n} bytes needed, {len(self._data) - self._pos} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str) -> _Cursor:
        """A length-prefixed vector, as a cursor over its contents. (Inline rather than
        through `uint`: the label of the length is only formatted for an error, and this
        runs some 25 times per ClientHello.)"""
        start = self._pos + length_size
        if start > len(self._data):
            raise ClientHelloError(f"truncated {what} length: {length_size} bytes needed, "
                                   f"{len(self._data) - self._pos} left")
        length = int.from_bytes(self._data[self._pos : start], "big")
        self._pos = start
        return _Cursor(self.take(length, what))

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def expect_end(self, what: str) -> None:
        if not self.at_end:
            raise ClientHelloError(f"unexpected bytes ({len(self._data) - self._pos}) after {what}")


def _uint16_list(vector: _Cursor, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    data = vector.rest()
    if len(data) % 2:
        raise ClientHelloError(f"{what} has an odd length ({len(data)} bytes)")
    if not data and not allow_empty:
        raise ClientHelloError(f"{what} is empty")
    return struct.unpack(f">{len(data) // 2}H", data)


def _parse_body(body: bytes, record_version: int | None, raw: bytes) -> ClientHello:
    c = _Cursor(body)
    legacy_version = c.uint(2, "client version")
    if legacy_version >> 8 != 3:
        raise ClientHelloError(f"client version {legacy_version:#06x} is not SSL 3.0 or TLS (3.x)")
    random = c.take(32, "random")
    session_id = c.vector(1, "session id").rest()
    if len(session_id) > 32:
        raise ClientHelloError(f"session id of {len(session_id)} bytes (at most 32)")
    cipher_suites = _uint16_list(c.vector(2, "cipher suites"), "cipher suites")
    compression_methods = tuple(c.vector(1, "compression methods").rest())
    if not compression_methods:
        raise ClientHelloError("compression methods is empty")

    extensions: list[int] = []
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    supported_versions: tuple[int, ...] = ()
    supported_groups: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    key_share_groups: tuple[int, ...] = ()
    if not c.at_end:  # SSL 3.0 and early TLS clients may send no extensions block at all
        block = c.vector(2, "extensions")
        c.expect_end("the extensions")
        while not block.at_end:
            ext_type = block.uint(2, "extension type")
            data = block.vector(2, f"extension {ext_type}")
            if ext_type in extensions:
                raise ClientHelloError(f"extension {ext_type} appears twice")
            extensions.append(ext_type)
            if ext_type == EXT_SERVER_NAME:
                sni = _server_name(data)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(data)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                supported_versions = _uint16_list(data.vector(1, "supported_versions"), "supported_versions")
                data.expect_end("supported_versions")
            elif ext_type == EXT_SUPPORTED_GROUPS:
                supported_groups = _uint16_list(data.vector(2, "supported_groups"), "supported_groups")
                data.expect_end("supported_groups")
            elif ext_type == EXT_SIGNATURE_ALGORITHMS:
                signature_algorithms = _uint16_list(data.vector(2, "signature_algorithms"), "signature_algorithms")
                data.expect_end("signature_algorithms")
            elif ext_type == EXT_KEY_SHARE:
                key_share_groups = _key_share_groups(data)

    return ClientHello(
        record_version=record_version if record_version is not None else legacy_version,
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=cipher_suites,
        compression_methods=compression_methods,
        extensions=tuple(extensions),
        sni=sni,
        alpn=alpn,
        supported_versions=supported_versions or (legacy_version,),
        supported_groups=supported_groups,
        signature_algorithms=signature_algorithms,
        has_session_ticket=EXT_SESSION_TICKET in extensions,
        raw=raw,
        key_share_groups=key_share_groups,
    )


def _key_share_groups(data: _Cursor) -> tuple[int, ...]:
    """RFC 8446 4.2.8: client_shares, a list of (group, key_exchange); may be empty (the
    client then waits for a HelloRetryRequest)."""
    shares = data.vector(2, "key_share list")
    data.expect_end("key_share")
    groups: list[int] = []
    while not shares.at_end:
        groups.append(shares.uint(2, "key_share group"))
        if not shares.vector(2, "key_share key_exchange").rest():
            raise ClientHelloError("key_share entry with an empty key")
    return tuple(groups)


def _server_name(data: _Cursor) -> str:
    """RFC 6066 section 3: a list of (type, name); only host_name (0) is defined."""
    names_list = data.vector(2, "server_name list")
    data.expect_end("server_name")
    if names_list.at_end:
        raise ClientHelloError("server_name extension with an empty list")
    host: str | None = None
    while not names_list.at_end:
        name_type = names_list.uint(1, "server_name type")
        name = names_list.vector(2, "server_name").rest()
        if name_type != 0:
            continue  # unknown name types are skipped, as RFC 6066 intends for extensibility
        if host is not None:
            raise ClientHelloError("server_name lists two host names")
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise ClientHelloError(f"server_name {name[:64]!r} is not ASCII") from None
        host = names.normalise_host_name(text)
        problem = names.host_name_problem(host)
        if problem:
            raise ClientHelloError(f"server_name: {problem}")
    if host is None:
        raise ClientHelloError("server_name extension without a host name")
    return host


def _alpn(data: _Cursor) -> tuple[str, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    protocols = data.vector(2, "ALPN list")
    data.expect_end("ALPN")
    if protocols.at_end:
        raise ClientHelloError("ALPN extension with an empty list")
    result: list[str] = []
    while not protocols.at_end:
        name = protocols.vector(1, "ALPN protocol name").rest()
        if not name:
            raise ClientHelloError("ALPN list holds an empty protocol name")
        result.append(name.decode("latin-1"))
    return tuple(result)
