"""The live sessions, for `tlsgw sessions` and `tlsgw status`.

A session is opened the moment its connection is accepted (the daemon wraps each
segment's handler, so no connection escapes the table, whatever the proxy does with it)
and closed when its handler returns. The proxy may attach the flow's `FlowRecord`, which
it fills in as the flow progresses; the listing then shows SNI, policy, outcome and byte
counts as they are now. Pure: the clocks are passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gateway.observability.flowlog import FlowRecord

FlowKey = tuple[str, int, str, int]
"""(client address, client port, server address, server port) of the client leg."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class LiveSession:
    key: FlowKey
    segment: str
    started: float
    """Monotonic time of the accept."""
    started_at: str
    """Wall-clock time of the accept (ISO 8601, UTC)."""
    record: FlowRecord | None = None

    def view(self, now: float) -> dict[str, Any]:
        client, client_port, server, server_port = self.key
        row: dict[str, Any] = {
            "client": f"{client}:{client_port}", "server": f"{server}:{server_port}",
            "segment": self.segment, "started": self.started_at, "age_s": round(now - self.started, 1),
            "flow": None, "sni": None, "policy": None, "outcome": None, "bytes_up": 0, "bytes_down": 0,
        }
        if self.record is not None:
            r = self.record
            row.update(flow=r.flow, sni=r.sni, policy=r.policy, outcome=r.outcome,
                       bytes_up=r.bytes_up, bytes_down=r.bytes_down)
        return row


@dataclass
class SessionTable:
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = _utc_now
    _sessions: dict[FlowKey, LiveSession] = field(default_factory=dict)
    opened: int = 0

    def open(self, segment: str, client: tuple[str, int], server: tuple[str, int]) -> LiveSession:
        key = (client[0], client[1], server[0], server[1])
        session = LiveSession(key, segment, self.clock(), self.wall().isoformat(timespec="milliseconds"))
        self._sessions[key] = session
        self.opened += 1
        return session

    def attach(self, record: FlowRecord) -> None:
        """Called by the proxy once it has the flow's record (unknown flows are ignored)."""
        session = self._sessions.get((record.client, record.client_port, record.server, record.server_port))
        if session is not None:
            session.record = record

    def close(self, session: LiveSession) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, segment: str | None = None, outcome: str | None = None) -> int:
        return sum(1 for s in self._sessions.values()
                   if (segment is None or s.segment == segment)
                   and (outcome is None or (s.record is not None and s.record.outcome == outcome)))

    def listing(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Oldest first; at most `limit` rows."""
        now = self.clock()
        rows = sorted(self._sessions.values(), key=lambda s: s.started)
        return [s.view(now) for s in (rows if limit is None else rows[:limit])]
