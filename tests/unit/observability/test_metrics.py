"""Stats grouping and Prometheus text (issue 6)."""

from __future__ import annotations

import re

from gateway.observability.metrics import render_prometheus, stats_view

COUNTERS = {
    "connections": 12, "outcome.decrypted": 7, "outcome.bypassed": 3, "outcome.blocked": 2,
    "outcome_reason.bypassed.limit": 3, "outcome_reason.blocked.untrusted_ca": 2,
    "handshake_failures.client": 2, "handshake_failure_reason.client.untrusted_ca": 2,
    "refused.capacity": 1, "bytes_up": 100, "bytes_down": 2000, "bytes_decrypted": 1500,
}


def test_stats_view_groups_like_the_product() -> None:
    view = stats_view(COUNTERS)
    assert view["connections"]["seen"] == 12 and view["connections"]["not_decrypted"] == 0
    assert view["by_reason"] == {"bypassed": {"limit": 3}, "blocked": {"untrusted_ca": 2}}
    assert view["handshake_failures"]["client"] == {"total": 2, "by_reason": {"untrusted_ca": 2}}
    assert view["handshake_failures"]["upstream"]["total"] == 0
    assert view["bytes"]["decrypted"] == 1500


def test_prometheus_text_is_well_formed() -> None:
    text = render_prometheus(COUNTERS, {"sessions_active": 4, "fallback_manual": 1, "uptime_seconds": 12.5},
                             {"seen": 3, "decrypted": 1})
    assert text.endswith("\n")
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in families
            families.add(name)
        elif not line.startswith("# HELP "):
            assert sample.match(line), line
    assert 'tlsgw_flows_total{outcome="decrypted but not inspected"} 0' in text
    assert 'tlsgw_flows_by_reason_total{outcome="bypassed",reason="limit"} 3' in text
    assert 'tlsgw_fallback{cause="manual"} 1' in text
    assert "tlsgw_uptime_seconds 12.5" in text
    assert 'tlsgw_traffic_current_minute{kind="decrypted"} 1' in text


def test_label_values_are_escaped() -> None:
    text = render_prometheus({'outcome_reason.blocked.a"b\\c': 1}, {})
    assert r'reason="a\"b\\c"' in text
