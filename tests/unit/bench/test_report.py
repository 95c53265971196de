"""The benchmark's table (tests/bench/report.py): medians, ranges and comparisons."""

from __future__ import annotations

from tests.bench.figures import (
    GB,
    BulkRun,
    HandshakeRun,
    IdleMemoryRun,
    KeepAliveRun,
    LatencyRun,
    LoadCost,
    Round,
    Route,
)
from tests.bench.report import Settings, table

SETTINGS = Settings(clients=64, connections=64, bulk_mib=64, parallel=8, idle=1000)


def make_round(route: Route, repetition: int, rate: float, p50: float, cpu: float = 0.0) -> Round:
    gateway = route is Route.GATEWAY
    return Round(
        route=route, repetition=repetition, issuer="CN=x",
        handshakes=HandshakeRun(64, window_connections=int(rate * 3), window_seconds=3.0, connections=0, resumed=0,
                                client_connections=0, client_resumed=0),
        keepalive=KeepAliveRun(requests=1, rate=rate, socket_errors=0, non_2xx=0),
        latency=LatencyRun(requests=1, p50_us=p50, p99_us=p50 * 2),
        bulk=BulkRun(1, size=GB // 2, seconds=1.0),
        parallel=BulkRun(8, size=GB // 2, seconds=1.0),
        idle=IdleMemoryRun(1000, 10_000, 74_000) if gateway else None,
        costs={"bulk": LoadCost(cpu, 1.0), "parallel": LoadCost(cpu, 1.0), "handshakes": LoadCost(cpu, 3.0)}
        if gateway else {},
    )


def row(lines: list[str], title: str) -> str:
    return next(line for line in lines if line.startswith(title))


def test_ratio_is_of_the_medians_with_the_range_of_the_pairs() -> None:
    rounds = [make_round(Route.DIRECT, 1, 100, 80), make_round(Route.GATEWAY, 1, 50, 180),
              make_round(Route.DIRECT, 2, 200, 80), make_round(Route.GATEWAY, 2, 40, 180),
              make_round(Route.DIRECT, 3, 100, 80), make_round(Route.GATEWAY, 3, 30, 180)]
    line = row(table(rounds, SETTINGS), "keep-alive requests/s")
    assert "100 [100-200]" in line and "40.0 [30.0-50.0]" in line
    assert "0.40 [0.20-0.50]" in line


def test_latency_row_shows_what_the_gateway_adds() -> None:
    rounds = [make_round(Route.DIRECT, 1, 100, 80), make_round(Route.GATEWAY, 1, 50, 180)]
    assert "+100 [+100..+100]" in row(table(rounds, SETTINGS), "request latency, kept-alive conn., p50")


def test_gateway_only_rows_have_no_direct_figure() -> None:
    rounds = [make_round(Route.DIRECT, 1, 100, 80), make_round(Route.GATEWAY, 1, 50, 180, cpu=2.0)]
    lines = table(rounds, SETTINGS)
    memory = row(lines, "gateway KiB per idle connection")
    assert memory.split()[6:8] == ["-", "64.0"]
    assert "4.00 [4.00-4.00]" in row(lines, "gateway CPU seconds per GB relayed")
    # 2 CPU seconds over 3 s x 50 handshakes/s = 150 handshakes
    assert "13.3 [13.3-13.3]" in row(lines, "gateway CPU seconds per 1000 handshakes")


def test_every_row_of_issue_8_is_printed() -> None:
    lines = table([make_round(Route.DIRECT, 1, 100, 80), make_round(Route.GATEWAY, 1, 50, 180, cpu=1.0)], SETTINGS)
    assert len(lines) == 1 + 9
