"""Benchmark: what the gateway costs a network, compared with the bare bridge, for every
row of issue 8's table. A tool to run before a deployment, on the machine that will run
tlsgw.

Run as root from the repository root (it builds a namespace lab, see gateway/lab/)::

    .venv/bin/python -m tests.bench.bench_gateway [--quick] [--repeat K] [--seconds N]
        [--workers auto|N] [--profile DIR [--profile-native]]

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
median of the rounds with their range, and gateway/direct as the ratio of the medians
(or, for latency, their difference) with the range over the pairs of rounds.

Every round first proves which path it measured: the leaf certificate the client is shown
must be issued by the public root (direct) or by tlsgw's signing CA (gateway), so a rule
left behind by a stopped gateway, or a gateway that spliced instead of decrypting, cannot
pass unnoticed. The gateway's inspection log is tallied per round (outcomes and reasons).

The loads, all real clients in the client namespace, in this order:

1. (gateway rounds) Memory per idle connection: `idle_client.py` (next to this file)
   opens `--idle` decrypted connections, one request each, and holds them idle; tlsgw's
   VmRSS (all its processes) before and after, over the number of connections. First in
   the round, on a gateway that has served one page, so memory freed by earlier loads
   cannot hide what the connections cost.
2. New TLS connections per second, full handshakes, `--clients` at once: as many
   `openssl s_time -new -www /` processes, each a loop of new connection, full handshake,
   `GET /`, close. s_time -new never offers a session (it prints `r` for a resumed one:
   counted, 0 proves it), and the origin runs with session resumption off (its access
   log's `ssl_session_reused` is counted too). The rate is counted at the origin over a
   window that opens once every client has completed a connection and closes `--seconds`
   later, all clients still running (checked), or earlier if the first of them is about to
   stop. s_time's own rate is useless here: it counts whole seconds.
   s_time sends no SNI, so the origin's certificate also names its IP address
   (`issue_server(ip_addresses=...)`), against which tlsgw then verifies the upstream;
   the inspection log shows these flows as `decrypted (client policy (no SNI))`.
   wrk and h2load were rejected: both resume TLS sessions when they reconnect, and tlsgw
   issues session tickets, so they would measure resumed handshakes on the client leg.
3. Requests per second on `--connections` keep-alive connections: `wrk -t2`.
4. Added latency: `wrk -t1 -c1 --latency`, one request at a time on one kept-alive
   connection; its 50th and 99th percentiles, gateway minus direct.
5. One bulk download: `curl` fetches `/bulk` (`--bulk-mb` MiB of random bytes); MB/s =
   size / (total time - time until the request was sent), i.e. without TCP and TLS set-up.
6. `--parallel` simultaneous bulk downloads, one curl process each; total MB/s from the
   first request sent to the last byte received.

During gateway rounds the gateway's process tree (tlsgw and any worker processes) is
read from /proc: CPU seconds (utime + stime) consumed during each load, and resident
memory (VmRSS, and the peak VmHWM) at the end of the round. On a 2-core machine the
clients, tlsgw and nginx share the cores, so the figures are for comparison with each
other, not a capacity statement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography import x509

from gateway.errors import TlsgwError
from gateway.lab import netns
from gateway.lab.netns import BackgroundProcess
from gateway.lab.origin import OriginOptions, parse_access_log_line
from gateway.lab.scenario import InterceptionLab, ScenarioError, environment_ready
from tests.bench.figures import (
    CURL_BULK_FORMAT,
    BenchError,
    BulkRun,
    CurlTransfer,
    HandshakeRun,
    IdleMemoryRun,
    KeepAliveRun,
    LatencyRun,
    LoadCost,
    Round,
    Route,
    Usage,
    parallel_bulk,
    parse_cpu_ticks,
    parse_curl_transfer,
    parse_kib,
    parse_s_time_progress,
    parse_wrk,
    parse_wrk_latency,
    tally_outcomes,
)
from tests.bench.profiles import Recorder, py_spy, summarise_files
from tests.bench.report import Settings, gateway_process, proofs, table

HOST = "shop.example"
"""The decrypted site of the lab's demo configuration (www.bank.example is exempt)."""
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of each load; `--quick` is the same run, smaller."""

    seconds: int = 3  # per timed load and round: thousands of requests, a minute or two in all
    repeat: int = 3  # the fewest pairs whose median ignores one disturbed round
    bulk_mb: int = 64  # MiB: long enough (>0.1 s at several hundred MB/s) to dwarf set-up costs
    clients: int = 64  # issue 8: new connections with 64 at once
    connections: int = 64  # issue 8: keep-alive requests on 64 connections
    parallel: int = 8  # issue 8: 8 parallel bulk downloads
    idle: int = 1000  # issue 8: memory per connection with 1000 idle ones


QUICK = Plan(seconds=1, repeat=1, bulk_mb=16, idle=200)

# The handshake window opens once every s_time process has completed a connection, and
# must close before the first of them stops. They start within milliseconds and usually
# all have connected within half a second; s_time runs this much longer than the window.
# When the first connections take longer (a busy box, a SYN retransmitted after 1 s), the
# window is shortened, down to half of `--seconds`.
WARMUP_ALLOWANCE_SECONDS = 1.5
# s_time stops at the first whole second past its run time: never earlier than this
# before `launch + run time` (the processes start a few milliseconds apart).
S_TIME_END_MARGIN = 0.2
# A stalled connection must not hang the benchmark: each client is killed (by its PID,
# through subprocess's timeout) this long after its load should have ended.
CLIENT_GRACE_SECONDS = 30.0
# nginx writes an access log line just after the response; give the last ones time to land.
ACCESS_LOG_SETTLE_SECONDS = 5.0
# After the idle connections are open, let the gateway finish what each one's last
# request left behind (buffers, the flow's bookkeeping) before its memory is read.
IDLE_SETTLE_SECONDS = 1.0
# The slowest rate at which idle connections are expected to open (full handshakes through
# a busy gateway): sets how long the benchmark waits for the idle client's report.
IDLE_OPEN_RATE = 20
# File descriptors: of the processes holding the idle connections, tlsgw needs the most
# (two sockets per connection: client and upstream); plus a margin for everything else.
FDS_PER_IDLE_CONNECTION = 2
FD_MARGIN = 1024
CLIENT_TOOLS = ("wrk", "curl", "openssl")
IDLE_CLIENT = Path(__file__).with_name("idle_client.py")
PROFILED_LOADS = ("handshakes", "keepalive", "latency", "parallel")
"""What `--profile` records: the handshake path, the per-request path (64 connections and one) and the bulk relay path."""


# --- processes and the machine (impure) ------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants: tlsgw and its worker processes."""
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
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return [
        f"machine : {os.cpu_count()} CPUs ({usable} usable), {model}, {memory / MIB:.1f} GiB RAM; "
        f"load average {load} before the run",
        f"kernel  : Linux {platform.release()}",
        f"software: Python {platform.python_version()}; {_first_line(['openssl', 'version'])}; "
        f"{_first_line(['nginx', '-v'])}; {_first_line(['wrk', '--version']).split(' [')[0]}; "
        f"{' '.join(_first_line(['curl', '--version']).split()[:2])}",
    ]


def raise_fd_limit(needed: int) -> str | None:
    """Raise this process's RLIMIT_NOFILE (inherited by tlsgw, nginx and the clients) to
    `needed`; a reason when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return f"needs {needed} open files, the hard limit is {hard} (ulimit -Hn)"
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


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


def _read(path: Path) -> str:
    """A client's output file (small: a line of curl figures, or one character per s_time
    connection)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {path.name})"


@dataclass
class ClientGroup:
    """Clients started at once by one shell in the client namespace, each writing its
    output to `logdir/<n>.log` (n from 1).

    Forking them one by one from this (large) Python process while the first ones already
    load both cores takes tens of milliseconds each, so 64 s_time processes would start
    over more than a second; a shell starts them within a few milliseconds of each other.
    """

    launcher: BackgroundProcess
    pids: tuple[int, ...]
    """The clients, children of the launcher."""
    logdir: Path

    def output(self, n: int) -> str:
        return _read(self.logdir / f"{n}.log")

    def running(self) -> int:
        return sum(netns.pid_alive(pid) for pid in self.pids)

    def stop(self) -> None:
        """Stop the clients still running, by PID, then the launcher. Idempotent."""
        for pid in self.pids:
            if netns.pid_alive(pid):
                netns.stop_pid(pid)
        self.launcher.stop()


_LAUNCHER = 'dir=$1; n=$2; shift 2; i=0; while [ "$i" -lt "$n" ]; do i=$((i + 1)); "$@" >"$dir/$i.log" 2>&1 & done; wait'


# --- the lab ---------------------------------------------------------------------------


def origin_address(lab: InterceptionLab) -> IPv4Address:
    return lab.lab.servers[lab.hosts.index(HOST)].address


def served_certificate(lab: InterceptionLab, address: IPv4Address) -> x509.Certificate | None:
    """The leaf a client without SNI is shown at `address`."""
    proc = lab.lab.run(lab.lab.client_ns, ["openssl", "s_client", "-connect", f"{address}:443"],
                       check=False, input="", timeout=15)
    start = proc.stdout.find("-----BEGIN CERTIFICATE-----")
    end = proc.stdout.find("-----END CERTIFICATE-----")
    if start < 0 or end < 0:
        return None
    return x509.load_pem_x509_certificate(proc.stdout[start:end + 25].encode())


def name_origin_address(lab: InterceptionLab, timeout: float = 15.0) -> None:
    """Give the origin's certificate its IP address as a name too, for the clients that
    send no SNI (s_time): re-issue it in place and have nginx reload it (SIGHUP to the
    master the lab started, by PID).

    Raises:
        BenchError: nginx still serves the old certificate after `timeout` seconds.
    """
    assert lab.pki is not None
    address = origin_address(lab)
    renewed = lab.pki.issue_server(HOST, ip_addresses=[address])
    wanted = x509.load_pem_x509_certificate(renewed.cert_file.read_bytes())
    os.kill(lab.origin_for(HOST).pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_certificate(lab, address) == wanted:
            return
        time.sleep(0.1)
    raise BenchError(f"nginx at {address} did not reload the certificate naming its address within {timeout:g} s")


# --- the benchmark ---------------------------------------------------------------------


@dataclass
class Bench:
    lab: InterceptionLab
    plan: Plan
    gateway_config: dict[str, Any]
    recorder: Recorder | None = None
    profiles: list[Path] = field(default_factory=list)
    _gateway_pid: int | None = None
    """Set during a gateway round: whose CPU the loads are charged to."""
    _profiling: bool = False
    _costs: dict[str, LoadCost] = field(default_factory=dict)

    @property
    def client_ns(self) -> str:
        return self.lab.lab.client_ns

    @property
    def url(self) -> str:
        return f"https://{HOST}/"

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
            raise BenchError(f"{route.value}: {self.url} failed: {fetch.curl_error or 'verification failed'}")
        if fetch.issuer != expected:
            raise BenchError(f"{route.value}: the client was shown a leaf issued by {fetch.issuer}, expected {expected}")
        return fetch.issuer

    @contextmanager
    def charged(self, load: str) -> Iterator[None]:
        """In a gateway round, charge the gateway's CPU during the block to `load`, and
        profile it if asked to."""
        pid = self._gateway_pid
        if pid is None:
            yield
            return
        profile = self.recorder is not None and self._profiling and load in PROFILED_LOADS
        if profile:
            assert self.recorder is not None
            self.recorder.start(load, process_tree(pid))
        before = read_usage(pid).cpu_seconds
        start = time.monotonic()
        try:
            yield
        finally:
            self._costs.setdefault(load, LoadCost(read_usage(pid).cpu_seconds - before, time.monotonic() - start))
            if profile:
                assert self.recorder is not None
                self.profiles += self.recorder.stop()

    def run_client(self, load: str, argv: Sequence[str], timeout: float) -> str:
        """Run one client in the client namespace and return its stdout.

        Raises:
            BenchError: the client exited non-zero (its stderr is quoted).
        """
        with self.charged(load):
            proc = self.lab.lab.run(self.client_ns, argv, check=False, timeout=timeout)
        if proc.returncode != 0:
            raise BenchError(f"{load}: {argv[0]} exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc.stdout

    def launch(self, argv: Sequence[str], count: int, logdir: Path) -> ClientGroup:
        """Start `count` copies of `argv` at once in the client namespace. The group's
        `pids` are the clients seen running within the grace time; a quick client may
        already have ended, so callers that need all of them check."""
        logdir.mkdir(parents=True, exist_ok=True)
        launcher = self.lab.lab.spawn(self.client_ns, ["sh", "-c", _LAUNCHER, "launcher", str(logdir), str(count),
                                                       *argv], log_path=logdir / "launcher.log")
        pids: tuple[int, ...] = ()
        deadline = time.monotonic() + CLIENT_GRACE_SECONDS
        while len(pids) < count and launcher.alive() and time.monotonic() < deadline:
            time.sleep(0.005)
            pids = tuple(sorted(set(pids) | set(netns.child_pids(launcher.pid))))
        return ClientGroup(launcher, pids, logdir)

    def wait(self, clients: ClientGroup, timeout: float) -> None:
        """Until every client of the group has ended (the launcher waits for them).

        Raises:
            BenchError: some still ran after `timeout` seconds (they are stopped).
        """
        deadline = time.monotonic() + timeout
        while clients.launcher.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if clients.launcher.alive():
            clients.stop()
            raise BenchError(f"{clients.logdir.name}: clients still running after {timeout:g} s; stopped")

    # -- the loads -----------------------------------------------------------------------

    def idle_memory(self) -> IdleMemoryRun:
        """Open `plan.idle` idle decrypted connections and read the gateway's memory.

        Raises:
            BenchError: the client failed, or did not report within the grace time.
        """
        pid = self._gateway_pid
        assert pid is not None
        count = self.plan.idle
        argv = [sys.executable, str(IDLE_CLIENT), HOST, str(self.lab.client_bundle), str(count)]
        before = read_usage(pid).rss_kib
        with self.charged("idle"):
            popen = subprocess.Popen(netns.exec_argv(self.client_ns, argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            try:
                assert popen.stdout is not None and popen.stdin is not None
                ready, _, _ = select.select([popen.stdout], [], [], CLIENT_GRACE_SECONDS + count / IDLE_OPEN_RATE)
                report = popen.stdout.readline() if ready else b""
                if not report:
                    popen.kill()
                    _, err = popen.communicate()
                    raise BenchError(f"idle: {IDLE_CLIENT.name} reported nothing: {err.decode(errors='replace')[-800:]}")
                opened = int(json.loads(report)["open"])
                time.sleep(IDLE_SETTLE_SECONDS)
                after = read_usage(pid).rss_kib
                popen.stdin.close()
                popen.wait(timeout=CLIENT_GRACE_SECONDS)
            finally:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait()
        if opened != count or popen.returncode != 0:
            raise BenchError(f"idle: {opened} of {count} connections, exit status {popen.returncode}")
        return IdleMemoryRun(connections=count, rss_before_kib=before, rss_after_kib=after)

    def handshakes(self, logdir: Path) -> HandshakeRun:
        """`plan.clients` s_time processes at once; the rate counted at the origin in a
        window during which all of them run (see `ClientGroup` for why one shell starts them).

        Raises:
            BenchError: a client ended before the window closed, or failed.
        """
        origin_log = FileTail(self.lab.origin_for(HOST).access_log_path)
        lifetime = math.ceil(self.plan.seconds + WARMUP_ALLOWANCE_SECONDS)
        first_stop = time.monotonic() + lifetime - S_TIME_END_MARGIN
        # -no-CA*: s_time does not verify (no -verify), and loading Mozilla's bundle in 64
        # processes at once costs seconds of CPU, plus a CApath lookup per connection.
        # stdbuf -o0: s_time prints a character per connection; unbuffered, they show when
        # every client has completed its first one.
        clients = self.launch(["stdbuf", "-o0", "openssl", "s_time", "-connect", f"{origin_address(self.lab)}:443",
                               "-new", "-www", "/", "-no-CAfile", "-no-CApath", "-no-CAstore",
                               "-time", str(lifetime)], self.plan.clients, logdir)
        numbers = range(1, self.plan.clients + 1)
        try:
            latest_start = first_stop - self.plan.seconds / 2
            while not all(self._s_time_counts(clients, n)[0] for n in numbers):
                if time.monotonic() > latest_start:
                    waiting = sum(not self._s_time_counts(clients, n)[0] for n in numbers)
                    raise BenchError(f"handshakes: {waiting} of {self.plan.clients} s_time processes had completed "
                                     f"no connection {lifetime - self.plan.seconds / 2:g} s after their start "
                                     "(machine too busy?)")
                time.sleep(0.02)
            lines = origin_log.read_new()
            with self.charged("handshakes"):
                start = time.monotonic()
                time.sleep(max(0.0, min(start + self.plan.seconds, first_stop) - start))
                window = origin_log.read_new()
                seconds = time.monotonic() - start
            running = clients.running()
            if running < self.plan.clients:
                raise BenchError(f"handshakes: only {running} of {self.plan.clients} s_time processes still ran "
                                 f"when the window closed; the first printed: {clients.output(1)[-800:]}")
            self.wait(clients, lifetime + CLIENT_GRACE_SECONDS)
        finally:
            clients.stop()
        counts = [self._s_time_counts(clients, n) for n in numbers]
        made = sum(c for c, _ in counts)
        lines += window
        settle = time.monotonic() + ACCESS_LOG_SETTLE_SECONDS
        while len(lines) < made and time.monotonic() < settle:
            time.sleep(0.05)
            lines += origin_log.read_new()
        entries = [parse_access_log_line(line) for line in lines]
        return HandshakeRun(clients=len(counts), window_connections=len(window), window_seconds=seconds,
                            connections=len(entries), resumed=sum(e.ssl_session_reused for e in entries),
                            client_connections=made, client_resumed=sum(r for _, r in counts))

    @staticmethod
    def _s_time_counts(clients: ClientGroup, n: int) -> tuple[int, int]:
        """(connections, resumed) of client `n` so far; (0, 0) before it printed anything."""
        try:
            return parse_s_time_progress(clients.output(n))
        except BenchError:
            return (0, 0)

    def keepalive(self) -> KeepAliveRun:
        threads = min(2, self.plan.connections)  # one per core of a 2-core box; wrk needs threads <= connections
        return parse_wrk(self.run_client("keepalive", [
            "wrk", f"-t{threads}", f"-c{self.plan.connections}", f"-d{self.plan.seconds}s", self.url],
            timeout=self.plan.seconds + CLIENT_GRACE_SECONDS))

    def latency(self) -> LatencyRun:
        return parse_wrk_latency(self.run_client("latency", [
            "wrk", "-t1", "-c1", f"-d{self.plan.seconds}s", "--latency", self.url],
            timeout=self.plan.seconds + CLIENT_GRACE_SECONDS))

    def _check_transfer(self, load: str, transfer: CurlTransfer) -> None:
        if transfer.http_code != 200 or transfer.size != self.plan.bulk_mb * MIB:
            raise BenchError(f"{load}: HTTP {transfer.http_code}, {transfer.size} bytes, "
                             f"expected {self.plan.bulk_mb * MIB}")

    def curl_argv(self) -> list[str]:
        return ["curl", "-sS", "--cacert", str(self.lab.client_bundle), "-o", "/dev/null",
                "-w", CURL_BULK_FORMAT, f"{self.url}bulk"]

    def bulk(self) -> BulkRun:
        transfer = parse_curl_transfer(self.run_client("bulk", self.curl_argv(), timeout=CLIENT_GRACE_SECONDS * 4))
        self._check_transfer("bulk", transfer)
        return BulkRun(downloads=1, size=transfer.size, seconds=transfer.transfer_seconds)

    def parallel(self, logdir: Path) -> BulkRun:
        """`plan.parallel` curl processes at once."""
        with self.charged("parallel"):
            clients = self.launch(self.curl_argv(), self.plan.parallel, logdir)
            try:
                self.wait(clients, CLIENT_GRACE_SECONDS * 4)
            finally:
                clients.stop()
        transfers = [parse_curl_transfer(clients.output(n)) for n in range(1, self.plan.parallel + 1)]
        for transfer in transfers:
            self._check_transfer("parallel", transfer)
        return parallel_bulk(transfers)

    def measure(self, route: Route, repetition: int) -> Round:
        """One round on one route; for the gateway, starts and (always) stops tlsgw."""
        inspection_log = FileTail(self.lab.inspection_log)
        self._costs = {}
        logdir = self.lab.workdir / "clients" / f"{route.value}-{repetition}"
        gateway = route is Route.GATEWAY
        self._gateway_pid = self.lab.start_gateway(self.gateway_config).pid if gateway else None
        self._profiling = gateway and repetition == 1
        usage: Usage | None = None
        idle: IdleMemoryRun | None = None
        log = ""
        try:
            issuer = self.check_path(route)
            if gateway:
                idle = self.idle_memory()
            handshakes = self.handshakes(logdir / "s_time")
            keepalive = self.keepalive()
            latency = self.latency()
            bulk = self.bulk()
            parallel = self.parallel(logdir / "curl")
            if self._gateway_pid is not None:
                usage = read_usage(self._gateway_pid)
        finally:
            if self._gateway_pid is not None:
                log = self.lab.stop_gateway()
                self._gateway_pid = None
        if "Traceback" in log:
            print(f"  warning: tlsgw logged a traceback in round {repetition}:\n"
                  + log[log.index("Traceback"):][:2000], file=sys.stderr)
        outcomes = tally_outcomes(inspection_log.read_new()) if gateway else Counter[str]()
        return Round(route, repetition, issuer, handshakes, keepalive, latency, bulk, parallel, idle,
                     dict(self._costs), usage, outcomes)


# --- command line ----------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither auto nor a number") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return count


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_gateway",
        description="Compare the bare bridge with tlsgw in a namespace lab, for every row of issue 8's "
                    "table (run as root).")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK.repeat} pair, {QUICK.seconds} s loads, {QUICK.bulk_mb} MiB bulk, "
                             f"{QUICK.idle} idle connections (other options still override)")
    numbers = {
        "seconds": "per timed load and round",
        "repeat": "direct/gateway round pairs",
        "bulk_mb": "MiB of each bulk download",
        "clients": "simultaneous s_time processes (new connections)",
        "connections": "wrk keep-alive connections",
        "parallel": "simultaneous bulk downloads",
        "idle": "idle connections for the memory figure",
    }
    for name, text in numbers.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"{text} (default {getattr(Plan(), name)}, quick {getattr(QUICK, name)})")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="set gateway.workers (auto or a number) in the lab's configuration; "
                             "default: the configuration's own default")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record py-spy profiles of tlsgw during the handshake, keep-alive and parallel bulk loads of the "
                             "first gateway round into DIR, and print their top frames (needs py-spy; the "
                             "profiled round runs slower)")
    parser.add_argument("--profile-native", action="store_true",
                        help="with --profile: C frames too (OpenSSL, libc, uvloop); py-spy then stops tlsgw for "
                             "every sample, so the profiled round runs at about half speed")
    args = parser.parse_args(argv)
    if args.profile_native and args.profile is None:
        parser.error("--profile-native needs --profile DIR")
    base = QUICK if args.quick else Plan()
    overrides = {name: getattr(args, name) for name in numbers if getattr(args, name) is not None}
    for name, value in overrides.items():
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args, dataclasses.replace(base, **overrides)


def gateway_config(lab: InterceptionLab, workers: int | str | None) -> dict[str, Any]:
    config = json.loads(json.dumps(lab.config))  # a deep copy: the lab's own stays the base
    if workers is not None:
        config["gateway"]["workers"] = workers
    return config


def _progress(result: Round) -> str:
    line = (f"  round {result.repetition} {result.route.value:<7}: {result.handshakes.rate:6.0f} conn/s, "
            f"{result.keepalive.rate:6.0f} req/s, p50 {result.latency.p50_us:5.0f} us, "
            f"{result.bulk.mb_per_second:5.0f} MB/s, {result.parallel.mb_per_second:5.0f} MB/s x{result.parallel.downloads}")
    if result.idle is not None:
        line += f", {result.idle.kib_per_connection:.0f} KiB/idle conn"
    if result.costs:
        line += f", tlsgw CPU {sum(c.cpu_seconds for c in result.costs.values()):.1f} s"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args, plan = parse_args(argv)
    reason = environment_ready()
    if reason is None:
        missing = [t for t in CLIENT_TOOLS if shutil.which(t) is None]
        reason = f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})" if missing else None
    if reason is None:
        reason = raise_fd_limit(plan.idle * FDS_PER_IDLE_CONNECTION + FD_MARGIN)
    recorder: Recorder | None = None
    if reason is None and args.profile is not None:
        executable = py_spy()
        if executable is None:
            reason = "--profile needs py-spy (.venv/bin/pip install py-spy)"
        else:
            recorder = Recorder(executable, args.profile.resolve(), native=args.profile_native)
    if reason is not None:
        print(f"bench_gateway: {reason}", file=sys.stderr)
        return 1

    print(f"tlsgw benchmark: {plan.repeat} x (direct, gateway) rounds, {plan.seconds} s per timed load; {HOST}; "
          f"{plan.clients} s_time clients, {plan.connections} wrk connections, bulk {plan.bulk_mb} MiB "
          f"(x{plan.parallel} in parallel), {plan.idle} idle connections"
          + (f"; gateway.workers {args.workers}" if args.workers is not None else ""))
    for line in describe_machine():
        print(line)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # A workdir of our own, removed at the end: it holds two bulk files of --bulk-mb each.
    workdir = Path(tempfile.mkdtemp(prefix="tlsgw-bench-"))
    lab = InterceptionLab(workdir=workdir,
                          origin_options=OriginOptions(session_resumption=False, bulk_mb=plan.bulk_mb))
    rounds: list[Round] = []
    failure: str | None = None
    started = time.monotonic()
    try:
        lab.start(with_gateway=False)
        name_origin_address(lab)
        print(f"lab     : run {lab.lab.run_id}, workdir {lab.workdir}", flush=True)
        bench = Bench(lab, plan, gateway_config(lab, args.workers), recorder)
        gateway_ok = True
        for repetition in range(1, plan.repeat + 1):
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
                print(_progress(result), flush=True)
        settings = Settings(plan.clients, plan.connections, plan.bulk_mb, plan.parallel, plan.idle)
        print()
        for block in (table(rounds, settings), proofs(rounds), gateway_process(rounds)):
            for line in block:
                print(line)
            print()
        if bench.profiles:
            print(f"profiles (py-spy, first gateway round), raw files in {args.profile}:")
            for line in summarise_files(bench.profiles):
                print(line)
            print()
        print(f"{time.monotonic() - started:.0f} s in all")
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
            if recorder is not None:
                recorder.stop()
            lab.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)
        print("lab torn down")


if __name__ == "__main__":
    sys.exit(main())
