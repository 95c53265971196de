from __future__ import annotations

import re
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.model import TlsVersion
from gateway.errors import TlsgwError
from gateway.tls.clienthello import (
    CLIENTHELLO_MAX_BYTES,
    EXT_ALPN,
    EXT_KEY_SHARE,
    EXT_SERVER_NAME,
    EXT_SUPPORTED_VERSIONS,
    ClientHello,
    ClientHelloError,
    ClientHelloParser,
    is_grease,
    parse_client_hello,
)

# -- helpers ---------------------------------------------------------------------------


def real_hello(
    maximum: ssl.TLSVersion | None = None,
    server_hostname: str | None = "Www.Example.COM",
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
) -> bytes:
    """The first flight of Python's own TLS client, captured through memory BIOs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_hostname is None:
        context.check_hostname = False
    if maximum is not None:
        context.maximum_version = maximum
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def record(payload: bytes, content_type: int = 22, version: int = 0x0301) -> bytes:
    return struct.pack("!BHH", content_type, version, len(payload)) + payload


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def hello_body(extensions: list[tuple[int, bytes]] | None = None, *, version: int = 0x0303) -> bytes:
    body = version.to_bytes(2, "big") + bytes(32) + vec(1, b"") + vec(2, b"\x13\x01\x00\xff") + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, b"".join(t.to_bytes(2, "big") + vec(2, d) for t, d in extensions))
    return body


def sni_ext(*names: tuple[int, bytes]) -> tuple[int, bytes]:
    return EXT_SERVER_NAME, vec(2, b"".join(bytes([t]) + vec(2, n) for t, n in names))


def built(extensions: list[tuple[int, bytes]] | None = None) -> bytes:
    return record(handshake(hello_body(extensions)))


def feed_in_chunks(data: bytes, size: int) -> ClientHello | None:
    parser = ClientHelloParser()
    result = None
    for i in range(0, len(data), size):
        assert result is None, "the parser answered before the last chunk"
        result = parser.feed(data[i : i + size])
    return result


TLS13 = real_hello()
TLS12 = real_hello(maximum=ssl.TLSVersion.TLSv1_2)


# -- real ClientHellos -------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [len(TLS13), 1, 7], ids=["whole", "1-byte", "7-byte"])
def test_tls13_hello_is_parsed_from_any_chunking(chunk: int) -> None:
    hello = feed_in_chunks(TLS13, chunk)
    assert hello is not None
    assert hello.sni == "www.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert 0x0304 in hello.supported_versions and 0x0303 in hello.supported_versions
    assert hello.offered_tls_versions[-1] is TlsVersion.TLS1_3
    assert hello.highest_version == 0x0304
    assert 0x1301 in hello.cipher_suites
    assert hello.legacy_version == 0x0303 and hello.record_version >> 8 == 3
    assert EXT_SUPPORTED_VERSIONS in hello.extensions and EXT_SERVER_NAME in hello.extensions
    assert hello.supported_groups and hello.signature_algorithms
    assert hello.key_share_groups and set(hello.key_share_groups) <= set(hello.supported_groups)
    assert hello.raw == TLS13


@pytest.mark.parametrize("chunk", [len(TLS12), 1], ids=["whole", "1-byte"])
def test_tls12_max_hello_derives_versions_from_legacy_version(chunk: int) -> None:
    hello = feed_in_chunks(TLS12, chunk)
    assert hello is not None
    assert EXT_SUPPORTED_VERSIONS not in hello.extensions
    assert hello.supported_versions == (0x0303,)
    assert hello.offered_tls_versions == (TlsVersion.TLS1_2,)
    assert not any(0x1301 <= c <= 0x1305 for c in hello.cipher_suites)
    assert hello.sni == "www.example.com"
    assert hello.raw == TLS12


def test_hello_without_sni_or_alpn() -> None:
    hello = parse_client_hello(real_hello(server_hostname=None, alpn=()))
    assert hello.sni is None
    assert hello.alpn == ()
    assert EXT_ALPN not in hello.extensions


def test_session_ticket_extension_is_reported() -> None:
    assert parse_client_hello(TLS13).has_session_ticket is True
    assert parse_client_hello(built([sni_ext((0, b"a.example"))])).has_session_ticket is False


@pytest.mark.parametrize("split", [1, 2, 4, 40, 200], ids=lambda s: f"at-{s}")
def test_hello_fragmented_over_two_records(split: int) -> None:
    message = TLS13[5:]
    assert len(message) == int.from_bytes(TLS13[3:5], "big")  # one record, as captured
    data = record(message[:split]) + record(message[split:], version=0x0303)
    whole = parse_client_hello(data)
    bytewise = feed_in_chunks(data, 1)
    assert whole == bytewise
    assert whole.sni == "www.example.com"
    assert whole.record_version == 0x0301
    assert whole.cipher_suites == parse_client_hello(TLS13).cipher_suites
    assert whole.raw == data


def test_hello_fragmented_over_many_records() -> None:
    message = TLS12[5:]
    data = b"".join(record(message[i : i + 3]) for i in range(0, len(message), 3))
    assert parse_client_hello(data).alpn == ("h2", "http/1.1")


def test_bytes_after_the_hello_are_kept_in_raw() -> None:
    trailing = record(b"\x01", content_type=20) + record(b"early data", content_type=23)
    parser = ClientHelloParser()
    hello = parser.feed(TLS13 + trailing)
    assert hello is not None and hello.raw == TLS13 + trailing


def test_hand_built_hello_without_extensions_block() -> None:
    hello = parse_client_hello(record(handshake(hello_body(None, version=0x0301))))
    assert hello.extensions == () and hello.sni is None
    assert hello.supported_versions == (0x0301,)


def test_sni_is_lowercased_and_loses_its_trailing_dot() -> None:
    assert parse_client_hello(built([sni_ext((0, b"Mail.Example.ORG."))])).sni == "mail.example.org"


def test_unknown_server_name_types_are_skipped() -> None:
    assert parse_client_hello(built([sni_ext((7, b"\xff\x00"), (0, b"a.example"))])).sni == "a.example"


def test_alpn_keeps_non_ascii_names_losslessly() -> None:
    alpn = (EXT_ALPN, vec(2, vec(1, b"\x0a\x0a") + vec(1, b"h2")))
    hello = parse_client_hello(built([alpn]))
    assert hello.alpn == ("\n\n", "h2")
    assert hello.alpn[0].encode("latin-1") == b"\x0a\x0a"


def test_grease_is_recognised_and_ignored_for_highest_version() -> None:
    versions = (EXT_SUPPORTED_VERSIONS, vec(1, b"\x7a\x7a\x03\x04\x03\x03"))
    hello = parse_client_hello(built([versions]))
    assert hello.supported_versions == (0x7A7A, 0x0304, 0x0303)
    assert hello.highest_version == 0x0304
    assert hello.offered_tls_versions == (TlsVersion.TLS1_2, TlsVersion.TLS1_3)
    assert is_grease(0xFAFA) and not is_grease(0x0A1A) and not is_grease(0x0304)


# -- garbage -------------------------------------------------------------------------------


def _corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


# Offsets into a hand-built hello: 5 record header, 4 handshake header, then the body:
# 2 version, 32 random, 1+0 session id, 2+4 cipher suites, 1+1 compression, 2 extensions.
_BODY = 9
_CIPHERS_LENGTH = _BODY + 2 + 32 + 1
_EXTENSIONS_LENGTH = _CIPHERS_LENGTH + 2 + 4 + 2

GARBAGE: dict[str, tuple[bytes, str]] = {
    # id: (bytes, a fragment of the error that proves it failed for the intended reason)
    "plain-http": (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "plain text"),
    "plain-http-first-byte": (b"G", "plain text"),
    "ssh-banner": (b"SSH-2.0-OpenSSH_9.2\r\n", "plain text"),
    "sslv2-hello": (b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes(40), "SSLv2"),
    "alert-record": (record(b"\x02\x28", content_type=21), "first record is alert"),
    "application-data": (record(b"hello", content_type=23), "first record is application_data"),
    "unknown-type": (b"\x99\x03\x03\x00\x05hello", "first byte 0x99"),
    "record-version-4": (b"\x16\x04\x01\x00\x05", "major 4"),
    "record-version-2": (b"\x16\x02", "major 2"),
    "zero-length-record": (record(b""), "empty handshake record"),
    "record-too-long": (b"\x16\x03\x01\x40\x01", "record length 16385"),
    "server-hello": (record(handshake(hello_body([]), msg_type=2)), "type 2 is not ClientHello"),
    "declared-length-over-limit": (record(b"\x01\x01\x00\x00"), "declares 65536"),
    "client-version-2": (record(handshake(hello_body([], version=0x0200))), "client version 0x0200"),
    "cipher-length-odd": (_corrupt(built([]), _CIPHERS_LENGTH, b"\x00\x03"), "cipher suites has an odd length"),
    "cipher-length-past-end": (_corrupt(built([]), _CIPHERS_LENGTH, b"\xff\xf0"), "truncated cipher suites"),
    "cipher-suites-empty": (
        record(handshake(hello_body([]).replace(vec(2, b"\x13\x01\x00\xff"), vec(2, b"")))),
        "cipher suites is empty",
    ),
    "extensions-truncated": (
        _corrupt(built([sni_ext((0, b"a.example"))]), _EXTENSIONS_LENGTH, b"\x00\x30"),
        "truncated extensions",
    ),
    "extensions-short": (
        _corrupt(built([sni_ext((0, b"a.example"))]), _EXTENSIONS_LENGTH, b"\x00\x02"),
        "after the extensions",
    ),
    "extension-data-truncated": (built([(EXT_SUPPORTED_VERSIONS, b"\x04\x03\x04")]), "truncated supported_versions"),
    "duplicate-extension": (
        built([sni_ext((0, b"a.example")), sni_ext((0, b"b.example"))]),
        "extension 0 appears twice",
    ),
    "sni-empty-list": (built([(EXT_SERVER_NAME, vec(2, b""))]), "server_name extension with an empty list"),
    "sni-empty-name": (built([sni_ext((0, b""))]), "server_name: a host name must not be empty"),
    "sni-not-ascii": (built([sni_ext((0, "bücher.example".encode()))]), "not ASCII"),
    "sni-bad-label": (built([sni_ext((0, b"-bad.example"))]), "invalid label '-bad'"),
    "sni-space": (built([sni_ext((0, b"a b.example"))]), "invalid label 'a b'"),
    "sni-two-host-names": (built([sni_ext((0, b"a.example"), (0, b"b.example"))]), "two host names"),
    "sni-name-past-list": (built([(EXT_SERVER_NAME, vec(2, b"\x00\x00\x20a.example"))]), "truncated server_name"),
    "sni-trailing-bytes": (built([(EXT_SERVER_NAME, sni_ext((0, b"a.example"))[1] + b"\x00")]), "after server_name"),
    "alpn-empty-list": (built([(EXT_ALPN, vec(2, b""))]), "ALPN extension with an empty list"),
    "alpn-empty-name": (built([(EXT_ALPN, vec(2, vec(1, b"")))]), "empty protocol name"),
    "supported-versions-odd": (
        built([(EXT_SUPPORTED_VERSIONS, vec(1, b"\x03\x04\x03"))]),
        "supported_versions has an odd length",
    ),
    "bytes-after-extensions": (record(handshake(hello_body([]) + b"\x00")), "after the extensions"),
    "handshake-after-hello-in-record": (
        record(handshake(hello_body([])) + b"\x14\x00\x00\x00"),
        "follow the ClientHello",
    ),
    "alert-between-fragments": (
        record(handshake(hello_body([]))[:10]) + record(b"\x02\x28", content_type=21),
        "type alert arrived before",
    ),
}


@pytest.mark.parametrize(("data", "reason"), list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_raises_clienthello_error(data: bytes, reason: str) -> None:
    with pytest.raises(ClientHelloError, match=re.escape(reason)):
        ClientHelloParser().feed(data)


@pytest.mark.parametrize(("data", "reason"), list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_raises_when_fed_bytewise(data: bytes, reason: str) -> None:
    parser = ClientHelloParser()
    with pytest.raises(ClientHelloError, match=re.escape(reason)):
        for i in range(len(data)):
            parser.feed(data[i : i + 1])


def test_plain_text_is_named_in_the_error() -> None:
    with pytest.raises(ClientHelloError, match="plain text b'GET / HTTP/1.1"):
        ClientHelloParser().feed(b"GET / HTTP/1.1\r\n")


def test_sslv2_hello_is_named_in_the_error() -> None:
    parser = ClientHelloParser()
    assert parser.feed(b"\x80") is None  # one byte cannot tell SSLv2 from garbage yet
    assert parser.feed(b"\x2e") is None
    with pytest.raises(ClientHelloError, match="SSLv2"):
        parser.feed(b"\x01")


def test_error_is_a_tlsgw_error() -> None:
    assert issubclass(ClientHelloError, TlsgwError)


def test_hello_never_completing_within_the_limit_is_refused() -> None:
    # A message declaring 60000 bytes, sent one byte per record: the record headers
    # push the wire bytes over the limit before the message can complete.
    message = handshake(bytes(60000))
    parser = ClientHelloParser()
    with pytest.raises(ClientHelloError, match=str(CLIENTHELLO_MAX_BYTES)):
        for i in range(len(message)):
            parser.feed(record(message[i : i + 1]))
    assert len(parser.raw) > CLIENTHELLO_MAX_BYTES


def test_partial_hello_asks_for_more() -> None:
    parser = ClientHelloParser()
    assert parser.feed(TLS13[:-1]) is None
    assert parser.raw == TLS13[:-1]
    with pytest.raises(ClientHelloError, match="incomplete"):
        parse_client_hello(TLS13[:-1])


def test_feed_after_error_raises_again() -> None:
    parser = ClientHelloParser()
    with pytest.raises(ClientHelloError):
        parser.feed(b"GET")
    with pytest.raises(ClientHelloError):
        parser.feed(TLS13)


def test_feed_after_completion_is_a_caller_bug() -> None:
    parser = ClientHelloParser()
    assert parser.feed(TLS13) is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"\x17")


# -- fuzzing --------------------------------------------------------------------------------


def _feed_all(chunks: list[bytes]) -> ClientHello | None:
    parser = ClientHelloParser()
    result = None
    for chunk in chunks:
        result = parser.feed(chunk)
        if result is not None:
            break
    return result


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_give_a_result_none_or_clienthello_error(chunks: list[bytes]) -> None:
    try:
        result = _feed_all(chunks)
    except ClientHelloError:
        return
    assert result is None or isinstance(result, ClientHello)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([TLS13, TLS12]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=255)), max_size=4),
    st.integers(min_value=1, max_value=64),
)
def test_mutated_real_hello_gives_a_result_none_or_clienthello_error(
    data: bytes, flips: list[tuple[int, int]], chunk: int
) -> None:
    mutated = bytearray(data)
    for offset, value in flips:
        if offset < len(mutated):
            mutated[offset] = value
    chunks = [bytes(mutated[i : i + chunk]) for i in range(0, len(mutated), chunk)]
    try:
        result = _feed_all(chunks)
    except ClientHelloError:
        return
    assert result is None or isinstance(result, ClientHello)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([TLS13, TLS12]), st.lists(st.integers(min_value=1, max_value=600), max_size=6))
def test_any_split_of_a_real_hello_parses_the_same(data: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    assert _feed_all(chunks) == parse_client_hello(data)


# -- key_share ---------------------------------------------------------------------------


def test_key_share_groups_in_order() -> None:
    shares = vec(2, b"\x11\xec" + vec(2, b"k" * 32) + b"\x00\x1d" + vec(2, b"x" * 32))
    hello = parse_client_hello(built([(EXT_KEY_SHARE, shares)]))
    assert hello.key_share_groups == (0x11EC, 0x001D)


def test_empty_key_share_list_is_allowed() -> None:
    assert parse_client_hello(built([(EXT_KEY_SHARE, vec(2, b""))])).key_share_groups == ()


@pytest.mark.parametrize("data", [vec(2, b"\x00\x1d" + vec(2, b"")), vec(2, b"\x00\x1d\x00"), vec(2, b"") + b"x"],
                         ids=["empty key", "truncated", "trailing bytes"])
def test_malformed_key_share_is_refused(data: bytes) -> None:
    with pytest.raises(ClientHelloError, match="key_share"):
        parse_client_hello(built([(EXT_KEY_SHARE, data)]))
