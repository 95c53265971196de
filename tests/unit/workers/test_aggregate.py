from __future__ import annotations

from gateway.workers.aggregate import WorkerTotals, merge_sessions
from gateway.workers.protocol import WorkerStats


def stats(connections: int, active: int = 0, opened: int | None = None, **extra: int) -> WorkerStats:
    return WorkerStats({"connections": connections, **extra}, active, connections if opened is None else opened, 0)


def test_totals_add_every_worker_and_the_main_process() -> None:
    totals = WorkerTotals()
    totals.update(0, stats(10, active=2, **{"outcome.decrypted": 9}))
    totals.update(1, stats(10, active=1, **{"outcome.decrypted": 7}))
    assert totals.counters({"tunnel.flows": 3}) == {"connections": 20, "outcome.decrypted": 16, "tunnel.flows": 3}
    assert (totals.active, totals.opened) == (3, 20)


def test_a_newer_report_replaces_the_older_one() -> None:
    totals = WorkerTotals()
    totals.update(0, stats(5))
    totals.update(0, stats(7))
    assert totals.counters()["connections"] == 7


def test_a_retired_worker_keeps_its_counts_and_its_successor_adds_to_them() -> None:
    """Issue 8: totals never go down when a worker is restarted."""
    totals = WorkerTotals()
    totals.update(0, stats(10, active=4))
    totals.update(1, stats(6, active=1))
    totals.retire(0)
    assert totals.counters()["connections"] == 16  # unchanged by the exit
    assert totals.active == 1  # its live sessions died with it
    totals.update(0, stats(2))  # the replacement counts from zero
    assert totals.counters()["connections"] == 18
    assert totals.opened == 18


def test_retiring_a_worker_that_never_reported_changes_nothing() -> None:
    totals = WorkerTotals()
    totals.update(1, stats(3))
    totals.retire(0)
    assert totals.counters() == {"connections": 3}


def row(started: str, client: str, age: float = 1.0) -> dict[str, object]:
    return {"client": client, "started": started, "age_s": age}


def test_sessions_are_merged_oldest_first_with_their_worker() -> None:
    merged = merge_sessions([
        (101, {"active": 2, "sessions": [row("2026-01-01T10:00:02.000+00:00", "a"),
                                         row("2026-01-01T10:00:05.000+00:00", "c")]}),
        (202, {"active": 1, "sessions": [row("2026-01-01T10:00:03.500+00:00", "b")]}),
    ], limit=10)
    assert merged["active"] == 3
    assert [(s["client"], s["worker"]) for s in merged["sessions"]] == [("a", 101), ("b", 202), ("c", 101)]


def test_the_limit_keeps_the_oldest_but_counts_all() -> None:
    merged = merge_sessions([
        (1, {"active": 5, "sessions": [row(f"2026-01-01T10:00:0{i}.000+00:00", str(i)) for i in (4, 2)]}),
        (2, {"active": 4, "sessions": [row(f"2026-01-01T10:00:0{i}.000+00:00", str(i)) for i in (1, 3)]}),
    ], limit=2)
    assert merged["active"] == 9
    assert [s["client"] for s in merged["sessions"]] == ["1", "2"]
