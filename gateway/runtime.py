"""Everything a flow needs that is derived from one configuration snapshot: the loaded
signing CAs, the trust anchors of each trust store, and the TLS contexts of each client
proxy.

Built completely *before* a configuration is put into service, so a missing certificate
or a key that does not match is reported (with the config path that names it) and nothing
changes; a reload builds a new Runtime and swaps the reference, while sessions in flight
keep the one they started with. The forge cache and the forged-leaf key live longer than
one snapshot (they belong to the process), so a reload does not cost every site a new
signature.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.config.model import ClientProxy, GatewayConfig
from gateway.errors import ConfigError, ConfigIssue, PkiError
from gateway.pki.ca import ensure_untrusted_ca, is_ca
from gateway.pki.cache import ForgeCache
from gateway.pki.forge import LeafKeys
from gateway.pki.store import CertStore, StoredCert
from gateway.pki.trust import TrustAnchors, load_trust_anchors
from gateway.tls.contexts import build_client_context, build_upstream_context


@dataclass(frozen=True, slots=True)
class ClientProxyMaterial:
    proxy: ClientProxy
    signing: StoredCert
    trusted_context: SSL.Context
    """Client-facing context whose chain is the signing CA's."""
    untrusted_context: SSL.Context
    """Client-facing context for certificates forged under the untrusted CA."""
    upstream_context: SSL.Context


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


def _fingerprint(cert: StoredCert) -> bytes:
    return hashlib.sha256(cert.certificate.public_bytes(serialization.Encoding.DER)).digest()


def _load_references(config: GatewayConfig, store: CertStore
                     ) -> tuple[dict[str, TrustAnchors], dict[str, StoredCert], list[ConfigIssue]]:
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
    return trust_anchors, signing, issues


def check_certificates(config: GatewayConfig) -> None:
    """What `tlsgw check-config` adds to the syntax check: every certificate reference
    resolves to a usable certificate (and key). Writes nothing. Raises ConfigError."""
    _, _, issues = _load_references(config, CertStore(config.pki.dir))
    if issues:
        raise ConfigError(issues, source=config.source)


def build_runtime(config: GatewayConfig, process: ProcessMaterial | None = None) -> Runtime:
    """Load every certificate the configuration references. Raises ConfigError listing each
    reference that cannot be used, by its config path."""
    store = CertStore(config.pki.dir)
    trust_anchors, signing, issues = _load_references(config, store)
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
    )
