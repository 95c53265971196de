"""What the gateway benchmark measures, as values, and the parsers that turn the load
tools' output into them. Pure: text in, values out (unit-tested in tests/unit/bench/).

Units follow issue 8's table: MB is 10**6 bytes and GB 10**9, so the figures read like
the table they are compared with.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

MB = 1_000_000
GB = 1_000_000_000
KIB = 1024


class BenchError(RuntimeError):
    """A load could not be measured; says which tool and quotes what it printed."""


class Route(Enum):
    DIRECT = "direct"
    GATEWAY = "gateway"


# --- one load's result -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeRun:
    """`clients` processes of `openssl s_time -new` at once, counted at the origin."""

    clients: int
    window_connections: int
    """Connections the origin completed inside the window (all clients running)."""
    window_seconds: float
    connections: int
    """Access log lines of the whole load, ramp-up and ramp-down included."""
    resumed: int
    """Of those, `ssl_session_reused`: 0 proves full handshakes on the origin's side."""
    client_connections: int
    """What the s_time processes reported (one character per connection), a cross-check."""
    client_resumed: int
    """Of those, resumed as the clients saw it: 0 proves full handshakes on their side."""

    @property
    def rate(self) -> float:
        return self.window_connections / self.window_seconds


@dataclass(frozen=True, slots=True)
class KeepAliveRun:
    requests: int
    rate: float
    """wrk's Requests/sec (requests / its own precise run time)."""
    socket_errors: int
    non_2xx: int


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """wrk with one connection: one request at a time on a kept-alive connection."""

    requests: int
    p50_us: float
    p99_us: float


@dataclass(frozen=True, slots=True)
class BulkRun:
    """One or more simultaneous downloads of the bulk file."""

    downloads: int
    size: int
    """Bytes received by all downloads together."""
    seconds: float
    """From the first request sent to the last byte received (no TCP or TLS set-up)."""

    @property
    def mb_per_second(self) -> float:
        return self.size / MB / self.seconds


@dataclass(frozen=True, slots=True)
class IdleMemoryRun:
    """The gateway's resident memory before and after `connections` idle decrypted
    connections were opened (each after one request) and left idle."""

    connections: int
    rss_before_kib: int
    rss_after_kib: int

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.connections


@dataclass(frozen=True, slots=True)
class Usage:
    """A snapshot of a process tree from /proc."""

    cpu_seconds: float
    rss_kib: int
    hwm_kib: int
    processes: int


@dataclass(frozen=True, slots=True)
class LoadCost:
    """What one load cost the gateway: its CPU seconds over the load's wall time."""

    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Round:
    route: Route
    repetition: int
    issuer: str
    handshakes: HandshakeRun
    keepalive: KeepAliveRun
    latency: LatencyRun
    bulk: BulkRun
    parallel: BulkRun
    idle: IdleMemoryRun | None = None
    """Gateway rounds only."""
    costs: dict[str, LoadCost] = field(default_factory=dict)
    """Gateway rounds only: load name -> cost (the handshake cost is its window's)."""
    usage: Usage | None = None
    """Gateway rounds only: the gateway at the end of the round."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Gateway rounds only: `outcome (reason)` -> flows, from the inspection log."""


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


# --- parsing the tools' output ---------------------------------------------------------

S_TIME_FULL = "*t3"
"""s_time prints one character per connection: `*` (or `t` for TLS 1.0, `3` for SSL 3)
for a new session, `r` for a resumed one."""
S_TIME_RESUMED = "r"


def parse_s_time_progress(text: str) -> tuple[int, int]:
    """(connections, resumed) from what one `openssl s_time` process printed so far:
    its progress characters, the line after its `Collecting connection statistics` header.

    The benchmark stops s_time when its window closes, so there is no summary to read; and
    s_time's own rate would be useless anyway (it counts whole seconds of real time).

    Raises:
        BenchError: no header (the process did not start).
    """
    header, _, rest = text.partition("\n")
    if not header.startswith("Collecting connection statistics"):
        raise BenchError(f"openssl s_time: unexpected output {text[-500:]!r}")
    progress = rest.split("\n", 1)[0]
    return (sum(progress.count(c) for c in S_TIME_FULL + S_TIME_RESUMED), progress.count(S_TIME_RESUMED))


_WRK_REQUESTS = re.compile(r"(\d+) requests in [\d.]+\w+, ")
_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_TO_MICROSECONDS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text: str) -> KeepAliveRun:
    """wrk's summary to a run.

    Raises:
        BenchError: the request count or rate line is missing.
    """
    requests, rate = _WRK_REQUESTS.search(text), _WRK_RATE.search(text)
    if requests is None or rate is None:
        raise BenchError(f"wrk: unexpected output {text[-500:]!r}")
    errors = _WRK_SOCKET_ERRORS.search(text)
    non_2xx = _WRK_NON_2XX.search(text)
    return KeepAliveRun(
        requests=int(requests.group(1)),
        rate=float(rate.group(1)),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def parse_wrk_latency(text: str) -> LatencyRun:
    """`wrk --latency`'s 50 % and 99 % lines (wrk prints us, ms or s) to microseconds.

    Raises:
        BenchError: no request count, or either percentile is missing.
    """
    run = parse_wrk(text)
    found = {p: float(v) * _TO_MICROSECONDS[unit] for p, v, unit in _WRK_PERCENTILE.findall(text)}
    if "50" not in found or "99" not in found:
        raise BenchError(f"wrk --latency: no latency distribution in {text[-500:]!r}")
    return LatencyRun(requests=run.requests, p50_us=found["50"], p99_us=found["99"])


CURL_BULK_FORMAT = "%{size_download} %{time_pretransfer} %{time_total} %{http_code}"


@dataclass(frozen=True, slots=True)
class CurlTransfer:
    size: int
    pretransfer: float
    """Seconds from curl's start until the request was sent (DNS, TCP and TLS done)."""
    total: float
    http_code: int

    @property
    def transfer_seconds(self) -> float:
        return self.total - self.pretransfer


def parse_curl_transfer(text: str) -> CurlTransfer:
    """curl's `-w CURL_BULK_FORMAT` output.

    Raises:
        BenchError: not four numbers, or a zero transfer time.
    """
    try:
        size, pretransfer, total, code = text.split()
        transfer = CurlTransfer(int(size), float(pretransfer), float(total), int(code))
    except ValueError as e:
        raise BenchError(f"curl: unexpected -w output {text!r}") from e
    if transfer.transfer_seconds <= 0:
        raise BenchError(f"curl: transfer time {transfer.transfer_seconds} s in {text!r}")
    return transfer


def parallel_bulk(transfers: Sequence[CurlTransfer]) -> BulkRun:
    """Simultaneous downloads to one figure: all bytes over the time from the first
    request sent to the last byte received.

    The curl processes start within a few milliseconds of each other (one shell starts
    them), so their own clocks, each from its start, are close enough to one clock: the
    first request went out at the smallest `pretransfer`, the last byte came at the
    largest `total`. Process start-up and TCP/TLS set-up stay out, as for one download.

    Raises:
        BenchError: no transfers.
    """
    if not transfers:
        raise BenchError("parallel bulk: no transfers")
    seconds = max(t.total for t in transfers) - min(t.pretransfer for t in transfers)
    return BulkRun(downloads=len(transfers), size=sum(t.size for t in transfers), seconds=seconds)


def parse_cpu_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/PID/stat."""
    # The command name is parenthesised and may contain spaces; fields after it start
    # at field 3 (state), so utime (field 14) and stime (field 15) are [11] and [12].
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def parse_kib(text: str, key: str) -> int:
    """One `kB` value (VmRSS, VmHWM, MemTotal) from /proc/PID/status or /proc/meminfo;
    0 when absent."""
    match = re.search(rf"^{key}:\s+(\d+) kB$", text, re.M)
    return int(match.group(1)) if match else 0


def tally_outcomes(lines: Sequence[str]) -> Counter[str]:
    """`outcome (reason)` -> count over inspection-log JSON lines."""
    tally: Counter[str] = Counter()
    for line in lines:
        if line.strip():
            record = json.loads(line)
            tally[f"{record.get('outcome')} ({record.get('reason')})"] += 1
    return tally
