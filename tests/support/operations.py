"""Helpers for the issue 6 integration tests: the control CLI against a lab gateway,
an untouched-path probe, a long-lived TLS session held open in the client namespace, and a
slow download to have in flight while the gateway stops.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.lab.origin import write_bulk_file
from gateway.lab.scenario import InterceptionLab

# Runs in the client namespace. Repeats fresh connection attempts until one reaches the
# real server untouched - its TLS handshake verifies against the public root alone, which
# a certificate forged by the gateway never does - then prints the monotonic time of that
# success. Short connect timeouts: a SYN lost in a dead gateway must not hide the moment
# the path opens behind a one-second retransmission.
PROBE = r"""
import socket, ssl, sys, time
host, address, cafile, deadline = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
context = ssl.create_default_context(cafile=cafile)
print("probing", flush=True)
attempts = 0
while time.monotonic() < deadline:
    attempts += 1
    try:
        with socket.create_connection((address, 443), timeout=0.1) as raw:
            raw.settimeout(1.0)
            with context.wrap_socket(raw, server_hostname=host):
                print("untouched", time.monotonic(), attempts, flush=True)
                sys.exit(0)
    except (OSError, ssl.SSLError):
        time.sleep(0.01)
print("never", attempts, flush=True)
sys.exit(1)
"""

# Runs in the client namespace: one TLS connection kept open; each line on stdin sends
# an HTTP/1.1 keep-alive request and prints the body's first line and the issuer.
SESSION = r"""
import socket, ssl, sys
host, cafile = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=cafile)
tls = context.wrap_socket(socket.create_connection((host, 443), timeout=10), server_hostname=host)
issuer = dict(x[0] for x in tls.getpeercert()["issuer"]).get("commonName")
print("connected", tls.getsockname()[1], issuer, flush=True)
for line in sys.stdin:
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += tls.recv(4096)
    print("response", body.decode().strip(), flush=True)
"""


def tlsgw(lab: InterceptionLab, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`tlsgw ARGS --socket <the lab gateway's control socket>`, run on the host."""
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--socket", str(lab.workdir / "control.sock")],
                          capture_output=True, text=True, timeout=timeout, check=False)


def gateway_config(lab: InterceptionLab, **gateway: Any) -> dict[str, Any]:
    config = copy.deepcopy(lab.config)
    config["gateway"].update(gateway)
    return config


def nft_table(lab: InterceptionLab) -> str:
    return lab.lab.run(lab.lab.gateway_ns, ["nft", "list", "table", "bridge", "tlsgw"], check=False).stdout


def write_script(lab: InterceptionLab, name: str, text: str) -> Path:
    path = lab.workdir / name
    path.write_text(text)
    return path


class HeldSession:
    """A TLS session held open in the client namespace, used on demand."""

    def __init__(self, lab: InterceptionLab, host: str) -> None:
        script = write_script(lab, "session.py", SESSION)
        argv = ["ip", "netns", "exec", lab.lab.client_ns, sys.executable, str(script), host, str(lab.client_bundle)]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line()
        if not first.startswith("connected"):
            raise AssertionError(f"session did not connect: {first!r} {self.stderr()}")
        _, port, self.issuer = first.split(" ", 2)
        self.port = int(port)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<eof>")

    def next_line(self, timeout: float = 15.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return "<timeout>"

    def request(self) -> str:
        """One request on the held connection: the body's first line, or why not."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return "<closed>"
        return self.next_line()

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# The client's TCP receive buffer while a slow download runs: small, so that the body
# cannot wait there whole (autotuning would grow it to 32 MiB on these kernels) and most
# of it must still cross the gateway after whatever the test does to the gateway.
CLIENT_RMEM_MAX = 256 * 1024


@contextlib.contextmanager
def bulk_body(lab: InterceptionLab, host: str, size_mb: int) -> Iterator[bytes]:
    """`host`'s origin serves `size_mb` MiB at /bulk meanwhile (empty again afterwards, as
    the shared lab's origins start), and the client namespace's receive buffers are capped
    at CLIENT_RMEM_MAX; yields the body the origin serves."""
    path = lab.origin_for(host).paths.bulk_file
    rmem = "net.ipv4.tcp_rmem"
    before = lab.lab.run(lab.lab.client_ns, ["sysctl", "-n", rmem]).stdout.split()
    write_bulk_file(path, size_mb)
    try:
        lab.lab.run(lab.lab.client_ns, ["sysctl", "-qw", f"{rmem}={before[0]} {before[1]} {CLIENT_RMEM_MAX}"])
        yield path.read_bytes()
    finally:
        lab.lab.run(lab.lab.client_ns, ["sysctl", "-qw", f"{rmem}={' '.join(before)}"], check=False)
        write_bulk_file(path, 0)


def wait_for_log(lab: InterceptionLab, text: str, timeout: float = 15.0) -> bool:
    """Whether the gateway's log shows `text` within `timeout` seconds (bounded wait)."""
    log = lab.workdir / "gateway.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


class Download:
    """A rate-limited HTTPS download in the client namespace (curl, to a file), so that it
    is still in flight while the test does something to the gateway."""

    def __init__(self, lab: InterceptionLab, host: str, path: str = "/bulk", rate: str = "512k",
                 max_time: float = 60.0) -> None:
        self.output = lab.workdir / f"download-{time.monotonic_ns()}.bin"
        argv = ["ip", "netns", "exec", lab.lab.client_ns, "curl", "-sS", "--max-time", str(int(max_time)),
                "--cacert", str(lab.client_bundle), "--limit-rate", rate, "-o", str(self.output),
                f"https://{host}{path}"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.max_time = max_time

    def wait_in_flight(self, min_bytes: int = 64 * 1024, timeout: float = 15.0) -> bool:
        """True once part of the body arrived and curl still runs (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.output.exists() and self.output.stat().st_size >= min_bytes:
                return True
            time.sleep(0.02)
        return False

    def finish(self) -> tuple[int, bytes, str]:
        """curl's exit code, the bytes it wrote and its error text."""
        try:
            _, err = self.process.communicate(timeout=self.max_time + 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        body = self.output.read_bytes() if self.output.exists() else b""
        self.output.unlink(missing_ok=True)
        return self.process.returncode, body, err.strip()


def start_probe(lab: InterceptionLab, host: str, budget: float = 10.0) -> subprocess.Popen[str]:
    """Start the untouched-path probe (see PROBE); returns once it is probing."""
    script = write_script(lab, "probe.py", PROBE)
    argv = ["ip", "netns", "exec", lab.lab.client_ns, sys.executable, str(script), host, str(lab.lab.hosts[host]),
            str(lab.pki.public_root_file if lab.pki else ""), str(time.monotonic() + budget)]
    probe = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert probe.stdout is not None
    assert probe.stdout.readline().strip() == "probing"
    return probe


def probe_result(probe: subprocess.Popen[str], timeout: float = 20.0) -> tuple[float | None, str]:
    """(monotonic time of the first untouched connection or None, the probe's output)."""
    out, _ = probe.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("untouched"):
            return float(line.split()[1]), out
    return None, out


@pytest.fixture(scope="module")
def lab_env() -> Iterator[InterceptionLab]:
    """One lab per test module, without a gateway: each test starts the one it needs."""
    lab = InterceptionLab()
    try:
        lab.start(with_gateway=False)
        yield lab
    finally:
        lab.stop()
