from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from gateway.tunnel.encap import encapsulate, encapsulate_frame, ipv4_checksum
from gateway.tunnel.frames import Link, OuterHeader, TunnelFrame, TunnelKind, parse
from tests.unit.tunnel.packets import GRE, IP, Ether, gre, inner_tcp, ipip

A = IPv4Address("192.0.2.10").packed
B = IPv4Address("192.0.2.20").packed


def header(kind: TunnelKind = TunnelKind.GRE, key: int | None = None, ttl: int = 33, tos: int = 0x29,
           df: bool = True) -> OuterHeader:
    return OuterHeader(kind, A, B, ttl, tos, df, key)


@pytest.mark.parametrize("outer", [header(), header(key=42), header(key=0), header(TunnelKind.IPIP)],
                         ids=["gre", "gre-key", "gre-key-0", "ipip"])
def test_encapsulate_is_what_scapy_reads_back(outer: OuterHeader) -> None:
    inner = bytes(inner_tcp(flags="PA", payload=b"hello"))
    packet = IP(encapsulate(outer, inner, ident=0x1234))
    assert (packet.src, packet.dst) == ("192.0.2.10", "192.0.2.20")
    assert (packet.ttl, packet.tos, packet.id, packet.flags.DF) == (33, 0x29, 0x1234, True)
    rebuilt = packet.copy()
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == packet.chksum, "outer header checksum"
    if outer.kind is TunnelKind.GRE:
        assert packet.proto == 47
        layer = packet[GRE]
        assert (layer.key_present, layer.seqnum_present, layer.chksum_present, layer.version) == (
            1 if outer.key is not None else 0, 0, 0, 0)
        assert layer.proto == 0x0800
        if outer.key is not None:
            assert layer.key == outer.key
        assert bytes(layer.payload) == inner
    else:
        assert packet.proto == 4
        assert bytes(packet.payload) == inner


@pytest.mark.parametrize("build", [lambda i: gre(i, key=5, ttl=9, tos=0xB8), lambda i: gre(i, ttl=200),
                                   lambda i: ipip(i, ttl=1, tos=4)], ids=["gre-key", "gre", "ipip"])
def test_parse_then_encapsulate_reproduces_the_original_packet(build: object) -> None:
    inner = inner_tcp(flags="A", payload=b"x" * 100)
    original = IP(bytes(build(inner)))  # type: ignore[operator]
    frame = parse(bytes(original))
    assert isinstance(frame, TunnelFrame)
    again = IP(encapsulate(frame.outer, frame.inner, ident=original.id))
    assert bytes(again) == bytes(original)


def test_reversed_header_swaps_addresses_and_keeps_key_ttl_and_dscp() -> None:
    back = header(key=77, ttl=12, tos=0x28).reversed()
    packet = IP(encapsulate(back, bytes(inner_tcp()), ident=1))
    assert (packet.src, packet.dst, packet.ttl, packet.tos, packet[GRE].key) == (
        "192.0.2.20", "192.0.2.10", 12, 0x28, 77)


def test_encapsulate_frame_puts_the_link_addresses_first() -> None:
    link = Link(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"))
    frame = Ether(encapsulate_frame(link, header(), bytes(inner_tcp()), ident=3))
    assert (frame.dst, frame.src, frame.type) == ("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800)


def test_encapsulate_refuses_more_than_the_ipv4_maximum() -> None:
    with pytest.raises(ValueError):
        encapsulate(header(key=1), b"\x45" + b"\x00" * (65535 - 28), ident=0)


def test_overhead_matches_the_built_header() -> None:
    inner = bytes(inner_tcp())
    for outer in (header(), header(key=1), header(TunnelKind.IPIP)):
        assert len(encapsulate(outer, inner, 0)) - len(inner) == outer.overhead


def test_ipv4_checksum_of_a_known_header() -> None:
    # RFC 1071 style example: the header with its checksum field zeroed.
    raw = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert ipv4_checksum(raw) == 0xB861
