"""The tunnel switch, played as a conversation: frames from the ports, packets from the
kernel, and what the switch does with each (issue 7)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    PortRange,
    Segment,
    ServerPolicy,
    ServerProxy,
)
from gateway.observability.counters import Counters
from gateway.tunnel.flows import FlowTable
from gateway.tunnel.mss import clamp_mss
from gateway.tunnel.selection import build_selection
from gateway.tunnel.switch import Discard, Emit, Forward, Inject, SegmentPorts, TunnelSwitch
from tests.unit.tunnel.packets import (
    CLIENT_MAC,
    GRE,
    IP,
    INNER_CLIENT,
    INNER_SERVER,
    OUTER_CLIENT,
    OUTER_SERVER,
    ROUTER_MAC,
    TCP,
    UDP,
    IPv6,
    Ether,
    ether,
    gre,
    inner_tcp,
    ipip,
)

SERVER_MAC = ROUTER_MAC  # the server endpoint's (or its router's) MAC, as the client addresses it
MSS_LIMIT = 1432


def config(**segment: object) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySection(segments=(Segment("lan-wan", "eth1", "eth2", "default", **segment),)),  # type: ignore[arg-type]
        client_proxies=(ClientProxy("outbound", "ca", (PortRange(443, 443),)),),
        server_proxies=(ServerProxy("web", (IPv4Network("10.9.0.0/24"),), (PortRange(8443, 8443),), ("web",)),),
        profiles=(InspectionProfile("default", server_policies=(ServerPolicy("in", "web"),),
                                    client_policies=(ClientPolicy("out", "outbound", "default"),)),),
    )


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def switch(counters: Counters) -> TunnelSwitch:
    return make_switch(config(), counters)


def make_switch(cfg: GatewayConfig, counters: Counters) -> TunnelSwitch:
    return TunnelSwitch((SegmentPorts(0, "lan-wan", "eth1", "eth2"),), build_selection(cfg),
                        FlowTable(idle_timeout=300.0), MSS_LIMIT, counters)


def from_client(packet: object) -> bytes:
    if isinstance(packet, bytes):  # raw (e.g. truncated) IPv4 bytes scapy would repair
        return bytes(Ether(src=CLIENT_MAC, dst=SERVER_MAC, type=0x0800)) + packet
    return ether(packet, src=CLIENT_MAC, dst=SERVER_MAC)  # type: ignore[arg-type]


def from_server(packet: object) -> bytes:
    return ether(packet, src=SERVER_MAC, dst=CLIENT_MAC)  # type: ignore[arg-type]


def syn(sport: int = 40000, dport: int = 443, dst: str = INNER_SERVER, mss: int = 1460) -> IP:
    return inner_tcp(sport=sport, dport=dport, flags="S", mss=mss, dst=dst)


def kernel_to_client(sport: int = 443, dport: int = 40000, flags: str = "SA") -> bytes:
    return bytes(inner_tcp(sport=sport, dport=dport, flags=flags, src=INNER_SERVER, dst=INNER_CLIENT))


def kernel_to_server(sport: int = 51000, dport: int = 443, flags: str = "S") -> bytes:
    return bytes(inner_tcp(sport=sport, dport=dport, flags=flags, src=INNER_CLIENT, dst=INNER_SERVER))


def server_answer(sport: int = 443, dport: int = 51000, flags: str = "SA", **outer: object) -> bytes:
    inner = inner_tcp(sport=sport, dport=dport, flags=flags, src=INNER_SERVER, dst=INNER_CLIENT)
    return from_server(gre(inner, src=OUTER_SERVER, dst=OUTER_CLIENT, **outer))  # type: ignore[arg-type]


# -- a whole inspected flow -----------------------------------------------------------------


def test_selected_syn_is_decapsulated_and_mss_clamped(switch: TunnelSwitch, counters: Counters) -> None:
    action = switch.from_port("eth1", from_client(gre(syn(), key=42)), now=0.0)
    assert isinstance(action, Inject) and action.segment == 0
    assert IP(action.packet)[TCP].dport == 443
    assert dict(IP(action.packet)[TCP].options)["MSS"] == MSS_LIMIT
    assert counters.get("tunnel.flows") == 1 and counters.get("tunnel.decapsulated") == 1


def test_kernel_answer_to_the_client_gets_the_swapped_header(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn(), key=42, ttl=33, tos=0x28)), now=0.0)
    action = switch.from_kernel(kernel_to_client(), now=0.1)
    assert isinstance(action, Emit) and action.port == "eth1"
    frame = Ether(action.frame)
    assert (frame.src, frame.dst) == (SERVER_MAC, CLIENT_MAC)
    assert (frame[IP].src, frame[IP].dst, frame[IP].ttl, frame[IP].tos) == (OUTER_SERVER, OUTER_CLIENT, 33, 0x28)
    assert frame[GRE].key == 42
    assert bytes(frame[GRE].payload) == clamp_mss(kernel_to_client(), MSS_LIMIT)
    assert dict(frame[GRE].payload[TCP].options)["MSS"] == MSS_LIMIT


def test_upstream_syn_binds_to_the_tunnel_and_leaves_by_the_server_port(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn(), key=42, ttl=33)), now=0.0)
    action = switch.from_kernel(kernel_to_server(), now=0.1)
    assert isinstance(action, Emit) and action.port == "eth2"
    frame = Ether(action.frame)
    assert (frame.src, frame.dst) == (CLIENT_MAC, SERVER_MAC)
    assert (frame[IP].src, frame[IP].dst, frame[IP].ttl, frame[GRE].key) == (OUTER_CLIENT, OUTER_SERVER, 33, 42)


def test_server_answers_are_decapsulated_and_teach_the_reverse_header(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn(), key=42)), now=0.0)
    switch.from_kernel(kernel_to_server(), now=0.1)
    action = switch.from_port("eth2", server_answer(key=42, ttl=61, tos=0xB8), now=0.2)
    assert isinstance(action, Inject)
    assert IP(action.packet)[TCP].sport == 443
    answer = switch.from_kernel(kernel_to_client(flags="A"), now=0.3)
    assert isinstance(answer, Emit)
    frame = Ether(answer.frame)
    assert (frame[IP].ttl, frame[IP].tos) == (61, 0xB8), "toward the client: the server endpoint's own header"


def test_ipip_flow_round_trips_without_gre(switch: TunnelSwitch) -> None:
    assert isinstance(switch.from_port("eth1", from_client(ipip(syn(), ttl=20)), now=0.0), Inject)
    action = switch.from_kernel(kernel_to_client(), now=0.1)
    assert isinstance(action, Emit)
    frame = Ether(action.frame)
    assert (frame[IP].proto, frame[IP].src, frame[IP].ttl) == (4, OUTER_SERVER, 20)


def test_later_client_packets_follow_the_flow(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn())), now=0.0)
    ack = inner_tcp(flags="A", mss=None, payload=b"\x16\x03\x01")
    assert isinstance(switch.from_port("eth1", from_client(gre(ack)), now=1.0), Inject)


def test_server_proxy_destinations_are_selected_too(switch: TunnelSwitch) -> None:
    action = switch.from_port("eth1", from_client(gre(syn(dport=8443, dst="10.9.0.5"))), now=0.0)
    assert isinstance(action, Inject)


# -- what crosses untouched ---------------------------------------------------------------------

UNTOUCHED = [
    ("port-without-policy", gre(syn(dport=80)), "not_inspected"),
    ("server-port-not-its-proxy", gre(syn(dport=8443, dst="10.8.0.1")), "not_inspected"),
    ("mid-flow-packet-of-unknown-flow", gre(inner_tcp(flags="A", mss=None)), "not_inspected"),
    ("udp", gre(IP(src=INNER_CLIENT, dst=INNER_SERVER) / UDP(dport=443)), "not_inspected"),
    ("gre-sequence", gre(syn(), seqnum_present=1, sequence_number=1), "unsupported.gre_sequence"),
    ("gre-checksum", gre(syn(), chksum_present=1), "unsupported.gre_checksum"),
    ("nested", gre(ipip(syn())), "unsupported.nested"),
    ("gre-version-1", gre(syn(), version=1), "unsupported.gre_version"),
    ("truncated", bytes(gre(syn()))[:30], "unsupported.truncated"),
]


@pytest.mark.parametrize("packet,counter", [(p, c) for _, p, c in UNTOUCHED], ids=[i for i, _, _ in UNTOUCHED])
def test_frames_not_taken_are_forwarded_byte_for_byte_and_counted(
        switch: TunnelSwitch, counters: Counters, packet: object, counter: str) -> None:
    frame = from_client(packet)
    action = switch.from_port("eth1", frame, now=0.0)
    assert action == Forward("eth2", frame)
    assert counters.get(f"tunnel.{counter}") == 1


def test_server_side_frames_of_flows_not_taken_go_to_the_client_port(switch: TunnelSwitch) -> None:
    frame = server_answer(sport=443, dport=40000, flags="A")
    assert switch.from_port("eth2", frame, now=0.0) == Forward("eth1", frame)


@pytest.mark.parametrize("frame,reason", [
    (bytes(Ether() / IPv6(nh=47) / GRE() / inner_tcp()), "ipv6_outer"),
    (bytes(Ether() / IP(src=OUTER_CLIENT, dst=OUTER_SERVER, proto=41) / IPv6()), "ipv6_inner"),
], ids=["ipv6-outer", "6in4"])
def test_frames_the_kernel_bridged_itself_are_only_counted(
        switch: TunnelSwitch, counters: Counters, frame: bytes, reason: str) -> None:
    assert switch.from_port("eth1", frame, now=0.0) == Discard(reason)
    assert counters.get(f"tunnel.unsupported.{reason}") == 1


def test_frames_from_other_ports_are_ignored(switch: TunnelSwitch) -> None:
    assert switch.from_port("eth9", from_client(gre(syn())), now=0.0) == Discard("unknown_port")


def test_kernel_packets_without_a_flow_are_dropped(switch: TunnelSwitch, counters: Counters) -> None:
    assert switch.from_kernel(kernel_to_client(), now=0.0) == Discard("no_flow")
    assert switch.from_kernel(kernel_to_server(flags="A"), now=0.0) == Discard("no_flow")
    assert switch.from_kernel(bytes(IP(src=INNER_CLIENT, dst=INNER_SERVER) / UDP()), now=0.0) == Discard("not_tcp")
    assert counters.get("tunnel.dropped.no_flow") == 2


def test_same_inner_peer_in_another_tunnel_is_not_mixed_in(switch: TunnelSwitch, counters: Counters) -> None:
    switch.from_port("eth1", from_client(gre(syn(), key=1)), now=0.0)
    other = from_client(gre(syn(sport=40001), key=2))
    assert switch.from_port("eth1", other, now=0.1) == Forward("eth2", other)
    hijack = from_client(gre(inner_tcp(flags="A", mss=None), key=2))
    assert switch.from_port("eth1", hijack, now=0.2) == Forward("eth2", hijack)
    assert counters.get("tunnel.conflicts") == 2


def test_server_answer_from_another_tunnel_is_not_taken(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn(), key=1)), now=0.0)
    switch.from_kernel(kernel_to_server(), now=0.1)
    frame = server_answer(key=2)
    assert switch.from_port("eth2", frame, now=0.2) == Forward("eth1", frame)


def test_segment_source_limit_applies_to_inner_clients(counters: Counters) -> None:
    switch = make_switch(config(sources=(IPv4Network("10.7.0.0/16"),)), counters)
    frame = from_client(gre(syn()))
    assert switch.from_port("eth1", frame, now=0.0) == Forward("eth2", frame)


# -- expiry ---------------------------------------------------------------------------------------


def test_flow_state_expires_when_idle(switch: TunnelSwitch) -> None:
    switch.from_port("eth1", from_client(gre(syn())), now=0.0)
    assert isinstance(switch.from_kernel(kernel_to_client(), now=299.0), Emit)
    assert switch.expire(now=598.0) == 0
    assert switch.expire(now=600.0) == 1
    assert switch.from_kernel(kernel_to_client(flags="A"), now=600.0) == Discard("no_flow")
