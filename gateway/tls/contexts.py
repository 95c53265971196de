"""pyOpenSSL contexts for the two legs of a decrypted flow, built from one proxy's TLS
settings (protocols, cipher suites by criteria, encrypt-then-MAC).

Upstream: OpenSSL's own verification is switched off (VERIFY_NONE) *on purpose*: the
chain the server sends is validated by `gateway.pki.verify` with browser rules before a
single byte of client data is forwarded, because the proxy must know *why* a certificate
is bad (expired versus untrusted) to apply the client proxy's block settings, and OpenSSL
stops at the first error. Nothing is sent upstream until that verdict is in.

Client-facing: one context per client proxy and per issuer (the trusted signing CA, or the
per-installation untrusted CA), so the certificate chain and session tickets of an
intentionally-untrusted certificate never mix with trusted ones. The leaf is set per
connection (`Connection.use_certificate`), so a context serves every site.

Server inspection (client-facing leg of a server proxy): one context per certificate,
holding that certificate, its key and its chain. pyOpenSSL can set a leaf and key per
connection but not an extra chain, so the chain has to live in the context; the session
picks the certificate by SNI (`gateway.pki.server_certs`) before the connection exists
and opens it on that certificate's context. A thousand contexts are a few megabytes.

Variants (issue 5 parity, see `gateway.tls.versions`). pyOpenSSL cannot set protocol
bounds or cipher lists on one connection, so every distinct "what to offer the server"
(`UpstreamOffer`) and "the least to accept from the client" (`ParityFloor`) is a context
of its own, built on first use and cached: `UpstreamContexts` (bounded LRU, since offers
follow what clients send) and `ClientContexts` (at most 5 versions x 2 x 2 floors).

What OpenSSL is given is exactly the table rows `gateway.tls.ciphers` selected: the
TLS 1.2-and-below list by `set_cipher_list` (OpenSSL names joined by ":", nothing else),
the TLS 1.3 list by `set_tls13_ciphersuites`. "@SECLEVEL=0" is appended only when the
configuration deliberately enables something OpenSSL 3's default level refuses (versions
below TLS 1.2, 3DES, DES), and only for contexts whose range still includes it.

Never negotiated: heartbeat (RFC 6520). OpenSSL removed it in 3.0 (it was the Heartbleed
extension); nothing here could turn it on, and a test checks that neither our ClientHello
nor our ServerHello carries extension 15. Compression and renegotiation are refused.

Session resumption. Client-facing: OpenSSL's defaults, stateless tickets (RFC 5077,
RFC 8446) encrypted with a random key each context generates when it is created, held
only in memory, never written anywhere; a reload builds new contexts and so retires every
outstanding ticket. Upstream: `UpstreamContexts` remembers each server's session per
(site, offer) and offers it again (`gateway.tls.sessions`).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi, lib

from gateway.config.model import ClientProxy, CipherSuiteCriteria, ServerProxy, TlsVersion
from gateway.pki.store import StoredCert
from gateway.tls.ciphers import (
    Signature,
    SuiteSelection,
    for_signature,
    needs_security_level_0,
    select_suites,
    unsupported_suites,
    usable_in,
)
from gateway.tls.clienthello import ClientHello
from gateway.tls.sessions import SessionCache
from gateway.tls.versions import (
    OfferRefusal,
    ParityFloor,
    UpstreamOffer,
    client_side_suites,
    parity_floor,
    upstream_offer,
)

OPENSSL_VERSIONS: dict[TlsVersion, int] = {
    TlsVersion.SSL3: SSL.SSL3_VERSION,
    TlsVersion.TLS1_0: SSL.TLS1_VERSION,
    TlsVersion.TLS1_1: SSL.TLS1_1_VERSION,
    TlsVersion.TLS1_2: SSL.TLS1_2_VERSION,
    TlsVersion.TLS1_3: SSL.TLS1_3_VERSION,
}

# SSL_OP_NO_ENCRYPT_THEN_MAC is SSL_OP_BIT(19) in openssl/ssl.h from 1.1.0 through 3.x
# and 4.0; pyOpenSSL does not export it. A test checks that it removes extension 22
# (encrypt_then_mac) from our ClientHello, so a changed value cannot go unnoticed.
OP_NO_ENCRYPT_THEN_MAC = 1 << 19

# Compression (CRIME) and renegotiation (a second, uninspected handshake) are refused.
_COMMON_OPTIONS = SSL.OP_NO_COMPRESSION | getattr(SSL, "OP_NO_RENEGOTIATION", 0)

# Upstream context variants kept at once. Offers follow what clients send; a network has
# a handful of distinct client stacks, and a client sending random cipher lists must not
# make tlsgw build contexts without bound.
UPSTREAM_VARIANTS_MAX = 64


# ---------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a context needs from a proxy, computed once per configuration."""

    protocols: tuple[TlsVersion, ...]
    suites: SuiteSelection
    encrypt_then_mac: bool = False

    @classmethod
    def of(cls, proxy: ClientProxy | ServerProxy) -> TlsSettings:
        return cls(proxy.protocols, select_suites(proxy.cipher_suites, proxy.protocols), proxy.encrypt_then_mac)

    @classmethod
    def for_protocols(cls, protocols: tuple[TlsVersion, ...]) -> TlsSettings:
        """The default criteria over `protocols`."""
        return cls(protocols, select_suites(CipherSuiteCriteria(), protocols))


def _settings(value: TlsSettings | tuple[TlsVersion, ...]) -> TlsSettings:
    """Builders accept a bare protocol tuple (default criteria) as they did before issue 5."""
    return value if isinstance(value, TlsSettings) else TlsSettings.for_protocols(tuple(value))


def _configure(context: SSL.Context, low: TlsVersion, high: TlsVersion, suites: SuiteSelection,
               encrypt_then_mac: bool, extra_options: int = 0) -> None:
    """Bounds, options and the exact suite lists. Raises ValueError for an impossible
    combination (a range below TLS 1.3 with no suite for it): a wiring mistake, since the
    loader and the variants never produce one."""
    context.set_min_proto_version(OPENSSL_VERSIONS[low])
    context.set_max_proto_version(OPENSSL_VERSIONS[high])
    options = _COMMON_OPTIONS | extra_options
    if not encrypt_then_mac:
        options |= OP_NO_ENCRYPT_THEN_MAC
    context.set_options(options)
    # Free OpenSSL's 16 KiB read and write buffers while a connection is idle: most
    # intercepted connections are idle most of the time (issue 8's memory per idle
    # connection); the cost is an allocation when data moves again.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if low < TlsVersion.TLS1_3:
        if not suites.tls12:
            raise ValueError(f"no cipher suite for {low.label}")
        level = b":@SECLEVEL=0" if needs_security_level_0(suites.tls12, low) else b""
        context.set_cipher_list(suites.cipher_list() + level)
    # (With TLS 1.3 as the minimum the TLS 1.2 list is never consulted.)
    if high is TlsVersion.TLS1_3 and not suites.tls13:
        raise ValueError("no TLS 1.3 cipher suite")
    context.set_tls13_ciphersuites(suites.tls13_ciphersuites())


# ---------------------------------------------------------------------------------------
# Upstream leg


@dataclass(slots=True)
class UpstreamLegState:
    """`Connection.set_app_data` of an upstream connection: what the handshake revealed."""

    certificate_requested: bool = False


@ffi.callback("int(SSL *, void *)")
def _certificate_requested(ssl: object, _arg: object) -> int:
    """OpenSSL calls a client's cert_cb only when the server has sent a CertificateRequest
    (TLS 1.2 and 1.3 alike), so this is the exact moment to note it. An info callback
    would do too, but it runs some 23 times per handshake through pyOpenSSL's Python
    wrapper (issue 8: handshake CPU). Returning 1 carries on without a certificate, as
    tlsgw has none to give; nothing may raise across into OpenSSL."""
    try:
        connection = SSL.Connection._reverse_mapping.get(ssl)
        state = connection.get_app_data() if connection is not None else None
        if isinstance(state, UpstreamLegState):
            state.certificate_requested = True
    except Exception:  # noqa: BLE001 - a callback from C: log-free, never raise
        pass
    return 1


def build_upstream_context(settings: TlsSettings | tuple[TlsVersion, ...],
                           offer: UpstreamOffer | None = None) -> SSL.Context:
    """Upstream context for the proxy's whole settings, or narrowed to `offer`."""
    settings = _settings(settings)
    context = SSL.Context(SSL.TLS_METHOD)
    if offer is None:
        _configure(context, min(settings.protocols), max(settings.protocols), settings.suites,
                   settings.encrypt_then_mac)
    else:
        _configure(context, offer.min_version, offer.max_version, offer.selection, settings.encrypt_then_mac)
    context.set_verify(SSL.VERIFY_NONE)
    lib.SSL_CTX_set_cert_cb(context._context, _certificate_requested, ffi.NULL)
    return context


def new_upstream_connection(context: SSL.Context, sni: str | None, alpn: tuple[str, ...],
                            session: SSL.Session | None = None, groups: str | None = None) -> SSL.Connection:
    """`groups`: the key-exchange group list (`gateway.tls.groups.upstream_groups`); None
    keeps the context's."""
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if groups is not None and lib.SSL_set1_curves_list(connection._ssl, groups.encode("ascii")) != 1:
        lib.ERR_clear_error()  # none of them usable here: OpenSSL's default list stays
    connection.set_app_data(UpstreamLegState())
    if sni:
        connection.set_tlsext_host_name(sni.encode("idna"))
    if alpn:
        connection.set_alpn_protos([p.encode("ascii", "replace") for p in alpn])
    if session is not None:
        connection.set_session(session)
    return connection


def server_requested_client_certificate(connection: SSL.Connection) -> bool:
    """Whether the server sent a CertificateRequest on this upstream connection.

    Valid after the handshake completed *or failed*: in TLS 1.2 a server that requires a
    certificate aborts the handshake ("handshake failure"); in TLS 1.3 the request comes
    in the encrypted flight, tlsgw answers with an empty Certificate, its own handshake
    completes, and the server's "certificate required" alert only arrives on the first
    read. So check right after the handshake either way, before relaying anything.
    Only connections from `new_upstream_connection` on a context from
    `build_upstream_context` are observed (the cert_cb records the request);
    `get_client_ca_list()` alone cannot tell, since servers may send an empty CA list.
    """
    state = connection.get_app_data()
    if isinstance(state, UpstreamLegState) and state.certificate_requested:
        return True
    return bool(connection.get_client_ca_list())


class UpstreamContexts:
    """The upstream contexts of one proxy: one per offer, and the sessions made with them.

    Typical use by the flow::

        offer = contexts.offer_for(hello, Signature.ECDSA)
        if isinstance(offer, OfferRefusal): ...          # refuse / bypass, count offer.value
        connection = contexts.new_connection(offer, hello.sni, alpn, site, now)
        ...handshake...
        contexts.remember_session(offer, site, connection, now)   # when the flow ends
    """

    def __init__(self, settings: TlsSettings, max_variants: int = UPSTREAM_VARIANTS_MAX,
                 sessions: SessionCache[tuple[SSL.Context, SSL.Session]] | None = None) -> None:
        self.settings = settings
        self.base = build_upstream_context(settings)
        """For the proxy's whole settings (built now, so OpenSSL's objections surface at load)."""
        self.max_variants = max_variants
        self._variants: OrderedDict[UpstreamOffer, SSL.Context] = OrderedDict()
        self.sessions: SessionCache[tuple[SSL.Context, SSL.Session]] = sessions or SessionCache()

    def offer_for(self, hello: ClientHello, client_facing: Signature | None) -> UpstreamOffer | OfferRefusal:
        return upstream_offer(hello, self.settings.protocols, self.settings.suites, client_facing)

    def context(self, offer: UpstreamOffer) -> SSL.Context:
        context = self._variants.get(offer)
        if context is None:
            context = self._variants[offer] = build_upstream_context(self.settings, offer)
            while len(self._variants) > self.max_variants:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(offer)
        return context

    def new_connection(self, offer: UpstreamOffer, sni: str | None, alpn: tuple[str, ...],
                       site: Hashable, now: float, groups: str | None = None) -> SSL.Connection:
        """A connecting upstream connection, resuming the site's last session if there is
        one from this very context (pyOpenSSL refuses sessions of other contexts)."""
        context = self.context(offer)
        cached = self.sessions.get((site, offer), now)
        session = cached[1] if cached is not None and cached[0] is context else None
        return new_upstream_connection(context, sni, alpn, session, groups)

    def remember_session(self, offer: UpstreamOffer, site: Hashable, connection: SSL.Connection,
                         now: float) -> None:
        """Keep the connection's session for the next flow to `site`.

        Call it when the flow ends (or at least after the first application data was
        read): TLS 1.3 servers send their tickets after the handshake, and OpenSSL only
        attaches them to the session when it reads them.
        """
        session = connection.get_session()
        if session is not None:
            self.sessions.put((site, offer), (connection.get_context(), session), now)


# ---------------------------------------------------------------------------------------
# Client-facing leg


# Connection.set_app_data carries this to the ALPN callback: what the upstream chose.
@dataclass(slots=True)
class ClientLegState:
    upstream_alpn: bytes | None = None


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """Select toward the client exactly what the server selected upstream, or nothing."""
    state = connection.get_app_data()
    chosen = state.upstream_alpn if isinstance(state, ClientLegState) else None
    if chosen and chosen in offered:
        return chosen
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _client_facing(settings: TlsSettings, floor: ParityFloor | None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    high = max(settings.protocols)
    if floor is None:
        low, suites = min(settings.protocols), settings.suites
    else:
        low, suites = floor.min_version, client_side_suites(settings.suites, floor)
    _configure(context, low, high, suites, settings.encrypt_then_mac, SSL.OP_CIPHER_SERVER_PREFERENCE)
    return context


def build_client_context(settings: TlsSettings | tuple[TlsVersion, ...], chain: tuple[x509.Certificate, ...],
                         session_id: bytes, floor: ParityFloor | None = None) -> SSL.Context:
    """`chain`: the issuing CA and its parents, sent after the forged leaf. `floor`: the
    parity floor of this variant; None for the proxy's whole settings."""
    context = _client_facing(_settings(settings), floor)
    context.set_session_id(session_id[:32])
    for certificate in chain:
        context.add_extra_chain_cert(certificate)
    context.set_alpn_select_callback(_select_alpn)
    return context


def build_server_proxy_context(settings: TlsSettings | tuple[TlsVersion, ...], certificate: StoredCert,
                               session_id: bytes, floor: ParityFloor | None = None) -> SSL.Context:
    """Client-facing context of a server proxy presenting `certificate` with its chain.

    `session_id`: distinct per server proxy and certificate, so a session resumed by a
    client is only ever resumed under the certificate it was established with.

    Raises:
        OpenSSL.SSL.Error: OpenSSL refuses the certificate or key (e.g. a key below its
            security level); callers turn it into a ConfigIssue naming the certificate.
        ValueError: `certificate` has no key.
    """
    if certificate.key is None:
        raise ValueError(f"certificate {certificate.name!r} has no private key")
    context = _client_facing(_settings(settings), floor)
    context.set_session_id(session_id[:32])
    context.use_certificate(certificate.certificate)
    context.use_privatekey(certificate.key)
    context.check_privatekey()
    for extra in certificate.chain:
        context.add_extra_chain_cert(extra)
    context.set_alpn_select_callback(_select_alpn)
    return context


class ClientContexts:
    """The client-facing contexts of one issuer (client proxy) or one certificate (server
    proxy): one per parity floor, built on first use. Bounded by construction: 5 versions
    x forward secrecy x AEAD.

    Tickets are per context, so a client moving between floors for one site (the server
    changed what it negotiates) gets a full handshake: correct, merely slower.
    """

    def __init__(self, settings: TlsSettings, build: Callable[[ParityFloor | None], SSL.Context]) -> None:
        self.settings = settings
        self._build = build
        self.base = build(None)
        """For the proxy's whole settings (built now, so OpenSSL's objections surface at load)."""
        self._variants: dict[ParityFloor, SSL.Context] = {}

    def for_floor(self, floor: ParityFloor) -> SSL.Context:
        context = self._variants.get(floor)
        if context is None:
            context = self._variants[floor] = self._build(floor)
        return context

    def for_upstream(self, version: str, cipher: str | None) -> SSL.Context:
        """The context for a flow whose upstream negotiated `version` and `cipher`
        (`TlsEndpoint.version` / `.cipher`)."""
        return self.for_floor(parity_floor(version, cipher, self.settings.protocols))


def client_proxy_contexts(settings: TlsSettings, chain: tuple[x509.Certificate, ...],
                          session_id: bytes) -> ClientContexts:
    return ClientContexts(settings, lambda floor: build_client_context(settings, chain, session_id, floor))


def server_certificate_contexts(settings: TlsSettings, certificate: StoredCert, session_id: bytes) -> ClientContexts:
    """Raises like `build_server_proxy_context` (the base context is built at once)."""
    return ClientContexts(settings, lambda floor: build_server_proxy_context(settings, certificate, session_id, floor))


def new_server_proxy_connection(context: SSL.Context, upstream_alpn: str | None) -> SSL.Connection:
    """Accepting connection on a `build_server_proxy_context` context (certificate included).

    `upstream_alpn`: what the real server selected, mirrored to the client as for client
    proxies; None selects no protocol.
    """
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    connection.set_app_data(ClientLegState(upstream_alpn.encode() if upstream_alpn else None))
    return connection


def new_client_connection(context: SSL.Context, leaf: x509.Certificate, key: object,
                          upstream_alpn: str | None) -> SSL.Connection:
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    # OpenSSL's own calls, as pyOpenSSL makes them, on objects converted once (pyOpenSSL's
    # methods would convert the certificate and key through DER on every connection: 7 to
    # 11 % of the handshake path in the issue 8 profile).
    if not lib.SSL_use_certificate(connection._ssl, _as_openssl(leaf)._x509):  # type: ignore[attr-defined]
        raise SSL.Error("SSL_use_certificate failed for the forged leaf")
    if not lib.SSL_use_PrivateKey(connection._ssl, _as_openssl(key)._pkey):  # type: ignore[attr-defined]
        raise SSL.Error("SSL_use_PrivateKey failed for the forged leaf key")
    connection.set_app_data(ClientLegState(upstream_alpn.encode() if upstream_alpn else None))
    return connection


# The forged leaves and the leaf key are reused across many connections, so their
# converted forms are kept. Keyed by identity, with the original held in the entry so the
# id cannot be reused while cached; bounded like the forge cache.
_OPENSSL_OBJECTS_MAX = 4096
_openssl_objects: OrderedDict[int, tuple[object, object]] = OrderedDict()


def _as_openssl(item: object) -> object:
    key = id(item)
    entry = _openssl_objects.get(key)
    if entry is not None and entry[0] is item:
        _openssl_objects.move_to_end(key)
        return entry[1]
    if isinstance(item, x509.Certificate):
        converted: object = crypto.X509.from_cryptography(item)
    else:
        converted = crypto.PKey.from_cryptography_key(item)  # type: ignore[arg-type]
    _openssl_objects[key] = (item, converted)
    if len(_openssl_objects) > _OPENSSL_OBJECTS_MAX:
        _openssl_objects.popitem(last=False)
    return converted


# ---------------------------------------------------------------------------------------
# What the running OpenSSL can do


@dataclass(frozen=True, slots=True)
class OpenSslCapabilities:
    version: str
    """OpenSSL's own version text, e.g. "OpenSSL 3.0.13 30 Jan 2024", for messages."""
    suites: frozenset[str]
    """Every suite name this build knows (at security level 0)."""
    protocols: frozenset[TlsVersion]
    """The versions this build can negotiate."""


@functools.cache
def openssl_capabilities() -> OpenSslCapabilities:
    """Probe the OpenSSL pyOpenSSL is linked with (which need not be the `openssl` command's)."""
    probe = SSL.Context(SSL.TLS_METHOD)
    probe.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    suites = frozenset(SSL.Connection(probe, None).get_cipher_list())
    protocols = frozenset(v for v in TlsVersion if _can_offer(v))
    version = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")
    return OpenSslCapabilities(version, suites, protocols)


def _can_offer(version: TlsVersion) -> bool:
    """Whether OpenSSL produces a ClientHello for exactly `version` (in memory)."""
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.set_min_proto_version(OPENSSL_VERSIONS[version])
        context.set_max_proto_version(OPENSSL_VERSIONS[version])
        context.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    except SSL.Error:
        return False
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        return True
    except SSL.Error:
        return False
    return False


def signature_of(certificate: x509.Certificate) -> Signature:
    """The kind of TLS 1.2 suites a certificate can serve (Ed25519/Ed448 use the ECDSA ones)."""
    return Signature.RSA if isinstance(certificate.public_key(), rsa.RSAPublicKey) else Signature.ECDSA


def tls_settings_problems(criteria: CipherSuiteCriteria, settings: TlsSettings, capabilities: OpenSslCapabilities,
                          client_facing: Iterable[tuple[str, Signature]] = ()) -> list[tuple[str, str]]:
    """(field under the proxy, message) for what the running OpenSSL, or the certificates
    shown to clients, cannot do with these settings.

    `client_facing`: (what, key type) of each certificate the client-facing leg presents,
    e.g. ("forged certificates", Signature.ECDSA) or ("certificate 'web1'", Signature.RSA).
    """
    problems: list[tuple[str, str]] = []
    missing = [v for v in settings.protocols if v not in capabilities.protocols]
    if missing:
        labels = ", ".join(v.label for v in missing)
        problems.append(("protocols", f"{labels} {'is' if len(missing) == 1 else 'are'} not available in "
                                      f"{capabilities.version} on this host; remove {labels}"))
    problems.extend((u.field, u.message) for u in unsupported_suites(
        settings.suites, criteria, capabilities.suites, capabilities.version))
    below13 = [v for v in settings.protocols if v < TlsVersion.TLS1_3]
    if below13 and settings.suites.tls12:
        for what, signature in client_facing:
            usable = for_signature(settings.suites.tls12, signature)
            if not any(usable_in(usable, v) for v in below13):
                kinds = "ecdhe-ecdsa" if signature is Signature.ECDSA else "ecdhe-rsa or rsa"
                problems.append((
                    "cipher_suites.key_exchange",
                    f"{what}: an {signature.name} key cannot serve any chosen suite for "
                    f"{', '.join(v.label for v in below13)}; choose {kinds}, or enable TLSv1.3 only",
                ))
    return problems
