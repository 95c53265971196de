from __future__ import annotations

from gateway.workers.backoff import RestartBackoff


def test_quick_exits_double_the_delay_up_to_the_ceiling() -> None:
    backoff = RestartBackoff(first=1.0, ceiling=8.0, stable_after=60.0)
    assert [backoff.delay_after_exit(0.5) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_worker_that_served_long_enough_starts_over() -> None:
    backoff = RestartBackoff(first=1.0, ceiling=30.0, stable_after=60.0)
    for _ in range(4):
        backoff.delay_after_exit(1.0)
    assert backoff.delay_after_exit(60.0) == 1.0
    assert backoff.delay_after_exit(1.0) == 2.0


def test_a_worker_just_short_of_stable_keeps_backing_off() -> None:
    backoff = RestartBackoff(first=1.0, ceiling=30.0, stable_after=60.0)
    backoff.delay_after_exit(0.0)
    assert backoff.delay_after_exit(59.9) == 2.0
