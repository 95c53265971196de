"""Reason labels for the counters by reason (issue 6)."""

from __future__ import annotations

import pytest

from gateway.observability.flowlog import FlowRecord
from gateway.observability.reasons import flow_counts, handshake_side, outcome_slug, reason_label

CASES = [
    ("max concurrent connections (10) reached", "limit"),
    ("source 192.0.2.10 is never decrypted", "never_decrypt"),
    ("domain exception '*.bank.example' in decryption policy 'default'", "domain_exception"),
    ("category 'finance' in decryption policy 'default'", "category_exception"),
    ("domain exception 'x' in decryption policy 'd' (by server certificate, no SNI)", "certificate_name_exception"),
    ("client offered no protocol version enabled in the client proxy", "protocol_version"),
    ("upstream 192.0.2.20:443 requires a client certificate", "client_certificate_requested"),
    ("client certificate requested", "client_certificate_requested"),
    ("client certificate requested (remembered for this site: relayed untouched from the first packet)",
     "client_certificate_requested"),
    ("pinned (remembered for this site: relayed untouched from the first packet)", "pinned"),
    ("client 192.0.2.10:5 does not trust the signing CA for shop.example", "untrusted_ca"),
    ("not a TLS ClientHello: record type 0x47", "not_tls"),
    ("connection failed: ConnectionRefusedError: refused", "connection_failed"),
    ("upstream certificate expired: x (block_expired_certificates is on)", "upstream_certificate"),
    ("upstream certificate untrusted: y (shown to the client as untrusted)", "upstream_certificate_untrusted"),
    ("client policy", "client_policy"),
    ("something new", "other"),
    (None, "none"),
]


@pytest.mark.parametrize(("reason", "label"), CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_reason_labels(reason: str | None, label: str) -> None:
    assert reason_label(reason) == label


def test_handshake_side_only_for_handshake_failures() -> None:
    assert handshake_side("client 192.0.2.10:5 does not trust the signing CA for x") == "client"
    assert handshake_side("upstream 192.0.2.20:443 refused the handshake (no common cipher or version)") == "upstream"
    assert handshake_side("upstream certificate expired") is None
    assert handshake_side("client policy") is None


def _record(outcome: str, reason: str, up: int = 3, down: int = 4) -> FlowRecord:
    return FlowRecord("f", "t", "s", "192.0.2.10", 1, "192.0.2.20", 443, outcome=outcome, reason=reason,
                      bytes_up=up, bytes_down=down)


def test_flow_counts() -> None:
    assert flow_counts(_record("decrypted", "client policy")) == [
        ("outcome_reason.decrypted.client_policy", 1), ("bytes_decrypted", 7)]
    assert flow_counts(_record("blocked", "client 1.2.3.4:5 rejected the certificate for x")) == [
        ("outcome_reason.blocked.certificate_rejected", 1),
        ("handshake_failure_reason.client.certificate_rejected", 1)]
    assert outcome_slug("decrypted but not inspected") == "decrypted_but_not_inspected"
