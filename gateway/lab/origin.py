"""A real HTTPS origin for the lab: nginx, started in a server namespace, known by PID.

Why nginx and not a Python server: the benchmark must measure the gateway, not the
origin, and nginx also gives a TLS stack that is not the one under test. Its access log is
the lab's witness of what arrived at the server: the client address it saw (the gateway
spoofs the client's address upstream), the protocol, and whether the session was resumed.

Everything lives in one private working directory (config, logs, pid, temp paths, site
bodies, the bulk file), so nothing touches the system nginx or /var. nginx runs in the
foreground (`daemon off`) so the PID we started is the master's; its workers are stopped
with it, and any worker that outlives the master is killed by its recorded PID.

The configuration is rendered by a pure function (`render_nginx_conf`) and the access log
is JSON lines parsed by another (`parse_access_log_line`), so both are unit-testable.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from gateway.errors import TlsgwError
from gateway.lab import netns
from gateway.lab.netns import BackgroundProcess

logger = logging.getLogger(__name__)

NGINX = "nginx"
# How long nginx may take to bind its ports; it takes tens of milliseconds, so this only
# bounds a hang, it is not a performance expectation.
READY_TIMEOUT = 10.0
READY_POLL_SECONDS = 0.02
# One MiB of random bytes repeated: incompressible enough for a throughput test, and cheap
# to write even for a few hundred MB.
BULK_CHUNK = 1024 * 1024
# Generous for a benchmark client opening many keep-alive connections on a 2-core box.
WORKER_CONNECTIONS = 4096

ACCESS_LOG_FIELDS: tuple[str, ...] = (
    "remote_addr",
    "remote_port",
    "server_addr",
    "server_port",
    "server_name",
    "host",
    "ssl_server_name",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_session_reused",
    "ssl_session_id",
    "request",
    "status",
    "body_bytes_sent",
    "connection",
    "connection_requests",
)


class OriginError(TlsgwError):
    """The origin server could not be configured, started or read; quotes its error log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(message + (f"\n--- nginx log ---\n{log_tail}" if log_tail else ""))


@dataclass(frozen=True, slots=True)
class OriginSite:
    """One HTTPS virtual host."""

    server_name: str
    """Host name matched against SNI and Host; also the `server_name` in the access log."""
    cert_file: Path
    """PEM: the leaf certificate, followed by any intermediates to send."""
    key_file: Path
    """PEM private key of the leaf. Read by the nginx master (root) only."""
    body: str
    """What `GET /` returns, byte for byte (text/plain)."""


@dataclass(frozen=True, slots=True)
class OriginOptions:
    https_port: int = 443
    http_port: int | None = None
    """Also serve the same sites in plain HTTP on this port; None (default) does not."""
    bulk_mb: int = 0
    """Size of the file served at `/bulk` on every site, in MiB; 0 serves an empty file."""
    session_resumption: bool = True
    """False turns off both the session cache and session tickets, so that every TLS
    connection is a full handshake (what the handshake benchmark must measure)."""
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    """nginx `ssl_protocols` names."""
    ciphers: str | None = None
    """nginx `ssl_ciphers` (OpenSSL cipher string); None keeps nginx's default."""
    http2: bool = False
    """Offer `h2` in ALPN on the HTTPS port."""
    worker_processes: int = 1


@dataclass(frozen=True, slots=True)
class OriginPaths:
    """The private working directory's layout."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    @property
    def output_log(self) -> Path:
        """stdout and stderr of the nginx master."""
        return self.root / "logs" / "output.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"

    @property
    def bulk_file(self) -> Path:
        return self.root / "bulk.bin"

    def site_root(self, index: int) -> Path:
        return self.root / "sites" / str(index)


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One request as nginx saw it."""

    remote_addr: IPv4Address
    remote_port: int
    server_addr: IPv4Address
    server_port: int
    server_name: str
    """The matched virtual host (first name of its `server_name`)."""
    host: str
    """Host header, else the SNI-selected server name."""
    ssl_server_name: str
    """SNI as received; empty when the client sent none."""
    ssl_protocol: str
    """e.g. `TLSv1.3`; empty for plain HTTP."""
    ssl_cipher: str
    ssl_session_reused: bool
    ssl_session_id: str
    """Hex, as nginx logs it: compared with the client's own view to prove an untouched relay."""
    request: str
    status: int
    body_bytes_sent: int
    connection: int
    """nginx connection serial number: equal values mean one keep-alive connection."""
    connection_requests: int


def _nginx_string(value: str) -> str:
    """Quote a value for nginx's config syntax."""
    if any(c in value for c in "\"\\\n\r;{}$"):
        raise OriginError(f"unsupported character in nginx config value {value!r}")
    return f'"{value}"'


def render_log_format() -> str:
    fields = ",".join(f'"{name}":"${name}"' for name in ACCESS_LOG_FIELDS)
    return "log_format tlsgw_lab escape=json '{" + fields + "}';"


def render_nginx_conf(sites: Sequence[OriginSite], options: OriginOptions, paths: OriginPaths) -> str:
    """The whole nginx.conf for these sites; the first site is the default server.

    Raises:
        OriginError: no sites, duplicate names, or a value nginx syntax cannot carry.
    """
    if not sites:
        raise OriginError("an origin needs at least one site")
    names = [s.server_name for s in sites]
    if len(set(names)) != len(names):
        raise OriginError(f"duplicate server_name in origin sites: {names}")
    if options.worker_processes < 1:
        raise OriginError(f"worker_processes must be >= 1, got {options.worker_processes}")

    q = _nginx_string
    temp = paths.temp
    if options.session_resumption:
        session = ["ssl_session_cache shared:tlsgw_lab:1m;", "ssl_session_tickets on;"]
    else:
        session = ["ssl_session_cache off;", "ssl_session_tickets off;"]
    tls = [f"ssl_protocols {' '.join(options.protocols)};", *session]
    if options.ciphers is not None:
        tls.append(f"ssl_ciphers {q(options.ciphers)};")

    lines = [
        "# Generated by gateway.lab.origin for one lab run; not for production.",
        "# `user root`: workers read the site files in a private 0700 directory; the lab",
        "# runs as root inside throwaway namespaces.",
        "user root;",
        "daemon off;",
        "master_process on;",
        f"worker_processes {options.worker_processes};",
        f"pid {q(str(paths.pid_file))};",
        f"error_log {q(str(paths.error_log))} warn;",
        "events {",
        f"    worker_connections {WORKER_CONNECTIONS};",
        "}",
        "http {",
        "    default_type text/plain;",
        "    charset off;",
        "    server_tokens off;",
        "    sendfile on;",
        "    keepalive_timeout 65s;",
        "    keepalive_requests 100000;",
        f"    client_body_temp_path {q(str(temp / 'body'))};",
        f"    proxy_temp_path {q(str(temp / 'proxy'))};",
        f"    fastcgi_temp_path {q(str(temp / 'fastcgi'))};",
        f"    uwsgi_temp_path {q(str(temp / 'uwsgi'))};",
        f"    scgi_temp_path {q(str(temp / 'scgi'))};",
        f"    {render_log_format()}",
        f"    access_log {q(str(paths.access_log))} tlsgw_lab;",
        *(f"    {line}" for line in tls),
    ]
    h2 = " http2" if options.http2 else ""
    for index, site in enumerate(sites):
        default = " default_server" if index == 0 else ""
        lines += [
            "    server {",
            f"        listen {options.https_port} ssl{h2}{default};",
        ]
        if options.http_port is not None:
            lines.append(f"        listen {options.http_port}{default};")
        lines += [
            f"        server_name {q(site.server_name)};",
            f"        ssl_certificate {q(str(site.cert_file))};",
            f"        ssl_certificate_key {q(str(site.key_file))};",
            f"        root {q(str(paths.site_root(index)))};",
            "        index index.txt;",
            "        location = /bulk {",
            f"            alias {q(str(paths.bulk_file))};",
            "            default_type application/octet-stream;",
            "        }",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def parse_access_log_line(line: str) -> AccessLogEntry:
    """Parse one line written with `render_log_format()`.

    Raises:
        OriginError: the line is not such a JSON object.
    """
    try:
        raw = json.loads(line)
        return AccessLogEntry(
            remote_addr=IPv4Address(raw["remote_addr"]),
            remote_port=int(raw["remote_port"]),
            server_addr=IPv4Address(raw["server_addr"]),
            server_port=int(raw["server_port"]),
            server_name=raw["server_name"],
            host=raw["host"],
            ssl_server_name=raw["ssl_server_name"],
            ssl_protocol=raw["ssl_protocol"],
            ssl_cipher=raw["ssl_cipher"],
            ssl_session_reused=raw["ssl_session_reused"] == "r",
            ssl_session_id=raw["ssl_session_id"],
            request=raw["request"],
            status=int(raw["status"]),
            body_bytes_sent=int(raw["body_bytes_sent"]),
            connection=int(raw["connection"]),
            connection_requests=int(raw["connection_requests"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise OriginError(f"unparseable access log line ({e}): {line!r}") from e


def write_bulk_file(path: Path, size_mb: int) -> None:
    chunk = os.urandom(BULK_CHUNK) if size_mb else b""
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(chunk)


def listening_ports(namespace: str) -> set[int]:
    """TCP ports with a listening socket in the namespace (`ss -Hltn`)."""
    out = netns.run_in(namespace, ["ss", "-H", "-l", "-t", "-n"]).stdout
    ports: set[int] = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and ":" in fields[3]:
            port = fields[3].rsplit(":", 1)[1]
            if port.isdigit():
                ports.add(int(port))
    return ports


class NginxOrigin:
    """nginx serving `sites` over HTTPS inside `namespace`, from a private directory.

    Use as a context manager or `start()` / `stop()`. `stop()` is idempotent and removes
    the working directory if this object created it (read the access log before).
    """

    def __init__(
        self,
        namespace: str,
        sites: Sequence[OriginSite],
        options: OriginOptions = OriginOptions(),
        *,
        workdir: Path | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.namespace = namespace
        self.sites = tuple(sites)
        self.options = options
        self.ready_timeout = ready_timeout
        self._own_workdir = workdir is None
        root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="tgw-origin-"))
        self.paths = OriginPaths(root)
        self._process: BackgroundProcess | None = None
        self._workers: tuple[int, ...] = ()

    @property
    def pid(self) -> int:
        """PID of the nginx master.

        Raises:
            OriginError: not started.
        """
        if self._process is None:
            raise OriginError(f"nginx in {self.namespace} is not started")
        return self._process.pid

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The workers seen when the origin became ready."""
        return self._workers

    @property
    def access_log_path(self) -> Path:
        return self.paths.access_log

    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def start(self) -> NginxOrigin:
        """Write the files, start nginx in the namespace and wait until it listens.

        Raises:
            OriginError: bad sites/options, nginx exited, or it did not listen in time.
        """
        if self._process is not None:
            return self
        self._prepare()
        paths = self.paths
        argv = [NGINX, "-c", str(paths.config), "-p", f"{paths.root}/", "-e", str(paths.error_log)]
        self._process = netns.spawn_in(self.namespace, argv, log_path=self.paths.output_log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.debug("nginx pid %d ready in %s", self._process.pid, self.namespace)
        return self

    def _prepare(self) -> None:
        for site in self.sites:
            for path in (site.cert_file, site.key_file):
                if not Path(path).is_file():
                    raise OriginError(f"site {site.server_name}: no such file {path}")
        config = render_nginx_conf(self.sites, self.options, self.paths)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        (self.paths.root / "logs").mkdir(exist_ok=True)
        self.paths.temp.mkdir(exist_ok=True)
        for index, site in enumerate(self.sites):
            root = self.paths.site_root(index)
            root.mkdir(parents=True, exist_ok=True)
            (root / "index.txt").write_text(site.body)
        write_bulk_file(self.paths.bulk_file, self.options.bulk_mb)
        self.paths.config.write_text(config)

    def _wait_ready(self) -> None:
        assert self._process is not None
        wanted = {self.options.https_port}
        if self.options.http_port is not None:
            wanted.add(self.options.http_port)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if not self._process.alive():
                raise OriginError(
                    f"nginx in {self.namespace} exited with status {self._process.returncode} before listening",
                    self._log_tail(),
                )
            if wanted <= listening_ports(self.namespace):
                workers = netns.child_pids(self._process.pid)
                if len(workers) >= self.options.worker_processes:
                    self._workers = workers
                    return
            if time.monotonic() >= deadline:
                raise OriginError(
                    f"nginx in {self.namespace} not listening on {sorted(wanted)} after {self.ready_timeout:g}s",
                    self._log_tail(),
                )
            time.sleep(READY_POLL_SECONDS)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.paths.output_log, self.paths.error_log):
            if path.exists():
                parts.extend(path.read_text(errors="replace").splitlines()[-netns.LOG_TAIL_LINES :])
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the master by PID (SIGTERM, then SIGKILL), then any worker left behind,
        then remove the working directory if this object created it. Idempotent."""
        if self._process is not None:
            workers = netns.child_pids(self._process.pid) or self._workers
            self._process.stop()
            for pid in workers:
                if netns.pid_alive(pid):
                    netns.stop_pid(pid)
        if self._own_workdir and self.paths.root.exists():
            shutil.rmtree(self.paths.root, ignore_errors=True)

    def __enter__(self) -> NginxOrigin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the access log ----------------------------------------------------------------

    def access_log_lines(self) -> list[str]:
        """Raw access log lines so far (JSON objects, see `ACCESS_LOG_FIELDS`)."""
        if not self.paths.access_log.exists():
            return []
        return [line for line in self.paths.access_log.read_text(errors="replace").splitlines() if line.strip()]

    def access_log(self) -> list[AccessLogEntry]:
        """Parsed access log entries so far, oldest first."""
        return [parse_access_log_line(line) for line in self.access_log_lines()]

    def wait_for_access_log(self, count: int, timeout: float = 5.0) -> list[AccessLogEntry]:
        """Entries once there are at least `count`: nginx writes the line just after the
        response, so a client may finish before it is there.

        Raises:
            OriginError: fewer than `count` entries after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = self.access_log()
            if len(entries) >= count:
                return entries
            if time.monotonic() >= deadline:
                raise OriginError(
                    f"nginx in {self.namespace}: {len(entries)} access log entries, expected {count}"
                )
            time.sleep(READY_POLL_SECONDS)

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"NginxOrigin(namespace={self.namespace!r}, pid={pid}, sites={[s.server_name for s in self.sites]})"
