"""The control commands' side that needs no gateway: argument to request, answer to text,
exit statuses, and finding the socket in a configuration that may be broken."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config.model import DEFAULT_CONTROL_SOCKET
from gateway.control.commands import (
    EXIT_CONFIG,
    EXIT_DENIED,
    EXIT_FAILURE,
    build_request,
    control_socket_of,
    format_stats,
    format_status,
    show,
)
from gateway.control.protocol import Command, ErrorCode, Response
from gateway.observability.metrics import stats_view
from gateway.tls.protocol_stats import Refusal, ServerFailure


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(("argv", "command", "params"), [
    (("status",), Command.STATUS, {}),
    (("stats", "--history"), Command.STATS, {"history": 60}),
    (("stats", "--history", "5"), Command.STATS, {"history": 5}),
    (("sessions", "--limit", "3"), Command.SESSIONS, {"limit": 3}),
    (("log", "--sni", "*.example", "--since", "15m", "--outcome", "not_decrypted"), Command.LOG,
     {"sni": "*.example", "since": "15m", "outcome": "not_decrypted", "limit": 100}),
    (("bypass", "on"), Command.BYPASS, {"state": "on"}),
    (("reload",), Command.RELOAD, {}),
], ids=["status", "history-default", "history-5", "sessions", "log", "bypass", "reload"])
def test_arguments_become_requests(argv: tuple[str, ...], command: Command, params: dict[str, object]) -> None:
    request = build_request(parse(*argv))
    assert request.command is command and request.params == params


@pytest.mark.parametrize(("code", "status"), [
    (ErrorCode.CONFIG, EXIT_CONFIG), (ErrorCode.DENIED, EXIT_DENIED), (ErrorCode.FAILED, EXIT_FAILURE),
    (ErrorCode.INVALID, EXIT_FAILURE),
], ids=["config", "denied", "failed", "invalid"])
def test_error_codes_become_exit_statuses(code: ErrorCode, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert show(parse("reload"), Response.failure(code, "why")) == status
    assert "tlsgw reload: why" in capsys.readouterr().err


def test_socket_is_read_from_a_broken_configuration(tmp_path: Path) -> None:
    """`tlsgw reload` must reach the gateway to hear what is wrong with the file."""
    config = tmp_path / "tlsgw.yaml"
    config.write_text("gateway:\n  control: {socket: /tmp/x/control.sock}\n  bridge: [not, valid]\nunknown: 1\n")
    assert control_socket_of(str(config)) == "/tmp/x/control.sock"


@pytest.mark.parametrize("text", ["", "[1]", "gateway: {control: {socket: relative.sock}}", ": :"],
                         ids=["empty", "list", "relative", "yaml-error"])
def test_socket_defaults_when_not_configured(tmp_path: Path, text: str) -> None:
    config = tmp_path / "tlsgw.yaml"
    config.write_text(text)
    assert control_socket_of(str(config)) == DEFAULT_CONTROL_SOCKET
    assert control_socket_of(str(tmp_path / "missing.yaml")) == DEFAULT_CONTROL_SOCKET


STATUS = {
    "version": "0.1.0", "pid": 42, "config": "/etc/tlsgw/tlsgw.yaml", "started": "2024-01-01T00:00:00+00:00",
    "uptime_s": 90061.0,
    "mode": {"client_inspection": True, "server_inspection": False, "fail_mode": "open", "rules": "managed",
             "max_concurrent": 10, "on_exceed": "bypass"},
    "fallback": {"engaged": True, "causes": {"manual": 1.0}, "kept_tuples": 4},
    "segments": [{"name": "lan", "client_port": "eth1", "server_port": "eth2", "profile": "p", "listen_port": 8443}],
    "policies": [{"profile": "p", "kind": "client", "name": "out", "enabled": True, "locked": True, "proxy": "o"}],
    "sessions": {"active": 3, "decrypting": 2, "accepted_total": 100},
    "last_reload": {"at": "2024-01-01T00:01:00+00:00", "ok": False, "message": "gateway.bridge: bad"},
}


def test_status_text() -> None:
    text = format_status(STATUS)
    assert "up 1d 01:01:01" in text
    assert "fallback:   ENGAGED (manual)" in text
    assert "policy:     p/client/out -> o (enabled, locked)" in text
    assert "REFUSED: gateway.bridge: bad" in text
    assert "state:" not in text  # serving: nothing to say


def test_status_text_while_draining() -> None:
    draining = {**STATUS, "state": "draining", "fallback": {"engaged": True, "causes": {"drain": 2.0}, "kept_tuples": 1},
                "drain": {"since": 2.0, "timeout_s": 10.0, "remaining_s": 7.5, "new_flows_bypass": True}}
    text = format_status(draining)
    assert "state:      DRAINING: stopping, 7.5s left of 10s" in text
    assert "fallback:   ENGAGED (drain)" in text
    assert "state:      STOPPING" in format_status({**STATUS, "state": "stopping", "drain": None})


def test_stats_text_with_history() -> None:
    counters = {"connections": 10, "outcome.decrypted": 6, "outcome.bypassed": 4,
                "outcome_reason.bypassed.limit": 4, "handshake_failures.client": 1,
                "handshake_failure_reason.client.untrusted_ca": 1}
    history = [{"minute": "2024-01-01T00:00:00+00:00", "seen": 10, "decrypted": 6, "bytes": 0,
                "bytes_decrypted": 0, "complete": True}]
    text = format_stats({"view": stats_view(counters), "history": history, "current_minute": None})
    assert "seen 10  decrypted 6" in text
    assert "bypassed by reason\n  limit" in text
    assert "client    1  (untrusted_ca 1)" in text
    assert "2024-01-01T00:00" in text and "60%" in text


def _protocol_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("TLS protocol")
    return lines[start:start + 1 + next(i for i, line in enumerate(lines[start + 1:]) if not line.startswith("  "))]


def test_stats_text_shows_the_protocol_group_in_words_in_a_fixed_order() -> None:
    """What `tlsgw stats --json` shows under view.protocol, the plain output shows too: the
    reasons in the enums' order whatever their counts, zero reasons left out, and a counter
    this version has no words for under its own name rather than hidden."""
    counters = {"protocol.clientCipherOther": 2, "protocol.refused.clientCipherOther": 2,
                "protocol.refused.parity": 5, "protocol.refused.timeout": 0,
                "protocol.serverHandshakeFailure.other": 1, "protocol.serverHandshakeFailure.noSharedCipher": 3,
                "protocol.serverHandshakeFailure.someNewReason": 1, "protocol.someNewCounter": 4,
                "protocol.someZeroCounter": 0}
    assert _protocol_block(format_stats({"view": stats_view(counters)})) == [
        "TLS protocol",
        "  client cipher other       2  (clients offering no enabled cipher suite)",
        "  server handshake failures 5  (no shared cipher 3, anything else 1, someNewReason 1)",
        "  refused to decrypt        7  (no enabled cipher suite 2, weaker than the server 5)",
        "  someNewCounter            4",
    ]


def test_stats_text_protocol_group_with_nothing_counted_says_zero() -> None:
    expected = ["TLS protocol",
                "  client cipher other       0  (clients offering no enabled cipher suite)",
                "  server handshake failures 0",
                "  refused to decrypt        0"]
    assert _protocol_block(format_stats({"view": stats_view({})})) == expected
    older = {k: v for k, v in stats_view({}).items() if k != "protocol"}  # a gateway from before the group
    assert _protocol_block(format_stats({"view": older})) == expected


@pytest.mark.parametrize("reason", [*ServerFailure, *Refusal], ids=lambda r: f"{type(r).__name__}.{r.name}")
def test_every_protocol_reason_has_words(reason: ServerFailure | Refusal) -> None:
    """A reason added to gateway.tls.protocol_stats without words here shows its counter name."""
    text = format_stats({"view": stats_view({reason.counter: 1})})
    line = next(line for line in _protocol_block(text) if line.endswith(" 1)"))
    assert f"({reason.value} 1)" not in line, line
