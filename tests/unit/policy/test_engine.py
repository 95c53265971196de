"""The policy engine's precedence rules, as a table (DESIGN.md section 2, issue 2)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    DecryptionPolicy,
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    PortRange,
    Segment,
    ServerPolicy,
    ServerProxy,
    SslInspection,
    TlsVersion,
    TrustStore,
)
from gateway.policy.decision import Action, Outcome, PolicyKind
from gateway.policy.domains import DomainPattern, first_match
from gateway.policy.engine import decide, exempt_by_certificate
from gateway.policy.facts import FlowFacts

NET = IPv4Network


def make_config(ssl_server: bool = True, policy_enabled: bool = True, with_decryption_policy: bool = True) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySection(
            segments=(Segment("lan-wan", "eth1", "eth2", "default"),),
            ssl_inspection=SslInspection(client=True, server=ssl_server),
        ),
        server_proxies=(
            ServerProxy("web1", destinations=(NET("192.0.2.10/32"),), detection_ports=(PortRange(443, 443),),
                        certificates=("web1",)),
        ),
        client_proxies=(
            ClientProxy("outbound", signing_certificate="corp", detection_ports=(PortRange(443, 443), PortRange(8443, 8445))),
        ),
        decryption_policies=(
            DecryptionPolicy("default", domains=("*.bank.example", "update.vendor.example"),
                             categories=("finance",), category_overrides=("audit.money.example",)),
        ),
        trust_stores=(TrustStore("default"),),
        profiles=(
            InspectionProfile(
                "default",
                server_policies=(ServerPolicy("web1-in", "web1", source_exceptions=(NET("198.51.100.0/24"),)),),
                client_policies=(
                    ClientPolicy("out", client_proxy="outbound", trust_store="default",
                                 decryption_policy="default" if with_decryption_policy else None,
                                 enabled=policy_enabled,
                                 never_decrypt=(NET("10.0.9.0/24"),), always_decrypt=(NET("10.0.5.7/32"),)),
                ),
            ),
        ),
        categories={"finance": ("*.money.example", "money.example")},
    )


def facts(client: str = "10.0.1.5", server: str = "203.0.113.7", port: int = 443, sni: str | None = "shop.example",
          versions: tuple[int, ...] = (0x0304, 0x0303)) -> FlowFacts:
    return FlowFacts("lan-wan", IPv4Address(client), 40000, IPv4Address(server), port, sni=sni,
                     offered_versions=versions)


CASES = [
    ("plain-site-decrypted", facts(), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("port-range-matches", facts(port=8444), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("undetected-port-not-decrypted", facts(port=8080), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("wildcard-domain-exempt-any-depth", facts(sni="a.b.www.bank.example"), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("wildcard-does-not-cover-apex", facts(sni="bank.example"), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("exact-domain-exempt", facts(sni="update.vendor.example"), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("exact-domain-not-subdomain", facts(sni="x.update.vendor.example"), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("sni-case-and-trailing-dot", facts(sni="WWW.Bank.Example."), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("category-exempt", facts(sni="pay.money.example"), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("category-override-decrypted", facts(sni="audit.money.example"), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("never-decrypt-source", facts(client="10.0.9.20"), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("never-decrypt-beats-nothing-else", facts(client="10.0.9.20", sni="shop.example"), Action.SPLICE, Outcome.NOT_DECRYPTED),
    ("always-decrypt-beats-domain", facts(client="10.0.5.7", sni="www.bank.example"), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("always-decrypt-beats-category", facts(client="10.0.5.7", sni="pay.money.example"), Action.DECRYPT_CLIENT, Outcome.DECRYPTED),
    ("unsupported-version-bypassed", facts(versions=(0x0301,)), Action.SPLICE, Outcome.BYPASSED),
    ("server-policy-wins", facts(server="192.0.2.10"), Action.DECRYPT_SERVER, Outcome.DECRYPTED),
    ("server-source-exception", facts(server="192.0.2.10", client="198.51.100.9"), Action.SPLICE, Outcome.NOT_DECRYPTED),
]


@pytest.mark.parametrize(("flow", "action", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_follows_precedence(flow: FlowFacts, action: Action, outcome: Outcome) -> None:
    decision = decide(make_config(), flow)
    assert (decision.action, decision.outcome) == (action, outcome), decision.reason


def test_server_policy_decision_names_server_policy_and_the_shadowed_client_policy() -> None:
    decision = decide(make_config(), facts(server="192.0.2.10"))
    assert decision.policy_kind is PolicyKind.SERVER
    assert decision.policy == "web1-in"
    assert "precedence over client policy 'out'" in decision.reason


def test_server_inspection_off_falls_back_to_client_policy() -> None:
    decision = decide(make_config(ssl_server=False), facts(server="192.0.2.10"))
    assert decision.policy_kind is PolicyKind.CLIENT
    assert decision.action is Action.DECRYPT_CLIENT


def test_disabled_client_policy_decrypts_nothing() -> None:
    decision = decide(make_config(policy_enabled=False), facts())
    assert decision.action is Action.SPLICE and decision.policy is None


def test_client_decision_carries_trust_store_and_proxy() -> None:
    decision = decide(make_config(), facts())
    assert (decision.proxy, decision.trust_store, decision.profile) == ("outbound", "default", "default")


def test_domain_reason_names_the_matching_pattern() -> None:
    decision = decide(make_config(), facts(sni="online.bank.example"))
    assert "'*.bank.example'" in decision.reason


def test_no_sni_defers_exemption_to_certificate() -> None:
    config = make_config()
    decision = decide(config, facts(sni=None))
    assert decision.action is Action.DECRYPT_CLIENT
    assert decision.decryption_policy == "default"
    assert exempt_by_certificate(config, decision, ("online.bank.example",)) is not None
    assert exempt_by_certificate(config, decision, ("*.money.example",)) is not None
    assert exempt_by_certificate(config, decision, ("shop.example",)) is None


def test_sni_decision_needs_no_certificate_check() -> None:
    config = make_config()
    decision = decide(config, facts(sni="shop.example"))
    assert exempt_by_certificate(config, decision, ("online.bank.example",)) is None


def test_no_decryption_policy_decrypts_exempt_looking_domains() -> None:
    decision = decide(make_config(with_decryption_policy=False), facts(sni="www.bank.example"))
    assert decision.action is Action.DECRYPT_CLIENT


PATTERNS = [
    ("*.company.com", "finance.company.com", True),
    ("*.company.com", "legal.compliance.company.com", True),
    ("*.company.com", "company.com", False),
    ("*.company.com", "evilcompany.com", False),
    ("company.com", "company.com", True),
    ("company.com", "www.company.com", False),
]


@pytest.mark.parametrize(("pattern", "host", "expected"), PATTERNS, ids=[f"{p}~{h}" for p, h, _ in PATTERNS])
def test_domain_pattern_matching(pattern: str, host: str, expected: bool) -> None:
    assert DomainPattern(pattern).matches(host) is expected


def test_first_match_without_host_matches_nothing() -> None:
    assert first_match(("*.example.com",), None) is None


def test_protocols_default_is_tls12_and_13() -> None:
    assert make_config().client_proxies[0].protocols == (TlsVersion.TLS1_2, TlsVersion.TLS1_3)
