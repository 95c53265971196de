"""Sites bypassed after a client-certificate request or repeated pinning refusals
(issue 5), with an injected clock."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from gateway.config.model import ClientProxy, PortRange
from gateway.policy.site_bypass import (
    BypassReason,
    BypassSettings,
    Site,
    SiteBypassCache,
    is_pinning_symptom,
)

SITE = Site(IPv4Address("192.0.2.10"), 443, "app.example")
OTHER_NAME = Site(IPv4Address("192.0.2.10"), 443, "www.example")
SETTINGS = BypassSettings(client_certificate_seconds=100.0, pinning_failures=3, pinning_window_seconds=60.0,
                          pinning_seconds=500.0)


def test_client_certificate_request_bypasses_the_site_for_the_configured_time() -> None:
    cache = SiteBypassCache()
    assert cache.lookup(SITE, now=0.0) is None
    cache.note_client_certificate_requested(SITE, now=10.0, settings=SETTINGS)
    assert cache.lookup(SITE, now=10.0) is BypassReason.CLIENT_CERTIFICATE
    assert cache.lookup(SITE, now=109.9) is BypassReason.CLIENT_CERTIFICATE
    assert cache.lookup(SITE, now=110.0) is None
    assert len(cache) == 0


def test_bypass_is_per_name_not_per_address() -> None:
    cache = SiteBypassCache()
    cache.note_client_certificate_requested(SITE, now=0.0, settings=SETTINGS)
    assert cache.lookup(OTHER_NAME, now=1.0) is None


PINNING = [
    # (failure times, lookup time, expected)
    ([0.0, 10.0], 11.0, None),
    ([0.0, 10.0, 20.0], 21.0, BypassReason.PINNED),
    ([0.0, 10.0, 20.0], 519.9, BypassReason.PINNED),
    ([0.0, 10.0, 20.0], 520.0, None),
    ([0.0, 50.0, 70.0], 71.0, None),
    ([0.0, 50.0, 70.0, 80.0], 81.0, BypassReason.PINNED),
]


@pytest.mark.parametrize(("failures", "at", "expected"), PINNING, ids=[
    "two-failures-not-enough", "third-failure-bypasses", "still-bypassed-before-the-end", "bypass-ends",
    "old-failure-left-the-window", "three-within-the-window-again",
])
def test_pinning_bypass_after_enough_failures_within_the_window(failures: list[float], at: float,
                                                                 expected: BypassReason | None) -> None:
    cache = SiteBypassCache()
    for t in failures:
        cache.note_pinning_failure(SITE, now=t, settings=SETTINGS)
    assert cache.lookup(SITE, now=at) is expected


def test_pinning_failure_reports_the_start_of_a_bypass_once() -> None:
    cache = SiteBypassCache()
    results = [cache.note_pinning_failure(SITE, now=float(t), settings=SETTINGS) for t in range(5)]
    assert results == [None, None, BypassReason.PINNED, None, None]


def test_failures_start_over_after_a_bypass_ends() -> None:
    cache = SiteBypassCache()
    for t in (0.0, 1.0, 2.0):
        cache.note_pinning_failure(SITE, now=t, settings=SETTINGS)
    assert cache.lookup(SITE, now=600.0) is None
    assert cache.note_pinning_failure(SITE, now=601.0, settings=SETTINGS) is None


def test_client_certificate_request_overrides_counting() -> None:
    cache = SiteBypassCache()
    cache.note_pinning_failure(SITE, now=0.0, settings=SETTINGS)
    cache.note_client_certificate_requested(SITE, now=1.0, settings=SETTINGS)
    assert cache.lookup(SITE, now=2.0) is BypassReason.CLIENT_CERTIFICATE


def test_cache_is_bounded_least_recently_touched_first() -> None:
    cache = SiteBypassCache(max_sites=2)
    sites = [Site(IPv4Address(f"192.0.2.{i}"), 443, None) for i in range(3)]
    for site in sites:
        cache.note_client_certificate_requested(site, now=0.0, settings=SETTINGS)
    assert len(cache) == 2
    assert cache.lookup(sites[0], now=1.0) is None
    assert cache.lookup(sites[2], now=1.0) is BypassReason.CLIENT_CERTIFICATE


def test_active_lists_current_bypasses_only() -> None:
    cache = SiteBypassCache()
    cache.note_client_certificate_requested(SITE, now=0.0, settings=SETTINGS)
    cache.note_pinning_failure(OTHER_NAME, now=0.0, settings=SETTINGS)
    active = cache.active(now=50.0)
    assert [(a.site, a.reason, a.until) for a in active] == [(SITE, BypassReason.CLIENT_CERTIFICATE, 100.0)]
    assert cache.active(now=100.0) == []


def test_reasons_read_as_the_issue_words_them() -> None:
    assert BypassReason.CLIENT_CERTIFICATE.log_text == "bypassed: client certificate requested"
    assert BypassReason.PINNED.log_text == "bypassed: pinned"


def test_settings_come_from_the_client_proxy() -> None:
    proxy = ClientProxy("out", "corp", (PortRange(443, 443),), client_certificate_bypass_seconds=5.0,
                        pinning_failures=2, pinning_window_seconds=6.0, pinning_bypass_seconds=7.0)
    assert BypassSettings.of(proxy) == BypassSettings(5.0, 2, 6.0, 7.0)
    assert BypassSettings.of(ClientProxy("d", "corp", ())) == BypassSettings()


@pytest.mark.parametrize(("trusted", "failure", "completed", "sent", "expected"), [
    (True, "tlsv1 alert unknown ca", False, False, True),
    (True, "sslv3 alert bad certificate", False, False, True),
    (True, "sslv3 alert certificate unknown", False, False, True),
    (True, None, True, False, True),
    (True, None, True, True, False),
    (True, "no shared cipher", False, False, False),
    (True, "peer closed the connection during the handshake", False, False, False),
    (False, "tlsv1 alert unknown ca", False, False, False),
    (False, None, True, False, False),
], ids=["unknown-ca-alert", "bad-certificate-alert", "certificate-unknown-alert", "closed-after-handshake",
        "sent-data-is-no-pinning", "cipher-mismatch-is-no-pinning", "plain-disconnect-is-no-pinning",
        "untrusted-ca-refused-as-intended", "untrusted-ca-closed-as-intended"])
def test_pinning_symptoms(trusted: bool, failure: str | None, completed: bool, sent: bool, expected: bool) -> None:
    assert is_pinning_symptom(trusted_issuer=trusted, handshake_failure=failure, handshake_completed=completed,
                              client_sent_data=sent) is expected


def test_zero_sized_cache_is_refused() -> None:
    with pytest.raises(ValueError):
        SiteBypassCache(max_sites=0)
