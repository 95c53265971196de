"""The legacy-iptables backend (`gateway.netfilter.backend: iptables`), for hosts whose
firewall is legacy iptables and must stay so.

Where each part of a ruleset goes
=================================

- `ip` tables -> legacy iptables through python-iptables (`render_iptables` explains
  the translation; `iptc_worker` the transaction). Visible in `iptables-legacy -S -t
  mangle`, not in `iptables -S`, which is iptables-nft on Debian 12.
- `bridge` tables (the divert that lifts frames out of the bridge) -> **nft's bridge
  family**, even with this backend. The iptables-era tool for that job is an ebtables
  `broute` rule, and it is not available: this kernel has neither the legacy
  `ebtable_broute` table nor nft's `meta broute` (DESIGN.md section 3), and Debian's
  `ebtables` is ebtables-nft, itself a front end to the same nft bridge family. The nft
  bridge family has its own hooks, so tlsgw's bridge table coexists with any legacy
  iptables ruleset and touches none of it. A host without nft at all cannot run the
  bridge mode; the README documents a routed (L3) deployment for it.
- `inet` and `ip6` tables are refused (the plan does not produce them).

The work runs in a child process (`python -m netfilter.iptc_worker`, under `ip netns
exec` for a namespace): see that module for why. Each call is one transaction: the
iptables tables commit one by one with a roll back of those already committed if a
later one - or the nft bridge table - is refused, so a bad ruleset changes nothing.

`dump()` is `nft list ruleset` followed by `render_iptables.render_dump` of
`iptables-legacy-save`: tlsgw's chains as one `table ip <owner>` block, other iptables
content as `table xtables <table>` blocks, so the backend contract compares both
backends the same way.

Difference from the nft backend, documented in `render_iptables`: xt_TPROXY drops a
steered packet when no listener is bound, where nft's tproxy lets it fall through.
"""

from __future__ import annotations

import errno as errno_module
import json
import os
import shutil
import subprocess
import sys

from netfilter.errors import NetfilterError
from netfilter.model import Ruleset
from netfilter.render_iptables import XtPlan, render_dump, render_plan, render_save, split_families
from netfilter.render_nft import render, render_remove

# One worker call loads python-iptables and commits a few tables: about a second. This
# only bounds a hung lock holder or a stuck netlink socket.
WORKER_TIMEOUT_S = 90.0
WORKER_MODULE = "netfilter.iptc_worker"
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` keeps its namespace handles
NO_NFT_HINT = (
    "the bridge divert needs nftables' bridge family (ebtables broute is not available); "
    "install nftables, or deploy tlsgw routed (README: Legacy-iptables hosts)"
)


class IptablesBackend:
    """The Backend protocol over legacy iptables + the nft bridge family."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        python: str = sys.executable,
        nft: str = "nft",
        iptables_save: str = "iptables-legacy-save",
    ) -> None:
        self.netns = netns
        self.python = python
        self.nft = nft
        self.iptables_save = iptables_save

    def check(self, ruleset: Ruleset) -> None:
        plan, bridge = self._split(ruleset)
        self._worker("check", plan, render(bridge) if bridge.tables else "")

    def apply(self, ruleset: Ruleset) -> None:
        plan, bridge = self._split(ruleset)
        self._worker("apply", plan, render(bridge) if bridge.tables else "")

    def remove(self, ruleset: Ruleset) -> None:
        ruleset.validate()
        bridge, ip_tables = split_families(ruleset)
        # Removal names tables only: it must work for rules this version could not render.
        plan = XtPlan(owners=tuple(t.name for t in ip_tables), chains=())
        script = render_remove(bridge) if bridge.tables and self._has_nft() else ""
        self._worker("remove", plan, script)

    def dump(self) -> str:
        nft = self._run([self.nft, "list", "ruleset"], "") if self._has_nft() else ""
        return nft + render_dump(self._run([self.iptables_save], ""))

    def script(self, ruleset: Ruleset) -> str:
        """What `tlsgw rules show` prints: the nft bridge script, then the iptables chains."""
        plan, bridge = self._split(ruleset)
        text = render(bridge) if bridge.tables else ""
        return text + "# iptables-legacy (iptables-save syntax; chains are replaced, not flushed)\n" + render_save(plan)

    # ------------------------------------------------------------------ plumbing

    def _split(self, ruleset: Ruleset) -> tuple[XtPlan, Ruleset]:
        plan = render_plan(ruleset)
        bridge, _ = split_families(ruleset)
        if bridge.tables and not self._has_nft():
            raise NetfilterError(self.nft, NO_NFT_HINT, errno=errno_module.ENOENT)
        return plan, bridge

    def _has_nft(self) -> bool:
        return shutil.which(self.nft) is not None

    def _prefix(self) -> list[str]:
        if not self.netns:
            return []
        if "/" in self.netns or not os.path.exists(os.path.join(NETNS_RUN_DIR, self.netns)):
            raise NetfilterError(f"ip netns exec {self.netns}", "no such network namespace", errno=errno_module.ENOENT)
        return ["ip", "netns", "exec", self.netns]

    def _worker(self, action: str, plan: XtPlan, nft_script: str) -> None:
        request = json.dumps({"action": action, "plan": plan.to_json(), "nft": nft_script})
        argv = [*self._prefix(), self.python, "-m", WORKER_MODULE]
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        if self.nft != "nft":
            env["PATH"] = os.pathsep.join((os.path.dirname(os.path.abspath(self.nft)), env.get("PATH", "")))
        done = self._call(argv, request, env=env)
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise NetfilterError(" ".join(argv), f"worker gave no answer (exit {done.returncode}): "
                                 f"{done.stderr.strip()[-2000:]}") from None
        if not answer.get("ok"):
            raise NetfilterError(str(answer.get("command") or "iptc worker"), str(answer.get("message")),
                                 line=answer.get("line"), errno=answer.get("errno"))

    def _run(self, argv: list[str], stdin: str) -> str:
        done = self._call([*self._prefix(), *argv], stdin)
        if done.returncode != 0:
            raise NetfilterError(" ".join([*self._prefix(), *argv]), done.stderr.strip() or f"exit {done.returncode}")
        return done.stdout

    def _call(self, argv: list[str], stdin: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = " ".join(argv)
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                                  check=False, env=env)
        except FileNotFoundError as exc:
            raise NetfilterError(command, f"{argv[0]} is not installed", errno=exc.errno) from exc
        except subprocess.TimeoutExpired as exc:
            raise NetfilterError(command, f"no answer within {WORKER_TIMEOUT_S:g}s",
                                 errno=errno_module.ETIMEDOUT) from exc
