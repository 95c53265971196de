"""Render the IPv4 tables of a `Ruleset` as legacy-iptables chains (pure).

Theory of operation
===================

nft lets tlsgw own whole tables; legacy iptables has five fixed tables shared with
everyone. So a model table `ip <owner>` becomes a set of *user chains* named
`<owner>.<chain>` (the dot cannot occur in a model name, so these names cannot collide
with a chain rendered for another model table), spread over the iptables tables that
run at the model chain's hook and priority, plus one jump rule per base chain at the top
of the built-in chain of its hook::

    model: table ip tlsgw { chain prerouting { type filter hook prerouting priority -150; ... } }
    xt:    *mangle  -I PREROUTING 1 -m comment --comment tlsgw -j tlsgw.prerouting
                    -A tlsgw.prerouting ...

Everything named `<owner>.*` in any iptables table, and every rule jumping to it, is
tlsgw's; `remove` deletes exactly that and nothing else.

Priorities map onto the fixed iptables tables (their hook priorities are the kernel's
NF_IP_PRI_*): raw -300, mangle -150, filter 0, security 50. Any other priority, NAT chains
and non-base chains have no iptables equivalent and are refused, as are sets (no ipset)
and inet/ip6 tables.

Rules are translated exactly or refused, never approximated (cf. the silently dropped
fields of python-iptables' own `iptc/easy.py`):

- iptables matches one input interface, one source and one destination network per
  rule, and multiport takes at most 15 ports. A model rule with several becomes one
  iptables rule per combination. That is exact only when the rule ends evaluation (an
  accept or drop verdict, or TPROXY): a packet matching one copy never reaches the next.
  A non-terminal rule that would need copies is refused.
- Conjunctions (two `ip daddr` matches, as the plan emits for a segment's destinations
  and a server proxy's) are intersected here, network by network; a rule whose
  intersection is empty can never match and is left out.
- iptables has one target per rule. A rule with several actions (`meta mark set 1
  accept`) jumps to a helper chain `<owner>.<chain>.<n>` holding one rule per action:
  a MARK rule then an ACCEPT rule - the same thing, with no re-evaluation of the
  matches in between (which two rules in the same chain would do, after the mark has
  changed).
- `tproxy to :P` followed by `meta mark set M` is one TPROXY target with
  `--tproxy-mark M/0xffffffff`.

One difference the translation cannot remove: when no transparent socket listens on the
port, nft's `tproxy` does not match and the packet falls through, while xt_TPROXY drops
it. With the iptables backend, steered flows therefore fail closed at L3 while tlsgw is
down but its rules are in place: the daemon removes its rules when it stops (and
`tlsgw rules remove` after a crash).

`render_save` prints a plan in `iptables-save` syntax (`-I` for the jumps), for golden
tests and `tlsgw rules show`; `iptables-legacy-restore --noflush` would load it.
`render_dump` turns `iptables-legacy-save` output into blocks the backend contract can
compare table by table: one `table ip <owner>` block per owner, one `table xtables
<name>` block per iptables table with anything besides empty ACCEPT built-in chains.
"""

from __future__ import annotations

import enum
import json
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from itertools import product
from typing import Any

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
    IpProtocol,
    L4Proto,
    MarkIs,
    PortSpan,
    Rule,
    Ruleset,
    SetEtherDaddr,
    SetMark,
    SetPacketType,
    SocketTransparent,
    Table,
    TcpPort,
    TProxy,
    Verdict,
    VlanId,
)

# XT_EXTENSION_MAXNAMELEN is 29 including the terminating NUL.
CHAIN_NAME_MAX = 28
# xt_multiport stores at most XT_MULTI_PORTS = 15 ports; a range takes two of them.
MULTIPORT_MAX = 15
# The comment on the jump rules, so an operator reading `iptables-legacy -S` sees whose they are.
JUMP_COMMENT_PREFIX = "tlsgw ip"
FULL_MARK_MASK = 0xFFFFFFFF
OWNER_SEPARATOR = "."


class XtTable(enum.Enum):
    """The legacy iptables tables tlsgw may use, in the order transactions commit them."""

    RAW = "raw"
    MANGLE = "mangle"
    FILTER = "filter"
    SECURITY = "security"


COMMIT_ORDER: tuple[XtTable, ...] = tuple(XtTable)

# (hook priority, chain type) -> the iptables table registered at that priority
# (NF_IP_PRI_RAW, NF_IP_PRI_MANGLE, NF_IP_PRI_FILTER, NF_IP_PRI_SECURITY).
_TABLE_AT: dict[tuple[int, ChainType], XtTable] = {
    (-300, ChainType.FILTER): XtTable.RAW,
    (-150, ChainType.FILTER): XtTable.MANGLE,
    (-150, ChainType.ROUTE): XtTable.MANGLE,
    (0, ChainType.FILTER): XtTable.FILTER,
    (50, ChainType.FILTER): XtTable.SECURITY,
}
# Built-in chains of each table (iptables(8) "TABLES").
BUILTIN_CHAINS: dict[XtTable, tuple[str, ...]] = {
    XtTable.RAW: ("PREROUTING", "OUTPUT"),
    XtTable.MANGLE: ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    XtTable.FILTER: ("INPUT", "FORWARD", "OUTPUT"),
    XtTable.SECURITY: ("INPUT", "FORWARD", "OUTPUT"),
}
_HOOK_CHAIN: dict[Hook, str] = {hook: hook.value.upper() for hook in Hook}
_TERMINAL_TARGETS = frozenset({"ACCEPT", "DROP", "RETURN", "TPROXY"})


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class XtMatch:
    """One `-m name --option value ...`; an empty value is a flag (`--transparent`)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class XtTarget:
    """`-j name --option value ...`; name is a standard verdict, an extension or a chain."""

    name: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class XtRule:
    """One iptables rule: the fixed IPv4 header fields, then matches, then a target."""

    protocol: str | None = None
    in_interface: str | None = None
    source: str | None = None
    destination: str | None = None
    matches: tuple[XtMatch, ...] = ()
    target: XtTarget | None = None


@dataclass(frozen=True, slots=True)
class XtChain:
    """A user chain tlsgw owns; `hook_chain` names the built-in chain that jumps to it."""

    table: XtTable
    name: str
    rules: tuple[XtRule, ...] = ()
    hook_chain: str | None = None


@dataclass(frozen=True, slots=True)
class XtPlan:
    """Everything the iptables side of a ruleset installs.

    `owners` are the model table names whose `<owner>.*` chains an apply replaces and a
    remove deletes; `chains` are the new contents (base chains first, in model order).
    """

    owners: tuple[str, ...]
    chains: tuple[XtChain, ...]

    def tables(self) -> tuple[XtTable, ...]:
        used = {c.table for c in self.chains}
        return tuple(t for t in COMMIT_ORDER if t in used)

    def jumps(self, table: XtTable) -> tuple[tuple[str, XtRule], ...]:
        """(built-in chain, jump rule) pairs for `table`, in the order they are inserted at the top."""
        return tuple(
            (chain.hook_chain, jump_rule(chain.name))
            for chain in self.chains
            if chain.table is table and chain.hook_chain is not None
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "owners": list(self.owners),
                "chains": [
                    {
                        "table": c.table.value,
                        "name": c.name,
                        "hook_chain": c.hook_chain,
                        "rules": [_rule_to_data(r) for r in c.rules],
                    }
                    for c in self.chains
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> XtPlan:
        data = json.loads(text)
        return cls(
            owners=tuple(data["owners"]),
            chains=tuple(
                XtChain(
                    table=XtTable(c["table"]),
                    name=c["name"],
                    hook_chain=c["hook_chain"],
                    rules=tuple(_rule_from_data(r) for r in c["rules"]),
                )
                for c in data["chains"]
            ),
        )


def jump_rule(chain_name: str) -> XtRule:
    owner = chain_name.split(OWNER_SEPARATOR, 1)[0]
    return XtRule(matches=(XtMatch("comment", (("comment", f"{JUMP_COMMENT_PREFIX} {owner}"),)),),
                  target=XtTarget(chain_name))


def owner_of(chain_name: str) -> str | None:
    """The model table a chain name belongs to, or None for chains tlsgw never creates."""
    owner, separator, rest = chain_name.partition(OWNER_SEPARATOR)
    return owner if separator and owner and rest else None


def _rule_to_data(rule: XtRule) -> dict[str, Any]:
    return {
        "protocol": rule.protocol,
        "in_interface": rule.in_interface,
        "source": rule.source,
        "destination": rule.destination,
        "matches": [[m.name, [list(o) for o in m.options]] for m in rule.matches],
        "target": None if rule.target is None else [rule.target.name, [list(o) for o in rule.target.options]],
    }


def _rule_from_data(data: dict[str, Any]) -> XtRule:
    target = data["target"]
    return XtRule(
        protocol=data["protocol"],
        in_interface=data["in_interface"],
        source=data["source"],
        destination=data["destination"],
        matches=tuple(XtMatch(name, tuple((k, v) for k, v in options)) for name, options in data["matches"]),
        target=None if target is None else XtTarget(target[0], tuple((k, v) for k, v in target[1])),
    )


# ---------------------------------------------------------------------------- model -> plan


def split_families(ruleset: Ruleset) -> tuple[Ruleset, tuple[Table, ...]]:
    """(the bridge tables, as a Ruleset for nft; the ip tables, for iptables).

    Raises:
        NetfilterError(command="iptables render"): an inet or ip6 table.
    """
    others = [t.label for t in ruleset.tables if t.family not in (Family.BRIDGE, Family.IP)]
    if others:
        raise NetfilterError("iptables render", "the iptables backend renders ip (IPv4) and bridge tables only; "
                             f"{', '.join(others)} need the nftables backend")
    bridge = Ruleset(tables=tuple(t for t in ruleset.tables if t.family is Family.BRIDGE))
    return bridge, tuple(t for t in ruleset.tables if t.family is Family.IP)


def render_plan(ruleset: Ruleset) -> XtPlan:
    """The iptables chains for the ip tables of `ruleset` (bridge tables are nft's).

    Raises:
        NetfilterError(command="validate"): the model refuses the ruleset;
        NetfilterError(command="iptables render"): every piece iptables cannot express.
    """
    ruleset.validate()
    _, ip_tables = split_families(ruleset)
    problems: list[str] = []
    chains: list[XtChain] = []
    for table in ip_tables:
        if table.sets:
            problems.append(f"table {table.label}: sets need nftables (the iptables backend does not use ipset)")
        for chain in table.chains:
            try:
                chains += _render_chain(table.name, chain)
            except _Refused as refused:
                problems += [f"table {table.label}: chain {chain.name}: {p}" for p in refused.problems]
    if problems:
        raise NetfilterError("iptables render", "\n".join(problems))
    return XtPlan(owners=tuple(t.name for t in ip_tables), chains=tuple(chains))


class _Refused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _chain_name(*parts: str) -> str:
    name = OWNER_SEPARATOR.join(parts)
    if len(name) > CHAIN_NAME_MAX:
        raise _Refused([f"iptables chain name {name!r} is longer than {CHAIN_NAME_MAX} characters"])
    return name


def _render_chain(owner: str, chain: Chain) -> list[XtChain]:
    if not chain.is_base:
        raise _Refused(["a chain without a hook has no iptables table (and no rule can reach it)"])
    assert chain.type is not None and chain.hook is not None and chain.priority is not None
    table = _TABLE_AT.get((chain.priority, chain.type))
    if table is None:
        raise _Refused([f"{chain.type.value} chains at priority {chain.priority} have no iptables table; "
                        "use -300 (raw), -150 (mangle), 0 (filter) or 50 (security)"])
    hook_chain = _HOOK_CHAIN[chain.hook]
    if hook_chain not in BUILTIN_CHAINS[table]:
        raise _Refused([f"iptables table {table.value} has no {hook_chain} chain"])
    name = _chain_name(owner, chain.name)
    rules: list[XtRule] = []
    helpers: list[XtChain] = []
    problems: list[str] = []
    for index, rule in enumerate(chain.rules):
        try:
            actions = _actions(rule)
            if len(actions) > 1:
                helper = _chain_name(owner, chain.name, str(index))
                helpers.append(XtChain(table, helper, tuple(XtRule(target=a) for a in actions)))
                target: XtTarget | None = XtTarget(helper)
            else:
                target = actions[0] if actions else None
            terminal = bool(actions) and actions[-1].name in _TERMINAL_TARGETS
            copies = list(_expand(rule, target))
            if len(copies) > 1 and not terminal:
                raise _Refused(["iptables needs one rule per interface, network and port group here, which is "
                                "exact only for a rule ending in a verdict"])
            rules += copies
        except _Refused as refused:
            problems += [f"rule {index}: {p}" for p in refused.problems]
    if problems:
        raise _Refused(problems)
    if chain.policy is ChainPolicy.DROP:
        rules.append(XtRule(target=XtTarget("DROP")))
    return [XtChain(table, name, tuple(rules), hook_chain), *helpers]


def _actions(rule: Rule) -> list[XtTarget]:
    """The rule's statements and verdict as a sequence of single iptables targets."""
    actions: list[XtTarget] = []
    statements = list(rule.statements)
    while statements:
        statement = statements.pop(0)
        if isinstance(statement, SetMark):
            actions.append(XtTarget("MARK", (("set-xmark", f"{statement.mark:#x}/{FULL_MARK_MASK:#x}"),)))
        elif isinstance(statement, TProxy):
            options = [("on-port", str(statement.port)), ("on-ip", "0.0.0.0")]
            if statements and isinstance(statements[0], SetMark):
                options.append(("tproxy-mark", f"{statements.pop(0).mark:#x}/{FULL_MARK_MASK:#x}"))
            if statements or rule.verdict is not Verdict.ACCEPT:
                raise _Refused(["xt TPROXY ends the rule (it accepts the packet, or drops it with no listener); "
                                "only `meta mark set` then `accept` may follow tproxy"])
            actions.append(XtTarget("TPROXY", tuple(options)))
            return actions
        elif isinstance(statement, (SetEtherDaddr, SetPacketType)):  # pragma: no cover - model refuses in ip
            raise _Refused([f"{type(statement).__name__} exists in bridge tables only"])
        else:  # pragma: no cover - a new statement type must be added here
            raise _Refused([f"no iptables rendering for {statement!r}"])
    if rule.verdict is not None:
        if rule.verdict is Verdict.RETURN and actions:
            raise _Refused(["a rule with statements and a return verdict has no iptables equivalent "
                            "(return from a helper chain would continue the calling chain)"])
        actions.append(XtTarget(rule.verdict.value.upper()))
    return actions


def _expand(rule: Rule, target: XtTarget | None) -> Iterator[XtRule]:
    """Every iptables rule the model rule needs: one per interface x source x destination x ports."""
    protocol: str | None = None
    interfaces: list[str | None] = [None]
    sources: list[IPv4Network] | None = None
    destinations: list[IPv4Network] | None = None
    ports: dict[Direction, list[PortSpan]] = {}
    flags: list[XtMatch] = []
    for match in rule.matches:
        if isinstance(match, IifName):
            interfaces = [n for n in match.names if n in interfaces] if interfaces != [None] else list(match.names)
        elif isinstance(match, (L4Proto, IpProtocol)):
            if protocol not in (None, match.proto.value):
                return
            protocol = match.proto.value
        elif isinstance(match, IpAddress):
            if match.direction is Direction.SOURCE:
                sources = list(match.networks) if sources is None else _intersect(sources, match.networks)
            else:
                destinations = list(match.networks) if destinations is None else _intersect(destinations,
                                                                                            match.networks)
        elif isinstance(match, TcpPort):
            if protocol not in (None, "tcp"):
                return
            protocol = "tcp"
            current = ports.get(match.direction)
            ports[match.direction] = list(match.spans) if current is None else _intersect_spans(current, match.spans)
        elif isinstance(match, SocketTransparent):
            flags.append(XtMatch("socket", (("transparent", ""),)))
        elif isinstance(match, MarkIs):
            flags.append(XtMatch("mark", (("mark", f"{match.mark:#x}"),)))
        elif isinstance(match, InSet):
            raise _Refused([f"set lookups (@{match.set_name}) need nftables"])
        elif isinstance(match, VlanId):  # pragma: no cover - model refuses in ip
            raise _Refused(["vlan id exists in bridge tables only"])
        else:  # pragma: no cover
            raise _Refused([f"no iptables rendering for {match!r}"])
    port_groups = [_port_matches(direction, spans) for direction, spans in sorted(ports.items(),
                                                                                 key=lambda kv: kv[0].value)]
    if any(not group for group in port_groups) or not interfaces:
        return
    source_choices: list[str | None] = [None] if sources is None else [_network(n) for n in sources]
    destination_choices: list[str | None] = [None] if destinations is None else [_network(n) for n in destinations]
    comment = (XtMatch("comment", (("comment", rule.comment),)),) if rule.comment else ()
    for interface, source, destination, *port_matches in product(interfaces, source_choices, destination_choices,
                                                                 *port_groups):
        yield XtRule(
            protocol=protocol,
            in_interface=interface,
            source=source,
            destination=destination,
            matches=(*flags, *port_matches, *comment),
            target=target,
        )


def _port_matches(direction: Direction, spans: Sequence[PortSpan]) -> list[XtMatch]:
    """`-m tcp --dport` for one span, else multiport groups of at most 15 ports."""
    if not spans:
        return []
    word = "sport" if direction is Direction.SOURCE else "dport"
    if len(spans) == 1:
        return [XtMatch("tcp", ((word, _span(spans[0])),))]
    groups: list[list[PortSpan]] = [[]]
    used = 0
    for span in spans:
        cost = 1 if span.low == span.high else 2
        if used + cost > MULTIPORT_MAX:
            groups.append([])
            used = 0
        groups[-1].append(span)
        used += cost
    return [XtMatch("multiport", ((f"{word}s", ",".join(_span(s) for s in group)),)) for group in groups]


def _intersect(left: Iterable[IPv4Network], right: Iterable[IPv4Network]) -> list[IPv4Network]:
    found: set[IPv4Network] = set()
    for a, b in product(left, right):
        if a.overlaps(b):
            found.add(a if a.prefixlen >= b.prefixlen else b)
    return sorted(found)


def _intersect_spans(left: Iterable[PortSpan], right: Iterable[PortSpan]) -> list[PortSpan]:
    found = {PortSpan(max(a.low, b.low), min(a.high, b.high)) for a, b in product(left, right)
             if a.low <= b.high and b.low <= a.high}
    return sorted(found)


def _span(span: PortSpan) -> str:
    return str(span.low) if span.low == span.high else f"{span.low}:{span.high}"


def _network(network: IPv4Network) -> str:
    return str(network.network_address) if network.prefixlen == 32 else str(network)


# ---------------------------------------------------------------------------- text


def render_rule_args(rule: XtRule) -> str:
    """The rule as iptables arguments, in iptables-save's order."""
    words: list[str] = []
    if rule.source:
        words += ["-s", rule.source if "/" in rule.source else f"{rule.source}/32"]
    if rule.destination:
        words += ["-d", rule.destination if "/" in rule.destination else f"{rule.destination}/32"]
    if rule.in_interface:
        words += ["-i", rule.in_interface]
    if rule.protocol:
        words += ["-p", rule.protocol]
    for match in rule.matches:
        words += ["-m", match.name] + _options(match.options)
    if rule.target is not None:
        words += ["-j", rule.target.name] + _options(rule.target.options)
    return " ".join(words)


def _options(options: tuple[tuple[str, str], ...]) -> list[str]:
    words: list[str] = []
    for key, value in options:
        words.append(f"--{key}")
        if value:
            words.append(value if shlex.quote(value) == value else '"' + value + '"')
    return words


def render_save(plan: XtPlan) -> str:
    """The plan in iptables-save syntax, one `*table ... COMMIT` block per iptables table."""
    parts: list[str] = []
    for table in plan.tables():
        lines = [f"*{table.value}"]
        chains = [c for c in plan.chains if c.table is table]
        lines += [f":{c.name} - [0:0]" for c in chains]
        for position, (hook_chain, rule) in enumerate(plan.jumps(table), start=1):
            lines.append(f"-I {hook_chain} {position} {render_rule_args(rule)}")
        for chain in chains:
            lines += [f"-A {chain.name} {render_rule_args(rule)}".rstrip() for rule in chain.rules]
        lines.append("COMMIT")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def render_dump(save_output: str) -> str:
    """`iptables-legacy-save` output -> `table ip <owner> {...}` and `table xtables <t> {...}` blocks.

    Counters and comment lines are dropped, so two dumps of the same rules compare equal.
    A rule belongs to an owner when its chain or its jump target is `<owner>.*`.
    """
    ours: dict[str, list[str]] = {}
    foreign: dict[str, list[str]] = {}
    table = ""
    for raw in save_output.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            foreign.setdefault(table, [])
            continue
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            owner = owner_of(name)
            if owner is not None:
                ours.setdefault(owner, []).append(f"{table}: -N {name}")
            elif policy != "ACCEPT" or name not in BUILTIN_CHAINS.get(_xt_table(table), ()):
                foreign[table].append(f":{name} {policy}")
            continue
        words = line.split()
        chain = words[1] if len(words) > 1 and words[0] == "-A" else ""
        jump = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        owner = owner_of(chain) or owner_of(jump)
        if owner is not None:
            ours.setdefault(owner, []).append(f"{table}: {line}")
        else:
            foreign[table].append(line)
    blocks = [f"table ip {owner} {{\n" + "".join(f"\t{line}\n" for line in lines) + "}\n"
              for owner, lines in ours.items()]
    blocks += [f"table xtables {name} {{\n" + "".join(f"\t{line}\n" for line in lines) + "}\n"
               for name, lines in foreign.items() if lines]
    return "".join(blocks)


def _xt_table(name: str) -> XtTable | None:
    try:
        return XtTable(name)
    except ValueError:
        return None
