"""Stable labels for the free-text reasons of the inspection log, so counters can say
"bypassed by reason" and "handshake failures per side and reason" (the product's
npSslInspStats / npSslInspProtocolStats) without one counter per distinct sentence.

Reasons are written for people and carry addresses, names and numbers; a label is a
fixed word chosen by the first phrase of `_LABELS` found in the reason. The table is
ordered from the most to the least specific phrase. Pure.
"""

from __future__ import annotations

from gateway.observability.flowlog import FlowRecord

# (phrase in the lower-cased reason, label). First match wins.
_LABELS: tuple[tuple[str, str], ...] = (
    ("max concurrent connections", "limit"),
    ("is never decrypted", "never_decrypt"),
    ("is a source exception", "source_exception"),
    ("is always decrypted", "always_decrypt"),
    ("by server certificate", "certificate_name_exception"),
    ("domain exception", "domain_exception"),
    ("category ", "category_exception"),
    ("ssl client inspection is off", "inspection_off"),
    ("no policy matches", "no_policy"),
    ("no segment named", "no_segment"),
    ("requires a client certificate", "client_certificate_requested"),
    ("client certificate requested", "client_certificate_requested"),
    ("pinned", "pinned"),
    ("protocol version", "protocol_version"),
    ("cipher", "cipher"),
    ("does not trust the signing ca", "untrusted_ca"),
    ("rejected the certificate", "certificate_rejected"),
    ("closed the connection during the handshake", "closed_in_handshake"),
    ("refused the handshake", "handshake_refused"),
    ("tls handshake failed", "handshake_failed"),
    ("not a tls clienthello", "not_tls"),
    ("client closed before sending", "closed_before_hello"),
    ("timed out", "timeout"),
    ("no clienthello within", "timeout"),
    ("connection failed", "connection_failed"),
    ("upstream sent no certificate", "no_upstream_certificate"),
    ("shown to the client as untrusted", "upstream_certificate_untrusted"),
    ("upstream certificate", "upstream_certificate"),
    ("gateway shutting down", "shutdown"),
    ("internal error", "internal_error"),
    ("server policy", "server_policy"),
    ("client policy", "client_policy"),
)
# Handshake failure sentences (tls/alerts.py) start with the side and its peer.
_HANDSHAKE_LABELS = frozenset({
    "client_certificate_requested", "protocol_version", "cipher", "untrusted_ca", "certificate_rejected",
    "closed_in_handshake", "handshake_refused", "handshake_failed", "timeout",
})


def reason_label(reason: str | None) -> str:
    if not reason:
        return "none"
    lowered = reason.lower()
    return next((label for phrase, label in _LABELS if phrase in lowered), "other")


def outcome_slug(outcome: str | None) -> str:
    """`decrypted but not inspected` -> `decrypted_but_not_inspected`; None -> `unknown`."""
    return (outcome or "unknown").replace(" ", "_")


def handshake_side(reason: str | None) -> str | None:
    """`client` or `upstream` when `reason` is a handshake failure sentence, else None."""
    if not reason or reason_label(reason) not in _HANDSHAKE_LABELS:
        return None
    side = reason.split(" ", 1)[0]
    return side if side in ("client", "upstream") else None


def flow_counts(record: FlowRecord) -> list[tuple[str, int]]:
    """The counters one finished flow adds, besides `outcome.<outcome>` which the proxy
    already counts: its outcome by reason, and its decrypted bytes."""
    label = reason_label(record.reason)
    counts = [(f"outcome_reason.{outcome_slug(record.outcome)}.{label}", 1)]
    side = handshake_side(record.reason)
    if side is not None and record.outcome == "blocked":
        counts.append((f"handshake_failure_reason.{side}.{label}", 1))
    if record.outcome in ("decrypted", "decrypted but not inspected"):
        counts.append(("bytes_decrypted", record.bytes_up + record.bytes_down))
    return counts
