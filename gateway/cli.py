"""The `tlsgw` command.

Exit status: 0 success, 1 runtime failure, 2 invalid configuration or usage (so scripts
and systemd can tell "fix the file" from "something broke").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config.model import DEFAULT_CONFIG_PATH
from gateway.errors import ConfigError, TlsgwError

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsgw",
        description="Transparent TLS-inspection gateway for a Linux bridge.",
    )
    parser.add_argument("--version", action="version", version=f"tlsgw {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="apply the steering rules and serve until stopped",
        description="Apply the steering rules and serve until stopped. SIGTERM or SIGINT stops it: new "
                    "flows cross the bridge untouched at once (with fail_mode open), the sessions in flight get up to "
                    "gateway.drain_timeout seconds (default 10) to finish, then the rules are removed and "
                    "what is left is cut; a second SIGTERM or SIGINT cuts them at once. SIGHUP reloads.")
    run.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"configuration file (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--no-rules", action="store_true",
                     help="serve without programming netfilter (rules managed elsewhere)")

    check = sub.add_parser("check-config", help="validate a configuration file and its certificates; exit 2 if invalid")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG_PATH)
    check.add_argument("--explain", action="store_true", help="print what the configuration does")
    check.add_argument("--syntax-only", action="store_true", help="do not open the certificate store")

    rules = sub.add_parser("rules", help="show, apply or remove the netfilter steering rules")
    rules.add_argument("action", choices=["show", "apply", "remove"])
    rules.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    rules.add_argument("--bridge-mac", help="for `show` without the bridge present (default: read from the bridge)")

    # Command groups owned by their packages register themselves here (one line each),
    # so that each area keeps its parser next to its code.
    from gateway.appliance import commands as appliance_commands
    from gateway.control import commands as control_commands
    from gateway.pki import commands as cert_commands

    cert_commands.add_parser(sub)
    control_commands.add_parser(sub)
    appliance_commands.add_parser(sub)

    demo = sub.add_parser("demo", help="build a namespace lab and show interception end to end (needs root)")
    demo.add_argument("--keep", action="store_true", help="leave the lab up until Enter is pressed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return int(handler(args))
    except ConfigError as exc:
        print(f"tlsgw: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TlsgwError as exc:
        print(f"tlsgw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import Daemon

    daemon = Daemon(args.config, apply_rules=not args.no_rules)
    try:
        # uvloop: the event loop in C. The relay is dominated by per-read loop overhead,
        # and uvloop roughly halves it (issue 8 benchmark); the stdlib loop is the fallback.
        import uvloop
    except ImportError:
        asyncio.run(daemon.run())
    else:
        uvloop.run(daemon.run())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config.explain import explain
    from gateway.config.load import load_config

    config = load_config(args.file)
    warnings = []
    if not args.syntax_only:
        from gateway.runtime import check_certificates

        warnings = check_certificates(config)
    print(f"{args.file}: configuration is valid")
    for warning in warnings:  # issue 4: keys kept only in the gateway's memory; no error (see check_certificates)
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if args.explain:
        print(explain(config))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config
    from netfilter.steering import KernelSteering

    config = load_config(args.config)
    bridge_mac = args.bridge_mac
    if args.action == "show" and bridge_mac is None:
        from netfilter.errors import NetfilterError
        from netfilter.routing import link_address

        try:
            bridge_mac = link_address(config.gateway.bridge)
        except NetfilterError:
            from netfilter.__main__ import PLACEHOLDER_MAC

            print(f"tlsgw: bridge {config.gateway.bridge} not found here; showing {PLACEHOLDER_MAC} "
                  "in place of its MAC", file=sys.stderr)
            bridge_mac = PLACEHOLDER_MAC
    steering = KernelSteering(config, bridge_mac=bridge_mac)
    if args.action == "show":
        print(steering.script(), end="")
    elif args.action == "apply":
        steering.apply()
        print("rules applied")
    else:
        steering.remove()
        print("rules removed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("tlsgw demo: needs root (it creates network namespaces)", file=sys.stderr)
        return EXIT_FAILURE
    from gateway.lab.demo import run_demo

    return run_demo(keep=args.keep)


COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "rules": cmd_rules,
    "demo": cmd_demo,
}
