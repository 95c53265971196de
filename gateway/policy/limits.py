"""The concurrency limit's episodes: the system log says "SSL inspection reached critical
threshold of max concurrent connections" once when the limit is first hit, not once per
refused flow (a busy site would flood the journal with one line per connection).

An episode starts when a flow that would be decrypted finds `max_concurrent` sessions
already decrypting, and ends when the count has fallen below `RESUME_RATIO` of the limit.
The gap keeps a count hovering at the limit from opening a new episode - and logging
again - with every session that ends. Pure: counts in, a sentence out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.model import OnExceed

CRITICAL_THRESHOLD_MESSAGE = "SSL inspection reached critical threshold of max concurrent connections"
# An episode ends below 90% of the limit: far enough below it not to flap, close enough
# that the next overload is reported as a new one.
RESUME_RATIO = 0.9

_ACTIONS = {OnExceed.BYPASS: "new flows are bypassed", OnExceed.BLOCK: "new flows are blocked"}


@dataclass(frozen=True, slots=True)
class LimitCheck:
    exceeded: bool
    """The new flow is over the limit and gets `on_exceed`."""
    message: str | None = None
    """The sentence to log at WARNING: set only for the first flow of an episode."""


class ConcurrencyLimit:
    """Shared by every segment's handler: the limit counts decrypting sessions of the
    whole gateway, not of one listener."""

    def __init__(self) -> None:
        self.active = 0
        """Sessions decrypting now; the proxy raises and lowers it around a decrypted session."""
        self.in_episode = False
        self.episodes = 0

    def total(self) -> int:
        """The sessions the limit counts. Here this process's own; worker processes count
        those of every worker together (`gateway.workers.shared.SharedConcurrency`)."""
        return self.active

    def check(self, max_concurrent: int, on_exceed: OnExceed) -> LimitCheck:
        """For a flow about to be decrypted."""
        active = self.total()
        if self.in_episode and active < max_concurrent * RESUME_RATIO:
            self.in_episode = False
        if active < max_concurrent:
            return LimitCheck(False)
        if self.in_episode:
            return LimitCheck(True)
        self.in_episode = True
        self.episodes += 1
        return LimitCheck(True, f"{CRITICAL_THRESHOLD_MESSAGE} ({max_concurrent}); {_ACTIONS[on_exceed]}")
