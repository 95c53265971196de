"""`python -m netfilter show|apply|remove --config FILE`: tlsgw's rules without the daemon.

`show` prints the nft script; `apply` loads it and sets up policy routing and the
sysctls (printing their previous values, since this one-shot command cannot restore
them later); `remove` deletes tlsgw's tables and policy routing - safe to run from
systemd's ExecStopPost, even when nothing was applied.
"""

from __future__ import annotations

import argparse
import sys

from gateway.errors import TlsgwError
from netfilter.backend import Backend
from netfilter.model import Ruleset

# `show` on a machine without the bridge still renders, with this obviously local MAC
# (locally administered bit set) standing in for the bridge's; `remove` never needs it.
PLACEHOLDER_MAC = "02:00:00:00:00:00"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netfilter", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("show", "apply", "remove"))
    parser.add_argument("--config", required=True, help="tlsgw YAML configuration file")
    parser.add_argument("--bridge-mac", help="the bridge's MAC (default: read from the bridge)")
    parser.add_argument("--netns", help="operate inside this network namespace (tests, labs)")
    args = parser.parse_args(argv)
    try:
        # remove only names tables, so it must not depend on the bridge still existing
        mac = PLACEHOLDER_MAC if args.action == "remove" and args.bridge_mac is None else args.bridge_mac
        ruleset, backend = _ruleset(args.config, mac, args.netns, lenient=args.action == "show")
        if args.action == "show":
            from netfilter.iptables_backend import IptablesBackend
            from netfilter.render_nft import render

            sys.stdout.write(backend.script(ruleset) if isinstance(backend, IptablesBackend) else render(ruleset))
        elif args.action == "apply":
            _apply(ruleset, args.netns, backend)
        else:
            _remove(ruleset, args.netns, backend)
    except TlsgwError as exc:
        print(f"tlsgw netfilter {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _ruleset(path: str, bridge_mac: str | None, netns: str | None, *, lenient: bool) -> tuple[Ruleset, Backend]:
    from gateway.config.load import load_config
    from netfilter.plan import steering
    from netfilter.steering import make_backend

    cfg = load_config(path)
    if bridge_mac is None:
        from netfilter.errors import NetfilterError
        from netfilter.routing import link_address

        try:
            bridge_mac = link_address(cfg.gateway.bridge, netns)
        except NetfilterError:
            if not lenient:
                raise
            print(f"bridge {cfg.gateway.bridge} not found: showing {PLACEHOLDER_MAC} in its place", file=sys.stderr)
            bridge_mac = PLACEHOLDER_MAC
    return steering(cfg, bridge_mac), make_backend(cfg.gateway.netfilter.backend, netns)


def _apply(ruleset: Ruleset, netns: str | None, backend: Backend) -> None:
    from netfilter.routing import ensure_policy_routing
    from netfilter.sysctl import prepare_steering, restore

    backend.check(ruleset)
    state = prepare_steering(ruleset, netns)
    try:
        if ruleset.routing is not None:
            ensure_policy_routing(ruleset.routing.mark, ruleset.routing.table, netns)
        backend.apply(ruleset)
    except TlsgwError:
        restore(state)  # the rules are not in place, so the host goes back to how it was
        raise
    for change in state.changes:
        print(f"{change.key}: {change.previous} -> {change.value}")


def _remove(ruleset: Ruleset, netns: str | None, backend: Backend) -> None:
    from netfilter.routing import remove_policy_routing

    backend.remove(ruleset)
    if ruleset.routing is not None:
        remove_policy_routing(ruleset.routing.mark, ruleset.routing.table, netns)


if __name__ == "__main__":
    sys.exit(main())
