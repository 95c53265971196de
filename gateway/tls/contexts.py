"""pyOpenSSL contexts for the two legs of a decrypted flow, built once per configuration.

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
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import lib

from gateway.config.model import TlsVersion
from gateway.pki.store import StoredCert

OPENSSL_VERSIONS: dict[TlsVersion, int] = {
    TlsVersion.SSL3: SSL.SSL3_VERSION,
    TlsVersion.TLS1_0: SSL.TLS1_VERSION,
    TlsVersion.TLS1_1: SSL.TLS1_1_VERSION,
    TlsVersion.TLS1_2: SSL.TLS1_2_VERSION,
    TlsVersion.TLS1_3: SSL.TLS1_3_VERSION,
}

# TLS 1.2 suites: forward-secret AEAD first; CBC kept for older servers. TLS 1.3 suites are
# OpenSSL's defaults (all AEAD). Issue 5 makes this configurable per proxy.
DEFAULT_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:!aNULL:!eNULL:!MD5:!RC4:!3DES:!DES"

# Heartbeat is not compiled into OpenSSL 3; compression and renegotiation are refused.
_COMMON_OPTIONS = SSL.OP_NO_COMPRESSION | getattr(SSL, "OP_NO_RENEGOTIATION", 0)

# Connection.set_app_data carries this to the ALPN callback: what the upstream chose.
@dataclass(slots=True)
class ClientLegState:
    upstream_alpn: bytes | None = None


def _version_bounds(context: SSL.Context, protocols: tuple[TlsVersion, ...]) -> None:
    context.set_min_proto_version(OPENSSL_VERSIONS[min(protocols)])
    context.set_max_proto_version(OPENSSL_VERSIONS[max(protocols)])


def build_upstream_context(protocols: tuple[TlsVersion, ...]) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    _version_bounds(context, protocols)
    context.set_options(_COMMON_OPTIONS)
    context.set_cipher_list(DEFAULT_TLS12_CIPHERS)
    context.set_verify(SSL.VERIFY_NONE)
    return context


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """Select toward the client exactly what the server selected upstream, or nothing."""
    state = connection.get_app_data()
    chosen = state.upstream_alpn if isinstance(state, ClientLegState) else None
    if chosen and chosen in offered:
        return chosen
    return SSL.NO_OVERLAPPING_PROTOCOLS


def build_client_context(
    protocols: tuple[TlsVersion, ...], chain: tuple[x509.Certificate, ...], session_id: bytes
) -> SSL.Context:
    """`chain`: the issuing CA and its parents, sent after the forged leaf."""
    context = SSL.Context(SSL.TLS_METHOD)
    _version_bounds(context, protocols)
    context.set_options(_COMMON_OPTIONS | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_cipher_list(DEFAULT_TLS12_CIPHERS)
    context.set_session_id(session_id[:32])
    for certificate in chain:
        context.add_extra_chain_cert(certificate)
    context.set_alpn_select_callback(_select_alpn)
    return context


def build_server_proxy_context(
    protocols: tuple[TlsVersion, ...], certificate: StoredCert, session_id: bytes
) -> SSL.Context:
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
    context = SSL.Context(SSL.TLS_METHOD)
    _version_bounds(context, protocols)
    context.set_options(_COMMON_OPTIONS | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_cipher_list(DEFAULT_TLS12_CIPHERS)
    context.set_session_id(session_id[:32])
    context.use_certificate(certificate.certificate)
    context.use_privatekey(certificate.key)
    context.check_privatekey()
    for extra in certificate.chain:
        context.add_extra_chain_cert(extra)
    context.set_alpn_select_callback(_select_alpn)
    return context


def new_server_proxy_connection(context: SSL.Context, upstream_alpn: str | None) -> SSL.Connection:
    """Accepting connection on a `build_server_proxy_context` context (certificate included).

    `upstream_alpn`: what the real server selected, mirrored to the client as for client
    proxies; None selects no protocol.
    """
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    connection.set_app_data(ClientLegState(upstream_alpn.encode() if upstream_alpn else None))
    return connection


def new_upstream_connection(
    context: SSL.Context, sni: str | None, alpn: tuple[str, ...]
) -> SSL.Connection:
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if sni:
        connection.set_tlsext_host_name(sni.encode("idna"))
    if alpn:
        connection.set_alpn_protos([p.encode("ascii", "replace") for p in alpn])
    return connection


# pyOpenSSL converts a `cryptography` certificate or key to its own object through DER on
# every use_certificate/use_privatekey call; the forged leaves and the leaf key are reused
# across many connections, so their converted forms are kept (issue 8: this was a DER
# encode + decode of both on every decrypted connection). Keyed by identity, with the
# original kept alive in the entry so the id cannot be reused; bounded like the forge cache.
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


def new_client_connection(context: SSL.Context, leaf: x509.Certificate, key: object,
                          upstream_alpn: str | None) -> SSL.Connection:
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    # OpenSSL's own calls, as pyOpenSSL makes them, on the pre-converted objects (pyOpenSSL's
    # methods would convert again, or warn that its own types are deprecated as arguments).
    if not lib.SSL_use_certificate(connection._ssl, _as_openssl(leaf)._x509):  # type: ignore[attr-defined]
        raise SSL.Error("SSL_use_certificate failed for the forged leaf")
    if not lib.SSL_use_PrivateKey(connection._ssl, _as_openssl(key)._pkey):  # type: ignore[attr-defined]
        raise SSL.Error("SSL_use_PrivateKey failed for the forged leaf key")
    connection.set_app_data(ClientLegState(upstream_alpn.encode() if upstream_alpn else None))
    return connection
