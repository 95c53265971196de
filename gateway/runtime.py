"""Everything a flow needs that is derived from one configuration snapshot: the loaded
signing CAs, the trust anchors of each trust store, the TLS contexts of each client
proxy, and each server proxy's certificates with their client-facing contexts.

Built completely *before* a configuration is put into service, so a missing certificate
or a key that does not match is reported (with the config path that names it) and nothing
changes; a reload builds a new Runtime and swaps the reference, while sessions in flight
keep the one they started with. The forge cache and the forged-leaf key live longer than
one snapshot (they belong to the process), so a reload does not cost every site a new
signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.config.model import ClientProxy, GatewayConfig, ServerProxy
from gateway.errors import ConfigError, ConfigIssue, PkiError
from gateway.pki.ca import ensure_untrusted_ca, is_ca
from gateway.pki.cache import ForgeCache
from gateway.pki.expiry import expiry_warnings
from gateway.pki.forge import LeafKeys
from gateway.pki.server_certs import ServerCertificates
from gateway.pki.store import CertStore, StoredCert
from gateway.pki.trust import TrustAnchors, load_trust_anchors
from gateway.tls.contexts import build_client_context, build_server_proxy_context, build_upstream_context


@dataclass(frozen=True, slots=True)
class ClientProxyMaterial:
    proxy: ClientProxy
    signing: StoredCert
    trusted_context: SSL.Context
    """Client-facing context whose chain is the signing CA's."""
    untrusted_context: SSL.Context
    """Client-facing context for certificates forged under the untrusted CA."""
    upstream_context: SSL.Context


@dataclass(frozen=True, slots=True)
class ServerProxyMaterial:
    proxy: ServerProxy
    certificates: ServerCertificates
    client_contexts: dict[str, SSL.Context]
    """Certificate name -> client-facing context presenting that certificate, key and chain."""
    upstream_context: SSL.Context
    """Towards the organisation's own server; not verified (tlsgw holds its key already)."""

    def client_context(self, sni: str | None) -> tuple[StoredCert, SSL.Context]:
        """The certificate chosen for `sni` and the context that presents it."""
        cert = self.certificates.pick(sni)
        return cert, self.client_contexts[cert.name]


@dataclass(slots=True)
class ProcessMaterial:
    """Lives as long as the process: survives reloads."""

    forge_cache: ForgeCache = field(default_factory=ForgeCache)
    leaf_keys: LeafKeys = field(default_factory=LeafKeys)


@dataclass(frozen=True, slots=True)
class Runtime:
    config: GatewayConfig
    store: CertStore
    untrusted_ca: StoredCert | None
    """None when no client proxy is configured."""
    client_proxies: dict[str, ClientProxyMaterial]
    trust_anchors: dict[str, TrustAnchors]
    process: ProcessMaterial
    server_proxies: dict[str, ServerProxyMaterial] = field(default_factory=dict)

    def expiry_warnings(self, now: dt.datetime) -> list[str]:
        """Certificates of this snapshot that expire within 30 days or have (see gateway.pki.expiry)."""
        return expiry_warnings(
            self.config,
            {name: m.certificates.certificates for name, m in self.server_proxies.items()},
            now,
            {name: m.signing for name, m in self.client_proxies.items()},
        )


def _fingerprint(cert: StoredCert) -> bytes:
    return hashlib.sha256(cert.certificate.public_bytes(serialization.Encoding.DER)).digest()


@dataclass(frozen=True, slots=True)
class _References:
    """Every certificate the configuration names, loaded; or the issues that prevent it."""

    trust_anchors: dict[str, TrustAnchors]
    signing: dict[str, StoredCert]
    """Client proxy name -> its signing CA (with key)."""
    server_certificates: dict[str, tuple[StoredCert, ...]]
    """Server proxy name -> its certificates with keys, in configuration order; only for
    proxies whose every certificate loaded."""
    issues: list[ConfigIssue]


def _load_server_certificate(store: CertStore, name: str) -> StoredCert:
    """Raises PkiError naming the certificate: missing, unreadable, key missing or not its own."""
    cert = store.load(name, with_key=True)
    if cert.key is None:
        raise PkiError(f"certificate {name!r} has no private key in the PKI store "
                       f"({store.key_path(name)} does not exist); a server proxy needs the key "
                       "of each of its certificates")
    return cert


def _load_references(config: GatewayConfig, store: CertStore) -> _References:
    issues: list[ConfigIssue] = []
    trust_anchors: dict[str, TrustAnchors] = {}
    for i, trust_store in enumerate(config.trust_stores):
        try:
            trust_anchors[trust_store.name] = load_trust_anchors(store, trust_store, config.pki.default_ca_bundle)
        except PkiError as exc:
            issues.append(ConfigIssue(f"trust_stores[{i}]", str(exc)))

    signing: dict[str, StoredCert] = {}
    for i, proxy in enumerate(config.client_proxies):
        path = f"client_proxies[{i}].signing_certificate"
        try:
            cert = store.load(proxy.signing_certificate)
        except PkiError as exc:
            issues.append(ConfigIssue(path, str(exc)))
            continue
        if not is_ca(cert.certificate):
            issues.append(ConfigIssue(path, f"certificate {proxy.signing_certificate!r} is not a CA certificate"))
        elif cert.key is None:
            issues.append(ConfigIssue(path, f"certificate {proxy.signing_certificate!r} has no private key"))
        else:
            signing[proxy.name] = cert

    # Several server proxies may share certificates (443 and 995 on one address): each
    # entry is read once, and its problem reported at every place that names it.
    loaded: dict[str, StoredCert | PkiError] = {}
    server_certificates: dict[str, tuple[StoredCert, ...]] = {}
    for i, server_proxy in enumerate(config.server_proxies):
        certs: list[StoredCert] = []
        for j, name in enumerate(server_proxy.certificates):
            if name not in loaded:
                try:
                    loaded[name] = _load_server_certificate(store, name)
                except PkiError as exc:
                    loaded[name] = exc
            result = loaded[name]
            if isinstance(result, PkiError):
                issues.append(ConfigIssue(f"server_proxies[{i}].certificates[{j}]", str(result)))
            else:
                certs.append(result)
        if len(certs) == len(server_proxy.certificates):
            server_certificates[server_proxy.name] = tuple(certs)
    return _References(trust_anchors, signing, server_certificates, issues)


def _openssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one phrase ("ee key too small")."""
    queue = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
    return "; ".join(reasons) or str(exc)


def _build_server_materials(config: GatewayConfig, server_certificates: dict[str, tuple[StoredCert, ...]]
                            ) -> tuple[dict[str, ServerProxyMaterial], list[ConfigIssue]]:
    """TLS contexts for every loaded server proxy; OpenSSL's refusals as ConfigIssues.

    Built by `check_certificates` too, because a key OpenSSL refuses (too small for its
    security level, say) must stop `tlsgw check-config`, not the daemon's start.
    """
    materials: dict[str, ServerProxyMaterial] = {}
    issues: list[ConfigIssue] = []
    for i, proxy in enumerate(config.server_proxies):
        certs = server_certificates.get(proxy.name)
        if certs is None:
            continue
        contexts: dict[str, SSL.Context] = {}
        for j, cert in enumerate(certs):
            session_id = hashlib.sha256(proxy.name.encode() + b"\0" + _fingerprint(cert)).digest()
            try:
                contexts[cert.name] = build_server_proxy_context(proxy.protocols, cert, session_id)
            except SSL.Error as exc:
                issues.append(ConfigIssue(
                    f"server_proxies[{i}].certificates[{j}]",
                    f"certificate {cert.name!r} cannot be used by OpenSSL: {_openssl_reason(exc)}",
                ))
        if len(contexts) == len(certs):
            materials[proxy.name] = ServerProxyMaterial(
                proxy=proxy,
                certificates=ServerCertificates(certs),
                client_contexts=contexts,
                upstream_context=build_upstream_context(proxy.protocols),
            )
    return materials, issues


def check_certificates(config: GatewayConfig) -> None:
    """What `tlsgw check-config` adds to the syntax check: every certificate reference
    resolves to a usable certificate (and key). Writes nothing. Raises ConfigError."""
    references = _load_references(config, CertStore(config.pki.dir))
    _, server_issues = _build_server_materials(config, references.server_certificates)
    issues = references.issues + server_issues
    if issues:
        raise ConfigError(issues, source=config.source)


def build_runtime(config: GatewayConfig, process: ProcessMaterial | None = None) -> Runtime:
    """Load every certificate the configuration references. Raises ConfigError listing each
    reference that cannot be used, by its config path."""
    store = CertStore(config.pki.dir)
    references = _load_references(config, store)
    trust_anchors, signing = references.trust_anchors, references.signing
    server_materials, server_issues = _build_server_materials(config, references.server_certificates)
    issues = references.issues + server_issues
    untrusted: StoredCert | None = None
    if config.client_proxies:
        try:
            untrusted = ensure_untrusted_ca(store)
        except PkiError as exc:
            issues.append(ConfigIssue("pki.dir", str(exc)))
    if issues:
        raise ConfigError(issues, source=config.source)

    materials: dict[str, ClientProxyMaterial] = {}
    for proxy in config.client_proxies:
        ca = signing[proxy.name]
        assert untrusted is not None
        materials[proxy.name] = ClientProxyMaterial(
            proxy=proxy,
            signing=ca,
            trusted_context=build_client_context(proxy.protocols, (ca.certificate, *ca.chain), _fingerprint(ca)),
            untrusted_context=build_client_context(proxy.protocols, (untrusted.certificate,), _fingerprint(untrusted)),
            upstream_context=build_upstream_context(proxy.protocols),
        )
    return Runtime(
        config=config,
        store=store,
        untrusted_ca=untrusted,
        client_proxies=materials,
        trust_anchors=trust_anchors,
        process=process or ProcessMaterial(),
        server_proxies=server_materials,
    )
