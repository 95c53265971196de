"""How tlsgw stops: the drain period between a stop signal and the end of the sessions in
flight. Pure: times, counts and settings are passed in; the daemon does the waiting.

A restart of the gateway should not kill a running download when it can be avoided. So a
first SIGTERM or SIGINT does not cut anything: new flows stop entering the proxy (the same
kernel fallback as `tlsgw bypass on`, cause `drain`: new flows cross the bridge untouched,
the live sessions' 4-tuples stay diverted through the `proxied` set), and the sessions in
flight get up to `gateway.drain_timeout` seconds to finish. The drain ends at the first of:
the last session ended, the time is up, or a second stop signal (an operator who does not
want to wait). Then the rules go and whatever is left is cut, as a stop without a drain
always did.

Two cases do not let new flows pass untouched, because that is not tlsgw's to decide:

- `fail_mode: closed` promises no uninspected flow on the steered ports; the drain then
  keeps inspecting new flows too, and simply waits (to the timeout, on a busy link);
- `tlsgw run --no-rules` has no rules of its own to change; same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.config.model import FailMode

# How often the daemon looks at the session count while draining: a finished download is
# let go within this, and counting (the workers' included) costs about a millisecond.
DRAIN_POLL_INTERVAL = 0.2


class DrainEnd(enum.Enum):
    """Why the drain ended; the words complete "drain ended: ...". """

    EMPTY = "no session left in flight"
    TIMEOUT = "gateway.drain_timeout reached"
    SIGNAL = "a second stop signal"


@dataclass(frozen=True, slots=True)
class DrainPlan:
    timeout: float
    """Seconds to wait at most; 0 means no drain at all."""
    bypass_new_flows: bool
    """Whether new flows cross the bridge untouched meanwhile (kernel fallback)."""

    @classmethod
    def for_stop(cls, timeout: float, fail_mode: FailMode, rules_managed: bool) -> DrainPlan:
        return cls(max(timeout, 0.0), rules_managed and fail_mode is FailMode.OPEN)

    @property
    def enabled(self) -> bool:
        return self.timeout > 0


@dataclass(slots=True)
class Drain:
    """One drain in progress (monotonic times)."""

    plan: DrainPlan
    started: float
    started_wall: float
    """For `tlsgw status` (wall-clock)."""

    @property
    def deadline(self) -> float:
        return self.started + self.plan.timeout

    def remaining(self, now: float) -> float:
        return max(self.deadline - now, 0.0)

    def end(self, now: float, live_sessions: int, second_signal: bool) -> DrainEnd | None:
        """Why the drain is over now, or None to keep waiting. A second signal wins, so the
        log says the operator cut it short even when the time was up as well."""
        if second_signal:
            return DrainEnd.SIGNAL
        if live_sessions <= 0:
            return DrainEnd.EMPTY
        if now >= self.deadline:
            return DrainEnd.TIMEOUT
        return None

    def view(self, now: float) -> dict[str, object]:
        return {"since": self.started_wall, "timeout_s": self.plan.timeout,
                "remaining_s": round(self.remaining(now), 1), "new_flows_bypass": self.plan.bypass_new_flows}
