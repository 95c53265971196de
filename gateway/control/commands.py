"""`tlsgw status | stats | sessions | log | reload | bypass on|off`: asking the running
gateway through its control socket, and `tlsgw cleanup` for systemd's ExecStopPost.

The socket is `--socket`, else `gateway.control.socket` of `--config` (default
/etc/tlsgw/tlsgw.yaml), else /run/tlsgw/control.sock. The configuration is read leniently
here - only that one key - so that `tlsgw reload` still reaches the gateway to be told
what is wrong with a broken file.

Exit status: 0 done; 1 the gateway could not do it or cannot be reached; 2 `reload`
found the configuration invalid (nothing changed); 77 (EX_NOPERM) the caller's groups do
not allow the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from gateway.config.model import DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET
from gateway.control.protocol import Command, ErrorCode, Request, Response
from gateway.tls.protocol_stats import CLIENT_CIPHER_OTHER, PREFIX, Refusal, ServerFailure

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_DENIED = 77  # sysexits.h EX_NOPERM

_EXIT_CODES = {ErrorCode.CONFIG: EXIT_CONFIG, ErrorCode.DENIED: EXIT_DENIED}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the control commands on the main parser."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--socket", help=f"control socket (default: from --config, else {DEFAULT_CONTROL_SOCKET})")
        parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="configuration naming the socket")
        parser.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
        parser.set_defaults(handler=run)
        return parser

    command("status", "mode, fallback state, uptime, policies and sessions of the running gateway")
    p = command("stats", "counters: connections seen, decrypted, not decrypted, bypassed and blocked "
                         "by reason, handshake failures, TLS protocol (clientCipherOther, server handshake "
                         "failures and refusals by reason), bytes")
    p.add_argument("--history", nargs="?", type=int, const=60, metavar="MINUTES",
                   help="also SSL traffic seen vs decrypted per minute, for the last MINUTES (default 60; 0: all)")
    p = command("sessions", "the live sessions")
    p.add_argument("--limit", type=int, default=1000, help="at most this many, oldest first (default 1000)")
    p = command("log", "query the SSL inspection log")
    p.add_argument("--since", help="ISO 8601 time (UTC unless stated) or an age: 15m, 2h, 1d")
    p.add_argument("--until", help="as --since")
    p.add_argument("--address", help="client or server address or CIDR range")
    p.add_argument("--sni", help="server name; *.example.com for the domain and its subdomains")
    p.add_argument("--outcome", choices=["decrypted", "decrypted_but_not_inspected", "not_decrypted", "bypassed",
                                         "blocked"])
    p.add_argument("--limit", type=int, default=100, help="the newest N matching records (default 100)")
    command("reload", "reload the configuration: validated first; on error nothing changes and the error is shown")
    p = command("bypass", "fallback by hand: new flows bypass inspection (on) or are inspected again (off); "
                          "live sessions keep working")
    p.add_argument("state", choices=["on", "off"])

    cleanup = sub.add_parser("cleanup", help="after tlsgw stopped (systemd ExecStopPost): leave the bridge in "
                                             "fallback - remove tlsgw's rules unless fail_mode is closed")
    cleanup.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    cleanup.set_defaults(handler=run_cleanup)


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    return control_socket_of(args.config)


def control_socket_of(config_path: str) -> str:
    """`gateway.control.socket` of the file, without validating anything else."""
    try:
        with open(config_path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
        value = document["gateway"]["control"]["socket"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return DEFAULT_CONTROL_SOCKET
    return value if isinstance(value, str) and value.startswith("/") else DEFAULT_CONTROL_SOCKET


def build_request(args: argparse.Namespace) -> Request:
    command = Command(args.command)
    params: dict[str, Any] = {}
    if command is Command.STATS and args.history is not None:
        params["history"] = args.history
    elif command is Command.SESSIONS:
        params["limit"] = args.limit
    elif command is Command.LOG:
        params = {k: getattr(args, k) for k in ("since", "until", "address", "sni", "outcome", "limit")
                  if getattr(args, k) is not None}
    elif command is Command.BYPASS:
        params["state"] = args.state
    return Request(command, params)


def run(args: argparse.Namespace) -> int:
    from gateway.control.server import ControlSocketError, request

    path = socket_path(args)
    try:
        response = asyncio.run(request(path, build_request(args)))
    except ControlSocketError as exc:
        print(f"tlsgw {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return show(args, response)


def show(args: argparse.Namespace, response: Response) -> int:
    if not response.ok:
        assert response.code is not None
        print(f"tlsgw {args.command}: {response.error}", file=sys.stderr)
        return _EXIT_CODES.get(response.code, EXIT_FAILURE)
    if args.json:
        print(json.dumps(response.result, indent=2, sort_keys=True))
    else:
        print(FORMATTERS[Command(args.command)](response.result), end="")
    return EXIT_OK


def run_cleanup(args: argparse.Namespace) -> int:
    """ExecStopPost: the daemon normally removed its rules already; after a crash it could
    not. Failing open never needs this (the dead-man switch expires on its own); it makes
    the bridge forward untouched at once, and puts routing back."""
    from gateway.config.load import load_config
    from gateway.config.model import FailMode
    from netfilter.steering import KernelSteering

    try:
        config = load_config(args.config)
    except Exception as exc:  # noqa: BLE001 - a broken file must not keep the rules in place
        print(f"tlsgw cleanup: {exc}; removing the default tables", file=sys.stderr)
        from gateway.config.model import GatewayConfig

        config = GatewayConfig()
    if config.gateway.fail_mode is FailMode.CLOSED:
        print("tlsgw cleanup: fail_mode is closed: the rules stay and drop steered flows while tlsgw is down")
        return EXIT_OK
    from netfilter.__main__ import PLACEHOLDER_MAC

    KernelSteering(config, bridge_mac=PLACEHOLDER_MAC).remove()  # only names tables: no MAC needed
    print("tlsgw cleanup: steering rules removed; the bridge forwards everything untouched")
    return EXIT_OK


# -- human-readable output (pure) ----------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def format_status(status: Mapping[str, Any]) -> str:
    mode = status["mode"]
    fallback = status["fallback"]
    causes = ", ".join(fallback["causes"]) or "-"
    lines = [
        f"tlsgw {status['version']} pid {status['pid']}, up {_duration(status['uptime_s'])} (since {status['started']})",
        f"config:     {status['config']}",
        f"inspection: client {'on' if mode['client_inspection'] else 'off'}, "
        f"server {'on' if mode['server_inspection'] else 'off'}; rules {mode['rules']}; fail_mode {mode['fail_mode']}",
        f"fallback:   {'ENGAGED (' + causes + ')' if fallback['engaged'] else 'off'}",
        f"limits:     max_concurrent {mode['max_concurrent']}, on_exceed {mode['on_exceed']}",
        f"sessions:   {status['sessions']['active']} live, {status['sessions']['decrypting']} decrypting, "
        f"{status['sessions']['accepted_total']} accepted since start",
    ]
    drain = status.get("drain")  # absent from a gateway older than the drain
    if drain:
        lines.append(f"state:      DRAINING: stopping, {drain['remaining_s']:g}s left of {drain['timeout_s']:g}s "
                     "for the sessions in flight (a second SIGTERM ends them now)")
    elif status.get("state") == "stopping":
        lines.append("state:      STOPPING")
    for worker in status.get("workers") or ():  # issue 8: one line per worker process
        restarts = f", restarted {worker['restarts']}x (last: {worker['last_exit']})" if worker["restarts"] else ""
        lines.append(f"worker {worker['index']}:   pid {worker['pid'] or '-'} {worker['state']}, "
                     f"{worker['sessions_active']} live, {worker['decrypting']} decrypting{restarts}")
    for segment in status["segments"]:
        lines.append(f"segment:    {segment['name']} ({segment['client_port']} -> {segment['server_port']}), "
                     f"profile {segment['profile']}, port {segment['listen_port']}")
    for policy in status["policies"]:
        out = policy.get("out_of_service", False)  # issue 4: its proxy lacks a key kept only in memory
        flags = ", ".join(f for f, on in (("enabled", policy["enabled"]),
                                           ("OUT OF SERVICE: key missing", out),
                                           ("disabled", not policy["enabled"] and not out),
                                           ("locked", policy["locked"])) if on)
        lines.append(f"policy:     {policy['profile']}/{policy['kind']}/{policy['name']} -> {policy['proxy']} ({flags})")
    keys = status.get("keys")
    if keys and (keys["in_memory"] or keys["missing"] or not keys["persist"]):
        held = ", ".join(sorted({k["name"] for k in keys["in_memory"]})) or "none"
        lines.append(f"keys:       {len(keys['in_memory'])} private key(s) in memory only, lost at restart "
                     f"(pki.persist_keys {'true' if keys['persist'] else 'false'}): {held}")
        lines += [f"NO KEY:     {m['path']}: {m['message']}" for m in keys["missing"]]
    reload = status.get("last_reload")
    if reload:
        lines.append(f"reload:     {reload['at']} {'ok' if reload['ok'] else 'REFUSED'}: {reload['message']}")
    return "\n".join(lines) + "\n"


def format_stats(stats: Mapping[str, Any]) -> str:
    view = stats["view"]
    c = view["connections"]
    lines = [
        "connections",
        f"  seen {c['seen']}  decrypted {c['decrypted']}  not decrypted {c['not_decrypted']}  "
        f"bypassed {c['bypassed']}  blocked {c['blocked']}  refused {c['refused']}  over limit {c['over_limit']}",
    ]
    for outcome, reasons in sorted(view["by_reason"].items()):
        lines.append(f"{outcome.replace('_', ' ')} by reason")
        lines += [f"  {label:<32} {value}" for label, value in sorted(reasons.items(), key=lambda kv: -kv[1])]
    lines.append("handshake failures")
    for side, data in view["handshake_failures"].items():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(data["by_reason"].items()))
        lines.append(f"  {side:<9} {data['total']}" + (f"  ({detail})" if detail else ""))
    lines += _protocol_lines(view.get("protocol", {}))  # absent from a gateway older than the group
    b = view["bytes"]
    lines.append(f"bytes\n  client->server {b['client_to_server']}  server->client {b['server_to_client']}  "
                 f"decrypted {b['decrypted']}")
    if stats.get("workers"):  # issue 8: each worker process's share since it started
        lines.append("connections per worker process")
        lines += [f"  worker {w['index']} (pid {w['pid'] or '-'})  {w['counters'].get('connections', 0)}"
                  for w in stats["workers"]]
    if "history" in stats:
        lines.append("SSL traffic per minute (UTC)        seen  decrypted  ratio")
        rows = list(stats["history"]) + ([stats["current_minute"]] if stats.get("current_minute") else [])
        for row in rows:
            ratio = f"{100 * row['decrypted'] / row['seen']:.0f}%" if row["seen"] else "-"
            mark = "" if row.get("complete", False) else " (incomplete)"
            bar = "#" * min(40, row["decrypted"]) + "." * min(40 - min(40, row["decrypted"]),
                                                             max(0, row["seen"] - row["decrypted"]))
            lines.append(f"  {row['minute'][:16]:<32} {row['seen']:>6} {row['decrypted']:>10} {ratio:>6} {bar}{mark}")
    return "\n".join(lines) + "\n"


# The stats view's "protocol" group (gateway.tls.protocol_stats) in words. Reasons are
# listed in the enums' order, so the lines do not move about as the numbers change.
_SERVER_FAILURE_LABELS = {
    ServerFailure.NO_SHARED_CIPHER: "no shared cipher",
    ServerFailure.PROTOCOL_VERSION: "no common version",
    ServerFailure.CLIENT_CERTIFICATE: "client certificate requested",
    ServerFailure.CLOSED: "closed by the server",
    ServerFailure.TIMEOUT: "timed out",
    ServerFailure.OTHER: "anything else",
}
_REFUSAL_LABELS = {
    Refusal.PROTOCOL_VERSION: "no enabled version",
    Refusal.CLIENT_CIPHER_OTHER: "no enabled cipher suite",
    Refusal.PARITY: "weaker than the server",
    Refusal.CERTIFICATE_REJECTED: "forged certificate rejected",
    Refusal.CLIENT_HANDSHAKE: "client broke off the handshake",
    Refusal.TIMEOUT: "timed out",
}
_PROTOCOL_GROUPS: tuple[tuple[str, str, Mapping[str, str]], ...] = (
    ("serverHandshakeFailure.", "server handshake failures", {k.value: v for k, v in _SERVER_FAILURE_LABELS.items()}),
    ("refused.", "refused to decrypt", {k.value: v for k, v in _REFUSAL_LABELS.items()}),
)
_CLIENT_CIPHER_OTHER = CLIENT_CIPHER_OTHER.removeprefix(PREFIX)  # stats_view drops the prefix


def _protocol_lines(protocol: Mapping[str, int]) -> list[str]:
    """The product's npSslInspProtocolStats: the three headline counts always (a 0 says
    nothing failed), each split by the reasons that are not 0; counters this version does
    not know are shown by their own names rather than hidden."""
    rest = dict(protocol)
    cipher_other = rest.pop(_CLIENT_CIPHER_OTHER, 0)
    lines = ["TLS protocol",
             f"  {'client cipher other':<25} {cipher_other}  (clients offering no enabled cipher suite)"]
    for prefix, title, labels in _PROTOCOL_GROUPS:
        counts = {name[len(prefix):]: rest.pop(name) for name in list(rest) if name.startswith(prefix)}
        order = [*labels, *sorted(set(counts) - set(labels))]
        detail = ", ".join(f"{labels.get(reason, reason)} {counts[reason]}" for reason in order if counts.get(reason))
        lines.append(f"  {title:<25} {sum(counts.values())}" + (f"  ({detail})" if detail else ""))
    lines += [f"  {name:<25} {value}" for name, value in sorted(rest.items()) if value]
    return lines


def format_sessions(answer: Mapping[str, Any]) -> str:
    lines = [f"{answer['active']} live session(s)"]
    for s in answer["sessions"]:
        lines.append(f"  {s['client']:<21} -> {s['server']:<21} {s['segment']:<12} {s['age_s']:>8.1f}s "
                     f"{s['sni'] or '-':<30} {s['outcome'] or 'in progress':<14} "
                     f"up {s['bytes_up']} down {s['bytes_down']}")
    return "\n".join(lines) + "\n"


def format_log(answer: Mapping[str, Any]) -> str:
    lines = []
    for r in answer["records"]:
        lines.append(f"{r.get('time', '?')} {r.get('client')}:{r.get('client_port')} -> {r.get('server')}:"
                     f"{r.get('server_port')} sni={r.get('sni') or '-'} outcome={r.get('outcome')} "
                     f"reason={r.get('reason')!r} policy={r.get('policy') or '-'}")
    lines.append(f"{len(answer['records'])} record(s) from {answer['log']}")
    return "\n".join(lines) + "\n"


def format_reload(answer: Mapping[str, Any]) -> str:
    return f"{answer['message']}\n"


def format_bypass(answer: Mapping[str, Any]) -> str:
    fallback = answer["fallback"]
    if fallback["engaged"]:
        return (f"fallback engaged ({', '.join(fallback['causes'])}): new flows bypass inspection; "
                f"{answer['kept_tuples']} live session tuple(s) kept\n")
    return "fallback off: new flows are inspected\n"


FORMATTERS = {
    Command.STATUS: format_status,
    Command.STATS: format_stats,
    Command.SESSIONS: format_sessions,
    Command.LOG: format_log,
    Command.RELOAD: format_reload,
    Command.BYPASS: format_bypass,
}
