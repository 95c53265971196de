from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from netfilter.errors import NetfilterError
from netfilter.model import (
    Chain,
    ChainPolicy,
    ChainType,
    Direction,
    Element,
    Family,
    Hook,
    IifName,
    InSet,
    IpAddress,
    IpProtocol,
    MarkIs,
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

ACCEPT = Rule(verdict=Verdict.ACCEPT)


def _prerouting(*rules: Rule, priority: int = 0) -> Chain:
    return Chain("prerouting", rules=rules, type=ChainType.FILTER, hook=Hook.PREROUTING, priority=priority)


def _table(family: Family, *rules: Rule, sets: tuple[Set, ...] = ()) -> Table:
    return Table(family, "tlsgw", chains=(_prerouting(*rules),), sets=sets)


def _rule(*pieces: object) -> Rule:
    statements = tuple(p for p in pieces if isinstance(p, (SetEtherDaddr, SetPacketType, SetMark, TProxy)))
    matches = tuple(p for p in pieces if p not in statements)
    return Rule(matches=matches, statements=statements, verdict=Verdict.ACCEPT)  # type: ignore[arg-type]


VALID = [
    pytest.param(Ruleset(tables=()), id="empty"),
    pytest.param(
        Ruleset(
            tables=(
                _table(
                    Family.BRIDGE,
                    _rule(
                        IifName(("eth1", "eth1.10")),
                        VlanId((10, 4094)),
                        IpProtocol(Proto.TCP),
                        IpAddress(Direction.SOURCE, (IPv4Network("10.0.0.0/8"),)),
                        TcpPort(Direction.DESTINATION, (PortSpan(1, 65535),)),
                        SetEtherDaddr("02:00:00:00:00:01"),
                        SetPacketType(PacketType.HOST),
                        SetMark(0xFFFFFFFF),
                    ),
                ),
                _table(Family.IP, _rule(SocketTransparent(), MarkIs(7), TProxy(8443))),
                _table(Family.INET, _rule(TProxy(1))),
            ),
            routing=PolicyRoute(mark=1, table=100),
            bridge="br0",
            rp_filter_off=("eth1", "eth2"),
        ),
        id="recipe-pieces",
    ),
    pytest.param(
        Ruleset(
            tables=(
                _table(
                    Family.BRIDGE,
                    _rule(InSet(SetKey.L4PROTO, "alive")),
                    sets=(
                        Set(
                            "alive",
                            SetType.INET_PROTO,
                            flags=(SetFlag.TIMEOUT,),
                            timeout=2,
                            elements=(Element(Proto.TCP, timeout=5),),
                        ),
                    ),
                ),
            )
        ),
        id="set-with-timeouts",
    ),
]


@pytest.mark.parametrize("ruleset", VALID)
def test_validate_accepts_valid_ruleset(ruleset: Ruleset) -> None:
    ruleset.validate()


INVALID = [
    (Ruleset(tables=(Table(Family.IP, "1tlsgw"),)), "table name", "table-name-starts-with-digit"),
    (Ruleset(tables=(Table(Family.IP, "tls-gw"),)), "table name", "table-name-dash"),
    (Ruleset(tables=(Table(Family.IP, "t"), Table(Family.IP, "t"))), "defined twice", "duplicate-table"),
    (Ruleset(tables=(Table(Family.IP, "t", chains=(Chain("c"), Chain("c"))),)), "defined twice", "duplicate-chain"),
    (Ruleset(tables=(Table(Family.IP, "t", chains=(Chain("c d"),)),)), "chain name", "chain-name-space"),
    (
        Ruleset(tables=(Table(Family.IP, "t", chains=(Chain("c", hook=Hook.INPUT),)),)),
        "needs a type and a priority",
        "base-chain-without-priority",
    ),
    (
        Ruleset(tables=(Table(Family.IP, "t", chains=(Chain("c", priority=0),)),)),
        "need a hook",
        "priority-without-hook",
    ),
    (
        Ruleset(
            tables=(
                Table(
                    Family.BRIDGE,
                    "t",
                    chains=(Chain("c", type=ChainType.ROUTE, hook=Hook.OUTPUT, priority=0),),
                ),
            )
        ),
        "route chain",
        "route-chain-in-bridge",
    ),
    (
        Ruleset(tables=(Table(Family.IP, "t", chains=(Chain("c", policy=ChainPolicy.DROP),)),)),
        "need a hook",
        "policy-without-hook",
    ),
    (Ruleset(tables=(_table(Family.IP, Rule()),)), "rule is empty", "empty-rule"),
    (Ruleset(tables=(_table(Family.IP, _rule(IifName(("a" * 16,)))),)), "1..15", "ifname-too-long"),
    (Ruleset(tables=(_table(Family.IP, _rule(IifName(('br"0',)))),)), "refuses", "ifname-quote"),
    (Ruleset(tables=(_table(Family.IP, _rule(IifName(()))),)), "at least one", "ifname-empty"),
    (Ruleset(tables=(_table(Family.IP, _rule(TcpPort(Direction.SOURCE, (PortSpan(0, 10),)))),)), "1..65535", "port-0"),
    (
        Ruleset(tables=(_table(Family.IP, _rule(TcpPort(Direction.SOURCE, (PortSpan(20, 10),)))),)),
        "reversed",
        "port-range-reversed",
    ),
    (Ruleset(tables=(_table(Family.BRIDGE, _rule(VlanId((4095,)))),)), "1..4094", "vlan-4095"),
    (Ruleset(tables=(_table(Family.IP, _rule(VlanId((10,)))),)), "bridge tables only", "vlan-in-ip"),
    (Ruleset(tables=(_table(Family.IP6, _rule(IpProtocol(Proto.TCP))),)), "IPv4-only", "ip-protocol-in-ip6"),
    (
        Ruleset(tables=(_table(Family.IP6, _rule(IpAddress(Direction.SOURCE, (IPv4Network("10.0.0.0/8"),)))),)),
        "IPv4-only",
        "ip-address-in-ip6",
    ),
    (Ruleset(tables=(_table(Family.BRIDGE, _rule(TProxy(8443))),)), "ip or inet", "tproxy-in-bridge"),
    (Ruleset(tables=(_table(Family.IP, _rule(TProxy(70000))),)), "1..65535", "tproxy-port"),
    (Ruleset(tables=(_table(Family.BRIDGE, _rule(SocketTransparent())),)), "socket", "socket-in-bridge"),
    (Ruleset(tables=(_table(Family.IP, _rule(SetEtherDaddr("02:00:00:00:00:01"))),)), "bridge", "mac-in-ip"),
    (Ruleset(tables=(_table(Family.BRIDGE, _rule(SetEtherDaddr("02:00:00:00:01"))),)), "MAC", "mac-short"),
    (Ruleset(tables=(_table(Family.BRIDGE, _rule(SetEtherDaddr("02:00:00:00:00:0G"))),)), "MAC", "mac-bad-hex"),
    (Ruleset(tables=(_table(Family.IP, _rule(SetPacketType(PacketType.HOST))),)), "bridge", "pkttype-in-ip"),
    (Ruleset(tables=(_table(Family.IP, _rule(SetMark(2**32))),)), "0xffffffff", "mark-too-big"),
    (Ruleset(tables=(_table(Family.IP, _rule(MarkIs(-1))),)), "0xffffffff", "mark-negative"),
    (
        Ruleset(tables=(_table(Family.IP, Rule(verdict=Verdict.ACCEPT, comment='say "hi"')),)),
        "quotes",
        "comment-quote",
    ),
    (Ruleset(tables=(_table(Family.IP, Rule(verdict=Verdict.ACCEPT, comment="x" * 129)),)), "longer", "comment-long"),
    (Ruleset(tables=(_table(Family.IP, _rule(InSet(SetKey.L4PROTO, "alive"))),)), "not defined", "set-undefined"),
    (
        Ruleset(
            tables=(
                _table(Family.IP, _rule(InSet(SetKey.IP_SADDR, "alive")), sets=(Set("alive", SetType.INET_PROTO),)),
            )
        ),
        "holds inet_proto",
        "set-type-mismatch",
    ),
    (
        Ruleset(tables=(Table(Family.IP, "t", sets=(Set("s", SetType.INET_PROTO, timeout=2),)),)),
        "timeout flag",
        "set-timeout-without-flag",
    ),
    (
        Ruleset(
            tables=(
                Table(Family.IP, "t", sets=(Set("s", SetType.INET_PROTO, flags=(SetFlag.TIMEOUT,), timeout=0),)),
            )
        ),
        "positive",
        "set-timeout-zero",
    ),
    (
        Ruleset(
            tables=(Table(Family.IP, "t", sets=(Set("s", SetType.INET_SERVICE, elements=(Element(Proto.TCP),)),)),)
        ),
        "not a port",
        "set-element-wrong-type",
    ),
    (
        Ruleset(
            tables=(
                Table(
                    Family.IP,
                    "t",
                    sets=(Set("s", SetType.IPV4_ADDR, elements=(Element(IPv4Network("10.0.0.0/8")),)),),
                ),
            )
        ),
        "interval flag",
        "set-range-without-interval",
    ),
    (Ruleset(tables=(), routing=PolicyRoute(mark=0, table=100)), "mark 0", "routing-mark-0"),
    (Ruleset(tables=(), routing=PolicyRoute(mark=1, table=254)), "reserved", "routing-main-table"),
    (Ruleset(tables=(), bridge="br 0"), "refuses", "bridge-name-space"),
    (Ruleset(tables=(), rp_filter_off=("x" * 16,)), "1..15", "rp-filter-ifname"),
]


@pytest.mark.parametrize(("ruleset", "fragment"), [c[:2] for c in INVALID], ids=[c[2] for c in INVALID])
def test_validate_rejects_invalid_ruleset(ruleset: Ruleset, fragment: str) -> None:
    with pytest.raises(NetfilterError) as caught:
        ruleset.validate()
    assert caught.value.command == "validate"
    assert caught.value.line is None and caught.value.errno is None
    assert fragment in caught.value.message


def test_validate_reports_every_problem_at_once() -> None:
    ruleset = Ruleset(
        tables=(
            Table(Family.IP, "bad name"),
            _table(Family.BRIDGE, _rule(TProxy(8443)), _rule(VlanId((0,)))),
        ),
        bridge="",
    )
    with pytest.raises(NetfilterError) as caught:
        ruleset.validate()
    problems = caught.value.message.splitlines()
    assert len(problems) == 4
    assert problems[1].startswith("table bridge tlsgw: chain prerouting: rule 0:")
    assert problems[2].startswith("table bridge tlsgw: chain prerouting: rule 1:")


def test_table_validate_names_the_table() -> None:
    with pytest.raises(NetfilterError) as caught:
        Table(Family.INET, "x", chains=(Chain("a b"),)).validate()
    assert caught.value.message.startswith("table inet x: chain a b:")
