from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gateway.config.model import GatewayConfig
from netfilter.model import (
    Chain,
    Direction,
    Element,
    Family,
    IifName,
    InSet,
    IpAddress,
    IpProtocol,
    L4Proto,
    MarkIs,
    PacketType,
    PortSpan,
    Proto,
    Rule,
    Ruleset,
    Set,
    SetEtherDaddr,
    SetFlag,
    SetKey,
    SetMark,
    SetPacketType,
    SetType,
    SocketTransparent,
    Table,
    TcpPort,
    TProxy,
    Verdict,
    VlanId,
)
from netfilter.plan import steering
from netfilter.render_nft import render, render_remove, render_rule
from tests.support.steering_samples import BRIDGE_MAC, SAMPLES, one_segment

GOLDEN = Path(__file__).parent / "golden"

SETS_RULESET = Ruleset(
    tables=(
        Table(
            Family.INET,
            "tlsgw",
            sets=(
                Set("alive", SetType.INET_PROTO, flags=(SetFlag.TIMEOUT,), timeout=2, elements=(Element(Proto.TCP),)),
                Set(
                    "bypass",
                    SetType.IPV4_ADDR,
                    flags=(SetFlag.INTERVAL, SetFlag.TIMEOUT),
                    elements=(Element(IPv4Network("192.0.2.7/32"), timeout=30), Element(IPv4Network("10.0.0.0/8"))),
                ),
                Set("ports", SetType.INET_SERVICE, elements=(Element(443), Element(993))),
            ),
            chains=(
                Chain(
                    "steer",
                    rules=(
                        Rule(
                            matches=(InSet(SetKey.L4PROTO, "alive"), InSet(SetKey.IP_SADDR, "bypass")),
                            verdict=Verdict.RETURN,
                        ),
                        Rule(matches=(InSet(SetKey.TCP_DPORT, "ports"),), statements=(TProxy(8443),)),
                    ),
                ),
            ),
        ),
    )
)


def _compare_with_golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; run pytest with --update-golden to create it"
    assert text == path.read_text(), f"{path} differs; review the diff, then run pytest with --update-golden"


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_steering_script_matches_golden(sample: str, update_golden: bool) -> None:
    make: Callable[[], GatewayConfig] = SAMPLES[sample]
    _compare_with_golden(f"{sample}.nft", render(steering(make(), BRIDGE_MAC)), update_golden)


def test_remove_script_matches_golden(update_golden: bool) -> None:
    _compare_with_golden("remove.nft", render_remove(steering(one_segment(), BRIDGE_MAC)), update_golden)


def test_sets_script_matches_golden(update_golden: bool) -> None:
    _compare_with_golden("sets.nft", render(SETS_RULESET), update_golden)


def test_each_table_is_added_deleted_then_defined_in_order() -> None:
    lines = render(steering(one_segment(), BRIDGE_MAC)).splitlines()
    heads = [line for line in lines if line.startswith(("add table", "delete table", "table"))]
    assert heads == [
        "add table bridge tlsgw",
        "delete table bridge tlsgw",
        "table bridge tlsgw {",
        "add table ip tlsgw",
        "delete table ip tlsgw",
        "table ip tlsgw {",
    ]


def test_remove_script_only_names_own_tables() -> None:
    script = render_remove(steering(one_segment(), BRIDGE_MAC))
    body = [line for line in script.splitlines() if not line.startswith("#")]
    assert body == [
        "add table bridge tlsgw",
        "delete table bridge tlsgw",
        "add table ip tlsgw",
        "delete table ip tlsgw",
    ]


def test_script_never_flushes_the_ruleset() -> None:
    for make in SAMPLES.values():
        script = render(steering(make(), BRIDGE_MAC)) + render_remove(steering(make(), BRIDGE_MAC))
        assert "flush" not in script


RULES = [
    (
        Rule(matches=(IifName(("eth1",)),), verdict=Verdict.ACCEPT),
        Family.BRIDGE,
        'iifname "eth1" accept',
        "iifname-one",
    ),
    (
        Rule(matches=(IifName(("a", "b")),), verdict=Verdict.DROP),
        Family.IP,
        'iifname { "a", "b" } drop',
        "iifname-several",
    ),
    (Rule(matches=(L4Proto(Proto.UDP),), verdict=Verdict.RETURN), Family.IP, "meta l4proto udp return", "l4proto"),
    (
        Rule(matches=(IpProtocol(Proto.TCP),), verdict=Verdict.ACCEPT),
        Family.BRIDGE,
        "ip protocol tcp accept",
        "ip-proto",
    ),
    (
        Rule(matches=(IpAddress(Direction.SOURCE, (IPv4Network("10.0.0.1/32"),)),), verdict=Verdict.ACCEPT),
        Family.IP,
        "ip saddr 10.0.0.1 accept",
        "host-address-without-prefix",
    ),
    (
        Rule(
            matches=(IpAddress(Direction.DESTINATION, (IPv4Network("10.0.0.0/8"), IPv4Network("192.0.2.0/24"))),),
            verdict=Verdict.ACCEPT,
        ),
        Family.IP,
        "ip daddr { 10.0.0.0/8, 192.0.2.0/24 } accept",
        "networks",
    ),
    (
        Rule(matches=(TcpPort(Direction.SOURCE, (PortSpan(8000, 8080),)),), verdict=Verdict.ACCEPT),
        Family.IP,
        "tcp sport 8000-8080 accept",
        "port-range",
    ),
    (
        Rule(
            matches=(TcpPort(Direction.DESTINATION, (PortSpan.single(443), PortSpan(8000, 8080))),),
            verdict=Verdict.ACCEPT,
        ),
        Family.IP,
        "tcp dport { 443, 8000-8080 } accept",
        "ports",
    ),
    (Rule(matches=(VlanId((10,)),), verdict=Verdict.ACCEPT), Family.BRIDGE, "vlan id 10 accept", "vlan"),
    (Rule(matches=(MarkIs(0x7E570001),), verdict=Verdict.ACCEPT), Family.IP, "meta mark 0x7e570001 accept", "mark"),
    (
        Rule(statements=(SetEtherDaddr("02:00:00:00:00:01"), SetPacketType(PacketType.HOST))),
        Family.BRIDGE,
        "ether daddr set 02:00:00:00:00:01 meta pkttype set host",
        "divert-without-verdict",
    ),
    (
        Rule(matches=(L4Proto(Proto.TCP), SocketTransparent()), statements=(SetMark(1),), verdict=Verdict.ACCEPT),
        Family.IP,
        "meta l4proto tcp socket transparent 1 meta mark set 0x00000001 accept",
        "socket-transparent",
    ),
    (Rule(statements=(TProxy(8443),)), Family.IP, "tproxy to :8443", "tproxy-ip"),
    (Rule(statements=(TProxy(8443),)), Family.INET, "tproxy ip to :8443", "tproxy-inet-names-family"),
    (
        Rule(verdict=Verdict.ACCEPT, comment="segment a: b"),
        Family.IP,
        'accept comment "segment a: b"',
        "comment",
    ),
]


@pytest.mark.parametrize(("rule", "family", "text"), [r[:3] for r in RULES], ids=[r[3] for r in RULES])
def test_render_rule_text(rule: Rule, family: Family, text: str) -> None:
    assert render_rule(rule, family) == text
