"""Everything tlsgw changes in the kernel to steer flows, applied and removed as one unit:
sysctls (remembered and restored), policy routing, and the nft tables.

The order of `apply` is chosen so that a failure leaves nothing behind: the ruleset is
validated by nft's own parser first (`nft -c`), then sysctls and routing (both harmless
without rules), then the rules in one atomic transaction; if a later step fails, the
earlier ones are undone. `remove` runs in the reverse order and is idempotent, so it is
also safe after a crash (as `tlsgw rules remove` or an ExecStopPost).
"""

from __future__ import annotations

import logging

from gateway.config.model import GatewayConfig, NetfilterBackendName
from netfilter.iptables_backend import IptablesBackend
from netfilter.model import Ruleset
from netfilter.nft_backend import NftBackend
from netfilter.plan import steering
from netfilter.render_nft import render
from netfilter.routing import ensure_policy_routing, link_address, remove_policy_routing
from netfilter.sysctl import SysctlState, prepare_steering, restore

logger = logging.getLogger(__name__)


def make_backend(name: NetfilterBackendName, netns: str | None = None) -> NftBackend | IptablesBackend:
    """The backend `gateway.netfilter.backend` names (see netfilter/iptables_backend.py for
    where the iptables backend puts the bridge divert)."""
    if name is NetfilterBackendName.IPTABLES:
        return IptablesBackend(netns)
    return NftBackend(netns)


class KernelSteering:
    def __init__(self, config: GatewayConfig, bridge_mac: str | None = None, netns: str | None = None) -> None:
        self.config = config
        self.netns = netns
        self._bridge_mac = bridge_mac
        self._ruleset: Ruleset | None = None
        self._sysctls: SysctlState | None = None
        self.backend: NftBackend | IptablesBackend = make_backend(config.gateway.netfilter.backend, netns)

    @property
    def ruleset(self) -> Ruleset:
        if self._ruleset is None:
            mac = self._bridge_mac or link_address(self.config.gateway.bridge, self.netns)
            self._ruleset = steering(self.config, mac)
        return self._ruleset

    def script(self) -> str:
        if isinstance(self.backend, IptablesBackend):
            return self.backend.script(self.ruleset)
        return render(self.ruleset)

    def apply(self) -> None:
        ruleset = self.ruleset
        self.backend.check(ruleset)
        self._sysctls = prepare_steering(ruleset, self.netns)
        for change in self._sysctls.changes:
            logger.info("sysctl %s: %s -> %s", change.key, change.previous, change.value)
        try:
            if ruleset.routing is not None:
                ensure_policy_routing(ruleset.routing.mark, ruleset.routing.table, self.netns)
            self.backend.apply(ruleset)
        except BaseException:
            self._undo_routing_and_sysctls()
            raise
        logger.info("steering rules applied (tables %s)", ", ".join(
            f"{t.family.value} {t.name}" for t in ruleset.tables))

    def remove(self) -> None:
        try:
            self.backend.remove(self.ruleset)
        finally:
            self._undo_routing_and_sysctls()
        logger.info("steering rules removed")

    def _undo_routing_and_sysctls(self) -> None:
        ruleset = self.ruleset
        try:
            if ruleset.routing is not None:
                remove_policy_routing(ruleset.routing.mark, ruleset.routing.table, self.netns)
        finally:
            if self._sysctls is not None:
                restore(self._sysctls)
                self._sysctls = None
