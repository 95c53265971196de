from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network

import pytest

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    NetfilterSettings,
    PortRange,
    Segment,
    SslInspection,
    TunnelSettings,
)
from netfilter.errors import NetfilterError
from netfilter.tunnel_plan import (
    OUT_MARK_BASE,
    parse_counters,
    render_alive_refresh,
    render_tunnel_nft,
    render_tunnel_remove,
    tunnel_plan,
)


def config(segments: int = 1, **gateway: object) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySection(
            segments=tuple(Segment(f"seg{i}", f"eth{2 * i + 1}", f"eth{2 * i + 2}", "default") for i in range(segments)),
            tunnels=TunnelSettings(enabled=True), **gateway),  # type: ignore[arg-type]
        client_proxies=(ClientProxy("outbound", "ca", (PortRange(443, 443), PortRange(8443, 8444))),),
        profiles=(InspectionProfile("default", client_policies=(ClientPolicy("out", "outbound", "default"),)),),
    )


def test_plan_gives_each_segment_a_tun_device_mark_table_and_listener() -> None:
    plan = tunnel_plan(config(segments=2))
    assert plan.table == "tlsgw_tunnel"
    assert [(s.tun, s.out_mark, s.route_table, s.listen_port) for s in plan.segments] == [
        ("tlsgwt0", OUT_MARK_BASE, 110, 8443), ("tlsgwt1", OUT_MARK_BASE + 1, 111, 8444)]
    assert plan.ports == ("eth1", "eth2", "eth3", "eth4")
    assert plan.fallback_table == 110
    assert plan.peer_timeout == 360


def test_segments_with_nothing_to_inspect_divert_no_tunnel() -> None:
    plan = tunnel_plan(config(ssl_inspection=SslInspection(client=False)))
    assert plan.segments == ()
    script = render_tunnel_nft(plan)
    assert "drop" not in script and "tproxy" not in script


def test_script_drops_only_tunnel_protocols_on_segment_ports_while_alive() -> None:
    script = render_tunnel_nft(tunnel_plan(config()))
    drop = [line.strip() for line in script.splitlines() if "drop" in line]
    assert drop == ['iifname { "eth1", "eth2" } ether type ip ip protocol { 4, 47 } ip protocol @alive '
                    'counter drop comment "tunnels taken by tlsgw"']


def test_script_tproxies_tun_traffic_and_marks_answers_into_the_tun() -> None:
    lines = [line.strip() for line in render_tunnel_nft(tunnel_plan(config())).splitlines()]
    assert ('iifname "tlsgwt0" tcp dport { 443, 8443-8444 } tproxy to :8443 meta mark set 0x1 accept '
            'comment "segment seg0: tunneled flows"') in lines
    assert "ip daddr . ip saddr . tcp sport @peers0 meta mark set 0x7e5a0000" in lines
    assert "ip saddr . ip daddr . tcp dport @peers0 meta mark set 0x7e5a0000" in lines
    assert "type route hook output priority -150; policy accept;" in lines


def test_script_replaces_only_its_own_tables() -> None:
    script = render_tunnel_nft(tunnel_plan(config()))
    tables = {line.split("{")[0].strip() for line in script.splitlines() if line.startswith(("add table", "delete table", "table"))}
    assert tables == {"add table bridge tlsgw_tunnel", "delete table bridge tlsgw_tunnel", "table bridge tlsgw_tunnel",
                      "add table ip tlsgw_tunnel", "delete table ip tlsgw_tunnel", "table ip tlsgw_tunnel"}
    assert render_tunnel_remove(tunnel_plan(config())).split() == [
        "add", "table", "bridge", "tlsgw_tunnel", "delete", "table", "bridge", "tlsgw_tunnel",
        "add", "table", "ip", "tlsgw_tunnel", "delete", "table", "ip", "tlsgw_tunnel"]


def test_alive_refresh_renews_in_one_transaction() -> None:
    assert render_alive_refresh(tunnel_plan(config()), timeout=1.0).splitlines() == [
        "add element bridge tlsgw_tunnel alive { 4 timeout 1000ms, 47 timeout 1000ms }",
        "delete element bridge tlsgw_tunnel alive { 4, 47 }",
        "add element bridge tlsgw_tunnel alive { 4 timeout 1000ms, 47 timeout 1000ms }",
    ]


@pytest.mark.parametrize("change,field", [
    ({"netfilter": NetfilterSettings(route_table=110)}, "route_table"),
    ({"netfilter": NetfilterSettings(mark=OUT_MARK_BASE)}, "mark"),
], ids=["route-table", "mark"])
def test_collisions_with_the_plain_steering_are_refused(change: dict[str, object], field: str) -> None:
    cfg = config()
    with pytest.raises(NetfilterError) as caught:
        tunnel_plan(replace(cfg, gateway=replace(cfg.gateway, **change)))  # type: ignore[arg-type]
    assert field in str(caught.value)


def test_segment_address_limits_do_not_change_the_divert() -> None:
    cfg = config()
    limited = replace(cfg, gateway=replace(cfg.gateway, segments=(replace(
        cfg.gateway.segments[0], sources=(IPv4Network("10.1.0.0/16"),)),)))
    assert render_tunnel_nft(tunnel_plan(limited)) == render_tunnel_nft(tunnel_plan(cfg))


def test_kernel_counts_tunnels_it_bridges_untouched() -> None:
    lines = [line.strip() for line in render_tunnel_nft(tunnel_plan(config())).splitlines()]
    assert 'iifname { "eth1", "eth2" } ether type ip6 meta l4proto { 4, 41, 47 } counter name "ipv6_outer"' in lines
    assert 'iifname { "eth1", "eth2" } ether type ip ip protocol 41 counter name "ipv6_inner"' in lines
    assert 'iifname { "eth1", "eth2" } ether type ip udp dport 2152 counter name "gtp"' in lines


def test_parse_counters_reads_nft_json_and_survives_garbage() -> None:
    text = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "bridge", '
            '"name": "gtp", "table": "tlsgw_tunnel", "handle": 4, "packets": 7, "bytes": 700}}]}')
    assert parse_counters(text) == {"gtp": 7}
    assert parse_counters("Error: No such file or directory") == {}
    assert parse_counters('{"nftables": [{"counter": {"name": "gtp"}}, 3]}') == {}
