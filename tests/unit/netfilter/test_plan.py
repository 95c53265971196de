from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network
from typing import Any

import pytest

from gateway.config.model import GatewayConfig, GatewaySection, NetfilterSettings, Segment
from netfilter.errors import NetfilterError
from netfilter.model import (
    Direction,
    Family,
    IifName,
    IpAddress,
    MarkIs,
    PolicyRoute,
    PortSpan,
    Rule,
    SetEtherDaddr,
    SetMark,
    SocketTransparent,
    TcpPort,
    TProxy,
    VlanId,
)
from netfilter.plan import SEGMENT_TAG_BASE, steering
from tests.support.steering_samples import BRIDGE_MAC, full, no_inspection, one_segment


def _rules(cfg: GatewayConfig, family: Family, mac: str = BRIDGE_MAC) -> tuple[Rule, ...]:
    ruleset = steering(cfg, mac)
    (chain,) = ruleset.table(family, cfg.gateway.netfilter.table).chains
    return chain.rules


def _by_comment(rules: tuple[Rule, ...], comment: str) -> Rule:
    (found,) = [r for r in rules if r.comment == comment]
    return found


def _piece(rule: Rule, kind: type) -> object:
    (found,) = [p for p in (*rule.matches, *rule.statements) if isinstance(p, kind)]
    return found


def _with_gateway(cfg: GatewayConfig, **changes: Any) -> GatewayConfig:
    return dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, **changes))


def test_recipe_socket_rule_comes_first_in_ip_table() -> None:
    first = _rules(one_segment(), Family.IP)[0]
    assert any(isinstance(m, SocketTransparent) for m in first.matches)
    assert first.statements == (SetMark(1),)


def test_client_side_divert_rewrites_mac_and_tags_segment() -> None:
    rule = _by_comment(_rules(one_segment(), Family.BRIDGE), "segment lan-wan: client policies")
    assert _piece(rule, IifName) == IifName(("eth1",))
    assert _piece(rule, TcpPort) == TcpPort(Direction.DESTINATION, (PortSpan.single(443),))
    assert _piece(rule, SetEtherDaddr) == SetEtherDaddr(BRIDGE_MAC)
    assert _piece(rule, SetMark) == SetMark(SEGMENT_TAG_BASE)


def test_server_side_divert_matches_source_port_without_tag() -> None:
    rule = _by_comment(_rules(one_segment(), Family.BRIDGE), "segment lan-wan: return of client policies")
    assert _piece(rule, IifName) == IifName(("eth2",))
    assert _piece(rule, TcpPort) == TcpPort(Direction.SOURCE, (PortSpan.single(443),))
    assert not any(isinstance(s, SetMark) for s in rule.statements)


def test_tproxy_rule_sends_tagged_packets_to_segment_listener() -> None:
    rule = _by_comment(_rules(one_segment(), Family.IP), "segment lan-wan: client policies")
    assert _piece(rule, IifName) == IifName(("br0",))
    assert _piece(rule, MarkIs) == MarkIs(SEGMENT_TAG_BASE)
    assert rule.statements == (TProxy(8443), SetMark(1))


def test_segment_index_sets_listener_port_and_tag_even_after_skipped_segment() -> None:
    rule = _by_comment(_rules(full(), Family.IP), "segment guest: client policies")
    assert _piece(rule, MarkIs) == MarkIs(SEGMENT_TAG_BASE + 2)
    assert TProxy(9002) in rule.statements


def test_segment_without_ports_is_skipped() -> None:
    assert not [r for r in _rules(full(), Family.BRIDGE) if "dmz" in r.comment]
    assert "eth3" not in steering(full(), BRIDGE_MAC).rp_filter_off


def test_nothing_steered_when_inspection_is_off() -> None:
    # Only the rule that keeps live sessions (issue 6): empty unless a reload turned inspection off.
    assert [r.comment for r in _rules(no_inspection(), Family.BRIDGE)] == ["sessions kept through a fallback or a reload"]
    assert len(_rules(no_inspection(), Family.IP)) == 1


def test_overlapping_and_adjacent_ports_merge() -> None:
    rule = _by_comment(_rules(full(), Family.BRIDGE), "segment lan-wan: client policies")
    assert _piece(rule, TcpPort) == TcpPort(Direction.DESTINATION, (PortSpan(443, 444), PortSpan(8440, 8444)))


def test_disabled_client_policy_ports_are_not_steered() -> None:
    for rule in _rules(full(), Family.BRIDGE):
        for match in rule.matches:
            if isinstance(match, TcpPort):
                assert not any(s.low <= 993 <= s.high for s in match.spans), rule.comment


def test_sources_collapse_and_filter_both_directions() -> None:
    rules = _rules(full(), Family.BRIDGE)
    client = _by_comment(rules, "segment lan-wan: client policies")
    back = _by_comment(rules, "segment lan-wan: return of client policies")
    sources = (IPv4Network("10.0.0.0/23"),)
    assert IpAddress(Direction.SOURCE, sources) in client.matches
    assert IpAddress(Direction.DESTINATION, sources) in back.matches


def test_destinations_filter_both_directions() -> None:
    rules = _rules(full(), Family.BRIDGE)
    destinations = (IPv4Network("203.0.113.0/24"),)
    client = _by_comment(rules, "segment guest: client policies")
    back = _by_comment(rules, "segment guest: return of client policies")
    assert IpAddress(Direction.DESTINATION, destinations) in client.matches
    assert IpAddress(Direction.SOURCE, destinations) in back.matches


def test_enabled_server_policy_steers_its_proxy_destinations_only() -> None:
    rules = _rules(full(), Family.BRIDGE)
    web1 = _by_comment(rules, "segment lan-wan: server proxy web1")
    web1_destinations = (IPv4Network("192.0.2.10/32"), IPv4Network("198.51.100.0/28"))
    assert IpAddress(Direction.DESTINATION, web1_destinations) in web1.matches
    assert _piece(web1, TcpPort) == TcpPort(Direction.DESTINATION, (PortSpan.single(443), PortSpan.single(8443)))
    assert not [r for r in rules if "web2" in r.comment]


def test_server_inspection_off_drops_server_proxy_rules() -> None:
    cfg = full()
    off = _with_gateway(cfg, ssl_inspection=dataclasses.replace(cfg.gateway.ssl_inspection, server=False))
    assert not [r for r in _rules(off, Family.BRIDGE) if "server proxy" in r.comment]


def test_vlan_segment_matches_tag_and_vlan_devices() -> None:
    cfg = full()
    bridge_rule = _by_comment(_rules(cfg, Family.BRIDGE), "segment guest: client policies")
    ip_rule = _by_comment(_rules(cfg, Family.IP), "segment guest: client policies")
    assert _piece(bridge_rule, VlanId) == VlanId((10, 20))
    assert _piece(ip_rule, IifName) == IifName(("br-gw.10", "br-gw.20"))


def test_ruleset_carries_routing_and_rp_filter_interfaces() -> None:
    ruleset = steering(full(), BRIDGE_MAC)
    assert ruleset.routing == PolicyRoute(mark=2, table=200)
    assert ruleset.bridge == "br-gw"
    assert ruleset.rp_filter_off == ("br-gw", "eth1", "eth2", "br-gw.10", "br-gw.20", "eth5", "eth6")


def test_tables_use_configured_name_in_bridge_and_ip_families() -> None:
    ruleset = steering(full(), BRIDGE_MAC)
    assert [t.label for t in ruleset.tables] == ["bridge tlsgw_test", "ip tlsgw_test"]


def test_bridge_mac_is_normalised_to_lower_case() -> None:
    rule = _rules(one_segment(), Family.BRIDGE, mac="02:AB:00:00:00:01")[0]
    assert _piece(rule, SetEtherDaddr) == SetEtherDaddr("02:ab:00:00:00:01")


@pytest.mark.parametrize("mac", ["", "02:00:00:00:00", "zz:00:00:00:00:01"], ids=["empty", "short", "not-hex"])
def test_unusable_bridge_mac_is_refused(mac: str) -> None:
    with pytest.raises(NetfilterError) as caught:
        steering(one_segment(), mac)
    assert caught.value.command == "validate"


def test_listener_port_beyond_65535_is_refused() -> None:
    with pytest.raises(NetfilterError) as caught:
        steering(_with_gateway(one_segment(), listen_port=65535 + 1), BRIDGE_MAC)
    assert caught.value.command == "plan"
    assert "gateway.segments[0]" in caught.value.message


def test_routing_mark_colliding_with_segment_tag_is_refused() -> None:
    cfg = _with_gateway(one_segment(), netfilter=NetfilterSettings(mark=SEGMENT_TAG_BASE))
    with pytest.raises(NetfilterError) as caught:
        steering(cfg, BRIDGE_MAC)
    assert caught.value.command == "plan"


def test_bad_port_name_is_refused() -> None:
    cfg = one_segment()
    segment = Segment(name="x", client_port="eth 1", server_port="eth2", profile="default")
    with pytest.raises(NetfilterError):
        steering(dataclasses.replace(cfg, gateway=GatewaySection(segments=(segment,))), BRIDGE_MAC)
