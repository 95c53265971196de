"""The gateway's totals from its workers' counts. Pure.

Counters are cumulative since the gateway started, whichever process counted: `tlsgw
stats`, the per-minute history and Prometheus all take differences of them, and a total
that went down when a worker was restarted would read as negative traffic. So a worker
that exits leaves its last report behind (`retire`), and its replacement counts on top.
What a worker counted after its last report (at most one report interval) dies with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.workers.protocol import WorkerStats


@dataclass(slots=True)
class WorkerTotals:
    _live: dict[int, WorkerStats] = field(default_factory=dict)
    """Latest report of each running worker, by worker index."""
    _retired: Counter[str] = field(default_factory=Counter)
    _retired_opened: int = 0

    def update(self, index: int, stats: WorkerStats) -> None:
        self._live[index] = stats

    def retire(self, index: int) -> None:
        """Worker `index` exited: keep what it counted, forget what it had live."""
        stats = self._live.pop(index, None)
        if stats is not None:
            self._retired.update(stats.counters)
            self._retired_opened += stats.opened

    def of(self, index: int) -> WorkerStats | None:
        return self._live.get(index)

    def counters(self, own: Mapping[str, int] | None = None) -> dict[str, int]:
        """Every worker's counters, past and present, plus `own` (the main process's)."""
        total: Counter[str] = Counter(own or {})
        total.update(self._retired)
        for stats in self._live.values():
            total.update(stats.counters)
        return dict(sorted(total.items()))

    @property
    def active(self) -> int:
        return sum(s.active for s in self._live.values())

    @property
    def decrypting(self) -> int:
        return sum(s.decrypting for s in self._live.values())

    @property
    def opened(self) -> int:
        return self._retired_opened + sum(s.opened for s in self._live.values())


def merge_sessions(answers: Iterable[tuple[int, Mapping[str, Any]]], limit: int) -> dict[str, Any]:
    """One `tlsgw sessions` answer from each worker's (pid, answer): all live sessions
    counted, the oldest `limit` listed, each row naming the worker that serves it."""
    active = 0
    rows: list[dict[str, Any]] = []
    for pid, answer in answers:
        active += int(answer.get("active", 0))
        rows.extend({**row, "worker": pid} for row in answer.get("sessions", ()))
    # ISO 8601 UTC with milliseconds, all in the same form: text order is time order.
    rows.sort(key=lambda row: (str(row.get("started", "")), -float(row.get("age_s", 0.0))))
    return {"active": active, "sessions": rows[:limit]}
