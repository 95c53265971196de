"""An in-memory backend for unit tests, in the spirit of knftables' `Fake`.

It keeps tables keyed by (family, name) in creation order, the way nft lists them, and
dumps them in nft's listing layout, so the backend contract can compare dumps the same
way for the fake and for nft. It refuses what the model refuses and, to stay honest in
the "bad ruleset changes nothing" contract, one thing only the kernel refuses:
`kernel_refusals()` below. Like `nft -c`, `check()` does not see those: only `apply()`
raises for them.
"""

from __future__ import annotations

import errno

from netfilter.errors import NetfilterError
from netfilter.model import Family, Hook, Ruleset, Table, TProxy
from netfilter.render_nft import render_table


def kernel_refusals(ruleset: Ruleset) -> list[str]:
    """What nft 1.0.6 accepts (even with `-c`) but the kernel refuses at commit time.

    The tproxy expression validates its hook when the rule is bound to a base chain:
    only prerouting is allowed (nft_tproxy_validate -> EOPNOTSUPP).
    """
    found: list[str] = []
    for table in ruleset.tables:
        for chain in table.chains:
            if not chain.is_base or chain.hook is Hook.PREROUTING:
                continue
            for index, rule in enumerate(chain.rules):
                if any(isinstance(s, TProxy) for s in rule.statements):
                    found.append(f"table {table.label}: chain {chain.name}: rule {index}: tproxy outside prerouting")
    return found


class FakeBackend:
    """Records what was applied; `tables` is the simulated kernel state."""

    def __init__(self) -> None:
        self.tables: dict[tuple[Family, str], Table] = {}
        self.applied: list[Ruleset] = []
        self.removed: list[Ruleset] = []

    def check(self, ruleset: Ruleset) -> None:
        ruleset.validate()

    def apply(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        refused = kernel_refusals(ruleset)
        if refused:
            raise NetfilterError("fake apply", "\n".join(refused), errno=errno.EOPNOTSUPP)
        state = dict(self.tables)
        for table in ruleset.tables:
            # delete + add: a replaced table moves to the end, as with nft
            state.pop((table.family, table.name), None)
            state[(table.family, table.name)] = table
        self.tables = state
        self.applied.append(ruleset)

    def remove(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        for table in ruleset.tables:
            self.tables.pop((table.family, table.name), None)
        self.removed.append(ruleset)

    def dump(self) -> str:
        return "".join(render_table(t) for t in self.tables.values())
