"""SSL traffic seen versus decrypted, minute by minute: the graph the product shows,
kept as a ring of per-minute rows for `tlsgw stats --history` and the metrics endpoint.

The daemon samples its cumulative counters (at least) once a minute; each row holds the
differences over one wall-clock minute. Minutes in which no sample was taken (a stalled
daemon, a suspended machine) appear as rows with `complete: false`, their traffic
folded into the next sampled minute, so the view never invents a flat line. Pure: the
caller passes the time and the counters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

# One day of minutes; a row is a few dozen bytes.
HISTORY_MINUTES = 24 * 60

# What a row counts: (row field, counter name).
_SERIES = (
    ("seen", "connections"),
    ("decrypted", "outcome.decrypted"),
    ("bytes", "bytes_total"),
    ("bytes_decrypted", "bytes_decrypted"),
)


@dataclass(frozen=True, slots=True)
class MinuteRow:
    minute: str
    """Start of the minute, ISO 8601 UTC."""
    seen: int
    """TLS connections that reached the gateway."""
    decrypted: int
    bytes: int
    bytes_decrypted: int
    complete: bool = True


def _minute_of(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(second=0, microsecond=0)


class TrafficHistory:
    def __init__(self, minutes: int = HISTORY_MINUTES) -> None:
        self.rows: deque[MinuteRow] = deque(maxlen=minutes)
        self._minute: datetime | None = None
        self._base: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def sample(self, now: datetime, counters: Mapping[str, int]) -> None:
        """Record the counters at `now`; closes the minutes that ended since the last sample."""
        values = _values(counters)
        minute = _minute_of(now)
        if self._minute is None:
            self._minute, self._base, self._last = minute, values, values
            return
        if minute > self._minute:
            # The previous sample is the best estimate of where the old minute ended.
            self._close(self._minute, self._last, complete=True)
            gap = int((minute - self._minute).total_seconds() // 60) - 1
            for missing in range(1, min(gap, self.rows.maxlen or gap) + 1):
                start = self._minute.timestamp() + 60 * missing
                stamp = datetime.fromtimestamp(start, timezone.utc)
                self.rows.append(MinuteRow(stamp.isoformat(), 0, 0, 0, 0, complete=False))
            self._minute = minute
        self._last = values

    def _close(self, minute: datetime, end: dict[str, int], *, complete: bool) -> None:
        deltas = {field: max(0, end.get(field, 0) - self._base.get(field, 0)) for field, _ in _SERIES}
        self.rows.append(MinuteRow(minute.isoformat(), complete=complete, **deltas))
        self._base = end

    def current(self) -> MinuteRow | None:
        """The minute in progress, so far."""
        if self._minute is None:
            return None
        deltas = {field: max(0, self._last.get(field, 0) - self._base.get(field, 0)) for field, _ in _SERIES}
        return MinuteRow(self._minute.isoformat(), complete=False, **deltas)

    def view(self, minutes: int | None = None) -> list[dict[str, object]]:
        rows = list(self.rows)
        if minutes is not None:
            rows = rows[-minutes:] if minutes > 0 else []
        return [asdict(r) for r in rows]


def _values(counters: Mapping[str, int]) -> dict[str, int]:
    values = {field: counters.get(name, 0) for field, name in _SERIES}
    values["bytes"] = counters.get("bytes_up", 0) + counters.get("bytes_down", 0)
    return values
