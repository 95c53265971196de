"""The contract every rule backend is held to, as one function (trio's check_two_way_stream idea).

`check_backend(make_backend)` runs against `FakeBackend` in the unit tests and against
`NftBackend` inside a fresh network namespace in the integration tests, so the fake
cannot drift from what the real backend does. It checks, in one sequence:

- `check` changes nothing;
- `apply` installs our tables; applying the same ruleset twice is idempotent;
- `apply` replaces our tables (a smaller ruleset leaves no stale rules);
- a bad ruleset - one nft accepts but the kernel refuses at commit, after our table has
  already been deleted and re-added earlier in the same script - raises NetfilterError
  and changes nothing (atomicity);
- `remove` leaves no trace and is idempotent;
- foreign tables (another name, and our name in another family) are untouched throughout.

Dumps are compared table by table in nft's listing layout, which the fake reproduces.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network

import pytest

from netfilter.backend import Backend
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
    IpProtocol,
    L4Proto,
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
)

TABLE = "tlsgw"
MAC = "02:00:00:00:00:01"

_DIVERT = Rule(
    matches=(IifName(("eth1",)), IpProtocol(Proto.TCP), TcpPort(Direction.DESTINATION, (PortSpan.single(443),))),
    statements=(SetEtherDaddr(MAC), SetPacketType(PacketType.HOST)),
    verdict=Verdict.ACCEPT,
    comment="divert",
)
_TPROXY = Rule(
    matches=(IifName(("br0",)), TcpPort(Direction.DESTINATION, (PortSpan.single(443),))),
    statements=(TProxy(8443), SetMark(1)),
    verdict=Verdict.ACCEPT,
    comment="tproxy",
)
_SOCKET = Rule(
    matches=(L4Proto(Proto.TCP), SocketTransparent()), statements=(SetMark(1),), verdict=Verdict.ACCEPT
)


def _base(name: str, hook: Hook, priority: int, *rules: Rule) -> Chain:
    return Chain(name, rules=rules, type=ChainType.FILTER, hook=hook, priority=priority, policy=ChainPolicy.ACCEPT)


def _ours(*ip_rules: Rule, bridge_rules: tuple[Rule, ...] = (_DIVERT,)) -> Ruleset:
    return Ruleset(
        tables=(
            Table(Family.BRIDGE, TABLE, chains=(_base("prerouting", Hook.PREROUTING, -300, *bridge_rules),)),
            Table(Family.IP, TABLE, chains=(_base("prerouting", Hook.PREROUTING, -150, *ip_rules),)),
        ),
        routing=PolicyRoute(mark=1, table=100),
        bridge="br0",
    )


OURS = _ours(_SOCKET, _TPROXY)
SMALLER = _ours(_SOCKET)
BAD = Ruleset(
    tables=(
        # Differs from OURS, so a backend that committed this table before failing is caught.
        Table(Family.BRIDGE, TABLE, chains=(_base("prerouting", Hook.PREROUTING, -300),)),
        # tproxy bound to the input hook: nft accepts it, the kernel refuses it at commit.
        Table(Family.IP, TABLE, chains=(_base("input", Hook.INPUT, 0, _TPROXY),)),
    )
)
FOREIGN = Ruleset(
    tables=(
        Table(
            Family.INET,
            "other",
            sets=(
                Set(
                    "allowed",
                    SetType.IPV4_ADDR,
                    flags=(SetFlag.INTERVAL,),
                    elements=(Element(IPv4Network("192.0.2.0/24")),),
                ),
            ),
            chains=(
                _base(
                    "input",
                    Hook.INPUT,
                    0,
                    Rule(matches=(InSet(SetKey.IP_SADDR, "allowed"),), verdict=Verdict.ACCEPT),
                ),
            ),
        ),
        # tlsgw's table name in a family tlsgw does not use: must not be mistaken for ours.
        Table(Family.INET, TABLE, chains=(Chain("spare"),)),
    )
)
FOREIGN_KEYS = {"inet other", f"inet {TABLE}"}
OUR_KEYS = {f"bridge {TABLE}", f"ip {TABLE}"}


def tables_in(dump: str) -> dict[str, str]:
    """`nft list ruleset` text -> {"family name": the table's whole block}."""
    tables: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in dump.splitlines():
        if current is None:
            if line.startswith("table ") and line.endswith(" {"):
                current = " ".join(line.split()[1:3])
                lines = [line]
            continue
        lines.append(line)
        if line == "}":
            tables[current] = "\n".join(lines)
            current = None
    assert current is None, f"unterminated table {current} in dump:\n{dump}"
    return tables


def check_backend(
    make_backend: Callable[[], Backend],
    install_foreign: Callable[[Backend], None] | None = None,
) -> None:
    """Run the whole contract; `install_foreign` puts tables tlsgw does not own in place
    (default: apply FOREIGN through the backend). Fails with an assertion or raises."""
    backend = make_backend()
    assert not set(tables_in(backend.dump())) & OUR_KEYS, "contract needs a state without tlsgw's tables"
    (install_foreign or (lambda b: b.apply(FOREIGN)))(backend)
    before = tables_in(backend.dump())
    assert FOREIGN_KEYS <= set(before), f"foreign tables missing: {sorted(before)}"

    backend.check(OURS)
    assert tables_in(backend.dump()) == before, "check changed the ruleset"

    backend.apply(OURS)
    applied = tables_in(backend.dump())
    assert set(applied) == set(before) | OUR_KEYS
    assert {k: applied[k] for k in before} == before, "apply touched a foreign table"

    backend.apply(OURS)
    assert tables_in(backend.dump()) == applied, "applying twice differs from applying once"

    backend.apply(SMALLER)
    smaller = tables_in(backend.dump())
    assert smaller[f"ip {TABLE}"] != applied[f"ip {TABLE}"], "apply appended instead of replacing"
    assert smaller[f"bridge {TABLE}"] == applied[f"bridge {TABLE}"]
    backend.apply(OURS)
    assert tables_in(backend.dump()) == applied, "re-applying did not restore the same state"

    with pytest.raises(NetfilterError) as refused:
        backend.apply(BAD)
    assert refused.value.command, "NetfilterError must name the command"
    assert tables_in(backend.dump()) == applied, "a refused ruleset changed something"

    backend.remove(OURS)
    assert tables_in(backend.dump()) == before, "remove left a trace or touched a foreign table"
    backend.remove(OURS)
    assert tables_in(backend.dump()) == before, "removing twice is not idempotent"

    # A fresh backend object sees the same state: nothing lived only in the first one.
    assert tables_in(make_backend().dump()) == before
