"""What `tlsgw status` and `tlsgw stats` print about worker processes (issue 8)."""

from __future__ import annotations

from typing import Any

from gateway.control.commands import format_stats, format_status
from gateway.observability.metrics import stats_view

STATUS: dict[str, Any] = {
    "version": "0.1.0", "pid": 42, "config": "/etc/tlsgw/tlsgw.yaml", "started": "2024-01-01T00:00:00+00:00",
    "uptime_s": 61.0,
    "mode": {"client_inspection": True, "server_inspection": True, "fail_mode": "open", "rules": "managed",
             "max_concurrent": 10, "on_exceed": "bypass"},
    "fallback": {"engaged": False, "causes": {}, "kept_tuples": 0},
    "segments": [], "policies": [],
    "sessions": {"active": 3, "decrypting": 2, "accepted_total": 100},
    "last_reload": None,
}
WORKERS = [
    {"index": 0, "pid": 101, "state": "serving", "started": "2024-01-01T00:00:00+00:00", "restarts": 0,
     "last_exit": None, "sessions_active": 2, "decrypting": 1, "counters": {"connections": 60}},
    {"index": 1, "pid": 202, "state": "serving", "started": "2024-01-01T00:00:30+00:00", "restarts": 1,
     "last_exit": "2024-01-01T00:00:29+00:00: pid 150 was killed by SIGKILL", "sessions_active": 1,
     "decrypting": 1, "counters": {"connections": 40}},
]


def test_status_shows_each_worker_and_its_restarts() -> None:
    lines = format_status({**STATUS, "workers": WORKERS}).splitlines()
    assert "worker 0:   pid 101 serving, 2 live, 1 decrypting" in lines
    restarted = next(line for line in lines if line.startswith("worker 1:"))
    assert "restarted 1x" in restarted and "pid 150 was killed by SIGKILL" in restarted


def test_status_of_a_single_process_has_no_worker_lines() -> None:
    assert "worker" not in format_status({**STATUS, "workers": []})


def test_stats_show_each_workers_share() -> None:
    counters = {"connections": 100, "outcome.decrypted": 100}
    text = format_stats({"view": stats_view(counters), "workers": WORKERS})
    assert "connections per worker process\n  worker 0 (pid 101)  60\n  worker 1 (pid 202)  40" in text
