"""Clamp the TCP MSS of inner SYNs so that re-encapsulated packets fit the outer path.

Why here: the gateway's own TCP stack talks to both ends of a tunneled flow, and each
end tells it, in its SYN's MSS option, the largest segment it accepts. A client inside
a tunnel usually advertises its tunnel interface's MSS, but a peer whose stack does not
know about the tunnel (or a path MTU smaller than its own) would advertise more, and the
gateway's segments, wrapped in up to 28 bytes of outer header, would then exceed the
outer path MTU. Lowering the option in the SYNs tlsgw decapsulates (and in those the
kernel writes to the TUN device) bounds every segment either leg sends. The TUN
device's MTU bounds them once more; this clamp also covers the segments the kernel
sizes from a route that does not go through the TUN device.

Outer fragments are not reassembled: with the clamp, a tunneled flow tlsgw inspects does
not produce them, and any that arrive are passed untouched (`frames.Reason.OUTER_FRAGMENT`).

Pure: bytes in, bytes out; the TCP checksum is updated incrementally (RFC 1624), so
the rest of the packet is never summed again.
"""

from __future__ import annotations

import struct

from gateway.tunnel.frames import IPV4_MIN_HEADER, PROTO_TCP, TCP_MIN_HEADER, TCP_SYN

TCP_OPTION_END = 0
TCP_OPTION_NOP = 1
TCP_OPTION_MSS = 2
IPV4_TCP_HEADERS = IPV4_MIN_HEADER + TCP_MIN_HEADER  # what MSS excludes (RFC 879, RFC 6691)
MAX_OUTER_OVERHEAD = 28
"""The largest header tlsgw rebuilds: IPv4 (20) + GRE with a key (8)."""

_U16 = struct.Struct("!H")


def max_inner_mss(outer_mtu: int, overhead: int = MAX_OUTER_OVERHEAD) -> int:
    """The largest inner MSS whose segments, with inner and outer headers, fit `outer_mtu`."""
    return outer_mtu - overhead - IPV4_TCP_HEADERS


def inner_mtu(outer_mtu: int, overhead: int = MAX_OUTER_OVERHEAD) -> int:
    """The MTU of the TUN device: inner packets this large still fit the outer path."""
    return outer_mtu - overhead


def clamp_mss(packet: bytes, limit: int) -> bytes:
    """`packet` with its MSS option lowered to `limit` if it is a TCP SYN advertising more.

    Anything else - not IPv4/TCP, not a SYN, no MSS option, a malformed option list, an
    MSS already at or below the limit - comes back as the very same object, unchanged.
    """
    if len(packet) < IPV4_TCP_HEADERS or packet[0] >> 4 != 4 or packet[9] != PROTO_TCP:
        return packet
    ip_len = (packet[0] & 0x0F) * 4
    if len(packet) < ip_len + TCP_MIN_HEADER or not packet[ip_len + 13] & TCP_SYN:
        return packet
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    end = min(ip_len + tcp_len, len(packet))
    offset = ip_len + TCP_MIN_HEADER
    while offset < end:
        kind = packet[offset]
        if kind == TCP_OPTION_END:
            return packet
        if kind == TCP_OPTION_NOP:
            offset += 1
            continue
        if offset + 1 >= end:
            return packet
        length = packet[offset + 1]
        if length < 2 or offset + length > end:
            return packet
        if kind == TCP_OPTION_MSS:
            if length != 4:
                return packet
            current = _U16.unpack_from(packet, offset + 2)[0]
            if current <= limit:
                return packet
            return _replace_mss(packet, ip_len, offset + 2, current, limit)
        offset += length
    return packet


def _replace_mss(packet: bytes, ip_len: int, at: int, old: int, new: int) -> bytes:
    checksum_at = ip_len + 16
    checksum = _U16.unpack_from(packet, checksum_at)[0]
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). An MSS at an odd offset (after a single
    # NOP, unusual but legal) straddles two 16-bit words of the sum; there its bytes count
    # swapped, which is the same as summing the swapped word (RFC 1071, byte order
    # independence of the one's complement sum).
    odd = (at - ip_len) % 2 == 1
    m, m_new = (_swap(old), _swap(new)) if odd else (old, new)
    total = (~checksum & 0xFFFF) + (~m & 0xFFFF) + m_new
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    out = bytearray(packet)
    out[at:at + 2] = _U16.pack(new)
    out[checksum_at:checksum_at + 2] = _U16.pack(~total & 0xFFFF)
    return bytes(out)


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)
