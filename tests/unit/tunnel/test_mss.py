from __future__ import annotations

import pytest

from gateway.tunnel.mss import clamp_mss, inner_mtu, max_inner_mss
from tests.unit.tunnel.packets import IP, TCP, UDP, inner_tcp


def mss_of(packet: bytes) -> int | None:
    options = dict(IP(packet)[TCP].options)
    return options.get("MSS")  # type: ignore[return-value]


def tcp_checksum_ok(packet: bytes) -> bool:
    parsed = IP(packet)
    rebuilt = parsed.copy()
    del rebuilt[TCP].chksum
    return IP(bytes(rebuilt))[TCP].chksum == parsed[TCP].chksum


def test_max_inner_mss_leaves_room_for_gre_with_key() -> None:
    assert max_inner_mss(1500) == 1500 - 28 - 40
    assert inner_mtu(1500) == 1472


@pytest.mark.parametrize("flags", ["S", "SA"], ids=["syn", "syn-ack"])
def test_clamp_lowers_a_larger_mss_and_keeps_the_checksum_valid(flags: str) -> None:
    packet = bytes(inner_tcp(flags=flags, mss=1460))
    clamped = clamp_mss(packet, 1432)
    assert mss_of(clamped) == 1432
    assert tcp_checksum_ok(clamped)
    assert len(clamped) == len(packet)


def test_clamp_finds_mss_after_other_options() -> None:
    packet = bytes(IP(src="10.1.0.10", dst="10.2.0.20") / TCP(flags="S", options=[
        ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 0)), ("MSS", 8960)]))
    clamped = clamp_mss(packet, 1400)
    assert mss_of(clamped) == 1400
    assert tcp_checksum_ok(clamped)


def test_clamp_handles_an_mss_at_an_odd_offset() -> None:
    packet = bytes(IP(src="10.1.0.10", dst="10.2.0.20") / TCP(flags="S", options=[
        ("NOP", None), ("MSS", 65495), ("NOP", None), ("NOP", None), ("NOP", None)]))
    clamped = clamp_mss(packet, 1300)
    assert mss_of(clamped) == 1300
    assert tcp_checksum_ok(clamped)


@pytest.mark.parametrize("packet", [
    bytes(inner_tcp(flags="S", mss=1200)),
    bytes(inner_tcp(flags="S", mss=1432)),
    bytes(inner_tcp(flags="A", mss=None, payload=b"data")),
    bytes(inner_tcp(flags="S", mss=None)),
    bytes(IP(src="10.1.0.10", dst="10.2.0.20") / UDP() / b"\x02\x04\xff\xff"),
    bytes(inner_tcp(flags="S"))[:30],
    b"",
], ids=["below-limit", "at-limit", "not-syn", "no-mss-option", "udp", "truncated", "empty"])
def test_clamp_leaves_other_packets_as_the_same_object(packet: bytes) -> None:
    assert clamp_mss(packet, 1432) is packet


def test_clamp_stops_at_a_malformed_option_list() -> None:
    good = bytearray(bytes(inner_tcp(flags="S", mss=1460)))
    good[20 + 21] = 0  # option length 0 would loop forever if trusted
    assert clamp_mss(bytes(good), 1000) == bytes(good)
