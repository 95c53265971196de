"""`tlsgw log` queries (issue 6)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Network

import pytest

from gateway.observability.logquery import LogQuery, QueryError, parse_time

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)


def line(minute: int, client: str, sni: str | None, outcome: str) -> str:
    return json.dumps({"time": f"2024-01-01T11:{minute:02d}:00.000+00:00", "client": client, "server": "192.0.2.20",
                       "sni": sni, "outcome": outcome})


LINES = [
    line(0, "192.0.2.10", "shop.example", "decrypted"),
    line(10, "192.0.2.11", "www.bank.example", "not decrypted"),
    '{"torn',
    line(20, "198.51.100.7", "bank.example", "not decrypted"),
    line(30, "192.0.2.10", None, "blocked"),
]


@pytest.mark.parametrize(("params", "clients"), [
    ({}, ["192.0.2.10", "192.0.2.11", "198.51.100.7", "192.0.2.10"]),
    ({"sni": "*.BANK.example."}, ["192.0.2.11", "198.51.100.7"]),
    ({"sni": "bank.example"}, ["198.51.100.7"]),
    ({"address": "198.51.100.0/24"}, ["198.51.100.7"]),
    ({"address": "192.0.2.20"}, ["192.0.2.10", "192.0.2.11", "198.51.100.7", "192.0.2.10"]),
    ({"outcome": "not_decrypted"}, ["192.0.2.11", "198.51.100.7"]),
    ({"since": "45m"}, ["198.51.100.7", "192.0.2.10"]),
    ({"since": "2024-01-01T11:05", "until": "2024-01-01T11:20"}, ["192.0.2.11", "198.51.100.7"]),
    ({"limit": 2}, ["198.51.100.7", "192.0.2.10"]),
], ids=["all", "wildcard-sni", "exact-sni", "client-network", "server-address", "outcome", "age", "window",
        "newest-n"])
def test_queries(params: dict[str, object], clients: list[str]) -> None:
    records = LogQuery.from_params(params, NOW).run(LINES)
    assert [r["client"] for r in records] == clients


@pytest.mark.parametrize(("params", "name"), [
    ({"address": "not-an-ip"}, "address"), ({"limit": 0}, "limit"), ({"limit": "5"}, "limit"),
    ({"since": "yesterday"}, "yesterday"), ({"sni": 5}, "sni"),
], ids=["address", "limit-zero", "limit-text", "since", "sni-type"])
def test_bad_parameters_name_themselves(params: dict[str, object], name: str) -> None:
    with pytest.raises(QueryError, match=name):
        LogQuery.from_params(params, NOW)


def test_times_and_params_round_trip() -> None:
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2024-01-01T10:00", NOW) == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    query = LogQuery(address=IPv4Network("192.0.2.0/24"), since=NOW)
    assert query.to_params() == {"address": "192.0.2.0/24", "since": NOW.isoformat(), "limit": 100}
