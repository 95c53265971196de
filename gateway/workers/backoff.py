"""When to restart a worker that died. Pure: the caller says how long it ran.

A worker that dies at once (a broken certificate store, a port another program took)
would otherwise be restarted in a tight loop that fills the journal and burns the CPU the
other workers need; one that served for a while and then crashed is back within a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# One second: long enough that a crash loop costs little, short enough that a worker's
# share of new connections is hardly missed (the other workers take them meanwhile).
FIRST_DELAY = 1.0
# Thirty seconds between attempts at most: a failure that lasts (the store unreadable)
# is retried often enough to recover soon after it is fixed.
MAX_DELAY = 30.0
# A worker that served this long is healthy again: its next crash starts over at FIRST_DELAY.
STABLE_AFTER = 60.0


@dataclass(slots=True)
class RestartBackoff:
    first: float = FIRST_DELAY
    ceiling: float = MAX_DELAY
    stable_after: float = STABLE_AFTER
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def delay_after_exit(self, ran_for: float) -> float:
        """Seconds to wait before restarting a worker that ran `ran_for` seconds; each quick
        exit doubles the next wait up to the ceiling."""
        if ran_for >= self.stable_after:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.ceiling)
        return delay
