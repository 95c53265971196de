"""Rebuild the outer headers around a packet the gateway's kernel sends on a tunneled flow.

The gateway answers inside the tunnel as the tunnel endpoints would: toward the server
with the client endpoint's outer header, toward the client with the server endpoint's
(or, before the server has sent anything, the client's with the addresses swapped). The
key, TTL and TOS (DSCP and ECN) are those of the header given; `frames.OuterHeader.reversed`
does the swap. Rebuilt headers never carry IP options, so `OuterHeader.overhead` is exact
and the MSS clamp of `mss.py` can rely on it.

Pure and allocation-light: one `bytes` per packet, checksums in integer arithmetic.
"""

from __future__ import annotations

import struct

from gateway.tunnel.frames import (
    ETHERTYPE_IPV4,
    GRE_KEY,
    PROTO_GRE,
    PROTO_IPIP,
    Link,
    OuterHeader,
    TunnelKind,
)

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_GRE = struct.Struct("!HH")
_GRE_KEYED = struct.Struct("!HHI")
_ETHERTYPE = struct.Struct("!H").pack(ETHERTYPE_IPV4)
_DONT_FRAGMENT = 0x4000
IPV4_MAX_TOTAL = 0xFFFF


def ipv4_checksum(header: bytes) -> int:
    """RFC 791 header checksum (the one's complement of the one's complement sum)."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encapsulate(outer: OuterHeader, inner: bytes, ident: int) -> bytes:
    """Outer IPv4 (+ GRE) header + `inner`: a complete outer IPv4 packet.

    `ident` is the outer IPv4 identification (callers count it up per packet).

    Raises:
        ValueError: the result would exceed 65535 bytes (a TUN device's MTU prevents it).
    """
    if outer.kind is TunnelKind.GRE:
        if outer.key is None:
            shim = _GRE.pack(0, ETHERTYPE_IPV4)
        else:
            shim = _GRE_KEYED.pack(GRE_KEY, ETHERTYPE_IPV4, outer.key)
        protocol = PROTO_GRE
    else:
        shim = b""
        protocol = PROTO_IPIP
    total = 20 + len(shim) + len(inner)
    if total > IPV4_MAX_TOTAL:
        raise ValueError(f"outer packet of {total} bytes exceeds the IPv4 maximum")
    fragment = _DONT_FRAGMENT if outer.dont_fragment else 0
    header = _IPV4.pack(0x45, outer.tos, total, ident & 0xFFFF, fragment, outer.ttl, protocol, 0,
                        outer.src, outer.dst)
    checksum = ipv4_checksum(header)
    return header[:10] + bytes((checksum >> 8, checksum & 0xFF)) + header[12:] + shim + inner


def encapsulate_frame(link: Link, outer: OuterHeader, inner: bytes, ident: int) -> bytes:
    """An Ethernet frame ready for a bridge port: `link` addresses + `encapsulate(...)`."""
    return link.dst + link.src + _ETHERTYPE + encapsulate(outer, inner, ident)
