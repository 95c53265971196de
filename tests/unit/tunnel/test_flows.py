from __future__ import annotations

from ipaddress import IPv4Address

from gateway.tunnel.flows import FlowTable, TunnelContext
from gateway.tunnel.frames import Link, OuterHeader, TunnelKind

A, B = IPv4Address("192.0.2.10").packed, IPv4Address("192.0.2.20").packed
C, S = IPv4Address("10.1.0.10").packed, IPv4Address("10.2.0.20").packed
LINK = Link(b"\x02" * 6, b"\x04" * 6)


def context(key: int | None = 42, kind: TunnelKind = TunnelKind.GRE) -> TunnelContext:
    return TunnelContext(0, "eth1", "eth2", OuterHeader(kind, A, B, 64, 0, True, key), LINK)


def test_describe_gives_the_tunnel_details_of_the_accepted_connection() -> None:
    table = FlowTable(idle_timeout=60)
    table.open_client_leg((C, 40000, S, 443), context(), now=0)
    assert table.describe("10.1.0.10", 40000, "10.2.0.20", 443) == {
        "type": "gre", "outer_client": "192.0.2.10", "outer_server": "192.0.2.20", "gre_key": 42}
    assert table.describe("10.1.0.10", 40001, "10.2.0.20", 443) is None
    assert table.describe("not-an-address", 1, "10.2.0.20", 443) is None


def test_describe_ipip_has_no_key() -> None:
    table = FlowTable(idle_timeout=60)
    table.open_client_leg((C, 40000, S, 443), context(None, TunnelKind.IPIP), now=0)
    assert table.describe("10.1.0.10", 40000, "10.2.0.20", 443) == {
        "type": "ipip", "outer_client": "192.0.2.10", "outer_server": "192.0.2.20"}


def test_closed_legs_linger_briefly_after_their_last_packet() -> None:
    table = FlowTable(idle_timeout=300, closed_linger=30)
    key = (C, 40000, S, 443)
    table.open_client_leg(key, context(), now=0)
    table.client_leg(key, now=10, closing=True)
    table.client_leg(key, now=100)  # a half-closed leg still sending keeps it
    assert table.expire(now=129) == 0
    assert table.expire(now=131) == 1
    assert table.client_leg(key, now=131) is None


def test_connections_of_one_peer_share_the_tunnel_context() -> None:
    table = FlowTable(idle_timeout=60)
    first = context()
    table.open_client_leg((C, 40000, S, 443), first, now=0)
    table.open_client_leg((C, 40001, S, 443), context(), now=1)
    assert table.client_leg((C, 40001, S, 443), now=2) is first
    assert table.bind_upstream_leg((C, 51000, S, 443), now=3) is first


def test_upstream_leg_needs_a_client_leg_of_its_peer() -> None:
    table = FlowTable(idle_timeout=60)
    assert table.bind_upstream_leg((C, 51000, S, 443), now=0) is None
    table.open_client_leg((C, 40000, S, 443), context(), now=0)
    assert table.bind_upstream_leg((C, 51000, S, 8443), now=0) is None


def test_peer_outlives_its_legs_only_until_idle() -> None:
    table = FlowTable(idle_timeout=60)
    table.open_client_leg((C, 40000, S, 443), context(key=1), now=0)
    assert not table.open_client_leg((C, 40001, S, 443), context(key=2), now=30)
    table.expire(now=61)
    assert table.open_client_leg((C, 40001, S, 443), context(key=2), now=61)


def test_full_table_registers_nothing() -> None:
    table = FlowTable(idle_timeout=60, max_entries=1)
    assert table.open_client_leg((C, 40000, S, 443), context(), now=0)
    assert table.full
    assert not table.open_client_leg((C, 40001, S, 443), context(), now=0)
    assert table.bind_upstream_leg((C, 51000, S, 443), now=0) is None


def test_reverse_header_is_learned_only_from_the_reverse_tunnel() -> None:
    ctx = context()
    wrong = OuterHeader(TunnelKind.GRE, B, A, 50, 0, True, 7)
    assert not FlowTable.learn_reverse(ctx, wrong, None)
    right = OuterHeader(TunnelKind.GRE, B, A, 50, 0x28, True, 42)
    assert FlowTable.learn_reverse(ctx, right, LINK.reversed())
    assert ctx.toward_client() == (right, LINK.reversed())


def test_peer_moves_to_a_new_tunnel_once_its_connections_are_closing() -> None:
    table = FlowTable(idle_timeout=60)
    table.open_client_leg((C, 40000, S, 443), context(key=1), now=0)
    table.bind_upstream_leg((C, 51000, S, 443), now=0)
    table.client_leg((C, 40000, S, 443), now=1, closing=True)
    assert not table.open_client_leg((C, 40001, S, 443), context(key=2), now=2), "the upstream leg is still open"
    table.upstream_leg((C, 51000, S, 443), now=3, closing=True)
    assert table.open_client_leg((C, 40001, S, 443), context(key=2), now=4)
    assert table.describe("10.1.0.10", 40001, "10.2.0.20", 443)["gre_key"] == 2  # type: ignore[index]
    assert table.describe("10.1.0.10", 40000, "10.2.0.20", 443)["gre_key"] == 1  # type: ignore[index]
