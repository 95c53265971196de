"""A small, typed model of the firewall rules tlsgw owns.

The model knows nothing about tlsgw's configuration (only `plan.py` translates one into
the other) and nothing about any backend's syntax (renderers do that). Rules are built
from a closed set of typed pieces rather than free text, so a second backend (iptables)
can render the same objects, and so `validate()` can refuse what would otherwise reach
the kernel as a confusing error - or worse, as an injected token in a generated script.

`validate()` collects every problem of a whole ruleset before raising one
`NetfilterError(command="validate")`, so nothing is half-applied because of an object
that was checked too late.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable, Union

from netfilter.errors import NetfilterError

# nft accepts longer and stranger identifiers; tlsgw only ever needs plain ones, and
# refusing the rest keeps quoting out of the renderers.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
# Linux IFNAMSIZ is 16 including the terminating NUL (dev_valid_name()).
IFNAME_MAX = 15
# nft stores at most 128 bytes of comment per rule (NFT_USERDATA_MAXLEN is 256, nft's
# own limit is 128); quotes and line breaks cannot be escaped in an nft comment.
COMMENT_MAX = 128
MAC_PATTERN = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
MARK_MAX = 0xFFFFFFFF
# Hook priorities are signed 32-bit in the kernel.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


class Family(enum.Enum):
    IP = "ip"
    IP6 = "ip6"
    INET = "inet"
    BRIDGE = "bridge"


class Hook(enum.Enum):
    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
    POSTROUTING = "postrouting"


class ChainType(enum.Enum):
    FILTER = "filter"
    NAT = "nat"
    ROUTE = "route"


class ChainPolicy(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    RETURN = "return"


class Proto(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


class Direction(enum.Enum):
    """Which address or port of a packet a match looks at."""

    SOURCE = "source"
    DESTINATION = "destination"


class PacketType(enum.Enum):
    HOST = "host"


class SetType(enum.Enum):
    INET_PROTO = "inet_proto"
    IPV4_ADDR = "ipv4_addr"
    INET_SERVICE = "inet_service"
    IPV4_FLOW = "ipv4_addr . inet_service . ipv4_addr . inet_service"
    """One direction of a TCP connection: source address and port, destination address and port."""


class SetFlag(enum.Enum):
    TIMEOUT = "timeout"
    INTERVAL = "interval"


class SetKey(enum.Enum):
    """The packet field looked up in a named set."""

    L4PROTO = "l4proto"
    IP_SADDR = "ip_saddr"
    IP_DADDR = "ip_daddr"
    TCP_SPORT = "tcp_sport"
    TCP_DPORT = "tcp_dport"
    IPV4_FLOW = "ipv4_flow"
    """`ip saddr . tcp sport . ip daddr . tcp dport`: the packet's direction of its connection."""


# Which set type each lookup key needs; a mismatch is an nft error we can name earlier.
SET_KEY_TYPES: dict[SetKey, SetType] = {
    SetKey.L4PROTO: SetType.INET_PROTO,
    SetKey.IP_SADDR: SetType.IPV4_ADDR,
    SetKey.IP_DADDR: SetType.IPV4_ADDR,
    SetKey.TCP_SPORT: SetType.INET_SERVICE,
    SetKey.TCP_DPORT: SetType.INET_SERVICE,
    SetKey.IPV4_FLOW: SetType.IPV4_FLOW,
}

IPV4_FAMILIES = frozenset({Family.IP, Family.INET, Family.BRIDGE})


def _ifname_problem(name: str) -> str | None:
    if not name or len(name) > IFNAME_MAX:
        return f"interface name {name!r} must be 1..{IFNAME_MAX} characters"
    if name in (".", "..") or any(c in name for c in '/:"\\') or any(c.isspace() for c in name):
        return f"interface name {name!r} contains a character Linux or nft refuses"
    return None


def _name_problem(kind: str, name: str) -> str | None:
    if not NAME_PATTERN.match(name):
        return f"{kind} name {name!r} must be a letter then up to 63 letters, digits or '_'"
    return None


def _mark_problem(mark: int) -> str | None:
    if not 0 <= mark <= MARK_MAX:
        return f"mark {mark:#x} is outside 0..0xffffffff"
    return None


def _port_problem(port: int) -> str | None:
    if not 1 <= port <= 65535:
        return f"port {port} is outside 1..65535"
    return None


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, order=True)
class PortSpan:
    """An inclusive port range; one port has `low == high`."""

    low: int
    high: int

    @classmethod
    def single(cls, port: int) -> PortSpan:
        return cls(port, port)

    def problems(self) -> list[str]:
        found = [p for p in (_port_problem(self.low), _port_problem(self.high)) if p]
        if not found and self.low > self.high:
            found.append(f"port range {self.low}-{self.high} is reversed")
        return found


# ---------------------------------------------------------------------------- matches


@dataclass(frozen=True, slots=True)
class IifName:
    """The packet arrived on one of these interfaces (bridge port in a bridge table).

    Matched by name, not index, so rules can be loaded before the interface exists.
    """

    names: tuple[str, ...]

    def problems(self, family: Family) -> list[str]:
        if not self.names:
            return ["iifname needs at least one interface"]
        return [p for p in map(_ifname_problem, self.names) if p]


@dataclass(frozen=True, slots=True)
class L4Proto:
    """`meta l4proto`: the transport protocol, whatever the network protocol."""

    proto: Proto

    def problems(self, family: Family) -> list[str]:
        return []


@dataclass(frozen=True, slots=True)
class IpProtocol:
    """`ip protocol`: IPv4 only; in a bridge table it also requires an IPv4 ether type,
    so tagged and IPv6 frames never match."""

    proto: Proto

    def problems(self, family: Family) -> list[str]:
        return [] if family in IPV4_FAMILIES else [f"ip protocol is IPv4-only, not for family {family.value}"]


@dataclass(frozen=True, slots=True)
class IpAddress:
    """The IPv4 source or destination is in one of `networks`."""

    direction: Direction
    networks: tuple[IPv4Network, ...]

    def problems(self, family: Family) -> list[str]:
        found = [] if family in IPV4_FAMILIES else [f"ip address match is IPv4-only, not for family {family.value}"]
        if not self.networks:
            found.append("ip address match needs at least one network")
        found += [f"{n!r} is not an IPv4Network" for n in self.networks if not isinstance(n, IPv4Network)]
        return found


@dataclass(frozen=True, slots=True)
class TcpPort:
    """The TCP source or destination port is in one of `spans`."""

    direction: Direction
    spans: tuple[PortSpan, ...]

    def problems(self, family: Family) -> list[str]:
        found = [] if self.spans else ["tcp port match needs at least one port"]
        for span in self.spans:
            found += span.problems()
        return found


@dataclass(frozen=True, slots=True)
class VlanId:
    """The frame carries an 802.1Q tag with one of these IDs (bridge tables)."""

    ids: tuple[int, ...]

    def problems(self, family: Family) -> list[str]:
        found = [] if family is Family.BRIDGE else ["vlan id is matched in bridge tables only"]
        if not self.ids:
            found.append("vlan id match needs at least one ID")
        found += [f"VLAN ID {i} is outside 1..4094" for i in self.ids if not 1 <= i <= 4094]
        return found


@dataclass(frozen=True, slots=True)
class SocketTransparent:
    """A local socket with IP_TRANSPARENT owns this packet's flow."""

    def problems(self, family: Family) -> list[str]:
        return [] if family in (Family.IP, Family.IP6, Family.INET) else ["socket match needs an ip, ip6 or inet table"]


@dataclass(frozen=True, slots=True)
class MarkIs:
    """The packet's firewall mark equals `mark`."""

    mark: int

    def problems(self, family: Family) -> list[str]:
        return [p for p in (_mark_problem(self.mark),) if p]


@dataclass(frozen=True, slots=True)
class InSet:
    """A packet field is (or, with `negate`, is not) an element of the named set of the same table."""

    key: SetKey
    set_name: str
    negate: bool = False

    def problems(self, family: Family) -> list[str]:
        return [p for p in (_name_problem("set", self.set_name),) if p]


Match = Union[IifName, L4Proto, IpProtocol, IpAddress, TcpPort, VlanId, SocketTransparent, MarkIs, InSet]


# ---------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class SetEtherDaddr:
    """Rewrite the destination MAC; to the bridge's own MAC, the bridge passes the frame up."""

    mac: str

    def problems(self, family: Family) -> list[str]:
        found = [] if family is Family.BRIDGE else ["ether daddr set is for bridge tables only"]
        if not MAC_PATTERN.match(self.mac):
            found.append(f"MAC address {self.mac!r} must be six lower-case hex pairs separated by ':'")
        return found


@dataclass(frozen=True, slots=True)
class SetPacketType:
    pkttype: PacketType

    def problems(self, family: Family) -> list[str]:
        return [] if family is Family.BRIDGE else ["meta pkttype set is for bridge tables only"]


@dataclass(frozen=True, slots=True)
class SetMark:
    mark: int

    def problems(self, family: Family) -> list[str]:
        return [p for p in (_mark_problem(self.mark),) if p]


@dataclass(frozen=True, slots=True)
class TProxy:
    """Deliver the packet to the local socket listening on `port` (any local address)."""

    port: int

    def problems(self, family: Family) -> list[str]:
        found = [] if family in (Family.IP, Family.INET) else ["tproxy (IPv4) needs an ip or inet table"]
        return found + [p for p in (_port_problem(self.port),) if p]


Statement = Union[SetEtherDaddr, SetPacketType, SetMark, TProxy]


# ---------------------------------------------------------------------------- containers


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches, then statements in order, then an optional verdict (none = continue)."""

    matches: tuple[Match, ...] = ()
    statements: tuple[Statement, ...] = ()
    verdict: Verdict | None = None
    comment: str = ""

    def problems(self, family: Family) -> list[str]:
        found: list[str] = []
        for piece in (*self.matches, *self.statements):
            found += piece.problems(family)
        if len(self.comment) > COMMENT_MAX:
            found.append(f"comment is longer than {COMMENT_MAX} characters")
        if any(c in self.comment for c in '"\\\n\r'):
            found.append("comment may not contain quotes, backslashes or line breaks")
        if not (self.matches or self.statements or self.verdict):
            found.append("rule is empty")
        return found


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain; a base chain (attached to a hook) when `hook` is set."""

    name: str
    rules: tuple[Rule, ...] = ()
    type: ChainType | None = None
    hook: Hook | None = None
    priority: int | None = None
    policy: ChainPolicy | None = None

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def problems(self, family: Family) -> list[str]:
        found = [p for p in (_name_problem("chain", self.name),) if p]
        if self.is_base:
            if self.type is None or self.priority is None:
                found.append("a base chain needs a type and a priority")
            if self.priority is not None and not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
                found.append(f"priority {self.priority} is outside the signed 32-bit range")
            if self.type is ChainType.ROUTE and (family is Family.BRIDGE or self.hook is not Hook.OUTPUT):
                found.append("a route chain exists only in ip, ip6 and inet tables at the output hook")
        elif self.type is not None or self.priority is not None or self.policy is not None:
            found.append("type, priority and policy need a hook")
        for index, rule in enumerate(self.rules):
            found += [f"rule {index}: {p}" for p in rule.problems(family)]
        return found


@dataclass(frozen=True, slots=True, order=True)
class FlowKey:
    """An IPV4_FLOW element: the packets of one direction of one TCP connection."""

    saddr: IPv4Address
    sport: int
    daddr: IPv4Address
    dport: int

    def problems(self) -> list[str]:
        found = [f"{a!r} is not an IPv4Address" for a in (self.saddr, self.daddr) if not isinstance(a, IPv4Address)]
        return found + [p for p in (_port_problem(self.sport), _port_problem(self.dport)) if p]


@dataclass(frozen=True, slots=True)
class Element:
    """One set element; `timeout` in seconds (fractions allowed, rendered in ms) overrides
    the set's default."""

    value: Proto | IPv4Network | int | FlowKey
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Set:
    """A named set; `timeout` (seconds) is the default lifetime of its elements."""

    name: str
    type: SetType
    flags: tuple[SetFlag, ...] = ()
    timeout: int | None = None
    elements: tuple[Element, ...] = ()

    def problems(self) -> list[str]:
        found = [p for p in (_name_problem("set", self.name),) if p]
        times = [self.timeout] + [e.timeout for e in self.elements]
        if any(t is not None for t in times) and SetFlag.TIMEOUT not in self.flags:
            found.append("timeouts need the timeout flag")
        found += [f"timeout {t} must be a positive duration of at least 1 ms" for t in times if t is not None and not t >= 0.001]
        for element in self.elements:
            value = element.value
            if self.type is SetType.INET_PROTO and not isinstance(value, Proto):
                found.append(f"element {value!r} is not a protocol")
            elif self.type is SetType.IPV4_ADDR:
                if not isinstance(value, IPv4Network):
                    found.append(f"element {value!r} is not an IPv4Network")
                elif value.prefixlen < 32 and SetFlag.INTERVAL not in self.flags:
                    found.append(f"element {value} is a range and needs the interval flag")
            elif self.type is SetType.INET_SERVICE and (
                isinstance(value, bool) or not isinstance(value, int) or _port_problem(value)
            ):
                found.append(f"element {value!r} is not a port")
            elif self.type is SetType.IPV4_FLOW:
                if not isinstance(value, FlowKey):
                    found.append(f"element {value!r} is not a FlowKey")
                else:
                    found += [f"element {value}: {p}" for p in value.problems()]
        return found


@dataclass(frozen=True, slots=True)
class Table:
    family: Family
    name: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[Set, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.family.value} {self.name}"

    def problems(self) -> list[str]:
        found = [p for p in (_name_problem("table", self.name),) if p]
        for kind, names in (("chain", [c.name for c in self.chains]), ("set", [s.name for s in self.sets])):
            found += [f"{kind} {n!r} is defined twice" for n in sorted({n for n in names if names.count(n) > 1})]
        sets = {s.name: s for s in self.sets}
        for s in self.sets:
            found += [f"set {s.name}: {p}" for p in s.problems()]
        for chain in self.chains:
            found += [f"chain {chain.name}: {p}" for p in chain.problems(self.family)]
            for index, rule in enumerate(chain.rules):
                for match in rule.matches:
                    if not isinstance(match, InSet):
                        continue
                    target = sets.get(match.set_name)
                    if target is None:
                        found.append(f"chain {chain.name}: rule {index}: set {match.set_name!r} is not defined")
                    elif target.type is not SET_KEY_TYPES[match.key]:
                        found.append(
                            f"chain {chain.name}: rule {index}: set {match.set_name!r} holds "
                            f"{target.type.value}, not what {match.key.value} needs"
                        )
        return found

    def validate(self) -> None:
        _raise_if(f"table {self.label}: {p}" for p in self.problems())


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    """The policy routing the TPROXY step needs (DESIGN.md section 3 step 4)."""

    mark: int
    """Packets with this firewall mark are looked up in `table`."""
    table: int
    """Routing table holding `local 0.0.0.0/0 dev lo`."""

    def problems(self) -> list[str]:
        found = [p for p in (_mark_problem(self.mark),) if p]
        if self.mark == 0:
            found.append("mark 0 would send every unmarked packet to the local stack")
        # 253..255 are the kernel's default, main and local tables; 0 is "unspecified".
        if not 1 <= self.table <= 0xFFFFFFFF or self.table in (253, 254, 255):
            found.append(f"route table {self.table} is reserved or out of range")
        return found


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything one `apply` installs: tlsgw's own tables and the host settings they rely on."""

    tables: tuple[Table, ...]
    routing: PolicyRoute | None = None
    """Policy routing that must exist for TPROXY to deliver locally; None when not needed."""
    bridge: str | None = None
    """The bridge the steered frames are handed up to."""
    rp_filter_off: tuple[str, ...] = ()
    """Interfaces whose reverse-path filter must be off (besides `all`)."""

    def table(self, family: Family, name: str) -> Table:
        return next(t for t in self.tables if t.family is family and t.name == name)

    def problems(self) -> list[str]:
        labels = [t.label for t in self.tables]
        found = [f"table {label} is defined twice" for label in sorted({x for x in labels if labels.count(x) > 1})]
        for table in self.tables:
            found += [f"table {table.label}: {p}" for p in table.problems()]
        if self.routing is not None:
            found += [f"routing: {p}" for p in self.routing.problems()]
        for name in (*((self.bridge,) if self.bridge is not None else ()), *self.rp_filter_off):
            problem = _ifname_problem(name)
            if problem:
                found.append(problem)
        return found

    def validate(self) -> None:
        """Raises: NetfilterError(command="validate") listing every problem found."""
        _raise_if(self.problems())


def _raise_if(problems: Iterable[str]) -> None:
    found = list(problems)
    if found:
        raise NetfilterError("validate", "\n".join(found))
