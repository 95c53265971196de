"""Benchmark: what the gateway costs a client, compared with the bare bridge.

Run as root from the repository root (it builds a namespace lab, see gateway/lab/)::

    .venv/bin/python -m tests.bench.bench_gateway [--seconds N] [--repeat K] [--bulk-mb M]

This is a script that prints figures, never a test: speed is not asserted anywhere
(STYLE.md E), and pytest does not collect this directory (tests/conftest.py).

Theory of operation
-------------------
One lab (client -- bridge -- nginx origin) serves both sides of the comparison, so the
only difference between them is tlsgw:

- *direct*: tlsgw is not running; the gateway namespace has no rules and the bridge
  forwards the frames untouched.
- *gateway*: tlsgw runs with the lab's demo configuration; `shop.example` is decrypted by
  the client policy (forged leaf, inspection, re-encryption, client address spoofed
  upstream).

Rounds alternate direct, gateway, direct, gateway ... (`--repeat` pairs), tlsgw being
started before and stopped by PID after each gateway round. Interleaving spreads slow
drifts of a shared 2-core machine (another job, CPU frequency, page cache) over both
sides instead of charging them to whichever ran second. Each figure is reported as the
median of the rounds with their range, and the ratio gateway/direct of the medians with
the range of the per-pair ratios.

Every round first proves which path it measured: the leaf certificate the client is shown
must be issued by the public root (direct) or by tlsgw's signing CA (gateway), so a rule
left behind by a stopped gateway, or a gateway that spliced instead of decrypting, cannot
pass unnoticed. The gateway's inspection log is tallied per round (outcomes and reasons).

The three loads, all from real clients in the client namespace:

1. Full TLS handshakes per second: `handshake_client.py` (next to this file), a sequential
   stdlib client: new TCP connection, full handshake with SNI and certificate
   verification, one `GET /` with `Connection: close`, read to EOF. It never offers a
   session and checks `session_reused` on each connection; the origin runs with session
   resumption off and its access log's `ssl_session_reused` is counted too. It times
   itself (first connect to last EOF), so interpreter start-up is not counted.
   `openssl s_time -new` would be the classic tool, but it sends no SNI, and without SNI
   tlsgw checks the upstream certificate against the server's IP address and (lab
   configuration: block_invalid_certificates) blocks the flow. Direct, the Python client
   makes as many connections per second as s_time on this machine (both ~380/s).
2. Requests per second on keep-alive connections: `wrk` (HTTP/1.1, `--connections`
   connections opened once, one thread). wrk does not verify certificates, which is fine
   for a load generator: the path check above already verified the chain. wrk first
   opens and closes one connection to test the address; tlsgw logs it as `blocked
   (client closed before sending a ClientHello)`, one per gateway round.
3. One bulk download: `curl` fetches `/bulk` (`--bulk-mb` MiB of random bytes); MiB/s =
   size / (total time - time until the request was sent), i.e. without TCP and TLS set-up.

During gateway rounds the gateway's process tree is sampled from /proc: CPU seconds
(utime + stime) consumed during each load, and resident memory (VmRSS, and the peak
VmHWM) at the end of the round. CPU near 100 % of one core means the single event loop was
the bottleneck. On a 2-core machine the client, tlsgw and nginx share the cores, so the
figures are for comparison with each other, not a capacity statement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import FrameType

from cryptography import x509

from gateway.errors import TlsgwError
from gateway.lab import netns
from gateway.lab.origin import AccessLogEntry, OriginOptions, parse_access_log_line
from gateway.lab.scenario import InterceptionLab, ScenarioError, environment_ready

HOST = "shop.example"
"""The decrypted site of the lab's demo configuration (www.bank.example is exempt)."""
DEFAULT_SECONDS = 3  # per load and round: ~1000 handshakes direct, and about a minute in all
DEFAULT_REPEAT = 3  # the fewest pairs whose median ignores one disturbed round
DEFAULT_BULK_MB = 64  # long enough (>0.1 s at several hundred MiB/s) to dwarf set-up costs
DEFAULT_CONNECTIONS = 8  # wrk keep-alive connections: keeps an event loop busy, fits 2 cores
MIB = 1024 * 1024
# A stalled connection must not hang the benchmark: each client is killed (by its PID,
# through subprocess's timeout) this long after its load should have ended.
CLIENT_GRACE_SECONDS = 30.0
# nginx writes an access log line just after the response; give the last ones time to land.
ACCESS_LOG_SETTLE_SECONDS = 5.0
CLIENT_TOOLS = ("wrk", "curl")
HANDSHAKE_CLIENT = Path(__file__).with_name("handshake_client.py")


class BenchError(RuntimeError):
    """A load could not be measured; says which tool and quotes what it printed."""


class Route(Enum):
    DIRECT = "direct"
    GATEWAY = "gateway"


# --- results (values) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeRun:
    connections: int
    seconds: float
    """From the first connect to the last EOF, timed by the client itself."""
    client_resumed: int
    """Connections on which the client saw `session_reused`."""
    origin_requests: int = 0
    """Access log lines the origin wrote during the run (one per connection)."""
    origin_resumed: int = 0

    @property
    def rate(self) -> float:
        return self.connections / self.seconds


@dataclass(frozen=True, slots=True)
class KeepAliveRun:
    requests: int
    rate: float
    """wrk's Requests/sec (requests / its own precise run time)."""
    socket_errors: int
    non_2xx: int


@dataclass(frozen=True, slots=True)
class BulkRun:
    size: int
    seconds: float
    """From sending the request to the last byte (no TCP or TLS set-up)."""
    http_code: int

    @property
    def mib_per_second(self) -> float:
        return self.size / MIB / self.seconds


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
    bulk: BulkRun
    costs: dict[str, LoadCost] = field(default_factory=dict)
    """Gateway rounds only: load name -> cost."""
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


# --- parsing the tools' output (pure) --------------------------------------------------


def parse_handshake_client(text: str) -> HandshakeRun:
    """handshake_client.py's JSON summary line to a run.

    Raises:
        BenchError: not that JSON object, or a run too short to time.
    """
    try:
        raw = json.loads(text)
        run = HandshakeRun(int(raw["connections"]), float(raw["seconds"]), int(raw["resumed"]))
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"handshake client: unexpected output {text[-500:]!r}") from e
    if run.connections < 1 or run.seconds <= 0:
        raise BenchError(f"handshake client: {run.connections} connections in {run.seconds} s, too few to time")
    return run


_WRK_REQUESTS = re.compile(r"(\d+) requests in [\d.]+\w+, ")
_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


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


CURL_BULK_FORMAT = "%{size_download} %{time_pretransfer} %{time_total} %{http_code}"


def parse_curl_bulk(text: str) -> BulkRun:
    """curl's `-w CURL_BULK_FORMAT` output to a run.

    Raises:
        BenchError: not four numbers, or a zero transfer time.
    """
    try:
        size, pretransfer, total, code = text.split()
        run = BulkRun(size=int(size), seconds=float(total) - float(pretransfer), http_code=int(code))
    except ValueError as e:
        raise BenchError(f"curl: unexpected -w output {text!r}") from e
    if run.seconds <= 0:
        raise BenchError(f"curl: transfer time {run.seconds} s in {text!r}")
    return run


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


# --- processes and the machine (impure) ------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants, should tlsgw ever run worker processes."""
    tree, frontier = [pid], [pid]
    while frontier:
        children = [c for p in frontier for c in netns.child_pids(p)]
        tree += children
        frontier = children
    return tree


def read_usage(pid: int) -> Usage:
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = rss = hwm = count = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
            status = Path(f"/proc/{member}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the scan and the read
        cpu += parse_cpu_ticks(stat)
        rss += parse_kib(status, "VmRSS")
        hwm += parse_kib(status, "VmHWM")
        count += 1
    return Usage(cpu_seconds=cpu / ticks, rss_kib=rss, hwm_kib=hwm, processes=count)


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def describe_machine() -> list[str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    usable = len(os.sched_getaffinity(0))
    memory = parse_kib(Path("/proc/meminfo").read_text(), "MemTotal")
    return [
        f"machine : {os.cpu_count()} CPUs ({usable} usable), {model}, {memory / MIB:.1f} GiB RAM",
        f"kernel  : Linux {platform.release()}",
        f"software: Python {platform.python_version()}; {_first_line(['openssl', 'version'])}; "
        f"{_first_line(['nginx', '-v'])}; {_first_line(['wrk', '--version']).split(' [')[0]}; "
        f"{' '.join(_first_line(['curl', '--version']).split()[:2])}",
    ]


# --- the benchmark ---------------------------------------------------------------------


class FileTail:
    """The complete lines appended to a file since the last read, by byte offset: the
    logs grow by tens of thousands of lines per round, far too many to re-read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read_new(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [line for line in complete.decode(errors="replace").splitlines() if line.strip()]


@dataclass
class Bench:
    lab: InterceptionLab
    seconds: int
    bulk_mb: int
    connections: int
    _gateway_pid: int | None = None
    """Set during a gateway round: whose CPU the loads are charged to."""
    _costs: dict[str, LoadCost] = field(default_factory=dict)

    @property
    def client_ns(self) -> str:
        return self.lab.lab.client_ns

    def expected_issuer(self, route: Route) -> str:
        assert self.lab.pki is not None
        ca_file = self.lab.pki.signing_ca_file if route is Route.GATEWAY else self.lab.pki.public_root_file
        return x509.load_pem_x509_certificate(ca_file.read_bytes()).subject.rfc4514_string()

    def check_path(self, route: Route) -> str:
        """Prove which path this round measures, and warm it (tlsgw forges the leaf once).

        Raises:
            BenchError: the page did not load, or the leaf has the other route's issuer.
        """
        fetch = self.lab.fetch(HOST)
        expected = self.expected_issuer(route)
        if not fetch.ok or not fetch.verify_ok:
            raise BenchError(f"{route.value}: https://{HOST}/ failed: {fetch.curl_error or 'verification failed'}")
        if fetch.issuer != expected:
            raise BenchError(f"{route.value}: the client was shown a leaf issued by {fetch.issuer}, expected {expected}")
        return fetch.issuer

    def run_client(self, load: str, argv: Sequence[str], timeout: float) -> str:
        """Run one client in the client namespace and return its stdout; in a gateway round,
        charge the gateway's CPU during exactly this run to `load`.

        Raises:
            BenchError: the client exited non-zero (its stderr is quoted).
        """
        pid = self._gateway_pid
        before = read_usage(pid).cpu_seconds if pid is not None else 0.0
        start = time.monotonic()
        proc = self.lab.lab.run(self.client_ns, argv, check=False, timeout=timeout)
        wall = time.monotonic() - start
        if pid is not None:
            self._costs[load] = LoadCost(read_usage(pid).cpu_seconds - before, wall)
        if proc.returncode != 0:
            raise BenchError(f"{load}: {argv[0]} exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc.stdout

    def handshakes(self) -> HandshakeRun:
        origin_log = FileTail(self.lab.origin_for(HOST).access_log_path)
        run = parse_handshake_client(self.run_client("handshakes", [
            sys.executable, str(HANDSHAKE_CLIENT), HOST, str(self.lab.client_bundle), str(self.seconds)],
            timeout=self.seconds + CLIENT_GRACE_SECONDS))
        # nginx writes each line just after its response; the last ones may still be due.
        entries: list[AccessLogEntry] = []
        deadline = time.monotonic() + ACCESS_LOG_SETTLE_SECONDS
        while True:
            entries += [parse_access_log_line(line) for line in origin_log.read_new()]
            if len(entries) >= run.connections or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return dataclasses.replace(
            run, origin_requests=len(entries), origin_resumed=sum(e.ssl_session_reused for e in entries))

    def keepalive(self) -> KeepAliveRun:
        return parse_wrk(self.run_client("keepalive", [
            "wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds}s", f"https://{HOST}/"],
            timeout=self.seconds + CLIENT_GRACE_SECONDS))

    def bulk(self) -> BulkRun:
        run = parse_curl_bulk(self.run_client("bulk", [
            "curl", "-sS", "--cacert", str(self.lab.client_bundle), "-o", "/dev/null",
            "-w", CURL_BULK_FORMAT, f"https://{HOST}/bulk"],
            timeout=CLIENT_GRACE_SECONDS * 4))
        if run.http_code != 200 or run.size != self.bulk_mb * MIB:
            raise BenchError(f"bulk: HTTP {run.http_code}, {run.size} bytes, expected {self.bulk_mb * MIB}")
        return run

    def measure(self, route: Route, repetition: int) -> Round:
        """One round on one route; for the gateway, starts and (always) stops tlsgw."""
        inspection_log = FileTail(self.lab.inspection_log)
        self._costs = {}
        self._gateway_pid = self.lab.start_gateway().pid if route is Route.GATEWAY else None
        usage: Usage | None = None
        log = ""
        try:
            issuer = self.check_path(route)
            handshakes = self.handshakes()
            keepalive = self.keepalive()
            bulk = self.bulk()
            if self._gateway_pid is not None:
                usage = read_usage(self._gateway_pid)
        finally:
            if self._gateway_pid is not None:
                log = self.lab.stop_gateway()
                self._gateway_pid = None
        if "Traceback" in log:
            print(f"  warning: tlsgw logged a traceback in round {repetition}:\n"
                  + log[log.index("Traceback"):][:2000], file=sys.stderr)
        outcomes = tally_outcomes(inspection_log.read_new()) if route is Route.GATEWAY else Counter[str]()
        return Round(route, repetition, issuer, handshakes, keepalive, bulk, dict(self._costs), usage, outcomes)


# --- report ----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(spread: Spread) -> str:
    return f"{_fmt(spread.median)} [{_fmt(spread.low)}-{_fmt(spread.high)}]"


def report(rounds: Sequence[Round], bulk_mb: int, connections: int) -> list[str]:
    direct = [r for r in rounds if r.route is Route.DIRECT]
    gateway = [r for r in rounds if r.route is Route.GATEWAY]
    metrics = (
        ("new TLS connections/s (full handshake)", lambda r: r.handshakes.rate),
        (f"keep-alive requests/s ({connections} conns)", lambda r: r.keepalive.rate),
        (f"bulk download MiB/s ({bulk_mb} MiB)", lambda r: r.bulk.mib_per_second),
    )
    width = 42
    lines = [f"{'median [min-max] over rounds':<{width}} {'direct':<24} {'gateway':<24} gateway/direct"]
    for title, value in metrics:
        d = Spread.of([value(r) for r in direct])
        row = f"{title:<{width}} {_cell(d):<24} "
        if gateway:
            g = Spread.of([value(r) for r in gateway])
            partner = {r.repetition: r for r in direct}
            pairs = [value(gr) / value(partner[gr.repetition]) for gr in gateway if gr.repetition in partner]
            row += f"{_cell(g):<24} {g.median / d.median:.2f} [{min(pairs):.2f}-{max(pairs):.2f}]"
        else:
            row += f"{'n/a':<24} n/a"
        lines.append(row)

    lines.append("")
    for name, group in (("direct", direct), ("gateway", gateway)):
        if not group:
            continue
        conns = sum(r.handshakes.connections for r in group)
        issuers = sorted({r.issuer for r in group})
        lines.append(f"{name:<7} path: leaf shown to the client issued by {' / '.join(issuers)}")
        lines.append(
            f"{name:<7} handshake load: resumed sessions seen by the client "
            f"{sum(r.handshakes.client_resumed for r in group)}/{conns}, by the origin "
            f"{sum(r.handshakes.origin_resumed for r in group)}/{sum(r.handshakes.origin_requests for r in group)}"
            " (0 = all full handshakes)")
    issues = [
        f"{r.route.value} round {r.repetition}: wrk {r.keepalive.socket_errors} socket errors, "
        f"{r.keepalive.non_2xx} non-2xx"
        for r in rounds if r.keepalive.socket_errors or r.keepalive.non_2xx
    ]
    lines += [f"warning: {issue}" for issue in issues]
    if not gateway:
        return lines

    lines += ["", "tlsgw process (gateway rounds):"]
    units = {
        "handshakes": ("ms CPU per connection", lambda r: r.handshakes.connections, 1e3),
        "keepalive": ("us CPU per request", lambda r: r.keepalive.requests, 1e6),
        "bulk": ("s CPU per GiB", lambda r: r.bulk.size / (1024 * MIB), 1.0),
    }
    for load, (unit, count, scale) in units.items():
        shares = Spread.of([100 * r.costs[load].cpu_share for r in gateway])
        per = Spread.of([r.costs[load].cpu_seconds / count(r) * scale for r in gateway])
        lines.append(f"  {load:<11} CPU {_cell(shares)} % of one core; {_cell(per)} {unit}")
    total_cpu = sum(c.cpu_seconds for r in gateway for c in r.costs.values())
    total_wall = sum(c.wall_seconds for r in gateway for c in r.costs.values())
    lines.append(f"  all loads   {total_cpu:.2f} CPU seconds in {total_wall:.1f} s of load "
                 f"({100 * total_cpu / total_wall:.0f} % of one core)")
    usages = [r.usage for r in gateway if r.usage is not None]
    if usages:
        rss = Spread.of([u.rss_kib / 1024 for u in usages])
        lines.append(f"  memory      VmRSS at end of round {_cell(rss)} MiB; peak VmHWM "
                     f"{max(u.hwm_kib for u in usages) / 1024:.1f} MiB; processes {max(u.processes for u in usages)}")
    outcomes: Counter[str] = Counter()
    for r in gateway:
        outcomes.update(r.outcomes)
    lines.append("  inspection log: " + (", ".join(f"{n} {k}" for k, n in outcomes.most_common()) or "no records"))
    return lines


# --- command line ----------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_gateway",
        description="Compare the bare bridge with tlsgw in a namespace lab (run as root).")
    parser.add_argument("--seconds", type=int, default=DEFAULT_SECONDS, help="per load and round (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help="direct/gateway round pairs (default %(default)s)")
    parser.add_argument("--bulk-mb", type=int, default=DEFAULT_BULK_MB, help="MiB of the bulk download (default %(default)s)")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help="wrk keep-alive connections (default %(default)s)")
    args = parser.parse_args(argv)
    for name in ("seconds", "repeat", "bulk_mb", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = environment_ready()
    if reason is None:
        missing = [t for t in CLIENT_TOOLS if subprocess.run(["sh", "-c", f"command -v {t}"],
                                                             capture_output=True).returncode != 0]
        reason = f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})" if missing else None
    if reason is not None:
        print(f"bench_gateway: {reason}", file=sys.stderr)
        return 1

    print(f"tlsgw benchmark: {args.repeat} x (direct, gateway) rounds, {args.seconds} s per load, "
          f"bulk {args.bulk_mb} MiB, https://{HOST}/")
    for line in describe_machine():
        print(line)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # A workdir of our own, removed at the end: it holds two bulk files of --bulk-mb each.
    workdir = Path(tempfile.mkdtemp(prefix="tlsgw-bench-"))
    lab = InterceptionLab(workdir=workdir,
                          origin_options=OriginOptions(session_resumption=False, bulk_mb=args.bulk_mb))
    rounds: list[Round] = []
    failure: str | None = None
    try:
        lab.start(with_gateway=False)
        print(f"lab     : run {lab.lab.run_id}, workdir {lab.workdir}")
        bench = Bench(lab, args.seconds, args.bulk_mb, args.connections)
        gateway_ok = True
        for repetition in range(1, args.repeat + 1):
            for route in Route:
                if route is Route.GATEWAY and not gateway_ok:
                    continue
                try:
                    result = bench.measure(route, repetition)
                except (ScenarioError, BenchError) as e:
                    if route is Route.DIRECT:
                        raise
                    failure = f"gateway round {repetition} failed: {e}"
                    print(f"  {failure}", flush=True)
                    gateway_ok = False
                    continue
                rounds.append(result)
                print(f"  round {repetition} {route.value:<7}: {result.handshakes.rate:7.0f} conn/s, "
                      f"{result.keepalive.rate:7.0f} req/s, {result.bulk.mib_per_second:6.0f} MiB/s"
                      + (f", tlsgw CPU {sum(c.cpu_seconds for c in result.costs.values()):.2f} s"
                         if result.costs else ""), flush=True)
        print()
        for line in report(rounds, args.bulk_mb, args.connections):
            print(line)
        if failure is not None:
            print(f"\n{failure}")
        return 1 if failure is not None else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ScenarioError, BenchError, TlsgwError) as e:
        print(f"bench_gateway: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            lab.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)
        print("lab torn down")


if __name__ == "__main__":
    sys.exit(main())
