"""The drain period of a stop: when it lets new flows pass, and when it ends."""

from __future__ import annotations

from gateway.config.model import FailMode
from gateway.policy.drain import Drain, DrainEnd, DrainPlan
from gateway.policy.fallback import Cause, FallbackState


def test_new_flows_bypass_only_with_fail_mode_open_and_own_rules() -> None:
    assert DrainPlan.for_stop(10, FailMode.OPEN, rules_managed=True).bypass_new_flows
    # fail_mode closed promises no uninspected flow; --no-rules has no rules to change.
    assert not DrainPlan.for_stop(10, FailMode.CLOSED, rules_managed=True).bypass_new_flows
    assert not DrainPlan.for_stop(10, FailMode.OPEN, rules_managed=False).bypass_new_flows


def test_zero_means_no_drain() -> None:
    assert not DrainPlan.for_stop(0, FailMode.OPEN, rules_managed=True).enabled
    assert DrainPlan.for_stop(0.5, FailMode.OPEN, rules_managed=True).enabled


def test_drain_waits_while_sessions_live_and_time_remains() -> None:
    drain = Drain(DrainPlan(10.0, True), started=100.0, started_wall=1e9)
    assert drain.end(100.0, live_sessions=3, second_signal=False) is None
    assert drain.end(109.9, live_sessions=1, second_signal=False) is None
    assert drain.remaining(105.0) == 5.0


def test_drain_ends_when_the_last_session_ends() -> None:
    drain = Drain(DrainPlan(10.0, True), started=100.0, started_wall=1e9)
    assert drain.end(101.0, live_sessions=0, second_signal=False) is DrainEnd.EMPTY


def test_drain_ends_at_the_timeout() -> None:
    drain = Drain(DrainPlan(10.0, True), started=100.0, started_wall=1e9)
    assert drain.end(110.0, live_sessions=2, second_signal=False) is DrainEnd.TIMEOUT
    assert drain.remaining(120.0) == 0.0


def test_a_second_signal_ends_it_whatever_else_holds() -> None:
    drain = Drain(DrainPlan(10.0, True), started=100.0, started_wall=1e9)
    assert drain.end(100.5, live_sessions=5, second_signal=True) is DrainEnd.SIGNAL
    assert drain.end(200.0, live_sessions=0, second_signal=True) is DrainEnd.SIGNAL


def test_view_for_status() -> None:
    drain = Drain(DrainPlan(10.0, False), started=100.0, started_wall=1e9)
    assert drain.view(102.25) == {"since": 1e9, "timeout_s": 10.0, "remaining_s": 7.8, "new_flows_bypass": False}


def test_bypass_off_does_not_end_a_drain() -> None:
    """`tlsgw bypass off` during a stop releases its own cause only: new flows keep passing."""
    state = FallbackState()
    state.set(Cause.MANUAL, True, 1.0)
    assert state.set(Cause.DRAIN, True, 2.0) is False  # already engaged
    assert state.set(Cause.MANUAL, False, 3.0) is False
    assert state.engaged and state.view()["causes"] == {"drain": 2.0}
