"""The classic BPF program of the bridge-port taps, run by a small interpreter of the few
opcodes it uses, against frames scapy builds."""

from __future__ import annotations

import pytest

from gateway.tunnel.frames import owned_by_divert
from gateway.tunnel.tun import SKF_AD_VLAN_TAG_PRESENT, tap_filter
from tests.unit.tunnel.packets import GRE, IP, TCP, UDP, IPv6, Ether, ether, gre, inner_tcp, ipip

VLAN_FLAG = SKF_AD_VLAN_TAG_PRESENT & 0xFFFFFFFF


def run_filter(frame: bytes, vlan_tagged: bool = False) -> int:
    """Bytes of the frame the socket would receive (0: filtered out)."""
    program = tap_filter()
    accumulator, pc = 0, 0
    for _ in range(len(program) + 1):
        code, jt, jf, k = program[pc]
        if code == 0x20:  # ld word abs (only the VLAN ancillary field here)
            assert k == VLAN_FLAG
            accumulator = int(vlan_tagged)
        elif code in (0x28, 0x30):  # ldh / ldb abs; out of bounds ends the program with 0
            size = 2 if code == 0x28 else 1
            if k + size > len(frame):
                return 0
            accumulator = int.from_bytes(frame[k:k + size], "big")
        elif code == 0x15:  # jeq #k
            pc += jt if accumulator == k else jf
        elif code == 0x06:  # ret #k
            return min(k, len(frame))
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")
        pc += 1
    raise AssertionError("program did not return")


ACCEPTED = [
    ("gre", ether(gre(inner_tcp()))),
    ("gre-key", ether(gre(inner_tcp(), key=1))),
    ("ipip", ether(ipip(inner_tcp()))),
    ("gre-seq", ether(gre(inner_tcp(), seqnum_present=1))),
    ("gre-truncated", ether(gre(inner_tcp()))[:30]),
]
REJECTED = [
    ("tcp", ether(inner_tcp())),
    ("udp", ether(IP() / UDP())),
    ("6in4", ether(IP(proto=41) / IPv6() / TCP())),
    ("ipv6-gre", bytes(Ether() / IPv6(nh=47) / GRE() / inner_tcp())),
    ("ipv6-tcp", bytes(Ether() / IPv6() / TCP())),
    ("arp", bytes(Ether(type=0x0806) / (b"\x00" * 28))),
    ("short", b"\x00" * 10),
]


@pytest.mark.parametrize("frame", [f for _, f in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_tap_filter_takes_tunnel_frames_whole(frame: bytes) -> None:
    assert run_filter(frame) == len(frame)


@pytest.mark.parametrize("frame", [f for _, f in REJECTED], ids=[i for i, _ in REJECTED])
def test_tap_filter_leaves_other_traffic_alone(frame: bytes) -> None:
    assert run_filter(frame) == 0


def test_tap_filter_leaves_vlan_tagged_frames_to_the_bridge() -> None:
    assert run_filter(ether(gre(inner_tcp())), vlan_tagged=True) == 0


@pytest.mark.parametrize("frame", [f for _, f in ACCEPTED + REJECTED], ids=[i for i, _ in ACCEPTED + REJECTED])
def test_tap_filter_reads_exactly_what_the_kernel_diverts(frame: bytes) -> None:
    """Frames the bridge rule drops must all be read, or they would be lost; frames it
    bridges must not be, or they would cross twice."""
    assert (run_filter(frame) > 0) is owned_by_divert(frame)
