"""The interception lab: the namespace topology plus origin servers, a real tlsgw process
on the bridge, and real TLS clients (curl, openssl s_client) in the client namespace.

One harness for the demo, the integration tests and the benchmark, so that all three
run the same wiring a user deploys. The gateway is started the way a user starts it
(`python -m gateway run --config FILE` inside the gateway namespace) and stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from gateway.config.model import DEFAULT_DRAIN_TIMEOUT
from gateway.lab.demo_pki import PUBLIC_ROOT_NAME, SIGNING_CA_NAME, DemoPki, build_demo_pki
from gateway.lab.netns import BackgroundProcess
from gateway.lab.origin import NginxOrigin, OriginOptions, OriginSite
from gateway.lab.topology import Lab

GATEWAY_READY_TIMEOUT = 20.0  # seconds: Python start-up, key generation, rules, on a loaded 2-core CI box
READY_LINE = "tlsgw serving"
# A stop by SIGTERM lasts the drain (gateway.drain_timeout) plus the worker processes'
# stop and the rules' removal; past that, the lab kills tlsgw.
GATEWAY_STOP_MARGIN = 15.0


class ScenarioError(RuntimeError):
    pass


def base_config(workdir: Path, lab: Lab, pki: DemoPki) -> dict[str, Any]:
    """The demo configuration as data, so tests can vary one setting at a time."""
    return {
        "gateway": {
            "bridge": lab.bridge,
            "segments": [{"name": "lan-wan", "client_port": lab.client_port, "server_port": lab.server_port,
                          "profile": "default"}],
            "inspection_log": str(workdir / "inspection.jsonl"),
            "listen_port": 8443,
            # The lab's gateway runs on the host's file system: keep its control socket and
            # its remembered manual fallback inside the lab.
            "control": {"socket": str(workdir / "control.sock"), "bypass_file": str(workdir / "bypass")},
        },
        "pki": {"dir": str(pki.store_dir)},
        "client_proxies": [{
            "name": "outbound", "signing_certificate": SIGNING_CA_NAME, "detection_ports": ["443"],
            "decrypted_service": "http", "block_invalid_certificates": True, "block_expired_certificates": True,
        }],
        "decryption_policies": [{"name": "default", "domains": ["*.bank.example"]}],
        "trust_stores": [{"name": "lab", "include_default_ca": False, "ca_certificates": [PUBLIC_ROOT_NAME]}],
        "profiles": [{"name": "default", "client_policies": [{
            "name": "out", "client_proxy": "outbound", "decryption_policy": "default", "trust_store": "lab",
        }]}],
    }


@dataclass(frozen=True, slots=True)
class Fetch:
    """What a real client saw: curl's verdict and body, and the certificate s_client got."""

    host: str
    exit_code: int
    body: str
    curl_error: str
    subject: str | None
    issuer: str | None
    verify_ok: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class InterceptionLab:
    """Build with `start()`, always `stop()` (also a context manager)."""

    hosts: tuple[str, ...] = ("shop.example", "www.bank.example")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tlsgw-lab-")))
    origin_options: OriginOptions = field(default_factory=OriginOptions)
    lab: Lab = field(default_factory=Lab)
    pki: DemoPki | None = None
    origins: list[NginxOrigin] = field(default_factory=list)
    gateway: BackgroundProcess | None = None
    config: dict[str, Any] = field(default_factory=dict)
    gateway_stop_grace: float = DEFAULT_DRAIN_TIMEOUT + GATEWAY_STOP_MARGIN
    """How long `stop_gateway` lets tlsgw stop (drain included) before SIGKILL."""
    remove_workdir: bool = True
    """Delete `workdir` on stop (set False to keep logs for a post-mortem)."""

    def __enter__(self) -> InterceptionLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def config_path(self) -> Path:
        return self.workdir / "tlsgw.yaml"

    @property
    def inspection_log(self) -> Path:
        return self.workdir / "inspection.jsonl"

    @property
    def client_bundle(self) -> Path:
        """What the client trusts: the public root and the organisation's signing CA."""
        return self.workdir / "client-trust.pem"

    def start(self, with_gateway: bool = True) -> InterceptionLab:
        try:
            self.lab.build()
            self.pki = build_demo_pki(self.workdir, self.hosts)
            self.client_bundle.write_bytes(self.pki.public_root_file.read_bytes() + self.pki.signing_ca_file.read_bytes())
            for host, server in zip(self.hosts, self.lab.servers):
                cert = self.pki.servers[host]
                self.start_origin(server.namespace, [OriginSite(host, cert.cert_file, cert.key_file, f"hello from {host}\n")])
            self.config = base_config(self.workdir, self.lab, self.pki)
            if with_gateway:
                self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def start_origin(self, namespace: str, sites: list[OriginSite]) -> NginxOrigin:
        origin = NginxOrigin(namespace, sites, self.origin_options, workdir=self.workdir / f"nginx-{namespace}")
        self.origins.append(origin)
        origin.start()
        return origin

    def origin_for(self, host: str) -> NginxOrigin:
        return self.origins[self.hosts.index(host)]

    def write_config(self, config: dict[str, Any] | None = None) -> Path:
        self.config_path.write_text(yaml.safe_dump(config if config is not None else self.config, sort_keys=False))
        return self.config_path

    def start_gateway(self, config: dict[str, Any] | None = None) -> BackgroundProcess:
        """Start tlsgw with `config` (default: the base `self.config`, left unchanged)."""
        self.write_config(config)
        drain = (config if config is not None else self.config).get("gateway", {}).get("drain_timeout")
        self.gateway_stop_grace = (DEFAULT_DRAIN_TIMEOUT if drain is None else float(drain)) + GATEWAY_STOP_MARGIN
        log = self.workdir / "gateway.log"
        log.write_text("")
        self.gateway = self.lab.spawn(
            self.lab.gateway_ns, [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            log_path=log)
        deadline = time.monotonic() + GATEWAY_READY_TIMEOUT
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if READY_LINE in text:
                return self.gateway
            if not self.gateway.alive():
                raise ScenarioError(f"tlsgw exited during start-up:\n{text}")
            time.sleep(0.05)
        raise ScenarioError(f"tlsgw not ready after {GATEWAY_READY_TIMEOUT}s:\n{log.read_text(errors='replace')}")

    def clear_logs(self) -> None:
        """Empty the inspection log and the origins' access logs, so a test reads only the
        flows it makes."""
        if self.inspection_log.exists():
            self.inspection_log.write_text("")
        for origin in self.origins:
            if origin.access_log_path.exists():
                origin.access_log_path.write_text("")

    def restart_gateway(self, config: dict[str, Any] | None = None) -> BackgroundProcess:
        """Stop tlsgw if it runs, clear the logs, and start it with `config`."""
        self.stop_gateway()
        self.clear_logs()
        return self.start_gateway(config)

    def stop_gateway(self) -> str:
        """Stop tlsgw by PID (SIGTERM, so it drains and removes its rules); returns its log."""
        if self.gateway is not None:
            self.gateway.stop(self.gateway_stop_grace)
            self.gateway = None
        log = self.workdir / "gateway.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        """Stop every process by PID, remove the namespaces, and delete the work directory
        if this lab made it (keys included: nothing of a lab outlives it)."""
        try:
            self.stop_gateway()
            for origin in self.origins:
                origin.stop()
        finally:
            self.origins.clear()
            self.lab.teardown()
            if self.remove_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the client's view ---------------------------------------------------------------

    def curl(self, host: str, path: str = "/", extra: tuple[str, ...] = (), timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.lab.client_ns, [
            "curl", "-sS", "--max-time", str(int(timeout)), "--cacert", str(self.client_bundle),
            *extra, f"https://{host}{path}"], check=False, timeout=timeout + 5)

    def peek_certificate(self, host: str) -> tuple[x509.Certificate | None, bool]:
        """The leaf the client is shown for `host`, and whether it verifies for the client."""
        proc = self.lab.run(self.lab.client_ns, [
            "openssl", "s_client", "-connect", f"{host}:443", "-servername", host,
            "-CAfile", str(self.client_bundle), "-verify_hostname", host],
            # No request: s_client shows the certificate even when it does not verify, and a
            # request would then reach the server. A trusted peek looks like a pinning
            # client's connection to tlsgw (handshake, then nothing): callers stay below
            # `pinning_failures` peeks per site and gateway run.
            check=False, input="", timeout=15)
        match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", proc.stdout, re.S)
        cert = x509.load_pem_x509_certificate(match.group(0).encode()) if match else None
        return cert, "Verify return code: 0 (ok)" in proc.stdout

    def fetch(self, host: str) -> Fetch:
        proc = self.curl(host)
        cert, verify_ok = self.peek_certificate(host)
        return Fetch(
            host=host, exit_code=proc.returncode, body=proc.stdout, curl_error=proc.stderr.strip(),
            subject=cert.subject.rfc4514_string() if cert else None,
            issuer=cert.issuer.rfc4514_string() if cert else None, verify_ok=verify_ok,
        )

    # -- what tlsgw and the servers saw --------------------------------------------------

    def flow_records(self, sni: str | None = None, wait_for: int = 0, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            records = []
            if self.inspection_log.exists():
                for line in self.inspection_log.read_text().splitlines():
                    record = json.loads(line)
                    if sni is None or record.get("sni") == sni:
                        records.append(record)
            if len(records) >= wait_for or time.monotonic() > deadline:
                return records
            time.sleep(0.05)


def environment_ready() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "nginx", "curl", "openssl"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"needs {tool}"
    return None
