"""Causes of a fallback and the overload detector (issue 6)."""

from __future__ import annotations

from gateway.policy.fallback import Cause, FallbackState, OverloadDetector


def test_fallback_lasts_while_any_cause_holds() -> None:
    state = FallbackState()
    assert state.set(Cause.MANUAL, True, 1.0) is True
    assert state.set(Cause.OVERLOAD, True, 2.0) is False  # already engaged: the kernel need not change
    assert state.set(Cause.MANUAL, False, 3.0) is False
    assert state.engaged and state.holds(Cause.OVERLOAD)
    assert state.set(Cause.OVERLOAD, False, 4.0) is True
    assert not state.engaged


def test_repeating_a_cause_keeps_its_start() -> None:
    state = FallbackState()
    state.set(Cause.MANUAL, True, 1.0)
    state.set(Cause.MANUAL, True, 5.0)
    assert state.view() == {"engaged": True, "causes": {"manual": 1.0}}


def test_overload_begins_on_new_refusals_and_ends_after_a_quiet_hold() -> None:
    detector = OverloadDetector(hold=30.0)
    assert detector.observe(5, 0.0) is None  # the first count is the baseline
    assert detector.observe(5, 1.0) is None
    assert detector.observe(7, 2.0) is True
    assert detector.observe(9, 10.0) is None  # still failing: the hold restarts
    assert detector.observe(9, 39.0) is None
    assert detector.observe(9, 40.0) is False
    assert detector.observe(9, 100.0) is None
