"""The counters as `tlsgw stats` shows them and as Prometheus scrapes them.

One source, two views: `stats_view` groups the flat counters the way the product's
statistics pages do (npSslInspStats: connections seen, decrypted, not decrypted,
bypassed by reason, blocked; npSslInspProtocolStats: handshake failures per side and
reason; npTcpProxyStats: refused connections, bytes), and `render_prometheus` writes the
same numbers in the Prometheus text exposition format (version 0.0.4). Pure.

Counter names (bumped by the proxy and the daemon):
    connections                         accepted TLS-port connections ("seen")
    outcome.<outcome>                   flows ended, by outcome
    outcome_reason.<outcome>.<label>    the same, by reason (observability.reasons)
    handshake_failures.<side>           TLS handshakes that failed, per side
    handshake_failure_reason.<side>.<label>
    refused.capacity                    accept() failed for lack of descriptors/memory
    limit_reached                       flows over limits.max_concurrent
    bytes_up, bytes_down, bytes_decrypted
    forged_certificates, not_tls, internal_errors, blocked.upstream_certificate
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OUTCOMES = ("decrypted", "decrypted but not inspected", "not decrypted", "bypassed", "blocked")


def _slug(outcome: str) -> str:
    return outcome.replace(" ", "_")


def _by_prefix(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix):]: value for name, value in sorted(counters.items()) if name.startswith(prefix)}


def stats_view(counters: Mapping[str, int]) -> dict[str, Any]:
    """The flat counters grouped for people (and for `tlsgw stats --json`)."""
    reasons = _by_prefix(counters, "outcome_reason.")
    by_outcome: dict[str, dict[str, int]] = {}
    for key, value in reasons.items():
        outcome, _, label = key.partition(".")
        by_outcome.setdefault(outcome, {})[label] = value
    failures: dict[str, dict[str, Any]] = {}
    for side in ("client", "upstream"):
        failures[side] = {"total": counters.get(f"handshake_failures.{side}", 0),
                          "by_reason": _by_prefix(counters, f"handshake_failure_reason.{side}.")}
    return {
        "connections": {
            "seen": counters.get("connections", 0),
            **{_slug(o): counters.get(f"outcome.{o}", 0) for o in OUTCOMES},
            "refused": counters.get("refused.capacity", 0),
            "over_limit": counters.get("limit_reached", 0),
        },
        "by_reason": by_outcome,
        "handshake_failures": failures,
        # The product's npSslInspProtocolStats: clientCipherOther,
        # serverHandshakeFailure.<reason>, refused.<reason> (gateway/tls/protocol_stats.py).
        "protocol": _by_prefix(counters, "protocol."),
        "bytes": {
            "client_to_server": counters.get("bytes_up", 0),
            "server_to_client": counters.get("bytes_down", 0),
            "decrypted": counters.get("bytes_decrypted", 0),
        },
        "other": {
            "forged_certificates": counters.get("forged_certificates", 0),
            "not_tls": counters.get("not_tls", 0),
            "blocked_upstream_certificate": counters.get("blocked.upstream_certificate", 0),
            "internal_errors": counters.get("internal_errors", 0),
        },
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    number = repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
    return f"{name}{{{text}}} {number}" if text else f"{name} {number}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(_sample(name, labels, value) for labels, value in samples)


def render_prometheus(counters: Mapping[str, int], gauges: Mapping[str, float],
                      last_minute: Mapping[str, Any] | None = None) -> str:
    """The exposition text. `gauges`: sessions_active, sessions_decrypting, fallback_manual,
    fallback_overload, fallback_drain, uptime_seconds. `last_minute`: the current TrafficHistory row."""
    view = stats_view(counters)
    w = _Writer()
    w.family("tlsgw_up", "gauge", "1 while the gateway answers.", [({}, 1)])
    w.family("tlsgw_uptime_seconds", "gauge", "Seconds since the gateway started.",
             [({}, float(gauges.get("uptime_seconds", 0)))])
    w.family("tlsgw_connections_total", "counter", "TLS-port connections that reached the gateway (SSL traffic seen).",
             [({}, view["connections"]["seen"])])
    w.family("tlsgw_flows_total", "counter", "Flows ended, by outcome.",
             [({"outcome": o}, counters.get(f"outcome.{o}", 0)) for o in OUTCOMES])
    w.family("tlsgw_flows_by_reason_total", "counter", "Flows ended, by outcome and reason.",
             [({"outcome": outcome, "reason": label}, value)
              for outcome, labels in view["by_reason"].items() for label, value in labels.items()])
    w.family("tlsgw_handshake_failures_total", "counter", "Failed TLS handshakes, by side.",
             [({"side": side}, data["total"]) for side, data in view["handshake_failures"].items()])
    w.family("tlsgw_handshake_failures_by_reason_total", "counter", "Failed TLS handshakes, by side and reason.",
             [({"side": side, "reason": label}, value)
              for side, data in view["handshake_failures"].items() for label, value in data["by_reason"].items()])
    w.family("tlsgw_refused_total", "counter", "Connections that could not be accepted, by reason.",
             [({"reason": "capacity"}, view["connections"]["refused"])])
    w.family("tlsgw_limit_reached_total", "counter", "Flows over limits.max_concurrent.",
             [({}, view["connections"]["over_limit"])])
    w.family("tlsgw_bytes_total", "counter", "Payload bytes relayed, by direction.",
             [({"direction": "client_to_server"}, view["bytes"]["client_to_server"]),
              ({"direction": "server_to_client"}, view["bytes"]["server_to_client"])])
    w.family("tlsgw_decrypted_bytes_total", "counter", "Plaintext bytes of decrypted flows (SSL traffic decrypted).",
             [({}, view["bytes"]["decrypted"])])
    w.family("tlsgw_forged_certificates_total", "counter", "Certificates forged (cache misses).",
             [({}, view["other"]["forged_certificates"])])
    w.family("tlsgw_internal_errors_total", "counter", "Flows that ended on an internal error.",
             [({}, view["other"]["internal_errors"])])
    w.family("tlsgw_sessions", "gauge", "Live sessions, by kind.",
             [({"kind": "all"}, float(gauges.get("sessions_active", 0))),
              ({"kind": "decrypting"}, float(gauges.get("sessions_decrypting", 0)))])
    w.family("tlsgw_fallback", "gauge", "1 while new flows bypass the gateway, by cause.",
             [({"cause": "manual"}, float(gauges.get("fallback_manual", 0))),
              ({"cause": "overload"}, float(gauges.get("fallback_overload", 0))),
              ({"cause": "drain"}, float(gauges.get("fallback_drain", 0)))])
    if last_minute is not None:
        w.family("tlsgw_traffic_current_minute", "gauge",
                 "SSL traffic seen and decrypted in the minute in progress (connections).",
                 [({"kind": "seen"}, last_minute.get("seen", 0)),
                  ({"kind": "decrypted"}, last_minute.get("decrypted", 0))])
    return "\n".join(w.lines) + "\n"
