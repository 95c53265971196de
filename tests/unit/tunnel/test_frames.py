from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tunnel.frames import (
    InnerFlow,
    Reason,
    TunnelFrame,
    TunnelKind,
    Unsupported,
    owned_by_divert,
    parse,
    parse_frame,
    parse_inner,
)
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


def parsed(packet: bytes) -> TunnelFrame:
    result = parse(packet)
    assert isinstance(result, TunnelFrame), result
    return result


def reason_of(packet: bytes) -> Reason:
    result = parse(packet)
    assert isinstance(result, Unsupported), result
    return result.reason


# -- supported tunnels -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, 0, 42, 0xFFFFFFFF], ids=["no-key", "key-0", "key-42", "key-max"])
def test_gre_carrying_ipv4_parses_with_its_key(key: int | None) -> None:
    inner = inner_tcp()
    frame = parsed(bytes(gre(inner, key=key, ttl=33, tos=0x28)))
    assert frame.outer.kind is TunnelKind.GRE
    assert frame.outer.key == key
    assert (frame.outer.source, frame.outer.destination) == (IPv4Address(OUTER_CLIENT), IPv4Address(OUTER_SERVER))
    assert (frame.outer.ttl, frame.outer.tos, frame.outer.dscp) == (33, 0x28, 10)
    assert frame.inner == bytes(inner)


def test_ipip_parses_without_key() -> None:
    inner = inner_tcp(flags="SA")
    frame = parsed(bytes(ipip(inner, ttl=7)))
    assert frame.outer.kind is TunnelKind.IPIP
    assert frame.outer.key is None
    assert frame.outer.ttl == 7
    assert frame.inner == bytes(inner)


def test_inner_flow_names_tcp_ports_and_flags() -> None:
    frame = parsed(bytes(gre(inner_tcp(sport=40001, dport=8443, flags="S"))))
    assert frame.flow == InnerFlow(IPv4Address(INNER_CLIENT).packed, IPv4Address(INNER_SERVER).packed,
                                   6, 40001, 8443, 0x02)
    assert frame.flow.is_syn and not frame.flow.ends


@pytest.mark.parametrize("flags,syn,ends", [("S", True, False), ("SA", False, False), ("A", False, False),
                                            ("FA", False, True), ("R", False, True)],
                         ids=["syn", "syn-ack", "ack", "fin", "rst"])
def test_inner_flow_classifies_tcp_flags(flags: str, syn: bool, ends: bool) -> None:
    flow = parsed(bytes(gre(inner_tcp(flags=flags)))).flow
    assert (flow.is_syn, flow.ends) == (syn, ends)


def test_inner_udp_and_icmp_are_supported_without_ports() -> None:
    flow = parsed(bytes(gre(IP(src=INNER_CLIENT, dst=INNER_SERVER) / UDP(sport=53, dport=53)))).flow
    assert (flow.protocol, flow.sport, flow.dport, flow.is_tcp) == (17, 0, 0, False)


def test_ethernet_padding_after_the_packet_is_ignored() -> None:
    packet = bytes(gre(inner_tcp()))
    frame = parsed(packet + b"\x00" * 12)
    assert frame.inner == bytes(inner_tcp())


def test_outer_ip_options_are_skipped() -> None:
    packet = IP(src=OUTER_CLIENT, dst=OUTER_SERVER, options=b"\x01\x01\x01\x00") / GRE() / inner_tcp()
    frame = parsed(bytes(packet))
    assert frame.inner == bytes(inner_tcp())


def test_frame_gives_ethernet_addresses() -> None:
    result = parse_frame(ether(gre(inner_tcp(), key=7)))
    assert isinstance(result, TunnelFrame)
    assert result.link is not None
    assert result.link.src == bytes.fromhex(CLIENT_MAC.replace(":", ""))
    assert result.link.dst == bytes.fromhex(ROUTER_MAC.replace(":", ""))
    assert result.outer.key == 7


# -- unsupported, each with its reason --------------------------------------------------

UNSUPPORTED = [
    ("gre-sequence", gre(inner_tcp(), seqnum_present=1, sequence_number=5), Reason.GRE_SEQUENCE),
    ("gre-sequence-and-key", gre(inner_tcp(), key=1, seqnum_present=1, sequence_number=5), Reason.GRE_SEQUENCE),
    ("gre-checksum", gre(inner_tcp(), chksum_present=1), Reason.GRE_CHECKSUM),
    ("gre-routing", gre(inner_tcp(), routing_present=1), Reason.GRE_ROUTING),
    ("gre-version-1", gre(inner_tcp(), version=1), Reason.GRE_VERSION),
    ("gre-version-7", gre(inner_tcp(), version=7), Reason.GRE_VERSION),
    ("gre-strict-route", gre(inner_tcp(), strict_route_source=1), Reason.GRE_FLAGS),
    ("gre-recursion", gre(inner_tcp(), recursion_control=3), Reason.GRE_FLAGS),
    ("gre-reserved-flag", gre(inner_tcp(), flags=4), Reason.GRE_FLAGS),
    ("gre-ethernet", IP(src=OUTER_CLIENT, dst=OUTER_SERVER) / GRE(proto=0x6558) / Ether() / inner_tcp(),
     Reason.GRE_PAYLOAD),
    ("gre-ipv6-inside", IP(src=OUTER_CLIENT, dst=OUTER_SERVER) / GRE(proto=0x86DD) / IPv6() / TCP(),
     Reason.IPV6_INNER),
    ("6in4", IP(src=OUTER_CLIENT, dst=OUTER_SERVER, proto=41) / IPv6() / TCP(), Reason.IPV6_INNER),
    ("ipv6-behind-ipv4-type", gre(IPv6() / TCP()), Reason.IPV6_INNER),
    ("nested-gre", gre(gre(inner_tcp())), Reason.NESTED),
    ("nested-ipip-in-gre", gre(ipip(inner_tcp())), Reason.NESTED),
    ("nested-gre-in-ipip", ipip(gre(inner_tcp())), Reason.NESTED),
    ("nested-gtp", gre(IP(src=INNER_CLIENT, dst=INNER_SERVER) / UDP(sport=2152, dport=2152) / b"\x30\xff\x00\x00"),
     Reason.NESTED),
    ("outer-fragment", IP(src=OUTER_CLIENT, dst=OUTER_SERVER, flags="MF") / GRE() / inner_tcp(),
     Reason.OUTER_FRAGMENT),
    ("outer-fragment-offset", IP(src=OUTER_CLIENT, dst=OUTER_SERVER, frag=10) / GRE() / inner_tcp(),
     Reason.OUTER_FRAGMENT),
    ("inner-fragment", gre(IP(src=INNER_CLIENT, dst=INNER_SERVER, flags="MF") / TCP()), Reason.INNER_FRAGMENT),
    ("not-a-tunnel", IP(src=OUTER_CLIENT, dst=OUTER_SERVER) / TCP(), Reason.NOT_TUNNEL),
]


@pytest.mark.parametrize("packet,reason", [(p, r) for _, p, r in UNSUPPORTED], ids=[i for i, _, _ in UNSUPPORTED])
def test_unsupported_tunnels_name_their_reason(packet: object, reason: Reason) -> None:
    assert reason_of(bytes(packet)) is reason  # type: ignore[call-overload]


def good() -> bytes:
    return bytes(gre(inner_tcp(), key=9))


def with_u16(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("!H", value) + data[offset + 2:]


MALFORMED = [
    ("empty", b"", Reason.TRUNCATED),
    ("short-outer-header", good()[:19], Reason.TRUNCATED),
    ("outer-total-beyond-bytes", good()[:-1], Reason.TRUNCATED),
    ("outer-total-below-header", with_u16(good(), 2, 16), Reason.BAD_HEADER),
    ("outer-ihl-4", bytes([0x44]) + good()[1:], Reason.BAD_HEADER),
    ("outer-version-5", bytes([0x55]) + good()[1:], Reason.BAD_HEADER),
    ("outer-ipv6", bytes(IPv6(nh=47) / GRE() / inner_tcp()), Reason.IPV6_OUTER),
    ("gre-header-cut", with_u16(good()[:22], 2, 22), Reason.TRUNCATED),
    ("gre-key-cut", with_u16(good()[:26], 2, 26), Reason.TRUNCATED),
    ("inner-header-cut", with_u16(good()[:40], 2, 40), Reason.INNER_MALFORMED),
    ("inner-total-too-long", with_u16(good(), 28 + 2, 2000), Reason.INNER_MALFORMED),
    ("inner-total-below-header", with_u16(good(), 28 + 2, 10), Reason.INNER_MALFORMED),
    ("inner-version-5", good()[:28] + bytes([0x55]) + good()[29:], Reason.INNER_MALFORMED),
    ("inner-tcp-cut", with_u16(good()[:58], 2, 58)[:30] + struct.pack("!H", 30) + good()[32:58],
     Reason.INNER_MALFORMED),
]


@pytest.mark.parametrize("packet,reason", [(p, r) for _, p, r in MALFORMED], ids=[i for i, _, _ in MALFORMED])
def test_malformed_packets_are_unsupported_not_errors(packet: bytes, reason: Reason) -> None:
    assert reason_of(packet) is reason


@pytest.mark.parametrize("frame,reason", [
    (b"\x00" * 13, Reason.TRUNCATED),
    (bytes(Ether(type=0x8100) / b"\x00\x05\x08\x00" / gre(inner_tcp())), Reason.VLAN),
    (bytes(Ether() / IPv6(nh=47) / GRE() / inner_tcp()), Reason.IPV6_OUTER),
    (bytes(Ether(type=0x0806) / (b"\x00" * 28)), Reason.NOT_IPV4),
], ids=["short-frame", "vlan-tagged", "ipv6-outer", "arp"])
def test_frames_that_are_not_untagged_ipv4_are_unsupported(frame: bytes, reason: Reason) -> None:
    result = parse_frame(frame)
    assert isinstance(result, Unsupported) and result.reason is reason


@pytest.mark.parametrize("frame,owned", [
    (ether(gre(inner_tcp())), True),
    (ether(ipip(inner_tcp())), True),
    (ether(gre(inner_tcp(), seqnum_present=1)), True),
    (ether(IP(src=OUTER_CLIENT, dst=OUTER_SERVER, proto=41) / IPv6()), False),
    (bytes(Ether() / IPv6(nh=47) / GRE() / inner_tcp()), False),
    (bytes(Ether(type=0x8100) / b"\x00\x05\x08\x00" / gre(inner_tcp())), False),
    (b"\x00" * 20, False),
], ids=["gre", "ipip", "gre-seq", "6in4", "ipv6-outer", "vlan", "short"])
def test_owned_by_divert_mirrors_the_bridge_rule(frame: bytes, owned: bool) -> None:
    assert owned_by_divert(frame) is owned


def test_parse_inner_reads_a_bare_packet() -> None:
    flow = parse_inner(bytes(inner_tcp(sport=443, dport=40000, flags="SA", src=INNER_SERVER, dst=INNER_CLIENT)))
    assert isinstance(flow, InnerFlow)
    assert (flow.sport, flow.dport, flow.tcp_flags) == (443, 40000, 0x12)


# -- fuzz -----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_parse_only_returns_a_frame_or_unsupported_for_any_bytes(data: bytes) -> None:
    assert isinstance(parse(data), TunnelFrame | Unsupported)
    assert isinstance(parse_frame(data), TunnelFrame | Unsupported)
    assert isinstance(parse_inner(data), InnerFlow | Unsupported)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.binary(min_size=1, max_size=4))
def test_parse_survives_any_corruption_of_a_real_tunnel_packet(offset: int, value: int, tail: bytes) -> None:
    packet = bytearray(good() + tail)
    packet[offset % len(packet)] = value
    for data in (bytes(packet), bytes(packet[: offset % len(packet)])):
        result = parse(data)
        assert isinstance(result, TunnelFrame | Unsupported)
        if isinstance(result, TunnelFrame):
            assert len(result.inner) <= len(data)
