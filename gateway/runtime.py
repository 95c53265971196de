"""Everything a flow needs that is derived from one configuration snapshot: the loaded
signing CAs, the trust anchors of each trust store, the TLS contexts of each client
proxy, and each server proxy's certificates with their client-facing contexts.

Built completely *before* a configuration is put into service, so a missing certificate
or a key that does not match is reported (with the config path that names it) and nothing
changes; a reload builds a new Runtime and swaps the reference, while sessions in flight
keep the one they started with. The forge cache and the forged-leaf key live longer than
one snapshot (they belong to the process), so a reload does not cost every site a new
signature.

Keys kept only in memory (`pki.persist_keys: false`, `gateway.pki.memory_keys`) belong to
the process too. A certificate marked so whose key this process was not given (after a
restart, until it is imported again) is no configuration error - the key can only be
given to a running gateway - but its proxy is out of service: every policy that uses the
proxy is taken as disabled in `Runtime.config` (so the kernel stops steering its flows,
which are then handled as with the policy disabled: by a client policy of the same port,
or untouched), and `Runtime.missing_keys` says which certificate, by config path, and
how to repair it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.config.model import ClientProxy, GatewayConfig, ServerProxy
from gateway.errors import ConfigError, ConfigIssue, PkiError
from gateway.pki.ca import ensure_untrusted_ca, is_ca
from gateway.pki.cache import ForgeCache
from gateway.pki.expiry import expiry_warnings
from gateway.pki.forge import LeafKeys
from gateway.pki.memory_keys import MemoryKeys, reimport_hint
from gateway.pki.server_certs import ServerCertificates
from gateway.pki.store import CertStore, StoredCert, open_store
from gateway.pki.trust import TrustAnchors, load_trust_anchors
from gateway.pki.verify_cache import VerifyCache
from gateway.policy.site_bypass import SiteBypassCache
from gateway.tls.ciphers import Signature
from gateway.tls.contexts import (
    ClientContexts,
    TlsSettings,
    UpstreamContexts,
    client_proxy_contexts,
    openssl_capabilities,
    server_certificate_contexts,
    signature_of,
    tls_settings_problems,
)


@dataclass(frozen=True, slots=True)
class ClientProxyMaterial:
    proxy: ClientProxy
    signing: StoredCert
    trusted_context: SSL.Context
    """Client-facing context whose chain is the signing CA's."""
    untrusted_context: SSL.Context
    """Client-facing context for certificates forged under the untrusted CA."""
    upstream_context: SSL.Context
    trusted_contexts: ClientContexts
    """Issue 5 parity: `trusted_contexts.for_upstream(version, cipher)` is the client-facing
    context not weaker than the upstream leg (`trusted_context` is its `.base`)."""
    untrusted_contexts: ClientContexts
    upstream_contexts: UpstreamContexts
    """Upstream contexts by what the client offered, and upstream sessions to resume
    (`upstream_context` is its `.base`)."""


@dataclass(frozen=True, slots=True)
class ServerProxyMaterial:
    proxy: ServerProxy
    certificates: ServerCertificates
    client_contexts: dict[str, SSL.Context]
    """Certificate name -> client-facing context presenting that certificate, key and chain."""
    upstream_context: SSL.Context
    """Towards the organisation's own server; not verified (tlsgw holds its key already)."""
    client_context_sets: dict[str, ClientContexts]
    """Certificate name -> its client-facing contexts by parity floor (issue 5)."""
    upstream_contexts: UpstreamContexts

    def client_context(self, sni: str | None) -> tuple[StoredCert, SSL.Context]:
        """The certificate chosen for `sni` and the context that presents it."""
        cert = self.certificates.pick(sni)
        return cert, self.client_contexts[cert.name]

    def client_contexts_for(self, sni: str | None) -> tuple[StoredCert, ClientContexts]:
        """The certificate chosen for `sni` and its contexts by parity floor."""
        cert = self.certificates.pick(sni)
        return cert, self.client_context_sets[cert.name]


@dataclass(slots=True)
class ProcessMaterial:
    """Lives as long as the process: survives reloads."""

    forge_cache: ForgeCache = field(default_factory=ForgeCache)
    leaf_keys: LeafKeys = field(default_factory=LeafKeys)
    site_bypass: SiteBypassCache = field(default_factory=SiteBypassCache)
    """Sites that asked for a client certificate or pin theirs (issue 5)."""
    memory_keys: MemoryKeys = field(default_factory=MemoryKeys)
    """Private keys this process was handed and keeps in memory only (issue 4,
    `pki.persist_keys: false`); gone when the process ends."""


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
    missing_keys: tuple[ConfigIssue, ...] = ()
    """Certificates whose key lives only in the gateway's memory and that this process was
    not given, by config path, with the repair; their proxies are out of service."""
    out_of_service: frozenset[tuple[str, str, str]] = frozenset()
    """(profile, "server" or "client", policy) enabled in the file but taken as disabled in
    `config` because its proxy lacks such a key."""
    verify_cache: VerifyCache = field(default_factory=VerifyCache)
    """Upstream verifications against this snapshot's trust anchors (a reload starts afresh)."""

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
    missing_keys: list[tuple[str, str, str, str]]
    """(config path, certificate, "server" or "client", proxy) for each reference to a
    certificate whose key lives only in memory and that the store's overlay lacks."""


def _lacks_memory_key(cert: StoredCert) -> bool:
    return cert.key is None and cert.info.memory_key


def _load_server_certificate(store: CertStore, name: str) -> StoredCert:
    """Raises PkiError naming the certificate: missing, unreadable, key missing or not its own.
    A key that lives only in memory and is not there is not raised (see `_lacks_memory_key`)."""
    cert = store.load(name, with_key=True)
    if cert.key is None and not cert.info.memory_key:
        raise PkiError(f"certificate {name!r} has no private key in the PKI store "
                       f"({store.key_path(name)} does not exist); a server proxy needs the key "
                       "of each of its certificates")
    return cert


def _load_references(config: GatewayConfig, store: CertStore) -> _References:
    issues: list[ConfigIssue] = []
    trust_anchors: dict[str, TrustAnchors] = {}
    for i, trust_store in enumerate(config.trust_stores):
        try:
            trust_anchors[trust_store.name] = load_trust_anchors(store, trust_store, config.pki.default_ca_bundle_path)
        except PkiError as exc:
            issues.append(ConfigIssue(f"trust_stores[{i}]", str(exc)))

    missing_keys: list[tuple[str, str, str, str]] = []
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
        elif _lacks_memory_key(cert):
            missing_keys.append((path, proxy.signing_certificate, "client", proxy.name))
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
            elif _lacks_memory_key(result):
                missing_keys.append((f"server_proxies[{i}].certificates[{j}]", name, "server", server_proxy.name))
            else:
                certs.append(result)
        if len(certs) == len(server_proxy.certificates):
            server_certificates[server_proxy.name] = tuple(certs)
    return _References(trust_anchors, signing, server_certificates, issues, missing_keys)


def _policies_using(config: GatewayConfig, kind: str, proxy: str) -> list[tuple[str, str, str]]:
    """The enabled policies (profile, kind, name) that use proxy `proxy` of `kind`."""
    found = []
    for profile in config.profiles:
        if kind == "server":
            found += [(profile.name, kind, p.name) for p in profile.server_policies
                      if p.enabled and p.server_proxy == proxy]
        else:
            found += [(profile.name, kind, p.name) for p in profile.client_policies
                      if p.enabled and p.client_proxy == proxy]
    return found


def missing_key_issues(config: GatewayConfig, missing: list[tuple[str, str, str, str]], *, holder: str
                       ) -> list[ConfigIssue]:
    """One issue per reference to a certificate whose in-memory key is missing: what it
    takes out of service, and the repair. `holder` says who lacks the key."""
    issues = []
    for path, name, kind, proxy in missing:
        policies = _policies_using(config, kind, proxy)
        if not policies:
            effect = f"{kind} proxy {proxy!r} cannot be used"
        else:
            named = ", ".join(f"{k} policy {p!r} of profile {prof!r}" for prof, k, p in policies)
            effect = (f"{named} {'is' if len(policies) == 1 else 'are'} out of service (taken as disabled: "
                      "tlsgw is not given the flows)")
        issues.append(ConfigIssue(path, f"certificate {name!r} keeps its private key only in the gateway's "
                                        f"memory (pki.persist_keys: false) and {holder}, so {effect}; "
                                        f"{reimport_hint(name)}"))
    return issues


def _take_out_of_service(config: GatewayConfig, missing: list[tuple[str, str, str, str]]
                         ) -> tuple[GatewayConfig, frozenset[tuple[str, str, str]]]:
    """`config` with every enabled policy whose proxy lacks an in-memory key disabled."""
    servers = {proxy for _, _, kind, proxy in missing if kind == "server"}
    clients = {proxy for _, _, kind, proxy in missing if kind == "client"}
    if not servers and not clients:
        return config, frozenset()
    disabled: set[tuple[str, str, str]] = set()
    profiles = []
    for profile in config.profiles:
        server_policies = []
        for policy in profile.server_policies:
            if policy.enabled and policy.server_proxy in servers:
                disabled.add((profile.name, "server", policy.name))
                policy = replace(policy, enabled=False)
            server_policies.append(policy)
        client_policies = []
        for cpolicy in profile.client_policies:
            if cpolicy.enabled and cpolicy.client_proxy in clients:
                disabled.add((profile.name, "client", cpolicy.name))
                cpolicy = replace(cpolicy, enabled=False)
            client_policies.append(cpolicy)
        profiles.append(replace(profile, server_policies=tuple(server_policies),
                                client_policies=tuple(client_policies)))
    return replace(config, profiles=tuple(profiles)), frozenset(disabled)


def _openssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one phrase ("ee key too small")."""
    queue = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
    return "; ".join(reasons) or str(exc)


def _leaf_signature(leaf_keys: LeafKeys) -> Signature:
    return Signature.RSA if leaf_keys.kind.is_rsa else Signature.ECDSA


def _tls_issues(config: GatewayConfig, server_certificates: dict[str, tuple[StoredCert, ...]],
                leaf_keys: LeafKeys) -> tuple[list[ConfigIssue], frozenset[str]]:
    """What the running OpenSSL, or the certificates shown to clients, cannot do with each
    proxy's TLS settings (issue 5: "a choice OpenSSL on this host cannot do is an error
    naming it"); and the names of the proxies concerned, whose contexts are not built."""
    capabilities = openssl_capabilities()
    issues: list[ConfigIssue] = []
    failed: set[str] = set()
    for i, client_proxy in enumerate(config.client_proxies):
        problems = tls_settings_problems(client_proxy.cipher_suites, TlsSettings.of(client_proxy), capabilities,
                                         [("forged certificates", _leaf_signature(leaf_keys))])
        issues.extend(ConfigIssue(f"client_proxies[{i}].{where}", message) for where, message in problems)
        if problems:
            failed.add(client_proxy.name)
    for i, server_proxy in enumerate(config.server_proxies):
        shown = [(f"certificate {c.name!r}", signature_of(c.certificate))
                 for c in server_certificates.get(server_proxy.name, ())]
        problems = tls_settings_problems(server_proxy.cipher_suites, TlsSettings.of(server_proxy), capabilities, shown)
        issues.extend(ConfigIssue(f"server_proxies[{i}].{where}", message) for where, message in problems)
        if problems:
            failed.add(server_proxy.name)
    return issues, frozenset(failed)


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
        settings = TlsSettings.of(proxy)
        contexts: dict[str, ClientContexts] = {}
        for j, cert in enumerate(certs):
            session_id = hashlib.sha256(proxy.name.encode() + b"\0" + _fingerprint(cert)).digest()
            try:
                contexts[cert.name] = server_certificate_contexts(settings, cert, session_id)
            except SSL.Error as exc:
                issues.append(ConfigIssue(
                    f"server_proxies[{i}].certificates[{j}]",
                    f"certificate {cert.name!r} cannot be used by OpenSSL: {_openssl_reason(exc)}",
                ))
        if len(contexts) == len(certs):
            upstream = UpstreamContexts(settings)
            materials[proxy.name] = ServerProxyMaterial(
                proxy=proxy,
                certificates=ServerCertificates(certs),
                client_contexts={name: c.base for name, c in contexts.items()},
                upstream_context=upstream.base,
                client_context_sets=contexts,
                upstream_contexts=upstream,
            )
    return materials, issues


def check_certificates(config: GatewayConfig) -> list[ConfigIssue]:
    """What `tlsgw check-config` adds to the syntax check: every certificate reference
    resolves to a usable certificate (and key). Writes nothing. Raises ConfigError.

    Returns warnings: references to certificates whose key lives only in the running
    gateway's memory, which this process cannot see. They are no error (systemd runs
    check-config before every start, and such a key can only be given to a gateway that
    runs), but a gateway starting now would lack the key."""
    references = _load_references(config, open_store(config.pki))
    tls_issues, tls_failed = _tls_issues(config, references.server_certificates, LeafKeys())
    usable = {name: certs for name, certs in references.server_certificates.items() if name not in tls_failed}
    _, server_issues = _build_server_materials(config, usable)
    issues = references.issues + tls_issues + server_issues
    if issues:
        raise ConfigError(issues, source=config.source)
    return missing_key_issues(config, references.missing_keys,
                              holder="a gateway starting now would not have it (a running one may)")


def build_runtime(config: GatewayConfig, process: ProcessMaterial | None = None,
                  memory_keys: MemoryKeys | None = None) -> Runtime:
    """Load every certificate the configuration references. Raises ConfigError listing each
    reference that cannot be used, by its config path.

    `memory_keys`: the in-memory keys to build with (default: the process's)."""
    process = process or ProcessMaterial()
    store = open_store(config.pki, memory_keys=process.memory_keys if memory_keys is None else memory_keys)
    references = _load_references(config, store)
    trust_anchors, signing = references.trust_anchors, references.signing
    tls_issues, tls_failed = _tls_issues(config, references.server_certificates, process.leaf_keys)
    usable = {name: certs for name, certs in references.server_certificates.items() if name not in tls_failed}
    server_materials, server_issues = _build_server_materials(config, usable)
    issues = references.issues + tls_issues + server_issues
    untrusted: StoredCert | None = None
    if config.client_proxies:
        try:
            untrusted = ensure_untrusted_ca(store)
        except PkiError as exc:
            issues.append(ConfigIssue("pki.dir", str(exc)))
    if issues:
        raise ConfigError(issues, source=config.source)

    missing = missing_key_issues(config, references.missing_keys,
                                 holder="this gateway was not given it since it started")
    config, out_of_service = _take_out_of_service(config, references.missing_keys)
    materials: dict[str, ClientProxyMaterial] = {}
    for proxy in config.client_proxies:
        if proxy.name not in signing:
            continue  # out of service: its signing key lives only in memory and is missing
        ca = signing[proxy.name]
        assert untrusted is not None
        settings = TlsSettings.of(proxy)
        trusted = client_proxy_contexts(settings, (ca.certificate, *ca.chain), _fingerprint(ca))
        untrusted_contexts = client_proxy_contexts(settings, (untrusted.certificate,), _fingerprint(untrusted))
        upstream = UpstreamContexts(settings)
        materials[proxy.name] = ClientProxyMaterial(
            proxy=proxy,
            signing=ca,
            trusted_context=trusted.base,
            untrusted_context=untrusted_contexts.base,
            upstream_context=upstream.base,
            trusted_contexts=trusted,
            untrusted_contexts=untrusted_contexts,
            upstream_contexts=upstream,
        )
    return Runtime(
        config=config,
        store=store,
        untrusted_ca=untrusted,
        client_proxies=materials,
        trust_anchors=trust_anchors,
        process=process,
        server_proxies=server_materials,
        missing_keys=tuple(missing),
        out_of_service=out_of_service,
    )
