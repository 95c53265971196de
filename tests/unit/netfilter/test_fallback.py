"""The fail-open sets (issue 6): what the plan puts in the bridge table, and the nft
commands the running gateway sends to renew the dead-man switch and to engage or release
a fallback."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from gateway.config.model import FailMode, GatewayConfig
from netfilter.connections import TcpSocket, flow_tuples, parse_proc_net_tcp
from netfilter.errors import NetfilterError
from netfilter.fallback import (
    ALIVE_REFRESH_INTERVAL,
    ALIVE_TIMEOUT,
    FlowTuple,
    SteeringState,
    render_engage,
    render_proxied_change,
    render_refresh,
    render_release,
)
from netfilter.model import Element, Family, FlowKey, InSet, Proto, Rule, Ruleset, Set, SetFlag, SetKey, SetType, Table
from netfilter.plan import steering
from netfilter.render_nft import render, render_duration, render_rule
from tests.support.steering_samples import BRIDGE_MAC, one_segment

GOLDEN = Path(__file__).parent / "golden"
CLIENT_LEG = FlowTuple("192.0.2.10", 40000, "192.0.2.20", 443)
UPSTREAM_LEG = FlowTuple("192.0.2.20", 443, "192.0.2.10", 50000)


def _fail_closed() -> GatewayConfig:
    cfg = one_segment()
    return dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, fail_mode=FailMode.CLOSED))


def test_running_fail_closed_ruleset_matches_golden(update_golden: bool) -> None:
    """A gateway in fallback, with two kept tuples and fail_mode closed: every set and rule."""
    state = SteeringState(alive_timeout=ALIVE_TIMEOUT, fallback=True, proxied=(UPSTREAM_LEG, CLIENT_LEG, CLIENT_LEG))
    script = render(steering(_fail_closed(), BRIDGE_MAC, state))
    golden = GOLDEN / "fallback_closed.nft"
    if update_golden:
        golden.write_text(script)
    assert script == golden.read_text()


def test_every_divert_rule_needs_alive() -> None:
    """The dead-man switch: no rule of the bridge table diverts without `alive`."""
    table = steering(one_segment(), BRIDGE_MAC).table(Family.BRIDGE, "tlsgw")
    diverting = [r for r in table.chains[0].rules if r.statements]
    assert len(diverting) == 3
    for rule in diverting:
        assert InSet(SetKey.L4PROTO, "alive") in rule.matches


def test_new_flow_rules_skip_during_fallback_but_kept_sessions_do_not() -> None:
    rules = steering(one_segment(), BRIDGE_MAC).table(Family.BRIDGE, "tlsgw").chains[0].rules
    skip = InSet(SetKey.L4PROTO, "fallback", negate=True)
    kept, new_flows = rules[0], rules[1:]
    assert InSet(SetKey.IPV4_FLOW, "proxied") in kept.matches and skip not in kept.matches
    assert all(skip in r.matches for r in new_flows)


def test_fail_open_has_no_drop_rule_and_fail_closed_drops_only_when_dead() -> None:
    open_rules = steering(one_segment(), BRIDGE_MAC).table(Family.BRIDGE, "tlsgw").chains[0].rules
    assert all(r.verdict is None or r.verdict.value == "accept" for r in open_rules)
    closed_rules = steering(_fail_closed(), BRIDGE_MAC).table(Family.BRIDGE, "tlsgw").chains[0].rules
    drops = [r for r in closed_rules if r.verdict is not None and r.verdict.value == "drop"]
    assert len(drops) == 1
    assert drops[0].matches[-1] == InSet(SetKey.L4PROTO, "alive", negate=True)
    assert closed_rules[-1] is drops[0]  # after every divert rule


@pytest.mark.parametrize(("state", "alive", "fallback", "proxied"), [
    (SteeringState(), "elements = { tcp }", None, None),
    (SteeringState(alive_timeout=0.5), "elements = { tcp timeout 500ms }", None, None),
    (SteeringState(alive_timeout=2, fallback=True), "elements = { tcp timeout 2s }", "elements = { tcp }", None),
    (SteeringState(0.5, True, (CLIENT_LEG,)), "tcp timeout 500ms", "elements = { tcp }",
     "elements = { 192.0.2.10 . 40000 . 192.0.2.20 . 443 }"),
], ids=["by-hand", "running", "fallback", "fallback-with-kept"])
def test_sets_start_with_the_state(state: SteeringState, alive: str, fallback: str | None,
                                   proxied: str | None) -> None:
    table = steering(one_segment(), BRIDGE_MAC, state).table(Family.BRIDGE, "tlsgw")
    text = render(Ruleset(tables=(table,)))
    sets = {s.name: s for s in table.sets}
    assert alive in text.split("set fallback")[0]
    assert bool(sets["fallback"].elements) == (fallback is not None)
    assert bool(sets["proxied"].elements) == (proxied is not None)
    if proxied:
        assert proxied in text


def test_refresh_is_add_delete_add_in_one_line() -> None:
    """`add element` does not renew an existing element; delete+add does, and the first add
    keeps the delete from failing once the element has expired (checked on kernel 6.18)."""
    line = render_refresh("tlsgw", 0.5)
    assert "\n" not in line
    assert line == ("add element bridge tlsgw alive { tcp timeout 500ms }; delete element bridge tlsgw alive { tcp }; "
                    "add element bridge tlsgw alive { tcp timeout 500ms }")


def test_engage_keeps_tuples_before_it_stops_new_flows() -> None:
    script = render_engage("tlsgw", [UPSTREAM_LEG, CLIENT_LEG])
    assert script.splitlines() == [
        "add element bridge tlsgw proxied { 192.0.2.10 . 40000 . 192.0.2.20 . 443, 192.0.2.20 . 443 . 192.0.2.10 . 50000 }",
        "add element bridge tlsgw fallback { tcp }",
    ]
    assert render_engage("tlsgw", []) == "add element bridge tlsgw fallback { tcp }\n"


def test_release_is_safe_when_not_engaged_and_keeps_the_kept_sessions() -> None:
    assert render_release("t").splitlines() == [
        "add element bridge t fallback { tcp }", "delete element bridge t fallback { tcp }"]


@pytest.mark.parametrize(("add", "remove", "expected"), [
    ([], [], ""),
    ([CLIENT_LEG], [], "add element bridge t proxied { 192.0.2.10 . 40000 . 192.0.2.20 . 443 }"),
    ([], [CLIENT_LEG], "add element bridge t proxied { 192.0.2.10 . 40000 . 192.0.2.20 . 443 }; "
                       "delete element bridge t proxied { 192.0.2.10 . 40000 . 192.0.2.20 . 443 }"),
], ids=["nothing", "add", "remove-is-add-then-delete"])
def test_proxied_changes(add: list[FlowTuple], remove: list[FlowTuple], expected: str) -> None:
    assert render_proxied_change("t", add, remove) == expected


def test_renewals_fit_several_times_into_the_timeout() -> None:
    """A dead gateway stops diverting within a second (issue 6), and a live one survives
    a late renewal."""
    assert ALIVE_TIMEOUT <= 0.5
    assert ALIVE_TIMEOUT / ALIVE_REFRESH_INTERVAL >= 4


@pytest.mark.parametrize(("seconds", "text"), [(2, "2s"), (2.0, "2s"), (0.5, "500ms"), (1.25, "1250ms")],
                         ids=["int", "whole-float", "half", "fraction"])
def test_durations(seconds: float, text: str) -> None:
    assert render_duration(seconds) == text


def test_negated_lookup_and_flow_key_render() -> None:
    rule = Rule(matches=(InSet(SetKey.L4PROTO, "fallback", negate=True), InSet(SetKey.IPV4_FLOW, "proxied")))
    assert render_rule(rule, Family.BRIDGE) == (
        "meta l4proto != @fallback ip saddr . tcp sport . ip daddr . tcp dport @proxied")


@pytest.mark.parametrize(("element", "fragment"), [
    (Element(Proto.TCP), "is not a FlowKey"),
    (Element(FlowKey(IPv4Address("192.0.2.1"), 0, IPv4Address("192.0.2.2"), 443)), "port 0"),
    (Element(FlowKey("192.0.2.1", 1, IPv4Address("192.0.2.2"), 443)), "is not an IPv4Address"),  # type: ignore[arg-type]
], ids=["wrong-type", "port-zero", "text-address"])
def test_flow_set_refuses_bad_elements(element: Element, fragment: str) -> None:
    table = Table(Family.BRIDGE, "t", sets=(Set("p", SetType.IPV4_FLOW, elements=(element,)),))
    with pytest.raises(NetfilterError) as caught:
        table.validate()
    assert fragment in caught.value.message


def test_sub_millisecond_timeout_is_refused() -> None:
    table = Table(Family.BRIDGE, "t", sets=(Set("a", SetType.INET_PROTO, flags=(SetFlag.TIMEOUT,),
                                                 elements=(Element(Proto.TCP, timeout=0.0004),)),))
    with pytest.raises(NetfilterError, match="at least 1 ms"):
        table.validate()


# /proc/net/tcp as the kernel prints it on a little-endian machine: a listener on 8443,
# an accepted client leg (local = the server's address, thanks to TPROXY), the upstream
# leg bound to the client's address, a TIME_WAIT entry and a socket of someone else.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 140200C0:01BB 0A0200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 20 4 30 10 -1
   2: 0A0200C0:C350 140200C0:01BB 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 20 4 30 10 -1
   3: 0A0200C0:C351 140200C0:01BB 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0
   4: 0A0200C0:C352 140200C0:01BB 01 00000000:00000000 00:00000000 00000000     0        0 2000 1 0 20 4 30 10 -1
"""


def test_proc_net_tcp_is_decoded() -> None:
    sockets = parse_proc_net_tcp(PROC_NET_TCP, byteorder="little")
    assert sockets[1] == TcpSocket(("192.0.2.20", 443), ("192.0.2.10", 40000), 1, 1002)
    assert sockets[0].state_name == "LISTEN"


def test_own_connected_sockets_become_inbound_tuples() -> None:
    """Both legs of a proxied session, towards the gateway's sockets; never the listener,
    TIME_WAIT leftovers or other processes' sockets."""
    sockets = parse_proc_net_tcp(PROC_NET_TCP, byteorder="little")
    assert flow_tuples(sockets, frozenset({1001, 1002, 1003, 0})) == [CLIENT_LEG, UPSTREAM_LEG]


# Sockets closed by tlsgw that the kernel still holds as orphans (inode 0): the client leg
# in FIN_WAIT1 (its last bytes or FIN not yet acknowledged), another kept one in
# FIN_WAIT2 (all acknowledged: nothing more to deliver), and a LAST_ACK orphan that tlsgw
# never kept (someone else's).
ORPHANS = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 140200C0:01BB 0A0200C0:9C40 04 00004000:00000000 01:00000020 00000000     0        0 0 1 0 20 4 30 10 -1
   1: 140200C0:01BB 0A0200C0:9C41 05 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   2: 140200C0:01BB 0A0200C0:9C42 09 00000000:00000000 01:00000020 00000000     0        0 0 1 0 20 4 30 10 -1
"""


def test_orphans_still_delivering_stay_kept_and_no_others() -> None:
    sockets = parse_proc_net_tcp(ORPHANS, byteorder="little")
    done = FlowTuple("192.0.2.10", 40001, "192.0.2.20", 443)
    assert flow_tuples(sockets, frozenset(), frozenset({CLIENT_LEG, done})) == [CLIENT_LEG]
    assert flow_tuples(sockets, frozenset()) == []  # an orphan never becomes kept by itself
