"""When new flows bypass the gateway in the kernel: the causes of a fallback and the
overload detector that engages one by itself. Pure: times and counts are passed in.

Fallback is engaged while at least one cause holds:

- `manual`: an administrator said `tlsgw bypass on` (remembered across restarts);
- `overload`: accept() failed for lack of descriptors or memory (the listener counts
  these in `refused.capacity`). Such a gateway cannot even splice a new flow, so new flows
  are better off bridged untouched. The cause is released once `OVERLOAD_HOLD` seconds
  pass without a new failure - long enough for live sessions to end and free descriptors,
  short enough that inspection resumes soon after a burst;
- `drain`: tlsgw is stopping and lets the sessions in flight finish (`drain.py`); it
  lasts until the rules are removed, and `tlsgw bypass off` does not end it.

Whatever the cause, sessions already proxied keep working (see netfilter/fallback.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

OVERLOAD_HOLD = 30.0


class Cause(enum.Enum):
    MANUAL = "manual"
    OVERLOAD = "overload"
    DRAIN = "drain"


@dataclass
class FallbackState:
    since: dict[Cause, float] = field(default_factory=dict)
    """Cause -> the (wall-clock) time it began."""

    @property
    def engaged(self) -> bool:
        return bool(self.since)

    def holds(self, cause: Cause) -> bool:
        return cause in self.since

    def set(self, cause: Cause, on: bool, now: float) -> bool:
        """Returns whether `engaged` changed (the kernel must follow)."""
        before = self.engaged
        if on:
            self.since.setdefault(cause, now)
        else:
            self.since.pop(cause, None)
        return self.engaged != before

    def view(self) -> dict[str, object]:
        return {"engaged": self.engaged, "causes": {c.value: t for c, t in sorted(self.since.items(),
                                                                                  key=lambda i: i[0].value)}}


class OverloadDetector:
    """Turns the cumulative `refused.capacity` count into overload on/off decisions."""

    def __init__(self, hold: float = OVERLOAD_HOLD) -> None:
        self.hold = hold
        self._refused: int | None = None
        self._last_failure: float | None = None
        self.overloaded = False

    def observe(self, refused_total: int, now: float) -> bool | None:
        """True: overload begins; False: it ended; None: no change."""
        previous, self._refused = self._refused, refused_total
        if previous is not None and refused_total > previous:
            self._last_failure = now
            if not self.overloaded:
                self.overloaded = True
                return True
            return None
        if self.overloaded and self._last_failure is not None and now - self._last_failure >= self.hold:
            self.overloaded = False
            return False
        return None
