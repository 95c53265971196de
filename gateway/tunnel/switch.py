"""The tunnel switch: what to do with each tunnel frame and each packet of the TUN device.

Theory of operation
===================

The kernel takes every untagged IPv4 GRE and IP-in-IP frame of a segment's bridge ports
off the bridge (`netfilter.tunnel_plan`), and a packet socket on each port hands a copy
to tlsgw. From then on nothing crosses unless this switch says so::

    frame from a bridge port ──► from_port() ──┬─ Forward(other port, frame)   untouched
                                               │   (unsupported, or not inspected)
                                               ├─ Inject(segment, inner)       decapsulated,
                                               │   to the TUN device; TPROXY takes it
                                               └─ Discard(reason)              the kernel
                                                   bridged it already (IPv6 ...); counted
    packet from the TUN device ─► from_kernel() ─┬─ Emit(port, frame)          re-encapsulated
                                                 └─ Discard(reason)

- A client-port frame carrying an inner SYN that a policy selects opens a client leg
  in the `FlowTable`; its later packets follow it. A server-port frame is decapsulated
  only when it answers an upstream leg the gateway opened itself. Anything else -
  including connections that were open before tlsgw started - is forwarded untouched,
  so tlsgw never breaks a tunneled flow it did not take.
- Packets the kernel writes to the TUN device belong either to a client leg (toward
  the client: the server endpoint's outer header, or the client's swapped) or to an
  upstream leg (toward the server: the client endpoint's header); an upstream SYN binds
  its leg to the tunnel of its (client, server, port).
- SYNs are MSS-clamped both ways (`mss.py`), so re-encapsulated packets fit the outer MTU.

Every outcome is counted under `tunnel.*` in the shared `Counters`. Pure and sans-I/O:
frames and the clock come in, actions come out; `tun.py` does the I/O. Nothing here
raises on packet contents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.observability.counters import Counters
from gateway.tunnel.encap import encapsulate_frame
from gateway.tunnel.flows import FlowTable, TunnelContext
from gateway.tunnel.frames import TCP_SYN, Unsupported, owned_by_divert, parse_frame, parse_inner
from gateway.tunnel.mss import clamp_mss
from gateway.tunnel.selection import Selection


class Side(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class SegmentPorts:
    index: int
    name: str
    client_port: str
    server_port: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the frame, unchanged, out of the other bridge port."""

    port: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Inject:
    """Write the inner packet to the segment's TUN device."""

    segment: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class Emit:
    """Send a re-encapsulated frame out of a bridge port."""

    port: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Discard:
    reason: str


TunnelAction = Forward | Inject | Emit | Discard

COUNTER = "tunnel"


@dataclass(frozen=True, slots=True)
class _PortRole:
    segment: SegmentPorts
    side: Side
    other: str


class TunnelSwitch:
    def __init__(self, segments: tuple[SegmentPorts, ...], selection: Selection, table: FlowTable,
                 mss_limit: int, counters: Counters) -> None:
        self.table = table
        self.selection = selection
        self.mss_limit = mss_limit
        self.counters = counters
        self._ident = 0
        self._roles: dict[str, _PortRole] = {}
        for segment in segments:
            self._roles[segment.client_port] = _PortRole(segment, Side.CLIENT, segment.server_port)
            self._roles[segment.server_port] = _PortRole(segment, Side.UPSTREAM, segment.client_port)

    @property
    def ports(self) -> tuple[str, ...]:
        return tuple(self._roles)

    def _count(self, name: str) -> None:
        self.counters.add(f"{COUNTER}.{name}")

    # -- frames from the bridge ports ----------------------------------------------------------

    def from_port(self, port: str, frame: bytes, now: float) -> TunnelAction:
        role = self._roles.get(port)
        if role is None:
            return Discard("unknown_port")
        parsed = parse_frame(frame)
        if isinstance(parsed, Unsupported):
            self._count(f"unsupported.{parsed.reason.value}")
            if owned_by_divert(frame):
                return Forward(role.other, frame)
            return Discard(parsed.reason.value)
        flow = parsed.flow
        if not flow.is_tcp:
            return self._untouched(role, frame)
        segment = role.segment
        if role.side is Side.CLIENT:
            key = (flow.src, flow.sport, flow.dst, flow.dport)
            context = self.table.client_leg(key, now, flow.ends)
            if context is None:
                if not flow.is_syn or not self.selection.matches(segment.index, flow.src, flow.dst, flow.dport):
                    return self._untouched(role, frame)
                assert parsed.link is not None  # parse_frame always sets it
                context = TunnelContext(segment.index, segment.client_port, segment.server_port,
                                        parsed.outer, parsed.link)
                if not self.table.open_client_leg(key, context, now):
                    self._count("table_full" if self.table.full else "conflicts")
                    return Forward(role.other, frame)
                self._count("flows")
            elif not context.forward.same_tunnel(parsed.outer):
                self._count("conflicts")
                return Forward(role.other, frame)
            else:
                context.forward = parsed.outer  # the latest TTL and TOS are the ones to repeat
        else:
            context = self.table.upstream_leg((flow.dst, flow.dport, flow.src, flow.sport), now, flow.ends)
            if context is None:
                return self._untouched(role, frame)
            if not self.table.learn_reverse(context, parsed.outer, parsed.link):
                self._count("conflicts")
                return Forward(role.other, frame)
        self._count("decapsulated")
        inner = parsed.inner
        if flow.tcp_flags & TCP_SYN:  # SYN and SYN-ACK carry the MSS option
            inner = clamp_mss(inner, self.mss_limit)
        return Inject(segment.index, inner)

    def _untouched(self, role: _PortRole, frame: bytes) -> Forward:
        self._count("not_inspected")
        return Forward(role.other, frame)

    # -- packets from the TUN devices --------------------------------------------------------

    def from_kernel(self, packet: bytes, now: float) -> TunnelAction:
        flow = parse_inner(packet)
        if isinstance(flow, Unsupported) or not flow.is_tcp:
            self._count("dropped.not_tcp")
            return Discard("not_tcp")
        context = self.table.client_leg((flow.dst, flow.dport, flow.src, flow.sport), now, flow.ends)
        if context is not None:
            outer, link = context.toward_client()
            port = context.client_port
        else:
            key = (flow.src, flow.sport, flow.dst, flow.dport)
            context = self.table.upstream_leg(key, now, flow.ends)
            if context is None and flow.is_syn:
                context = self.table.bind_upstream_leg(key, now)
            if context is None:
                self._count("dropped.no_flow")
                return Discard("no_flow")
            outer, link = context.toward_server()
            port = context.server_port
        if flow.tcp_flags & TCP_SYN:
            packet = clamp_mss(packet, self.mss_limit)
        self._ident = (self._ident + 1) & 0xFFFF
        try:
            frame = encapsulate_frame(link, outer, packet, self._ident)
        except ValueError:
            self._count("dropped.too_big")
            return Discard("too_big")
        self._count("encapsulated")
        return Emit(port, frame)

    # -- housekeeping --------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        return self.table.expire(now)
