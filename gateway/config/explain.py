"""A plain-language summary of a loaded configuration, for `tlsgw check-config --explain`.

It follows the path a flow takes (segment → profile → policies → proxies) so an operator
can check that what they wrote means what they intended, without reading the YAML again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    GatewayConfig,
    InspectionProfile,
    PortRange,
    ServerPolicy,
    ServerProxy,
    TlsVersion,
    WORKERS_AUTO,
)
from gateway.tls.ciphers import needs_security_level_0, select_suites


def _drain(timeout: float, fail_mode: str) -> str:
    if timeout <= 0:
        return "On stop, sessions in flight are cut at once (drain_timeout 0)"
    meanwhile = "new flows pass untouched" if fail_mode == "open" else "new flows are still inspected (fail_mode closed)"
    return f"On stop, sessions in flight get up to {timeout:g}s to finish while {meanwhile}; the rest is cut"


def explain(cfg: GatewayConfig) -> str:
    """The configuration as indented lines of text (no trailing newline)."""
    g = cfg.gateway
    lines = [
        f"Configuration {cfg.source or '(unnamed)'}",
        f"Bridge {g.bridge}; steering with {g.netfilter.backend.value} (table {g.netfilter.table}, "
        f"mark {g.netfilter.mark:#x}, routing table {g.netfilter.route_table})",
        f"SSL client inspection {_on(g.ssl_inspection.client)}, SSL server inspection {_on(g.ssl_inspection.server)}",
        f"At most {g.limits.max_concurrent} inspected connections; above that new flows are "
        f"{'bypassed' if g.limits.on_exceed.value == 'bypass' else 'blocked'}",
        f"Handshake timeout {g.handshake_timeout:g}s, idle timeout client side {g.idle_timeouts()[0]:g}s, "
        f"server side {g.idle_timeouts()[1]:g}s; "
        f"inspection log {g.inspection_log}",
        "While tlsgw is not running, the bridge "
        + ("forwards every flow untouched (fail_mode open)" if g.fail_mode.value == "open"
           else "drops the flows tlsgw would inspect (fail_mode closed)"),
        _drain(g.drain_timeout, g.fail_mode.value),
        f"Control socket {g.control.socket} (group {g.control.group}); metrics "
        + (f"on http://{g.metrics.address}:{g.metrics.port}/metrics" if g.metrics else "endpoint off"),
        _workers(g.workers),
    ]
    if not g.segments:
        lines.append("No segments: nothing is inspected.")
    profiles = {p.name: p for p in cfg.profiles}
    for i, segment in enumerate(g.segments):
        lines.append(
            f"Segment {segment.name}: clients on {segment.client_port}, servers on {segment.server_port}, "
            f"listener port {g.listen_port + i}"
        )
        scope = []
        if segment.vlans:
            scope.append("VLANs " + ", ".join(map(str, segment.vlans)))
        if segment.sources:
            scope.append("from " + _join(segment.sources))
        if segment.destinations:
            scope.append("to " + _join(segment.destinations))
        if scope:
            lines.append("  only flows " + "; ".join(scope))
        profile = profiles.get(segment.profile)
        if profile is not None:
            lines.extend("  " + line for line in _profile(cfg, profile))
    unused = [p.name for p in cfg.profiles if all(s.profile != p.name for s in g.segments)]
    if unused:
        lines.append("Profiles not used by any segment: " + ", ".join(unused))
    return "\n".join(lines)


def _workers(workers: int | str) -> str:
    if workers == 1:
        return "Connections are served by the main process (workers: 1)"
    count = "one per usable CPU (workers: auto)" if workers == WORKERS_AUTO else f"{workers}"
    return (f"Connections are served by {count} worker processes sharing the listener ports; the main "
            "process keeps the rules, the control socket and the counters, and restarts a worker that dies")


def _profile(cfg: GatewayConfig, profile: InspectionProfile) -> list[str]:
    lines = [f"Profile {profile.name}" + (f" ({profile.description})" if profile.description else "")]
    if not profile.server_policies and not profile.client_policies:
        lines.append("  no policies: traffic passes uninspected")
    if profile.server_policies and profile.client_policies:
        lines.append("  a flow matching a server policy and a client policy is handled by the server policy")
    for policy in profile.server_policies:
        lines.extend("  " + line for line in _server_policy(cfg, policy))
    for client_policy in profile.client_policies:
        lines.extend("  " + line for line in _client_policy(cfg, client_policy))
    return lines


def _server_policy(cfg: GatewayConfig, policy: ServerPolicy) -> list[str]:
    proxy = cfg.server_proxy(policy.server_proxy)
    lines = [
        f"Server policy {policy.name} ({_state(policy.enabled, policy.locked)}): server proxy {proxy.name}",
        f"  decrypts {proxy.decrypted_service.value} to {_join(proxy.destinations)} on ports "
        f"{_ports(proxy.detection_ports)}, {_protocols(proxy.protocols)}",
        f"  certificates: {', '.join(proxy.certificates)} (chosen by SNI, fallback {proxy.certificates[0]})",
    ]
    lines.extend("  " + line for line in _tls(proxy))
    if policy.source_exceptions:
        lines.append(f"  never decrypted for clients in {_join(policy.source_exceptions)}")
    return lines


def _client_policy(cfg: GatewayConfig, policy: ClientPolicy) -> list[str]:
    proxy = cfg.client_proxy(policy.client_proxy)
    strict = [
        f"{'blocks' if proxy.block_invalid_certificates else 'shows the client'} invalid certificates",
        f"{'blocks' if proxy.block_expired_certificates else 'shows the client'} expired certificates",
        f"keys under {proxy.min_key_length} bits are invalid",
    ]
    lines = [
        f"Client policy {policy.name} ({_state(policy.enabled, policy.locked)}): client proxy {proxy.name}",
        f"  decrypts {proxy.decrypted_service.value} on ports {_ports(proxy.detection_ports)}, "
        f"{_protocols(proxy.protocols)}, forging with {proxy.signing_certificate}",
        "  " + "; ".join(strict) + ("; HTTP/2 downgraded to HTTP/1.1" if proxy.downgrade_http2 else ""),
    ]
    lines.extend("  " + line for line in _tls(proxy))
    lines.append(
        f"  sites asking for a client certificate are relayed untouched for {proxy.client_certificate_bypass_seconds:g}s; "
        f"sites whose certificate clients pin ({proxy.pinning_failures} refusals within "
        f"{proxy.pinning_window_seconds:g}s) for {proxy.pinning_bypass_seconds:g}s"
    )
    if policy.decryption_policy is None:
        lines.append("  no decryption policy: every domain is decrypted")
    else:
        dp = cfg.decryption_policy(policy.decryption_policy)
        lines.append(f"  decryption policy {dp.name}:")
        if dp.domains:
            lines.append(f"    not decrypted: {', '.join(dp.domains)}")
        for category in dp.categories:
            count = len(cfg.categories.get(category, ()))
            lines.append(f"    category {category} not decrypted ({count} domain{'' if count == 1 else 's'})")
        if dp.category_overrides:
            lines.append(f"    decrypted even so: {', '.join(dp.category_overrides)}")
    store = cfg.trust_store(policy.trust_store)
    roots = (["the default CA package"] if store.include_default_ca else []) + list(store.ca_certificates)
    lines.append(
        f"  trust store {store.name}: {', '.join(roots) if roots else 'no roots (every upstream is untrusted)'}"
    )
    if policy.never_decrypt:
        lines.append(f"  never decrypted for clients in {_join(policy.never_decrypt)}")
    if policy.always_decrypt:
        lines.append(f"  always decrypted for clients in {_join(policy.always_decrypt)}")
    return lines


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _state(enabled: bool, locked: bool) -> str:
    return ("enabled" if enabled else "disabled") + (", locked" if locked else "")


def _join(items: Iterable[object]) -> str:
    return ", ".join(map(str, items))


def _ports(ports: tuple[PortRange, ...]) -> str:
    return _join(ports)


def _tls(proxy: ClientProxy | ServerProxy) -> list[str]:
    """Protocols, criteria and the exact suite strings OpenSSL is given (issue 5)."""
    suites = select_suites(proxy.cipher_suites, proxy.protocols)
    criteria = proxy.cipher_suites
    lines = [
        f"cipher suites by key exchange {_words(criteria.key_exchange)}; bulk {_words(criteria.bulk)}; "
        f"MAC {_words(criteria.mac)}; encrypt-then-MAC {_on(proxy.encrypt_then_mac)}",
    ]
    if suites.tls13:
        lines.append(f"  TLS 1.3 suites: {suites.tls13_ciphersuites().decode()}")
    if suites.tls12:
        level = ":@SECLEVEL=0" if needs_security_level_0(suites.tls12, min(proxy.protocols)) else ""
        lines.append(f"  TLS 1.2 and below suites: {suites.cipher_list().decode()}{level}")
    lines.append("  toward clients never weaker than the server leg of each flow "
                 "(version, forward secrecy, AEAD); TLS 1.3 preferred")
    return lines


def _words(choices: Iterable[enum.Enum]) -> str:
    return ", ".join(str(c.value) for c in choices)


def _protocols(versions: tuple[TlsVersion, ...]) -> str:
    low, high = min(versions), max(versions)
    return low.label if low == high else f"{low.label} to {high.label}"
