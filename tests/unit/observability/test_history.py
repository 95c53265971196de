"""SSL traffic seen vs decrypted, per minute (issue 6)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.observability.history import TrafficHistory

T0 = datetime(2024, 1, 1, 12, 0, 5, tzinfo=timezone.utc)


def counters(seen: int, decrypted: int, up: int = 0) -> dict[str, int]:
    return {"connections": seen, "outcome.decrypted": decrypted, "bytes_up": up, "bytes_down": 0}


def test_minutes_hold_differences() -> None:
    history = TrafficHistory()
    history.sample(T0, counters(100, 50))
    history.sample(T0 + timedelta(seconds=30), counters(110, 55, up=10))
    history.sample(T0 + timedelta(seconds=60), counters(130, 56, up=20))  # 12:01:05
    rows = history.view()
    assert rows == [{"minute": "2024-01-01T12:00:00+00:00", "seen": 10, "decrypted": 5, "bytes": 10,
                     "bytes_decrypted": 0, "complete": True}]
    current = history.current()
    assert current is not None and (current.seen, current.decrypted) == (20, 1) and not current.complete


def test_missed_minutes_are_marked_not_invented() -> None:
    history = TrafficHistory()
    history.sample(T0, counters(0, 0))
    history.sample(T0 + timedelta(minutes=3), counters(30, 3))  # 12:03:05; 12:01 and 12:02 unseen
    history.sample(T0 + timedelta(minutes=4), counters(31, 3))
    rows = history.view()
    assert [(r["minute"][11:16], r["complete"]) for r in rows] == [
        ("12:00", True), ("12:01", False), ("12:02", False), ("12:03", True)]
    assert rows[-1]["seen"] == 30  # the gap's traffic is folded into the next sampled minute


def test_ring_keeps_the_newest_minutes() -> None:
    history = TrafficHistory(minutes=3)
    for minute in range(6):
        history.sample(T0 + timedelta(minutes=minute), counters(minute * 10, minute))
    assert [r["minute"][11:16] for r in history.view()] == ["12:02", "12:03", "12:04"]
    assert len(history.view(2)) == 2 and history.view(0) == []


def test_counter_reset_never_shows_negative_traffic() -> None:
    history = TrafficHistory()
    history.sample(T0, counters(100, 10))
    history.sample(T0 + timedelta(minutes=1), counters(5, 1))
    assert history.view()[0]["seen"] == 0
