"""The benchmark's parsers of load-tool output (tests/bench/figures.py)."""

from __future__ import annotations

import pytest

from tests.bench.figures import (
    MB,
    BenchError,
    CurlTransfer,
    IdleMemoryRun,
    parallel_bulk,
    parse_curl_transfer,
    parse_s_time_progress,
    parse_wrk,
    parse_wrk_latency,
)

WRK_LATENCY = """Running 1s test @ https://shop.example/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   133.83us  270.18us   4.28ms   98.05%
    Req/Sec     9.31k     1.33k   11.41k    60.00%
  Latency Distribution
     50%  105.00us
     75%  114.00us
     90%  131.00us
     99%    1.39ms
  9269 requests in 1.00s, 2.25MB read
Requests/sec:   9252.09
Transfer/sec:      2.24MB
"""

S_TIME = """Collecting connection statistics for 3 seconds
******

6 connections in 0.01s; 600.00 connections/user sec, bytes read 1494
6 connections in 4 real seconds, 249 bytes read per connection
"""


def test_wrk_latency_percentiles_in_microseconds_whatever_the_unit() -> None:
    run = parse_wrk_latency(WRK_LATENCY)
    assert (run.requests, run.p50_us, run.p99_us) == (9269, 105.0, 1390.0)


def test_wrk_latency_without_distribution_is_refused() -> None:
    plain = WRK_LATENCY.replace("     50%  105.00us\n", "")
    with pytest.raises(BenchError):
        parse_wrk_latency(plain)


def test_wrk_counts_socket_errors_and_non_2xx() -> None:
    text = WRK_LATENCY + "  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\n"
    run = parse_wrk(text)
    assert (run.rate, run.socket_errors, run.non_2xx) == (9252.09, 6, 4)


@pytest.mark.parametrize(("text", "counts"), [
    (S_TIME, (6, 0)),
    ("Collecting connection statistics for 9 seconds\n**r*t", (5, 1)),
    ("Collecting connection statistics for 9 seconds\n", (0, 0)),
], ids=["finished", "stopped-with-resumed-and-tls1.0", "nothing-yet"])
def test_s_time_progress_counts_connections_and_resumed(text: str, counts: tuple[int, int]) -> None:
    assert parse_s_time_progress(text) == counts


def test_s_time_without_its_header_is_refused() -> None:
    with pytest.raises(BenchError):
        parse_s_time_progress("connect: Connection refused\nconnect:errno=111")


@pytest.mark.parametrize("text", ["", "1 2 3", "a 0.1 0.2 200", "100 0.5 0.5 200"],
                         ids=["empty", "three-fields", "not-a-number", "no-transfer-time"])
def test_curl_output_that_is_not_a_transfer_is_refused(text: str) -> None:
    with pytest.raises(BenchError):
        parse_curl_transfer(text)


def test_curl_transfer_time_leaves_out_set_up() -> None:
    transfer = parse_curl_transfer("67108864 0.012 0.212 200")
    assert transfer.transfer_seconds == pytest.approx(0.2)


def test_parallel_downloads_span_first_request_to_last_byte() -> None:
    transfers = [CurlTransfer(10 * MB, 0.010, 1.010, 200), CurlTransfer(10 * MB, 0.030, 2.010, 200)]
    run = parallel_bulk(transfers)
    assert (run.downloads, run.size, run.seconds) == (2, 20 * MB, pytest.approx(2.0))
    assert run.mb_per_second == pytest.approx(10.0)


def test_parallel_downloads_need_one_transfer() -> None:
    with pytest.raises(BenchError):
        parallel_bulk([])


def test_idle_memory_is_the_growth_per_connection() -> None:
    assert IdleMemoryRun(connections=1000, rss_before_kib=50_000, rss_after_kib=114_000).kib_per_connection == 64.0
