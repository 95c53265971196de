"""GatewayConfig -> Ruleset: the bridge TPROXY recipe of DESIGN.md section 3, as code.

Theory of operation
===================

tlsgw sits in a bridge. A bridged frame never reaches the IP stack, so TPROXY (an IP
hook) would never see it. The rules below lift exactly the flows to inspect out of the
bridge, hand them to the local listener of their segment, and leave every other frame
bridged untouched::

    client --[client_port]--+                                  +--[server_port]-- server
                            |  bridge prerouting (-300):       |
                            |  (1) divert client->server SYN+  |  (2) divert server->client
                            |      ether daddr := bridge MAC   |      return traffic
                            |      pkttype := host, tag mark   |
                            +-------------> br0 (IP stack) <---+
                                ip prerouting (mangle, -150):
                                (3) socket transparent 1 -> mark, accept
                                (4) tag + iifname br0 + dport -> tproxy :listen_port+i, mark
                                policy routing: fwmark -> table with local 0.0.0.0/0 dev lo
                                -> local delivery to the IP_TRANSPARENT listener

Rule by rule, with the DESIGN section 3 step each implements and the failure it prevents:

(1) Bridge table `bridge <table>`, chain `prerouting`, priority -300 (step 2). On the
    segment's client port, IPv4 TCP to a detection port (and, when the segment has them,
    from its `sources`, to its `destinations`, in its `vlans`): `ether daddr set <bridge
    MAC>` and `meta pkttype set host`. The bridge's forwarding database then finds its own
    MAC and passes the frame up to the bridge device instead of forwarding it. Without
    this the flow is bridged past the proxy and never inspected. Priority -300 (the
    bridge family's `dstnat` slot) runs before bridge filter chains at their usual
    priorities, so they see the frame already addressed to the bridge. `ip protocol tcp`
    also pins the ether type to IPv4: IPv6 and other traffic pass through uninspected
    (DESIGN section 1).
    The rule also sets a per-segment *tag* mark (SEGMENT_TAG_BASE + segment index). All
    segments share one bridge, so at the IP layer every diverted packet arrives on the
    same device; the tag is what tells (4) which segment - and hence which listener -
    the packet belongs to. The mark lives on the skb, which the bridge passes up as is.
    Server policies of the segment's profile add one such rule per server proxy
    (destination = the proxy's destinations, ports = its detection ports).

(2) Same chain, on the segment's server port: TCP *from* a detection port (from the
    segment's destinations, to its sources) gets the same MAC rewrite. These are the
    server's answers to the proxy's upstream connections, which are addressed to the
    client's address (the upstream socket is transparent and bound to it); bridged,
    they would reach the real client, which would answer with a RST and kill the
    upstream leg. Return traffic of flows that tlsgw does not own (opened before it
    started) is diverted too; with no socket it falls through to routing.

(3) IP table `ip <table>`, chain `prerouting`, priority -150 (mangle; step 3):
    `meta l4proto tcp socket transparent 1 meta mark set <mark> accept`. Packets of
    flows that already have a transparent socket get the routing mark and skip (4). This
    is what delivers the return traffic of (2) - addressed to the client's IP, which is
    not local, and to an ephemeral port no tproxy rule matches - to the upstream socket;
    without it that traffic is forwarded or dropped and the upstream connection never
    completes (the live steering test fails when this rule is removed). Later packets of
    accepted client legs would also be found by (4), whose tproxy lookup prefers an
    established socket; (3) just gets them there sooner.

(4) Same chain, one rule per steered flow class: `iifname "<bridge>" meta mark <tag>
    tcp dport {ports} tproxy to :<listen_port + i> meta mark set <mark> accept` (plus the
    segment's address filters of (1), as a second guard). The tag alone keeps packets
    that reach the bridge device any other way - addressed to the gateway itself, say -
    from being hijacked. tproxy assigns the packet to the
    listener without rewriting it, so `getsockname()` of the accepted socket is the
    original destination. With no listener the rule does not match and the packet falls
    through to routing (DESIGN: fail-open at L3 with ip_forward=1).

Outside the nft script, carried on the Ruleset for `routing.py` and `sysctl.py`:

(5) `ip rule fwmark <mark> lookup <route_table>` + `local 0.0.0.0/0 dev lo` in that
    table (step 4): the marked packet is addressed to a foreign IP; without a local route
    it would be forwarded, not delivered to the socket.
(6) rp_filter 0 on `all`, the bridge and the ports (step 4): diverted return traffic
    arrives with addresses the reverse-path check finds on the wrong interface and
    drops. `net.bridge.bridge-nf-call-iptables=0` (step 1): with 1, br_netfilter runs the
    IP hooks a second time in bridge context and the TPROXYed SYN is answered with a RST.

Fail-open and fallback (the sets of the bridge table; see `fallback.py` for how the
running gateway drives them):

(0) `alive` (inet_proto, timeout): every divert rule of (1) and (2) requires `meta l4proto
    @alive`. The gateway renews the element; when it dies the element expires and the
    bridge forwards everything untouched within `ALIVE_TIMEOUT` - no other process needs
    to act. Rules applied by hand (`tlsgw rules apply`) hold an element that never expires.
(K) `proxied` (ip saddr . tcp sport . ip daddr . tcp dport): one rule, first in the
    chain, diverts the packets of the sessions a fallback keeps, on any segment port.
    A reload that changes the rules puts the sessions in flight there too, so a policy
    disabled or a port no longer steered does not cut them. Empty otherwise.
(F) `fallback` (inet_proto): (1) and (2) also require `meta l4proto != @fallback`, so
    engaging fallback (adding `tcp`) lets new flows pass untouched while (K) keeps the
    live ones. Without the condition on (2), the answers to a bypassed client would be
    lifted to an IP stack that has no socket for them and lost.
(C) `gateway.fail_mode: closed` adds, after all segments, a drop rule per flow class of
    (1) with `meta l4proto != @alive`: while the gateway is dead the flows it would
    inspect are dropped instead of forwarded. A manual or overload fallback still lets
    them pass (`alive` is present then): that is an operator's decision, not a failure.

VLANs: tagged frames are matched with `vlan id`; the IP stack only sees them through a
VLAN device `<bridge>.<id>`, which (4) matches by name and which must exist (netfilter
does not create it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses

from gateway.config.model import FailMode, GatewayConfig, PortRange, Segment
from netfilter.errors import NetfilterError
from netfilter.fallback import ALIVE_SET, FALLBACK_SET, PROXIED_SET, SteeringState
from netfilter.model import (
    Chain,
    ChainPolicy,
    ChainType,
    Direction,
    Family,
    Hook,
    IifName,
    InSet,
    IpAddress,
    IpProtocol,
    L4Proto,
    MarkIs,
    Match,
    PacketType,
    PolicyRoute,
    PortSpan,
    Proto,
    Rule,
    Ruleset,
    Set,
    SetEtherDaddr,
    SetFlag,
    SetKey,
    SetMark,
    SetPacketType,
    SetType,
    SocketTransparent,
    Table,
    TcpPort,
    TProxy,
    Verdict,
    VlanId,
)

# NF_BR_PRI_FIRST is INT_MIN, but -300 is the bridge family's "dstnat" slot, the
# earliest that nft names; the recipe was proven with it (DESIGN.md section 3 step 2).
BRIDGE_DIVERT_PRIORITY = -300
# NF_IP_PRI_MANGLE: where the nft tproxy examples and the recipe hook TPROXY; before
# conntrack-based NAT (-100) so nothing rewrites the destination first.
TPROXY_PRIORITY = -150
# Segment tags: a fixed high half plus the segment index in the low half (listener ports
# cap the index far below 0x10000). Far from the small marks operators pick for routing
# (the default is 1); the tag only has to survive from bridge to IP prerouting.
SEGMENT_TAG_BASE = 0x7E570000
CHAIN_NAME = "prerouting"


@dataclass(frozen=True, slots=True)
class _FlowClass:
    """Connections of one segment steered alike: client-side ports and address limits.

    `destinations` is a conjunction: the destination must be in every tuple (the
    segment's own filter and a server proxy's destinations).
    """

    ports: tuple[PortSpan, ...]
    sources: tuple[IPv4Network, ...]
    destinations: tuple[tuple[IPv4Network, ...], ...]
    label: str


def steering(cfg: GatewayConfig, bridge_mac: str, state: SteeringState | None = None) -> Ruleset:
    """The ruleset that steers every configured segment's flows to its listener.

    `bridge_mac` is the bridge device's own MAC (the config does not hold it). `state`
    is what the bridge table's sets start with; the default is rules managed by hand
    (an `alive` element that never expires, no fallback).

    Raises:
        NetfilterError(command="plan"): the configuration cannot be expressed (a listener
            port above 65535, the routing mark colliding with a segment tag); or
            NetfilterError(command="validate") when an interface name or the MAC is unusable.
    """
    gw = cfg.gateway
    settings = gw.netfilter
    state = state if state is not None else SteeringState()
    mac = bridge_mac.lower()
    bridge_rules: list[Rule] = []
    fail_closed: list[Rule] = []
    live = (InSet(SetKey.L4PROTO, ALIVE_SET), InSet(SetKey.L4PROTO, FALLBACK_SET, negate=True))
    ip_rules: list[Rule] = [
        Rule(
            matches=(L4Proto(Proto.TCP), SocketTransparent()),
            statements=(SetMark(settings.mark),),
            verdict=Verdict.ACCEPT,
            comment="flows owned by a transparent socket",
        )
    ]
    rp_filter_off: list[str] = [gw.bridge]
    for index, segment in enumerate(gw.segments):
        flows = _flow_classes(cfg, segment)
        if not flows:
            continue
        tag = SEGMENT_TAG_BASE + index
        port = gw.listen_port + index
        if port > 65535:
            raise NetfilterError("plan", f"gateway.segments[{index}] ({segment.name}): listener port {port} > 65535")
        if tag == settings.mark:
            raise NetfilterError("plan", f"gateway.netfilter.mark {settings.mark:#x} collides with a segment tag")
        vlan: tuple[Match, ...] = (VlanId(segment.vlans),) if segment.vlans else ()
        ip_ifaces = tuple(f"{gw.bridge}.{v}" for v in segment.vlans) or (gw.bridge,)
        divert = (SetEtherDaddr(mac), SetPacketType(PacketType.HOST))
        for flow in flows:
            bridge_rules.append(
                Rule(
                    matches=(
                        IifName((segment.client_port,)),
                        *vlan,
                        IpProtocol(Proto.TCP),
                        *_addresses(flow.sources, flow.destinations),
                        TcpPort(Direction.DESTINATION, flow.ports),
                        *live,
                    ),
                    statements=(*divert, SetMark(tag)),
                    verdict=Verdict.ACCEPT,
                    comment=f"segment {segment.name}: {flow.label}",
                )
            )
            if gw.fail_mode is FailMode.CLOSED:
                fail_closed.append(
                    Rule(
                        matches=(
                            IifName((segment.client_port,)),
                            *vlan,
                            IpProtocol(Proto.TCP),
                            *_addresses(flow.sources, flow.destinations),
                            TcpPort(Direction.DESTINATION, flow.ports),
                            InSet(SetKey.L4PROTO, ALIVE_SET, negate=True),
                        ),
                        verdict=Verdict.DROP,
                        comment=f"fail-closed: segment {segment.name}: {flow.label}",
                    )
                )
            ip_rules.append(
                Rule(
                    matches=(
                        IifName(ip_ifaces),
                        MarkIs(tag),
                        *_addresses(flow.sources, flow.destinations),
                        TcpPort(Direction.DESTINATION, flow.ports),
                    ),
                    statements=(TProxy(port), SetMark(settings.mark)),
                    verdict=Verdict.ACCEPT,
                    comment=f"segment {segment.name}: {flow.label}",
                )
            )
        for flow in flows:
            bridge_rules.append(
                Rule(
                    matches=(
                        IifName((segment.server_port,)),
                        *vlan,
                        IpProtocol(Proto.TCP),
                        *_addresses_reversed(flow.sources, flow.destinations),
                        TcpPort(Direction.SOURCE, flow.ports),
                        *live,
                    ),
                    statements=divert,
                    verdict=Verdict.ACCEPT,
                    comment=f"segment {segment.name}: return of {flow.label}",
                )
            )
        rp_filter_off += [*ip_ifaces, segment.client_port, segment.server_port]

    ports = tuple(dict.fromkeys(p for s in gw.segments for p in (s.client_port, s.server_port)))
    kept = (
        [
            Rule(
                matches=(IifName(ports), InSet(SetKey.L4PROTO, ALIVE_SET), InSet(SetKey.IPV4_FLOW, PROXIED_SET)),
                statements=(SetEtherDaddr(mac), SetPacketType(PacketType.HOST)),
                verdict=Verdict.ACCEPT,
                comment="sessions kept through a fallback or a reload",
            )
        ]
        if ports
        else []
    )
    ruleset = Ruleset(
        tables=(
            Table(
                Family.BRIDGE,
                settings.table,
                chains=(_base_chain(BRIDGE_DIVERT_PRIORITY, kept + bridge_rules + fail_closed),),
                sets=_bridge_sets(state),
            ),
            Table(
                Family.IP,
                settings.table,
                chains=(_base_chain(TPROXY_PRIORITY, ip_rules),),
            ),
        ),
        routing=PolicyRoute(mark=settings.mark, table=settings.route_table),
        bridge=gw.bridge,
        rp_filter_off=tuple(dict.fromkeys(rp_filter_off)),
    )
    ruleset.validate()
    return ruleset


def _bridge_sets(state: SteeringState) -> tuple[Set, ...]:
    return (
        Set(ALIVE_SET, SetType.INET_PROTO, flags=(SetFlag.TIMEOUT,), elements=state.alive_elements()),
        Set(FALLBACK_SET, SetType.INET_PROTO, elements=state.fallback_elements()),
        Set(PROXIED_SET, SetType.IPV4_FLOW, elements=state.proxied_elements()),
    )


def _base_chain(priority: int, rules: list[Rule]) -> Chain:
    return Chain(
        CHAIN_NAME,
        rules=tuple(rules),
        type=ChainType.FILTER,
        hook=Hook.PREROUTING,
        priority=priority,
        policy=ChainPolicy.ACCEPT,
    )


def _flow_classes(cfg: GatewayConfig, segment: Segment) -> list[_FlowClass]:
    """Client policies' ports, then one class per enabled server policy's server proxy."""
    sources = _collapse(segment.sources)
    own_destinations = (_collapse(segment.destinations),) if segment.destinations else ()
    flows: list[_FlowClass] = []
    client_ports = _merge_ports(cfg.client_detection_ports(segment))
    if client_ports:
        flows.append(_FlowClass(client_ports, sources, own_destinations, "client policies"))
    if cfg.gateway.ssl_inspection.server:
        for policy in cfg.profile(segment.profile).server_policies:
            if not policy.enabled:
                continue
            proxy = cfg.server_proxy(policy.server_proxy)
            ports = _merge_ports(proxy.detection_ports)
            if ports and proxy.destinations:
                destinations = (*own_destinations, _collapse(proxy.destinations))
                flows.append(_FlowClass(ports, sources, destinations, f"server proxy {proxy.name}"))
    return flows


def _addresses(
    sources: tuple[IPv4Network, ...], destinations: tuple[tuple[IPv4Network, ...], ...]
) -> tuple[Match, ...]:
    found: list[Match] = [IpAddress(Direction.SOURCE, sources)] if sources else []
    found += [IpAddress(Direction.DESTINATION, d) for d in destinations]
    return tuple(found)


def _addresses_reversed(
    sources: tuple[IPv4Network, ...], destinations: tuple[tuple[IPv4Network, ...], ...]
) -> tuple[Match, ...]:
    """The same limits seen from the server side: servers are sources, clients destinations."""
    found: list[Match] = [IpAddress(Direction.SOURCE, d) for d in destinations]
    if sources:
        found.append(IpAddress(Direction.DESTINATION, sources))
    return tuple(found)


def _collapse(networks: Iterable[IPv4Network]) -> tuple[IPv4Network, ...]:
    """Overlapping elements make nft refuse an anonymous interval set; merge them first."""
    return tuple(collapse_addresses(networks))


def _merge_ports(ranges: Iterable[PortRange]) -> tuple[PortSpan, ...]:
    """Merge overlapping and adjacent ranges, for the same reason as `_collapse`."""
    merged: list[PortSpan] = []
    for low, high in sorted((r.low, r.high) for r in ranges):
        if merged and low <= merged[-1].high + 1:
            last = merged.pop()
            merged.append(PortSpan(last.low, max(last.high, high)))
        else:
            merged.append(PortSpan(low, high))
    return tuple(merged)
