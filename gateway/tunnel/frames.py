"""Outer headers of tunneled packets: bytes in, `TunnelFrame` or `Unsupported` out.

Theory of operation
===================

tlsgw inspects TLS inside exactly one layer of tunneling, of two kinds:

- GRE (RFC 2784) with the optional key of RFC 2890, carrying IPv4 (protocol type 0x0800);
- IP-in-IP (IPv4 protocol 4).

Everything else a tunnel can be - GRE with a checksum, routing or sequence numbers,
other GRE versions (PPTP is version 1) or flags, another payload (IPv6, Ethernet, MPLS),
IPv6 outside or inside, a second layer of tunneling (GRE, IP-in-IP, 6in4 or GTP-U inside),
fragments, truncated or inconsistent lengths - is `Unsupported`, with a `Reason` that
names it. The caller passes such packets across the bridge untouched and counts them by
reason; `parse` never raises, whatever the bytes (a Hypothesis test holds it to that),
because one odd packet must never stop the loop that carries every tunnel.

Why not scapy: this runs once per tunneled packet on the fast path. scapy is what the
tests build packets with, so the parser is checked against an independent encoder.

Addresses stay packed (`bytes` of 4) on the fast path: they are dictionary keys in the
flow table and are copied into rebuilt headers as they are. `OuterHeader.source` and
friends give `IPv4Address` objects for logs.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TypeVar

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
ETHER_HEADER_LEN = 14
IPV4_MIN_HEADER = 20
TCP_MIN_HEADER = 20

PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41  # 6in4 (RFC 4213)
PROTO_GRE = 47
TUNNEL_PROTOCOLS = frozenset({PROTO_GRE, PROTO_IPIP})
"""Outer IPv4 protocols tlsgw diverts (and so owns) at all; see `owned_by_divert`."""
NESTED_PROTOCOLS = frozenset({PROTO_GRE, PROTO_IPIP, PROTO_IPV6})
GTP_U_PORT = 2152  # 3GPP TS 29.281: GTP-U is a tunnel in UDP

# GRE flags and version, first 16 bits of the header (RFC 2784 section 2, RFC 2890
# section 2, RFC 1701 for the bits RFC 2784 made reserved).
GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_STRICT_ROUTE = 0x0800
GRE_RECURSION = 0x0700
GRE_RESERVED_FLAGS = 0x00F8
GRE_VERSION = 0x0007
GRE_BASE_HEADER = 4
GRE_KEY_LEN = 4

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_IP_MORE_FRAGMENTS = 0x2000
_IP_OFFSET = 0x1FFF
_IP_DONT_FRAGMENT = 0x4000

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_HHI = struct.Struct("!HHI")
_PORTS = struct.Struct("!HH")
T = TypeVar("T")


class TunnelKind(enum.Enum):
    GRE = "gre"
    IPIP = "ipip"


class Reason(enum.Enum):
    """Why a packet is not inspected; the value is the counter name (`tunnel.unsupported.<value>`)."""

    NOT_IPV4 = "not_ipv4"
    """An Ethernet payload other than IPv4 or IPv6."""
    VLAN = "vlan"
    """An 802.1Q/802.1ad tagged frame (VLAN segments are not diverted yet)."""
    IPV6_OUTER = "ipv6_outer"
    IPV6_INNER = "ipv6_inner"
    NOT_TUNNEL = "not_tunnel"
    """IPv4 whose protocol is neither GRE nor IP-in-IP."""
    TRUNCATED = "truncated"
    """Fewer bytes than the outer headers need, or than the outer total length says."""
    BAD_HEADER = "bad_header"
    """Outer IPv4 header with a wrong version or a header length below 20 bytes."""
    OUTER_FRAGMENT = "outer_fragment"
    GRE_VERSION = "gre_version"
    GRE_CHECKSUM = "gre_checksum"
    GRE_ROUTING = "gre_routing"
    GRE_SEQUENCE = "gre_sequence"
    GRE_FLAGS = "gre_flags"
    """Strict source route, recursion control or reserved flag bits set."""
    GRE_PAYLOAD = "gre_payload"
    """A GRE protocol type other than IPv4 or IPv6 (Ethernet, MPLS, ...)."""
    NESTED = "nested"
    """A second layer of tunneling: GRE, IP-in-IP, 6in4 or GTP-U inside the tunnel."""
    INNER_MALFORMED = "inner_malformed"
    """The inner IPv4 header is truncated, inconsistent, or has a wrong version."""
    INNER_FRAGMENT = "inner_fragment"


@dataclass(frozen=True, slots=True)
class Unsupported:
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OuterHeader:
    """What a rebuilt outer header must repeat: the tunnel, and the outer TTL and TOS."""

    kind: TunnelKind
    src: bytes
    """Outer source address, packed (4 bytes)."""
    dst: bytes
    ttl: int
    tos: int
    """The whole TOS byte: DSCP in the high six bits, ECN in the low two."""
    dont_fragment: bool
    key: int | None = None
    """The GRE key (RFC 2890); None without one, and always for IP-in-IP."""

    @property
    def source(self) -> IPv4Address:
        return IPv4Address(self.src)

    @property
    def destination(self) -> IPv4Address:
        return IPv4Address(self.dst)

    @property
    def dscp(self) -> int:
        return self.tos >> 2

    @property
    def overhead(self) -> int:
        """Bytes a rebuilt header adds to the inner packet (it never carries IP options)."""
        if self.kind is TunnelKind.IPIP:
            return IPV4_MIN_HEADER
        return IPV4_MIN_HEADER + GRE_BASE_HEADER + (GRE_KEY_LEN if self.key is not None else 0)

    def same_tunnel(self, other: OuterHeader) -> bool:
        """Same endpoints, kind and key (TTL and TOS may change from packet to packet)."""
        return (self.kind, self.src, self.dst, self.key) == (other.kind, other.src, other.dst, other.key)

    def reversed(self) -> OuterHeader:
        """The header of the opposite direction: addresses swapped, same key, TTL and TOS."""
        return OuterHeader(self.kind, self.dst, self.src, self.ttl, self.tos, self.dont_fragment, self.key)


@dataclass(frozen=True, slots=True)
class InnerFlow:
    """The inner IPv4 facts the tunnel switch needs; ports and flags are 0 unless TCP."""

    src: bytes
    dst: bytes
    protocol: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0

    @property
    def is_tcp(self) -> bool:
        return self.protocol == PROTO_TCP

    @property
    def is_syn(self) -> bool:
        """A connection's first packet: SYN without ACK."""
        return self.protocol == PROTO_TCP and self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN

    @property
    def ends(self) -> bool:
        """FIN or RST: the flow is closing."""
        return self.protocol == PROTO_TCP and bool(self.tcp_flags & (TCP_FIN | TCP_RST))


@dataclass(frozen=True, slots=True)
class Link:
    """The Ethernet addresses of a frame, packed (6 bytes each)."""

    dst: bytes
    src: bytes

    def reversed(self) -> Link:
        return Link(self.src, self.dst)


@dataclass(frozen=True, slots=True)
class TunnelFrame:
    outer: OuterHeader
    inner: bytes
    """The inner IPv4 packet, exactly its own total length (padding dropped)."""
    flow: InnerFlow
    link: Link | None = None
    """Ethernet addresses, when parsed from a frame (`parse_frame`)."""


def owned_by_divert(frame: bytes) -> bool:
    """Whether the kernel's divert rule took this frame off the bridge.

    Mirrors the bridge rule of `netfilter.tunnel_plan` (untagged IPv4, protocol GRE or
    IP-in-IP): such frames reach the bridge's far side only if tlsgw sends them there,
    while every other frame a tap shows tlsgw has been bridged already and is only counted.
    """
    return (
        len(frame) > ETHER_HEADER_LEN + 9
        and frame[12] == 0x08
        and frame[13] == 0x00
        and frame[ETHER_HEADER_LEN + 9] in TUNNEL_PROTOCOLS
    )


def parse_frame(frame: bytes) -> TunnelFrame | Unsupported:
    """An Ethernet frame (as an AF_PACKET socket gives it) -> the tunnel inside, or why not."""
    if len(frame) < ETHER_HEADER_LEN:
        return Unsupported(Reason.TRUNCATED, f"frame of {len(frame)} bytes")
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype != ETHERTYPE_IPV4:
        if ethertype == ETHERTYPE_IPV6:
            return Unsupported(Reason.IPV6_OUTER)
        if ethertype in ETHERTYPE_VLAN:
            return Unsupported(Reason.VLAN)
        return Unsupported(Reason.NOT_IPV4, f"ethertype {ethertype:#06x}")
    signature = frame[0:12]
    link = _LINKS.get(signature)
    if link is None:
        link = _remember(_LINKS, signature, Link(frame[0:6], frame[6:12]))
    return _parse_ipv4(frame, ETHER_HEADER_LEN, link)


def parse(packet: bytes) -> TunnelFrame | Unsupported:
    """An outer IPv4 packet -> TunnelFrame(outer, inner), or Unsupported(reason). Never raises."""
    return _parse_ipv4(packet, 0, None)


# Per-packet objects that repeat for every packet of a tunnel are built once: a few
# thousand tunnels' worth, forgotten wholesale when full (a cache, not state).
_CACHE_LIMIT = 4096
_LINKS: dict[bytes, Link] = {}
_OUTERS: dict[bytes, OuterHeader] = {}


def _remember(cache: dict[bytes, T], key: bytes, value: T) -> T:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _parse_ipv4(packet: bytes, base: int, link: Link | None) -> TunnelFrame | Unsupported:
    size = len(packet) - base
    if size < IPV4_MIN_HEADER:
        return Unsupported(Reason.TRUNCATED, f"outer IPv4 header needs 20 bytes, got {size}")
    first = packet[base]
    if first >> 4 != 4:
        if first >> 4 == 6:
            return Unsupported(Reason.IPV6_OUTER)
        return Unsupported(Reason.BAD_HEADER, f"outer IP version {first >> 4}")
    header_len = (first & 0x0F) * 4
    if header_len < IPV4_MIN_HEADER:
        return Unsupported(Reason.BAD_HEADER, f"outer header length {header_len}")
    total = _U16.unpack_from(packet, base + 2)[0]
    if total < header_len:
        return Unsupported(Reason.BAD_HEADER, f"outer total length {total} < header length {header_len}")
    if total > size:
        return Unsupported(Reason.TRUNCATED, f"outer total length {total} > {size} bytes received")
    end = base + total
    fragment = _U16.unpack_from(packet, base + 6)[0]
    if fragment & (_IP_MORE_FRAGMENTS | _IP_OFFSET):
        return Unsupported(Reason.OUTER_FRAGMENT)
    protocol = packet[base + 9]
    key: int | None = None
    start = base + header_len
    if protocol == PROTO_GRE:
        if end < start + GRE_BASE_HEADER:
            return Unsupported(Reason.TRUNCATED, "GRE header")
        flags, payload_type = _PORTS.unpack_from(packet, start)
        if flags & GRE_VERSION:
            return Unsupported(Reason.GRE_VERSION, f"version {flags & GRE_VERSION}")
        if flags & GRE_CHECKSUM:
            return Unsupported(Reason.GRE_CHECKSUM)
        if flags & GRE_ROUTING:
            return Unsupported(Reason.GRE_ROUTING)
        if flags & GRE_SEQUENCE:
            return Unsupported(Reason.GRE_SEQUENCE)
        if flags & (GRE_STRICT_ROUTE | GRE_RECURSION | GRE_RESERVED_FLAGS):
            return Unsupported(Reason.GRE_FLAGS, f"flags {flags:#06x}")
        start += GRE_BASE_HEADER
        if flags & GRE_KEY:
            if end < start + GRE_KEY_LEN:
                return Unsupported(Reason.TRUNCATED, "GRE key")
            key = _U32.unpack_from(packet, start)[0]
            start += GRE_KEY_LEN
        if payload_type != ETHERTYPE_IPV4:
            if payload_type == ETHERTYPE_IPV6:
                return Unsupported(Reason.IPV6_INNER)
            return Unsupported(Reason.GRE_PAYLOAD, f"protocol type {payload_type:#06x}")
    elif protocol == PROTO_IPV6:
        return Unsupported(Reason.IPV6_INNER, "6in4")
    elif protocol != PROTO_IPIP:
        return Unsupported(Reason.NOT_TUNNEL, f"IPv4 protocol {protocol}")
    flow = _inner_flow(packet, start, end)
    if isinstance(flow, Unsupported):
        return flow
    # TOS, TTL, protocol, addresses and the GRE key (when there is one) name the header.
    signature = packet[base + 1:base + 2] + packet[base + 6:base + 7] + packet[base + 8:base + 10] \
        + packet[base + 12:base + 20] + (packet[start - GRE_KEY_LEN:start] if key is not None else b"")
    outer = _OUTERS.get(signature)
    if outer is None:
        outer = _remember(_OUTERS, signature, OuterHeader(
            kind=TunnelKind.GRE if protocol == PROTO_GRE else TunnelKind.IPIP,
            src=bytes(packet[base + 12:base + 16]),
            dst=bytes(packet[base + 16:base + 20]),
            ttl=packet[base + 8],
            tos=packet[base + 1],
            dont_fragment=bool(fragment & _IP_DONT_FRAGMENT),
            key=key,
        ))
    inner_total = _U16.unpack_from(packet, start + 2)[0]
    return TunnelFrame(outer, packet[start:start + inner_total], flow, link)


def _inner_flow(packet: bytes, start: int, end: int) -> InnerFlow | Unsupported:
    available = end - start
    if available < IPV4_MIN_HEADER:
        if available >= 1 and packet[start] >> 4 == 6:
            return Unsupported(Reason.IPV6_INNER)
        return Unsupported(Reason.INNER_MALFORMED, f"inner header needs 20 bytes, got {available}")
    first = packet[start]
    if first >> 4 != 4:
        if first >> 4 == 6:
            return Unsupported(Reason.IPV6_INNER)
        return Unsupported(Reason.INNER_MALFORMED, f"inner IP version {first >> 4}")
    header_len = (first & 0x0F) * 4
    total = _U16.unpack_from(packet, start + 2)[0]
    if header_len < IPV4_MIN_HEADER or total < header_len or total > available:
        return Unsupported(Reason.INNER_MALFORMED, f"inner header length {header_len}, total {total}, "
                                                   f"{available} bytes carried")
    if _U16.unpack_from(packet, start + 6)[0] & (_IP_MORE_FRAGMENTS | _IP_OFFSET):
        return Unsupported(Reason.INNER_FRAGMENT)
    protocol = packet[start + 9]
    src, dst = packet[start + 12:start + 16], packet[start + 16:start + 20]
    if protocol in NESTED_PROTOCOLS:
        return Unsupported(Reason.NESTED, f"inner IPv4 protocol {protocol}")
    l4 = start + header_len
    if protocol == PROTO_UDP:
        if total - header_len >= 4:
            sport, dport = _PORTS.unpack_from(packet, l4)
            if GTP_U_PORT in (sport, dport):
                return Unsupported(Reason.NESTED, "GTP-U")
        return InnerFlow(src, dst, protocol)
    if protocol != PROTO_TCP:
        return InnerFlow(src, dst, protocol)
    if total - header_len < TCP_MIN_HEADER:
        return Unsupported(Reason.INNER_MALFORMED, "inner TCP header truncated")
    sport, dport = _PORTS.unpack_from(packet, l4)
    return InnerFlow(src, dst, protocol, sport, dport, packet[l4 + 13])


def parse_inner(packet: bytes) -> InnerFlow | Unsupported:
    """A bare IPv4 packet (as the kernel writes it to the TUN device) -> its flow facts."""
    return _inner_flow(packet, 0, len(packet))
