"""The upstream session cache: bounded, least-recently-used, expiring on its own clock."""

from __future__ import annotations

import pytest

from gateway.tls.sessions import SessionCache


def test_session_is_returned_until_it_expires() -> None:
    cache: SessionCache[str] = SessionCache(max_entries=4, lifetime=10.0)
    cache.put("a", "session-a", now=100.0)
    assert cache.get("a", now=109.9) == "session-a"
    assert cache.get("a", now=110.0) is None
    assert len(cache) == 0  # an expired entry is dropped when seen


def test_newer_session_replaces_older_and_restarts_lifetime() -> None:
    cache: SessionCache[str] = SessionCache(max_entries=4, lifetime=10.0)
    cache.put("a", "first", now=0.0)
    cache.put("a", "second", now=8.0)
    assert cache.get("a", now=15.0) == "second"


def test_least_recently_used_goes_first_when_full() -> None:
    cache: SessionCache[str] = SessionCache(max_entries=2, lifetime=100.0)
    cache.put("a", "A", now=0.0)
    cache.put("b", "B", now=0.0)
    assert cache.get("a", now=1.0) == "A"  # a is now the most recent
    cache.put("c", "C", now=2.0)
    assert cache.get("b", now=3.0) is None
    assert cache.get("a", now=3.0) == "A" and cache.get("c", now=3.0) == "C"
    assert len(cache) == 2


def test_discard_forgets_a_session() -> None:
    cache: SessionCache[str] = SessionCache()
    cache.put(("192.0.2.1", 443, "x.example"), "s", now=0.0)
    cache.discard(("192.0.2.1", 443, "x.example"))
    cache.discard("never there")
    assert cache.get(("192.0.2.1", 443, "x.example"), now=0.0) is None


@pytest.mark.parametrize(("max_entries", "lifetime"), [(0, 1.0), (1, 0.0)], ids=["no-room", "no-lifetime"])
def test_nonsense_bounds_are_refused(max_entries: int, lifetime: float) -> None:
    with pytest.raises(ValueError):
        SessionCache(max_entries=max_entries, lifetime=lifetime)
