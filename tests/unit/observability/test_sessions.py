"""The live session table behind `tlsgw sessions` (issue 6)."""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.observability.flowlog import FlowRecord
from gateway.observability.sessions import SessionTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table() -> tuple[SessionTable, Clock]:
    clock = Clock()
    return SessionTable(clock=clock, wall=lambda: datetime(2024, 1, 1, tzinfo=timezone.utc)), clock


def test_open_list_close() -> None:
    sessions, clock = table()
    first = sessions.open("lan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    clock.now = 105.0
    sessions.open("dmz", ("192.0.2.11", 40001), ("192.0.2.21", 443))
    clock.now = 110.0
    rows = sessions.listing()
    assert [r["client"] for r in rows] == ["192.0.2.10:40000", "192.0.2.11:40001"]
    assert rows[0]["age_s"] == 10.0 and rows[0]["started"] == "2024-01-01T00:00:00.000+00:00"
    assert rows[0]["outcome"] is None  # no record attached: still in progress
    assert sessions.count() == 2 and sessions.count(segment="dmz") == 1
    sessions.close(first)
    assert len(sessions) == 1 and sessions.opened == 2
    assert sessions.listing(limit=0) == []


def test_attached_record_shows_live_progress() -> None:
    sessions, _ = table()
    sessions.open("lan", ("192.0.2.10", 40000), ("192.0.2.20", 443))
    record = FlowRecord(flow="f-1", time="t", segment="lan", client="192.0.2.10", client_port=40000,
                        server="192.0.2.20", server_port=443)
    sessions.attach(record)
    record.sni, record.outcome, record.bytes_up = "shop.example", "decrypted", 77
    row = sessions.listing()[0]
    assert (row["flow"], row["sni"], row["outcome"], row["bytes_up"]) == ("f-1", "shop.example", "decrypted", 77)
    assert sessions.count(outcome="decrypted") == 1


def test_attach_of_unknown_flow_and_double_close_are_harmless() -> None:
    sessions, _ = table()
    session = sessions.open("lan", ("192.0.2.10", 1), ("192.0.2.20", 443))
    sessions.attach(FlowRecord("f", "t", "lan", "192.0.2.99", 1, "192.0.2.20", 443))
    sessions.close(session)
    sessions.close(session)
    assert len(sessions) == 0


def test_reused_tuple_is_not_closed_by_the_old_session() -> None:
    """A client port reused while the old handler still runs: the newer entry stays."""
    sessions, _ = table()
    old = sessions.open("lan", ("192.0.2.10", 1), ("192.0.2.20", 443))
    sessions.open("lan", ("192.0.2.10", 1), ("192.0.2.20", 443))
    sessions.close(old)
    assert len(sessions) == 1
