from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from gateway.observability.flowlog import FlowRecord, InspectionLog


def record() -> FlowRecord:
    r = FlowRecord(flow="1-1", time="2026-01-01T00:00:00.000+00:00", segment="lan", client="192.0.2.10",
                   client_port=40000, server="192.0.2.20", server_port=443, sni="shop.example",
                   outcome="decrypted", reason="client policy")
    r.client_tls.version = "TLSv1.3"
    r.upstream_certificate.subject = "CN=shop.example"
    r.http = [{"method": "GET", "path": "/", "host": "shop.example", "status": "200"}]
    return r


def test_json_line_has_every_field_with_nested_legs() -> None:
    """The hand-written serialiser must stay equal to dataclasses.asdict as fields are added."""
    assert json.loads(record().to_json()) == dataclasses.asdict(record())


def test_log_file_gets_one_line_per_flow_and_is_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "log" / "inspection.jsonl"
    log = InspectionLog(str(path))
    log.write(record())
    log.write(record())
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["sni"] == "shop.example"
    assert os.stat(path).st_mode & 0o007 == 0
