"""The concurrency limit's log line, once per episode (issue 6)."""

from __future__ import annotations

from gateway.config.model import OnExceed
from gateway.policy.limits import CRITICAL_THRESHOLD_MESSAGE, ConcurrencyLimit


def run(limit: ConcurrencyLimit, actives: list[int], maximum: int = 10,
        on_exceed: OnExceed = OnExceed.BYPASS) -> list[tuple[bool, bool]]:
    found = []
    for active in actives:
        limit.active = active
        check = limit.check(maximum, on_exceed)
        found.append((check.exceeded, check.message is not None))
    return found


def test_first_refused_flow_of_an_episode_logs() -> None:
    limit = ConcurrencyLimit()
    assert run(limit, [9, 10, 10, 11, 10]) == [(False, False), (True, True), (True, False), (True, False),
                                               (True, False)]
    assert limit.episodes == 1


def test_hovering_at_the_limit_is_one_episode() -> None:
    """A session ends (9 active), the next flow fills the slot, the one after is refused
    again: still the same episode, no second line."""
    limit = ConcurrencyLimit()
    assert [m for _, m in run(limit, [10, 9, 10, 9, 10])] == [True, False, False, False, False]


def test_falling_to_ninety_percent_ends_the_episode() -> None:
    limit = ConcurrencyLimit()
    assert [m for _, m in run(limit, [10, 9, 10])] == [True, False, False]
    assert [m for _, m in run(limit, [8, 10])] == [False, True]  # 8 < 90% of 10: the episode ended, so a new one
    assert limit.episodes == 2


def test_message_names_limit_and_action() -> None:
    limit = ConcurrencyLimit()
    limit.active = 1
    message = limit.check(1, OnExceed.BLOCK).message
    assert message == f"{CRITICAL_THRESHOLD_MESSAGE} (1); new flows are blocked"


def test_limit_of_one_resets_only_when_idle() -> None:
    limit = ConcurrencyLimit()
    assert [m for _, m in run(limit, [1, 1, 0, 1], maximum=1)] == [True, False, False, True]
