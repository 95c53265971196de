from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gateway.config.model import GatewayConfig
from netfilter.errors import NetfilterError
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
    L4Proto,
    MarkIs,
    PortSpan,
    Proto,
    Rule,
    Ruleset,
    Set,
    SetKey,
    SetMark,
    SetType,
    SocketTransparent,
    Table,
    TcpPort,
    TProxy,
    Verdict,
)
from netfilter.plan import steering
from netfilter.render_iptables import (
    MULTIPORT_MAX,
    XtMatch,
    XtPlan,
    XtTable,
    owner_of,
    render_dump,
    render_plan,
    render_rule_args,
    render_save,
    split_families,
)
from tests.support.backend_contract import BAD, OURS
from tests.support.steering_samples import BRIDGE_MAC, SAMPLES

GOLDEN = Path(__file__).parent / "golden"


def _compare_with_golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; run pytest with --update-golden to create it"
    assert text == path.read_text(), f"{path} differs; review the diff, then run pytest with --update-golden"


def _ruleset(*rules: Rule, hook: Hook = Hook.PREROUTING, priority: int = -150,
             chain_type: ChainType = ChainType.FILTER, policy: ChainPolicy | None = ChainPolicy.ACCEPT) -> Ruleset:
    chain = Chain("prerouting", rules=rules, type=chain_type, hook=hook, priority=priority, policy=policy)
    return Ruleset(tables=(Table(Family.IP, "tlsgw", chains=(chain,)),))


def _args(*rules: Rule) -> list[str]:
    plan = render_plan(_ruleset(*rules))
    return [render_rule_args(r) for c in plan.chains for r in c.rules]


def _net(text: str) -> IPv4Network:
    return IPv4Network(text)


def _dports(*ports: int) -> TcpPort:
    return TcpPort(Direction.DESTINATION, tuple(PortSpan.single(p) for p in ports))


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_steering_chains_match_golden(sample: str, update_golden: bool) -> None:
    make: Callable[[], GatewayConfig] = SAMPLES[sample]
    _compare_with_golden(f"{sample}.iptables", render_save(render_plan(steering(make(), BRIDGE_MAC))), update_golden)


def test_bridge_tables_are_left_to_nft() -> None:
    ruleset = steering(SAMPLES["one_segment"](), BRIDGE_MAC)
    bridge, ip_tables = split_families(ruleset)
    assert [t.label for t in bridge.tables] == ["bridge tlsgw"]
    assert [t.label for t in ip_tables] == ["ip tlsgw"]
    assert all(c.table is XtTable.MANGLE for c in render_plan(ruleset).chains)


RULES = [
    (
        Rule(matches=(L4Proto(Proto.TCP), SocketTransparent()), statements=(SetMark(1),), verdict=Verdict.ACCEPT),
        ["-p tcp -m socket --transparent -j tlsgw.prerouting.0",
         "-j MARK --set-xmark 0x1/0xffffffff", "-j ACCEPT"],
        "several-actions-go-through-a-helper-chain",
    ),
    (
        Rule(matches=(IifName(("br0",)), MarkIs(0x7E570000), _dports(443)),
             statements=(TProxy(8443), SetMark(1)), verdict=Verdict.ACCEPT, comment="seg a"),
        ['-i br0 -p tcp -m mark --mark 0x7e570000 -m tcp --dport 443 -m comment --comment "seg a" '
         "-j TPROXY --on-port 8443 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff"],
        "tproxy-absorbs-the-mark-that-follows",
    ),
    (
        Rule(matches=(IifName(("a", "b")), IpAddress(Direction.SOURCE, (_net("10.0.0.0/8"), _net("192.0.2.7/32")))),
             verdict=Verdict.DROP),
        ["-s 10.0.0.0/8 -i a -j DROP", "-s 192.0.2.7/32 -i a -j DROP",
         "-s 10.0.0.0/8 -i b -j DROP", "-s 192.0.2.7/32 -i b -j DROP"],
        "one-rule-per-interface-and-network",
    ),
    (
        Rule(matches=(IpAddress(Direction.DESTINATION, (_net("10.0.0.0/8"), _net("192.0.2.0/24"))),
                      IpAddress(Direction.DESTINATION, (_net("10.1.0.0/16"), _net("198.51.100.0/24")))),
             verdict=Verdict.ACCEPT),
        ["-d 10.1.0.0/16 -j ACCEPT"],
        "conjunction-of-destinations-is-intersected",
    ),
    (
        Rule(matches=(IpAddress(Direction.DESTINATION, (_net("10.0.0.0/8"),)),
                      IpAddress(Direction.DESTINATION, (_net("192.0.2.0/24"),))),
             verdict=Verdict.ACCEPT),
        [],
        "empty-intersection-can-never-match",
    ),
    (
        Rule(matches=(TcpPort(Direction.SOURCE, (PortSpan(443, 444), PortSpan.single(8443))),), verdict=Verdict.ACCEPT),
        ["-p tcp -m multiport --sports 443:444,8443 -j ACCEPT"],
        "several-ports-use-multiport",
    ),
    (
        Rule(matches=(_dports(443),), statements=(SetMark(5),)),
        ["-p tcp -m tcp --dport 443 -j MARK --set-xmark 0x5/0xffffffff"],
        "one-non-terminal-action-stays-inline",
    ),
    (
        Rule(matches=(_dports(443),), verdict=Verdict.RETURN),
        ["-p tcp -m tcp --dport 443 -j RETURN"],
        "return",
    ),
]


@pytest.mark.parametrize(("rule", "expected"), [(r, e) for r, e, _ in RULES], ids=[i for *_, i in RULES])
def test_rule_renders_as_iptables_arguments(rule: Rule, expected: list[str]) -> None:
    assert _args(rule) == expected


def test_multiport_groups_hold_at_most_fifteen_ports() -> None:
    spans = tuple(PortSpan.single(p) for p in range(1000, 1020)) + (PortSpan(2000, 2010),)
    plan = render_plan(_ruleset(Rule(matches=(TcpPort(Direction.DESTINATION, spans),), verdict=Verdict.ACCEPT)))
    groups = [m.options[0][1].split(",") for r in plan.chains[0].rules for m in r.matches]
    assert [len(g) for g in groups] == [15, 6]  # the range costs two of the second group's 15
    assert all(sum(2 if ":" in p else 1 for p in g) <= MULTIPORT_MAX for g in groups)
    assert [p for g in groups for p in g] == [str(p) for p in range(1000, 1020)] + ["2000:2010"]


def test_drop_policy_becomes_a_final_drop_rule() -> None:
    plan = render_plan(_ruleset(Rule(matches=(_dports(22),), verdict=Verdict.ACCEPT), policy=ChainPolicy.DROP))
    assert [render_rule_args(r) for r in plan.chains[0].rules][-1] == "-j DROP"


@pytest.mark.parametrize(
    ("hook", "priority", "table"),
    [(Hook.PREROUTING, -300, XtTable.RAW), (Hook.PREROUTING, -150, XtTable.MANGLE),
     (Hook.INPUT, 0, XtTable.FILTER), (Hook.FORWARD, 50, XtTable.SECURITY)],
    ids=["raw", "mangle", "filter", "security"],
)
def test_priority_selects_the_iptables_table(hook: Hook, priority: int, table: XtTable) -> None:
    plan = render_plan(_ruleset(Rule(verdict=Verdict.ACCEPT), hook=hook, priority=priority))
    assert plan.chains[0].table is table
    assert plan.jumps(table)[0][0] == hook.value.upper()


REFUSED = [
    (_ruleset(Rule(verdict=Verdict.ACCEPT), priority=-100), "priority -100", "priority-without-table"),
    (_ruleset(Rule(verdict=Verdict.ACCEPT), hook=Hook.PREROUTING, priority=0), "no PREROUTING", "hook-not-in-table"),
    (_ruleset(Rule(matches=(_dports(443),), statements=(TProxy(8443),))), "tproxy", "tproxy-without-accept"),
    (_ruleset(Rule(matches=(_dports(443),), statements=(SetMark(1),), verdict=Verdict.RETURN)), "return",
     "statements-and-return"),
    (_ruleset(Rule(matches=(IifName(("a", "b")),), statements=(SetMark(1),))), "exact only",
     "copies-of-a-non-terminal-rule"),
    (Ruleset(tables=(Table(Family.IP, "tlsgw", sets=(Set("s", SetType.IPV4_ADDR),), chains=(
        Chain("p", rules=(Rule(matches=(InSet(SetKey.IP_SADDR, "s"),), verdict=Verdict.ACCEPT),),
              type=ChainType.FILTER, hook=Hook.PREROUTING, priority=-150),)),)),
     "ipset", "sets"),
    (Ruleset(tables=(Table(Family.IP, "tlsgw", chains=(Chain("spare"),)),)), "without a hook", "regular-chain"),
    (Ruleset(tables=(Table(Family.INET, "tlsgw"),)), "inet tlsgw", "inet-table"),
    (Ruleset(tables=(Table(Family.IP, "t" * 20, chains=(Chain("prerouting_long", type=ChainType.FILTER,
                                                            hook=Hook.PREROUTING, priority=-150),)),)),
     "longer than 28", "chain-name-too-long"),
]


@pytest.mark.parametrize(("ruleset", "words"), [(r, w) for r, w, _ in REFUSED], ids=[i for *_, i in REFUSED])
def test_untranslatable_ruleset_is_refused_by_name(ruleset: Ruleset, words: str) -> None:
    with pytest.raises(NetfilterError) as caught:
        render_plan(ruleset)
    assert caught.value.command == "iptables render"
    assert words in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    ruleset = _ruleset(
        Rule(matches=(_dports(443),), statements=(TProxy(8443),)),
        Rule(matches=(IifName(("a", "b")),), statements=(SetMark(1),)),
    )
    with pytest.raises(NetfilterError) as caught:
        render_plan(ruleset)
    assert "rule 0:" in caught.value.message and "rule 1:" in caught.value.message


def test_contract_rulesets_render() -> None:
    """The contract's BAD ruleset must reach the kernel (its refusal is the point of the test)."""
    assert render_plan(BAD).tables() == (XtTable.FILTER,)
    assert render_plan(OURS).tables() == (XtTable.MANGLE,)


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=sorted(SAMPLES))
def test_plan_survives_json_round_trip(sample: str) -> None:
    plan = render_plan(steering(SAMPLES[sample](), BRIDGE_MAC))
    assert XtPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("name", "owner"),
    [("tlsgw.prerouting", "tlsgw"), ("tlsgw.prerouting.0", "tlsgw"), ("tlsgw-theirs", None),
     ("PREROUTING", None), (".x", None), ("tlsgw.", None)],
    ids=["base", "helper", "dash-is-foreign", "builtin", "no-owner", "no-chain"],
)
def test_owner_of_chain_name(name: str, owner: str | None) -> None:
    assert owner_of(name) == owner


SAVE = """\
# Generated by iptables-save v1.8.9 on Mon Nov 23 16:37:25 2026
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*mangle
:PREROUTING ACCEPT [12:3400]
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:tlsgw.prerouting - [0:0]
:theirs - [0:0]
-A PREROUTING -m comment --comment "tlsgw ip tlsgw" -j tlsgw.prerouting
-A PREROUTING -j theirs
-A tlsgw.prerouting -p tcp -m socket --transparent -j ACCEPT
COMMIT
"""


def test_dump_splits_own_chains_from_foreign_ones() -> None:
    assert render_dump(SAVE) == (
        "table ip tlsgw {\n"
        "\tmangle: -N tlsgw.prerouting\n"
        '\tmangle: -A PREROUTING -m comment --comment "tlsgw ip tlsgw" -j tlsgw.prerouting\n'
        "\tmangle: -A tlsgw.prerouting -p tcp -m socket --transparent -j ACCEPT\n"
        "}\n"
        "table xtables mangle {\n"
        "\t:FORWARD DROP\n"
        "\t:theirs -\n"
        "\t-A PREROUTING -j theirs\n"
        "}\n"
    )


def test_save_text_quotes_comments_with_spaces() -> None:
    rule = render_plan(_ruleset(Rule(matches=(_dports(1),), verdict=Verdict.ACCEPT, comment="a b"))).chains[0].rules[0]
    assert '--comment "a b"' in render_rule_args(rule)
    assert XtMatch("comment", (("comment", "a b"),)) in rule.matches
