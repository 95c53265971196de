"""GatewayConfig -> the kernel side of tunnel inspection (issue 7): tlsgw's own nft
tables `bridge <table>_tunnel` and `ip <table>_tunnel`, and its policy routing.

Theory of operation
===================

The kernels tlsgw runs on may have no GRE or IP-in-IP devices (these machines have none),
so tlsgw decapsulates in user space. What the kernel does, and why each piece::

    client ─[client_port]─┬─ bridge prerouting (-310): untagged IPv4 GRE/IP-in-IP on a
                          │  segment port, while tlsgw is alive -> drop      (1)
                          │  (a packet socket on each port saw the frame before the
                          │   bridge: tlsgw forwards it untouched, or decapsulates it)
                          ▼
          tlsgw ── inner packet ──► TUN tlsgwt<i> ── ip prerouting (-150):
                                      (2) update @peers<i> (client, server, port)
                                      (3) socket transparent -> mark, accept
                                      (4) tcp dport {ports} tproxy :listen_port+i
          tlsgw ◄── packets routed to the TUN device ── ip output (route, -150):
                                      (5) (client, server, port) in @peers<i> -> mark out<i>
                                      policy routing: fwmark out<i> -> table: default dev tlsgwt<i>
                                                      (6) fallback: iif lo tcp -> table of tlsgwt0

(1) Divert. Why not NFQUEUE, which the issue suggests: nft `queue` is absent on these
    kernels, and xtables' NFQUEUE sees bridged frames only through br_netfilter with
    `bridge-nf-call-iptables=1` - which on this bridge breaks the TPROXY path of plain
    flows (tried: with the per-bridge `nf_call_iptables 1` or the sysctl set, curl through
    the gateway times out; DESIGN.md section 3 saw RSTs). Lifting GRE to the IP stack
    first and queueing there would lose the frame's destination MAC, which answering
    needs, and fail closed. So: an AF_PACKET socket on each bridge port sees every frame
    before the bridge handles it (taps run ahead of the bridge's rx handler), and this
    rule drops the outer frame at bridge prerouting. tlsgw then sends exactly those frames
    on: untouched (same bytes, same MACs) out of the other port, or decapsulated.
    Fail-open is the kernel dead-man's switch of DESIGN.md section 3: the rule only
    matches while the set `alive` holds the protocols, and tlsgw renews their one-second
    timeout four times a second. Stopped with SIGTERM, tlsgw removes the tables at once;
    killed, the elements expire and the bridge forwards tunnels untouched again within
    `ALIVE_TIMEOUT`. Only untagged IPv4 with protocol 47 or 4 is dropped: everything else
    (IPv6, 6in4, VLAN-tagged frames) is bridged by the kernel and only counted by tlsgw,
    whose `frames.owned_by_divert` mirrors this rule exactly. Tunnels tlsgw does not take
    at all - IPv6 outside, 6in4, GTP-U - are counted by named kernel counters
    (`KERNEL_COUNTERS`) that tlsgw folds into its own counters every few seconds.
(2) `peers<i>`: (inner client, inner server, server port) of every tunneled flow the
    proxy took, refreshed by its packets, timing out after the idle timeout. It is how the
    output chain (5) recognises both legs of such a flow: the client leg's answers
    (daddr . saddr . sport) and the upstream leg (saddr . daddr . dport, any source port).
(3) As in the plain plan: packets of sockets the gateway owns (the upstream leg's
    answers) go to them. Kept here too so this table does not depend on the other's rules.
(4) New inner connections to the detection ports go to the segment's listener, exactly
    as plain flows do; `getsockname()` is the inner server. Only SYNs tlsgw's policy
    selection chose ever reach the TUN device.
(5) A `route` chain: setting the mark re-routes the packet, so the gateway's answers
    inside tunneled flows go to the TUN device, whatever else the main table says about
    the inner addresses (a default route toward a management network, say).
(6) `connect()` routes before any packet exists: with no route at all to the inner
    server (the usual case, the inner addresses belong to the tunnel) it would fail with
    ENETUNREACH. The fallback rule, after `main` and `default`, gives locally generated
    TCP a route into the TUN device; (5) then picks the right one. Local TCP to
    destinations with no route at all thus reaches tlsgw's TUN device (and is dropped
    there, counted as `tunnel.dropped.no_flow`) instead of failing at once.

Pure: configuration in, text and values out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.config.model import GatewayConfig, PortRange
from gateway.tunnel.selection import build_selection
from netfilter.errors import NetfilterError

TABLE_SUFFIX = "_tunnel"
TUN_PREFIX = "tlsgwt"
# Before the plain divert (-300) only for readability of `nft list ruleset`: a drop is
# final whatever the order, and the plain rules match TCP, never GRE or IP-in-IP.
BRIDGE_PRIORITY = -310
IP_PRIORITY = -150  # NF_IP_PRI_MANGLE, as the TPROXY rules of `plan.py`
TUNNEL_PROTOCOLS = (4, 47)  # IP-in-IP, GRE: what `gateway.tunnel.frames.TUNNEL_PROTOCOLS` owns
OUT_MARK_BASE = 0x7E5A0000
"""Marks of the gateway's own packets inside tunnels: base + segment index. Far from
the routing mark operators pick and from `plan.SEGMENT_TAG_BASE` (0x7E570000)."""
MARK_RULE_PRIORITY = 32000
"""Before `main` (32766): a marked packet must reach the TUN device whatever main says."""
FALLBACK_RULE_PRIORITY = 32800
"""After `main` and `default` (32767): only what has no route at all."""
ALIVE_TIMEOUT = 1.0
"""Seconds a killed tlsgw can keep tunnels diverted (and so stopped)."""
ALIVE_REFRESH_INTERVAL = 0.25
"""Four renewals per timeout: a renewal may be late by 0.75 s before tunnels pass untouched."""
PEERS_SET_SIZE = 65536
GTP_U_PORT = 2152  # 3GPP TS 29.281
KERNEL_COUNTERS = ("ipv6_outer", "ipv6_inner", "gtp")
"""Tunnels the bridge carries untouched without tlsgw ever reading them (IPv6 outside,
6in4, GTP-U), counted by the kernel: `tunnel.unsupported.<name>` in tlsgw's counters.
Counting them in user space would copy every such packet to tlsgw for nothing."""
IFNAME_MAX = 15


@dataclass(frozen=True, slots=True)
class TunnelSegment:
    index: int
    name: str
    client_port: str
    server_port: str
    tun: str
    listen_port: int
    ports: tuple[PortRange, ...]
    out_mark: int
    route_table: int

    @property
    def peers_set(self) -> str:
        return f"peers{self.index}"


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    table: str
    tproxy_mark: int
    segments: tuple[TunnelSegment, ...]
    peer_timeout: int
    """Seconds; the gateway's idle timeout plus a margin for the closing exchange."""

    @property
    def ports(self) -> tuple[str, ...]:
        return tuple(p for s in self.segments for p in (s.client_port, s.server_port))

    @property
    def fallback_table(self) -> int | None:
        return self.segments[0].route_table if self.segments else None


def tunnel_plan(config: GatewayConfig) -> TunnelPlan:
    """The tunnel divert of every segment that has something to inspect.

    Raises:
        NetfilterError(command="plan"): a mark or routing table would collide with the
            plain steering's, or a TUN name would be too long.
    """
    gw = config.gateway
    tunnels = gw.tunnels
    selection = build_selection(config)
    segments: list[TunnelSegment] = []
    for index, segment in enumerate(gw.segments):
        ports = selection.ports(index)
        if not ports:
            continue
        tun = f"{TUN_PREFIX}{index}"
        if len(tun) > IFNAME_MAX:
            raise NetfilterError("plan", f"gateway.segments[{index}]: TUN device name {tun!r} is too long")
        mark = OUT_MARK_BASE + index
        table = tunnels.route_table + index
        if mark == gw.netfilter.mark:
            raise NetfilterError("plan", f"gateway.netfilter.mark {mark:#x} collides with a tunnel mark")
        if table == gw.netfilter.route_table:
            raise NetfilterError("plan", f"gateway.tunnels.route_table: table {table} (segment {segment.name}) "
                                         f"is gateway.netfilter.route_table")
        segments.append(TunnelSegment(index, segment.name, segment.client_port, segment.server_port, tun,
                                      gw.listen_port + index, ports, mark, table))
    return TunnelPlan(f"{gw.netfilter.table}{TABLE_SUFFIX}", gw.netfilter.mark, tuple(segments),
                      int(gw.idle_timeout) + 60)


def _quoted(names: tuple[str, ...]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def _ports(ports: tuple[PortRange, ...]) -> str:
    return "{ " + ", ".join(str(p) for p in ports) + " }"


def render_tunnel_nft(plan: TunnelPlan) -> str:
    """One `nft -f` script replacing both tunnel tables atomically (as `render_nft` does)."""
    name = plan.table
    protocols = "{ " + ", ".join(str(p) for p in TUNNEL_PROTOCOLS) + " }"
    lines = [
        "# Generated by tlsgw: tunnel inspection (issue 7); replaces only its own tables.",
        f"add table bridge {name}",
        f"delete table bridge {name}",
        f"table bridge {name} {{",
        "\tset alive {",
        "\t\ttype inet_proto",
        "\t\tflags timeout",
        "\t}",
        "",
        *(f"\tcounter {counter} {{\n\t}}\n" for counter in KERNEL_COUNTERS),
        "\tchain prerouting {",
        f"\t\ttype filter hook prerouting priority {BRIDGE_PRIORITY}; policy accept;",
    ]
    if plan.segments:
        ports = _quoted(plan.ports)
        lines += [
            f"\t\tiifname {ports} ether type ip ip protocol {protocols} "
            f"ip protocol @alive counter drop comment \"tunnels taken by tlsgw\"",
            f"\t\tiifname {ports} ether type ip6 meta l4proto {{ 4, 41, 47 }} counter name \"ipv6_outer\"",
            f"\t\tiifname {ports} ether type ip ip protocol 41 counter name \"ipv6_inner\"",
            f"\t\tiifname {ports} ether type ip udp dport {GTP_U_PORT} counter name \"gtp\"",
        ]
    lines += ["\t}", "}", f"add table ip {name}", f"delete table ip {name}", f"table ip {name} {{"]
    for segment in plan.segments:
        lines += [
            f"\tset {segment.peers_set} {{",
            "\t\ttype ipv4_addr . ipv4_addr . inet_service",
            "\t\tflags dynamic,timeout",
            f"\t\ttimeout {plan.peer_timeout}s",
            f"\t\tsize {PEERS_SET_SIZE}",
            "\t}",
            "",
        ]
    lines += ["\tchain prerouting {", f"\t\ttype filter hook prerouting priority {IP_PRIORITY}; policy accept;"]
    for s in plan.segments:
        tun, ports = f'"{s.tun}"', _ports(s.ports)
        lines += [
            f"\t\tiifname {tun} tcp dport {ports} update @{s.peers_set} {{ ip saddr . ip daddr . tcp dport }}",
            f"\t\tiifname {tun} meta l4proto tcp socket transparent 1 meta mark set {plan.tproxy_mark:#x} accept",
            f"\t\tiifname {tun} tcp dport {ports} tproxy to :{s.listen_port} meta mark set {plan.tproxy_mark:#x} "
            f"accept comment \"segment {s.name}: tunneled flows\"",
        ]
    lines += ["\t}", "", "\tchain output {", f"\t\ttype route hook output priority {IP_PRIORITY}; policy accept;"]
    for s in plan.segments:
        lines += [
            f"\t\tip daddr . ip saddr . tcp sport @{s.peers_set} meta mark set {s.out_mark:#x}",
            f"\t\tip saddr . ip daddr . tcp dport @{s.peers_set} meta mark set {s.out_mark:#x}",
        ]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def render_tunnel_remove(plan: TunnelPlan) -> str:
    """Remove both tables; succeeds whether or not they exist."""
    name = plan.table
    return "\n".join([f"add table bridge {name}", f"delete table bridge {name}",
                      f"add table ip {name}", f"delete table ip {name}"]) + "\n"


def render_counters_query(plan: TunnelPlan) -> list[str]:
    """argv of the nft command that lists the kernel counters (JSON)."""
    return ["nft", "-j", "list", "counters", "table", "bridge", plan.table]


def parse_counters(text: str) -> dict[str, int]:
    """`nft -j list counters` output -> packets per counter name; malformed input -> {}."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    found: dict[str, int] = {}
    for item in document.get("nftables", []) if isinstance(document, dict) else []:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and isinstance(counter.get("name"), str):
            packets = counter.get("packets")
            if isinstance(packets, int):
                found[counter["name"]] = packets
    return found


def render_alive_refresh(plan: TunnelPlan, timeout: float = ALIVE_TIMEOUT) -> str:
    """Renew the dead-man's switch. `add element` does not renew an existing element, so
    add (makes the delete safe after an expiry), delete, add again: one transaction."""
    elements = "{ " + ", ".join(f"{p} timeout {int(timeout * 1000)}ms" for p in TUNNEL_PROTOCOLS) + " }"
    plain = "{ " + ", ".join(str(p) for p in TUNNEL_PROTOCOLS) + " }"
    target = f"bridge {plan.table} alive"
    return (f"add element {target} {elements}\n"
            f"delete element {target} {plain}\n"
            f"add element {target} {elements}\n")
