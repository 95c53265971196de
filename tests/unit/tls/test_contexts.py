"""The contexts of issue 5 against real OpenSSL peers over memory BIOs (no sockets):
exact suite lists, encrypt-then-MAC, no heartbeat, security level only when asked,
parity variants, session resumption on both legs, and client-certificate detection."""

from __future__ import annotations

import datetime as dt
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.config.model import BulkCipher, CipherSuiteCriteria, KeyExchange, TlsVersion
from gateway.lab.demo_pki import issue_server_certificate
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind
from gateway.tls.ciphers import Signature, select_suites
from gateway.tls.clienthello import EXT_HEARTBEAT, ClientHello, parse_client_hello
from gateway.tls.contexts import (
    OP_NO_ENCRYPT_THEN_MAC,
    OpenSslCapabilities,
    TlsSettings,
    UpstreamContexts,
    build_client_context,
    build_upstream_context,
    client_proxy_contexts,
    new_client_connection,
    new_upstream_connection,
    server_requested_client_certificate,
    signature_of,
    tls_settings_problems,
)
from gateway.tls.versions import OfferRefusal, ParityFloor, UpstreamOffer
from tests.support.pki_factory import TestPki, rsa_key

V = TlsVersion
MODERN = (V.TLS1_2, V.TLS1_3)
WIDE = (V.TLS1_0, V.TLS1_1, V.TLS1_2, V.TLS1_3)
EXT_ENCRYPT_THEN_MAC = 22
EXT_EXTENDED_MASTER_SECRET = 23
NOW = dt.datetime.now(dt.timezone.utc)
PEM = serialization.Encoding.PEM


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca, ca_key = create_ca("Contexts Test CA", key_kind=KeyKind.EC_P256)
        self.leaf, self.key = issue_server_certificate("site.example", self.ca, ca_key, NOW)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca.public_bytes(PEM))
        self.cert_file = directory / "cert.pem"
        self.cert_file.write_bytes(self.leaf.public_bytes(PEM))
        self.key_file = directory / "key.pem"
        self.key_file.write_bytes(self.key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# -- peers ---------------------------------------------------------------------------


class StdlibPeer:
    """Python's ssl (the system OpenSSL) over memory BIOs, as client or server."""

    def __init__(self, context: ssl.SSLContext, server_side: bool, session: ssl.SSLSession | None = None) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=None if server_side else "site.example", session=session)
        self.error: ssl.SSLError | None = None
        self.done = False

    def step(self) -> None:
        if self.done or self.error:
            return
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.error = exc


class OurSide:
    """A pyOpenSSL connection (ours) in memory-BIO mode."""

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        self.error: SSL.Error | None = None
        self.done = False

    def step(self) -> None:
        if self.done or self.error:
            return
        try:
            self.connection.do_handshake()
            self.done = True
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self.error = exc

    def pending(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.connection.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)


def pump(ours: OurSide, peer: StdlibPeer) -> None:
    """Run both handshakes until neither makes progress (either may fail)."""
    for _ in range(20):
        ours.step()
        data = ours.pending()
        if data:
            peer.incoming.write(data)
        peer.step()
        back = peer.outgoing.read()
        if back:
            ours.connection.bio_write(back)
        if not data and not back and (ours.done or ours.error) and (peer.done or peer.error):
            return


def exchange_data(ours: OurSide, peer: StdlibPeer) -> bytes:
    """The peer writes, we read: TLS 1.3 tickets travel with it."""
    peer.obj.write(b"ping")
    ours.connection.bio_write(peer.outgoing.read())
    data = ours.connection.recv(100)
    peer.incoming.write(ours.pending())
    return data


def stdlib_client(pki: Pki, maximum: ssl.TLSVersion | None = None, minimum: ssl.TLSVersion | None = None,
                  ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def stdlib_server(pki: Pki, verify: ssl.VerifyMode = ssl.CERT_NONE,
                  maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.cert_file), str(pki.key_file))
    context.maximum_version = maximum
    context.verify_mode = verify
    if verify != ssl.CERT_NONE:
        # No CA names are sent this way (stdlib does not call SSL_CTX_set_client_CA_list),
        # which is the case get_client_ca_list() alone cannot detect.
        context.load_verify_locations(str(pki.ca_file))
    return context


def client_facing(pki: Pki, context: SSL.Context) -> OurSide:
    return OurSide(new_client_connection(context, pki.leaf, pki.key, None))


def client_hello_of(context: SSL.Context) -> tuple[ClientHello, bytes]:
    connection = new_upstream_connection(context, "site.example", ())
    with pytest.raises(SSL.WantReadError):
        connection.do_handshake()
    raw = connection.bio_read(65536)
    return parse_client_hello(raw), raw


# -- exact lists, options, heartbeat ----------------------------------------------------


def _cipher_names(context: SSL.Context) -> list[str]:
    return SSL.Connection(context, None).get_cipher_list()


@pytest.mark.parametrize("build", [
    lambda s: build_upstream_context(s),
    lambda s: build_client_context(s, (), b"test"),
], ids=["upstream", "client-facing"])
def test_openssl_gets_exactly_the_selected_suites(build: Callable[[TlsSettings], SSL.Context]) -> None:
    criteria = CipherSuiteCriteria((KeyExchange.ECDHE_RSA,), (BulkCipher.AES256_GCM, BulkCipher.AES128_CBC),
                                   (tuple(CipherSuiteCriteria().mac)))
    settings = TlsSettings(MODERN, select_suites(criteria, MODERN))
    assert _cipher_names(build(settings)) == [
        "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA",
    ]


def test_default_settings_give_openssl_the_default_selection() -> None:
    settings = TlsSettings.for_protocols(MODERN)
    expected = [s.openssl for s in settings.suites.tls13 + settings.suites.tls12]
    assert _cipher_names(build_upstream_context(settings)) == expected


@pytest.mark.parametrize(("encrypt_then_mac", "present"), [(False, False), (True, True)], ids=["off", "on"])
def test_encrypt_then_mac_follows_the_setting(encrypt_then_mac: bool, present: bool) -> None:
    settings = TlsSettings(MODERN, TlsSettings.for_protocols(MODERN).suites, encrypt_then_mac)
    hello, _ = client_hello_of(build_upstream_context(settings))
    assert (EXT_ENCRYPT_THEN_MAC in hello.extensions) is present
    assert OP_NO_ENCRYPT_THEN_MAC == 1 << 19


def test_our_clienthello_carries_no_heartbeat_extension() -> None:
    hello, _ = client_hello_of(build_upstream_context(TlsSettings.for_protocols(WIDE)))
    assert EXT_HEARTBEAT not in hello.extensions
    assert EXT_EXTENDED_MASTER_SECRET in hello.extensions  # the parse saw the extensions at all


def _with_extension(raw: bytes, ext_type: int, data: bytes) -> bytes:
    """`raw` (one record holding one ClientHello) with an extension appended, lengths fixed."""
    body = bytearray(raw[9:])  # after record header (5) and handshake header (4)
    offset = 2 + 32
    offset += 1 + body[offset]  # session id
    offset += 2 + struct.unpack_from("!H", body, offset)[0]  # cipher suites
    offset += 1 + body[offset]  # compression methods
    extensions_length = struct.unpack_from("!H", body, offset)[0]
    extension = struct.pack("!HH", ext_type, len(data)) + data
    struct.pack_into("!H", body, offset, extensions_length + len(extension))
    body += extension
    handshake = bytes([1]) + len(body).to_bytes(3, "big") + bytes(body)
    return raw[:3] + struct.pack("!H", len(handshake)) + handshake


def _server_hello_extensions(data: bytes) -> list[int]:
    assert data[0] == 22 and data[5] == 2, "expected a handshake record starting with ServerHello"
    body = data[9:]
    offset = 2 + 32
    offset += 1 + body[offset]
    offset += 2 + 1
    end = offset + 2 + struct.unpack_from("!H", body, offset)[0]
    offset += 2
    types = []
    while offset < end:
        ext_type, length = struct.unpack_from("!HH", body, offset)
        types.append(ext_type)
        offset += 4 + length
    return types


def test_our_serverhello_carries_no_heartbeat_even_when_the_client_offers_it(pki: Pki) -> None:
    """Heartbeat (RFC 6520) is never negotiated: OpenSSL 3 has no heartbeat code at all.
    TLS 1.2 so that the ServerHello extensions are in clear."""
    _, raw = client_hello_of(build_upstream_context(TlsSettings.for_protocols((V.TLS1_2,))))
    offered = _with_extension(raw, EXT_HEARTBEAT, b"\x01")  # peer_allowed_to_send
    assert EXT_HEARTBEAT in parse_client_hello(offered).extensions
    ours = client_facing(pki, build_client_context(TlsSettings.for_protocols((V.TLS1_2,)), (pki.ca,), b"t"))
    ours.connection.bio_write(offered)
    ours.step()
    assert ours.error is None
    extensions = _server_hello_extensions(ours.pending())
    assert EXT_HEARTBEAT not in extensions
    assert 0xFF01 in extensions  # renegotiation_info: the parse found the extensions


# -- security level ---------------------------------------------------------------------


TLS10_CLIENT = {"minimum": ssl.TLSVersion.TLSv1, "maximum": ssl.TLSVersion.TLSv1, "ciphers": "ALL:@SECLEVEL=0"}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("protocols", "accepted"), [(WIDE, True), (MODERN, False)],
                         ids=["tls10-enabled", "defaults"])
def test_tls10_client_is_served_only_when_enabled(pki: Pki, protocols: tuple[TlsVersion, ...], accepted: bool) -> None:
    peer = StdlibPeer(stdlib_client(pki, **TLS10_CLIENT), server_side=False)  # type: ignore[arg-type]
    ours = client_facing(pki, build_client_context(TlsSettings.for_protocols(protocols), (pki.ca,), b"t"))
    pump(ours, peer)
    assert ours.done is accepted
    if accepted:
        assert ours.connection.get_protocol_version_name() == "TLSv1"


# -- parity variants ------------------------------------------------------------------


def test_client_side_is_tls13_only_after_a_tls13_upstream(pki: Pki) -> None:
    contexts = client_proxy_contexts(TlsSettings.for_protocols(MODERN), (pki.ca,), b"t")
    context = contexts.for_upstream("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    refused = StdlibPeer(stdlib_client(pki, maximum=ssl.TLSVersion.TLSv1_2), server_side=False)
    ours = client_facing(pki, context)
    pump(ours, refused)
    assert ours.error is not None and not ours.done
    modern = StdlibPeer(stdlib_client(pki), server_side=False)
    ours = client_facing(pki, context)
    pump(ours, modern)
    assert ours.done and ours.connection.get_protocol_version_name() == "TLSv1.3"


def test_client_side_prefers_tls13_after_a_tls12_upstream(pki: Pki) -> None:
    contexts = client_proxy_contexts(TlsSettings.for_protocols(MODERN), (pki.ca,), b"t")
    context = contexts.for_upstream("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    ours = client_facing(pki, context)
    pump(ours, StdlibPeer(stdlib_client(pki), server_side=False))
    assert ours.done and ours.connection.get_protocol_version_name() == "TLSv1.3"


def test_cbc_only_client_refused_after_an_aead_upstream(pki: Pki) -> None:
    contexts = client_proxy_contexts(TlsSettings.for_protocols(MODERN), (pki.ca,), b"t")
    cbc_client = {"maximum": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-AES128-SHA"}
    after_aead = client_facing(pki, contexts.for_upstream("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"))
    pump(after_aead, StdlibPeer(stdlib_client(pki, **cbc_client), server_side=False))  # type: ignore[arg-type]
    assert after_aead.error is not None
    after_cbc = client_facing(pki, contexts.for_upstream("TLSv1.2", "ECDHE-RSA-AES128-SHA"))
    pump(after_cbc, StdlibPeer(stdlib_client(pki, **cbc_client), server_side=False))  # type: ignore[arg-type]
    assert after_cbc.done and after_cbc.connection.get_cipher_name() == "ECDHE-ECDSA-AES128-SHA"


def test_variants_are_built_once_per_floor(pki: Pki) -> None:
    contexts = client_proxy_contexts(TlsSettings.for_protocols(MODERN), (pki.ca,), b"t")
    first = contexts.for_upstream("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    assert contexts.for_upstream("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384") is first
    assert contexts.for_floor(ParityFloor(V.TLS1_3, True, True)) is not first


# -- session resumption ------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def test_client_facing_side_resumes_sessions(pki: Pki, version: ssl.TLSVersion) -> None:
    contexts = client_proxy_contexts(TlsSettings.for_protocols(MODERN), (pki.ca,), b"t")
    client_context = stdlib_client(pki, maximum=version)
    first_peer = StdlibPeer(client_context, server_side=False)
    first = client_facing(pki, contexts.base)
    pump(first, first_peer)
    assert first.done
    first.connection.send(b"pong")  # the TLS 1.3 tickets went out with the handshake
    first_peer.incoming.write(first.pending())
    assert first_peer.obj.read(4) == b"pong"
    session = first_peer.obj.session
    second_peer = StdlibPeer(client_context, server_side=False, session=session)
    second = client_facing(pki, contexts.base)
    pump(second, second_peer)
    assert second.done and second_peer.obj.session_reused


def _site_offer(contexts: UpstreamContexts, tls13: bool) -> UpstreamOffer:
    hello, _ = client_hello_of(build_upstream_context(
        TlsSettings.for_protocols((V.TLS1_2, V.TLS1_3) if tls13 else (V.TLS1_2,))))
    offer = contexts.offer_for(hello, Signature.ECDSA)
    assert isinstance(offer, UpstreamOffer)
    return offer


@pytest.mark.parametrize("tls13", [False, True], ids=["tls12", "tls13"])
def test_upstream_side_resumes_sessions_per_site(pki: Pki, tls13: bool) -> None:
    contexts = UpstreamContexts(TlsSettings.for_protocols(MODERN))
    offer = _site_offer(contexts, tls13)
    server = stdlib_server(pki)
    site = ("192.0.2.10", 443, "site.example")
    first = OurSide(contexts.new_connection(offer, "site.example", (), site, now=0.0))
    first_peer = StdlibPeer(server, server_side=True)
    pump(first, first_peer)
    assert first.done and exchange_data(first, first_peer) == b"ping"
    contexts.remember_session(offer, site, first.connection, now=1.0)

    second = OurSide(contexts.new_connection(offer, "site.example", (), site, now=2.0))
    second_peer = StdlibPeer(server, server_side=True)
    pump(second, second_peer)
    assert second.done and second_peer.obj.session_reused
    assert second.connection.get_peer_cert_chain()  # still there to validate again

    other_site = OurSide(contexts.new_connection(offer, "other.example", (), ("192.0.2.10", 443, "other.example"),
                                                 now=2.0))
    other_peer = StdlibPeer(server, server_side=True)
    pump(other_site, other_peer)
    assert other_site.done and not other_peer.obj.session_reused


def test_evicted_upstream_variant_drops_its_sessions_without_error(pki: Pki) -> None:
    contexts = UpstreamContexts(TlsSettings.for_protocols(MODERN), max_variants=1)
    offer12, offer13 = _site_offer(contexts, False), _site_offer(contexts, True)
    assert offer12 != offer13
    site = ("192.0.2.10", 443, "site.example")
    first = OurSide(contexts.new_connection(offer12, "site.example", (), site, now=0.0))
    first_peer = StdlibPeer(stdlib_server(pki), server_side=True)
    pump(first, first_peer)
    contexts.remember_session(offer12, site, first.connection, now=0.0)
    old = contexts.context(offer12)
    contexts.context(offer13)  # evicts offer12's context
    assert contexts.context(offer12) is not old
    fresh = contexts.new_connection(offer12, "site.example", (), site, now=1.0)  # no ValueError
    assert fresh.get_session() is None or fresh.get_context() is contexts.context(offer12)


def test_offer_refusal_reaches_the_caller() -> None:
    contexts = UpstreamContexts(TlsSettings.for_protocols(MODERN))
    hello, _ = client_hello_of(build_upstream_context(TlsSettings.for_protocols((V.TLS1_3,))))
    only13 = TlsSettings.for_protocols((V.TLS1_2,))
    assert UpstreamContexts(only13).offer_for(hello, Signature.ECDSA) is OfferRefusal.NO_COMMON_VERSION
    assert isinstance(contexts.offer_for(hello, Signature.ECDSA), UpstreamOffer)


# -- client certificate requests -----------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
@pytest.mark.parametrize(("verify", "requested"), [
    (ssl.CERT_NONE, False), (ssl.CERT_OPTIONAL, True), (ssl.CERT_REQUIRED, True),
], ids=["not-asked", "optional", "required"])
def test_client_certificate_request_is_detected(pki: Pki, version: ssl.TLSVersion, verify: ssl.VerifyMode,
                                                requested: bool) -> None:
    ours = OurSide(new_upstream_connection(build_upstream_context(TlsSettings.for_protocols(MODERN)),
                                           "site.example", ()))
    pump(ours, StdlibPeer(stdlib_server(pki, verify, version), server_side=True))
    assert server_requested_client_certificate(ours.connection) is requested
    if verify == ssl.CERT_REQUIRED and version == ssl.TLSVersion.TLSv1_2:
        assert ours.error is not None  # TLS 1.2: the server aborts the handshake ...
    if verify == ssl.CERT_REQUIRED and version == ssl.TLSVersion.TLSv1_3:
        assert ours.done  # ... TLS 1.3: ours completes; the refusal comes on the first read


def test_connection_without_our_state_falls_back_to_the_ca_list() -> None:
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    assert server_requested_client_certificate(connection) is False


# -- what OpenSSL and the certificates can do ------------------------------------------------


def _capabilities(**overrides: object) -> OpenSslCapabilities:
    everything = {s.openssl for s in select_suites(
        CipherSuiteCriteria(tuple(KeyExchange), tuple(BulkCipher)), tuple(V)).suites}
    values: dict[str, object] = {"version": "OpenSSL 9.9", "suites": frozenset(everything),
                                 "protocols": frozenset(V)}
    values.update(overrides)
    return OpenSslCapabilities(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("criteria", "protocols", "capabilities", "facing", "fields"), [
    (CipherSuiteCriteria(), MODERN, _capabilities(), [("forged certificates", Signature.ECDSA)], []),
    (CipherSuiteCriteria(key_exchange=(KeyExchange.RSA, KeyExchange.ECDHE_RSA)), (V.SSL3, V.TLS1_0, V.TLS1_1, V.TLS1_2),
     _capabilities(protocols=frozenset({V.TLS1_0, V.TLS1_1, V.TLS1_2, V.TLS1_3})), [], ["protocols"]),
    (CipherSuiteCriteria(bulk=(BulkCipher.AES128_GCM, BulkCipher.TRIPLE_DES)), MODERN,
     _capabilities(suites=frozenset({"TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                                     "ECDHE-ECDSA-AES128-GCM-SHA256"})), [], ["cipher_suites.bulk"]),
    (CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA,)), MODERN, _capabilities(),
     [("forged certificates", Signature.ECDSA)], ["cipher_suites.key_exchange"]),
    (CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA,)), (V.TLS1_3,), _capabilities(),
     [("forged certificates", Signature.ECDSA)], []),
    (CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_ECDSA,)), MODERN, _capabilities(),
     [("certificate 'web1'", Signature.RSA)], ["cipher_suites.key_exchange"]),
], ids=["defaults", "ssl3-missing", "3des-missing", "forged-ecdsa-key-without-ecdhe-ecdsa",
        "tls13-only-needs-no-key-match", "rsa-certificate-without-rsa-suites"])
def test_settings_problems_name_the_field(criteria: CipherSuiteCriteria, protocols: tuple[TlsVersion, ...],
                                          capabilities: OpenSslCapabilities,
                                          facing: list[tuple[str, Signature]], fields: list[str]) -> None:
    settings = TlsSettings(protocols, select_suites(criteria, protocols))
    assert [field for field, _ in tls_settings_problems(criteria, settings, capabilities, facing)] == fields


def test_certificate_key_type_decides_the_tls12_suites_it_serves(pki: Pki) -> None:
    assert signature_of(pki.leaf) is Signature.ECDSA
    rsa_leaf = TestPki.create(leaf_key=rsa_key()).leaf(["rsa.example.test"]).cert
    assert signature_of(rsa_leaf) is Signature.RSA
