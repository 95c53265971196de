"""decide(config, facts) -> Decision: which policy handles a flow and whether to decrypt.

Order of precedence, each step the product's rule:
1. A server policy whose server proxy covers the destination address and port wins over
   any client policy ("the SSL server policy decrypts the SSL session").
   Its source exceptions are relayed untouched.
2. Otherwise the enabled client policy whose client proxy's detection ports contain the
   destination port (the loader guarantees at most one per profile).
3. Within a client policy: never-decrypt sources first (an explicit promise to those
   users), then always-decrypt sources (they override domain and category exemptions),
   then domain exemptions (SNI is trusted when it names an exempt domain), then
   categories (minus category overrides). Anything left is decrypted.
4. Versions: a client that offers no protocol version the proxy has enabled cannot be
   decrypted; it is bypassed ("requirements not met"), not blocked, as the product does.

Pure: no I/O, no clock. The proxy shell calls it once per flow after the ClientHello.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from gateway.config.model import (
    ClientPolicy,
    DecryptionPolicy,
    GatewayConfig,
    InspectionProfile,
    ServerPolicy,
    TlsVersion,
    networks_contain,
    ports_contain,
)
from gateway.policy.decision import Action, Decision, Outcome, PolicyKind
from gateway.policy.domains import first_match
from gateway.policy.facts import FlowFacts

# TLS wire versions by the model's enum, for the "offered versions" check.
WIRE_VERSIONS: dict[TlsVersion, int] = {
    TlsVersion.SSL3: 0x0300,
    TlsVersion.TLS1_0: 0x0301,
    TlsVersion.TLS1_1: 0x0302,
    TlsVersion.TLS1_2: 0x0303,
    TlsVersion.TLS1_3: 0x0304,
}


def decide(config: GatewayConfig, facts: FlowFacts) -> Decision:
    segment = next((s for s in config.gateway.segments if s.name == facts.segment), None)
    if segment is None:
        return Decision(Action.SPLICE, Outcome.BYPASSED, f"no segment named {facts.segment!r}")
    profile = config.profile(segment.profile)

    if config.gateway.ssl_inspection.server:
        server_policy = match_server_policy(config, profile, facts.server, facts.server_port)
        if server_policy is not None:
            shadowed = match_client_policy(config, profile, facts.server_port) \
                if config.gateway.ssl_inspection.client else None
            return _decide_server(profile, server_policy, facts, shadowed)

    if not config.gateway.ssl_inspection.client:
        return Decision(Action.SPLICE, Outcome.NOT_DECRYPTED, "SSL client inspection is off",
                        profile=profile.name)
    client_policy = match_client_policy(config, profile, facts.server_port)
    if client_policy is None:
        return Decision(Action.SPLICE, Outcome.NOT_DECRYPTED, "no policy matches the flow",
                        profile=profile.name)
    return _decide_client(config, profile, client_policy, facts)


def match_server_policy(
    config: GatewayConfig, profile: InspectionProfile, server: IPv4Address, port: int
) -> ServerPolicy | None:
    for policy in profile.server_policies:
        if not policy.enabled:
            continue
        proxy = config.server_proxy(policy.server_proxy)
        if networks_contain(proxy.destinations, server) and ports_contain(proxy.detection_ports, port):
            return policy
    return None


def match_client_policy(config: GatewayConfig, profile: InspectionProfile, port: int) -> ClientPolicy | None:
    for policy in profile.client_policies:
        if policy.enabled and ports_contain(config.client_proxy(policy.client_proxy).detection_ports, port):
            return policy
    return None


def offers_enabled_version(enabled: tuple[TlsVersion, ...], offered: tuple[int, ...]) -> bool:
    """An empty `offered` means the ClientHello did not say (treated as acceptable)."""
    if not offered:
        return True
    return any(WIRE_VERSIONS[v] in offered for v in enabled)


def _decide_server(profile: InspectionProfile, policy: ServerPolicy, facts: FlowFacts,
                   shadowed: ClientPolicy | None) -> Decision:
    base = dict(profile=profile.name, policy=policy.name, policy_kind=PolicyKind.SERVER,
                proxy=policy.server_proxy)
    precedence = (f" (server policy takes precedence over client policy {shadowed.name!r})"
                  if shadowed is not None else "")
    if networks_contain(policy.source_exceptions, facts.client):
        return Decision(Action.SPLICE, Outcome.NOT_DECRYPTED,
                        f"source {facts.client} is a source exception{precedence}", **base)
    return Decision(Action.DECRYPT_SERVER, Outcome.DECRYPTED, f"server policy{precedence}", **base)


def _decide_client(
    config: GatewayConfig, profile: InspectionProfile, policy: ClientPolicy, facts: FlowFacts
) -> Decision:
    proxy = config.client_proxy(policy.client_proxy)
    base = dict(profile=profile.name, policy=policy.name, policy_kind=PolicyKind.CLIENT, proxy=proxy.name,
                trust_store=policy.trust_store)

    if networks_contain(policy.never_decrypt, facts.client):
        return Decision(Action.SPLICE, Outcome.NOT_DECRYPTED, f"source {facts.client} is never decrypted", **base)
    if not offers_enabled_version(proxy.protocols, facts.offered_versions):
        return Decision(Action.SPLICE, Outcome.BYPASSED,
                        "client offered no protocol version enabled in the client proxy", **base)
    if networks_contain(policy.always_decrypt, facts.client):
        return Decision(Action.DECRYPT_CLIENT, Outcome.DECRYPTED, f"source {facts.client} is always decrypted", **base)

    if policy.decryption_policy is not None:
        dpolicy = config.decryption_policy(policy.decryption_policy)
        if facts.sni is None:
            return Decision(Action.DECRYPT_CLIENT, Outcome.DECRYPTED, "client policy (no SNI)",
                            decryption_policy=dpolicy.name, **base)
        exemption = decryption_exemption(config, dpolicy, facts.sni)
        if exemption is not None:
            return Decision(Action.SPLICE, Outcome.NOT_DECRYPTED, exemption, **base)
    return Decision(Action.DECRYPT_CLIENT, Outcome.DECRYPTED, "client policy", **base)


def decryption_exemption(config: GatewayConfig, dpolicy: DecryptionPolicy, host: str) -> str | None:
    """Why `host` must not be decrypted under `dpolicy` (a domain or category exception), or None."""
    domain = first_match(dpolicy.domains, host)
    if domain is not None:
        return f"domain exception {domain!r} in decryption policy {dpolicy.name!r}"
    if first_match(dpolicy.category_overrides, host) is None:
        for category in dpolicy.categories:
            if first_match(config.categories.get(category, ()), host) is not None:
                return f"category {category!r} in decryption policy {dpolicy.name!r}"
    return None


def exempt_by_certificate(config: GatewayConfig, decision: Decision, names: tuple[str, ...]) -> str | None:
    """For a flow without SNI: the exemption one of the upstream certificate's names falls
    under, so the product's "server certificate decides" rule still keeps an exempt site
    undecrypted. None when the flow may be decrypted."""
    if decision.decryption_policy is None:
        return None
    dpolicy = config.decryption_policy(decision.decryption_policy)
    for name in names:
        exemption = decryption_exemption(config, dpolicy, name.removeprefix("*."))
        if exemption is not None:
            return exemption
    return None
