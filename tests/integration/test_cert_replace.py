"""Issue 4: a server certificate replaced with `tlsgw cert replace` is served after a reload
(SIGHUP), and a decrypted session in flight is not dropped: it keeps working on the
runtime it started with.

Real peers in the namespace lab: nginx as the organisation's server, openssl s_client as
the client. The certificates are imported with the `tlsgw cert` command line, with keys
sealed by a key secret, so the daemon also proves it opens sealed keys on load and reload.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from gateway.lab import netns
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import SERVER1_INTERFACE
from gateway.pki.keyseal import create_key_secret

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"
SERVER = str(SERVER1_INTERFACE.ip)
BODY = f"hello from {HOST}\n"
WAIT = 15.0  # seconds: an upper bound for slow CI, never a measured duration


@pytest.fixture(scope="module")
def env() -> Iterator[InterceptionLab]:
    lab = InterceptionLab()
    try:
        lab.start(with_gateway=False)
        create_key_secret(lab.workdir / "key-secret")
        config = copy.deepcopy(lab.config)
        config["pki"]["key_secret_file"] = str(lab.workdir / "key-secret")
        config["server_proxies"] = [{"name": "web", "destinations": [f"{SERVER}/32"], "detection_ports": ["443"],
                                     "decrypted_service": "http", "certificates": ["shop"]}]
        config["profiles"][0]["server_policies"] = [{"name": "web-in", "server_proxy": "web"}]
        lab.config = config
        lab.write_config()
        assert lab.pki is not None
        shop = lab.pki.servers[HOST]
        tlsgw_cert(lab, "import", "shop", str(shop.cert_file), "--key", str(shop.key_file))
        lab.start_gateway()
        yield lab
    finally:
        lab.stop()


def tlsgw_cert(lab: InterceptionLab, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gateway", "cert", "--config", str(lab.config_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_for(predicate_text: Path, pattern: str, count: int = 1) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        text = predicate_text.read_text(errors="replace") if predicate_text.exists() else ""
        if len(re.findall(pattern, text)) >= count:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not seen {count} time(s) in {predicate_text}:\n{text[-3000:]}")
        time.sleep(0.05)


def first_certificate(text: str) -> x509.Certificate:
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    assert match, text
    return x509.load_pem_x509_certificate(match.group(0).encode())


def new_connection_certificate(lab: InterceptionLab) -> tuple[x509.Certificate, str]:
    proc = lab.lab.run(lab.lab.client_ns, [
        "openssl", "s_client", "-connect", f"{HOST}:443", "-servername", HOST, "-CAfile", str(lab.client_bundle),
        "-verify_hostname", HOST, "-ign_eof"], check=False,
        input=f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n", timeout=WAIT)
    return first_certificate(proc.stdout), proc.stdout


def test_replaced_certificate_is_served_after_reload_without_dropping_a_session(env: InterceptionLab) -> None:
    assert env.pki is not None and env.gateway is not None
    old_cert = x509.load_pem_x509_certificate(env.pki.servers[HOST].cert_file.read_bytes())
    session_out = env.workdir / "session.out"
    session = subprocess.Popen(
        netns.exec_argv(env.lab.client_ns, ["openssl", "s_client", "-connect", f"{HOST}:443", "-servername", HOST,
                                            "-CAfile", str(env.client_bundle), "-ign_eof"]),
        stdin=subprocess.PIPE, stdout=session_out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    assert session.stdin is not None
    try:
        # 1. A decrypted session is in flight: one keep-alive request answered.
        session.stdin.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        session.stdin.flush()
        wait_for(session_out, re.escape(BODY))
        assert first_certificate(session_out.read_text()) == old_cert

        # 2. The certificate is replaced; the gateway reloads.
        renewed = env.pki.issue_server(HOST, file_stem="shop-renewed")
        out = tlsgw_cert(env, "replace", "shop", str(renewed.cert_file), "--key", str(renewed.key_file))
        assert "'shop_REPLACED'" in out
        new_cert = x509.load_pem_x509_certificate(renewed.cert_file.read_bytes())
        assert new_cert != old_cert
        gateway_log = env.workdir / "gateway.log"
        os.kill(env.gateway.pid, signal.SIGHUP)
        wait_for(gateway_log, "configuration reloaded")
        assert "reload refused" not in gateway_log.read_text()

        # 3. A new connection is shown the new certificate, and it verifies.
        served, text = new_connection_certificate(env)
        assert served == new_cert
        assert "Verify return code: 0 (ok)" in text and BODY in text

        # 4. The session in flight still works after the reload.
        assert session.poll() is None, "the session in flight was dropped"
        session.stdin.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        session.stdin.flush()
        session.stdin.close()
        session.wait(timeout=WAIT)
        assert session_out.read_text().count(BODY) == 2
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    records = [r for r in env.flow_records(sni=HOST, wait_for=2) if r["policy"] == "web-in"]
    assert len(records) == 2 and all(r["outcome"] == "decrypted" for r in records)
    assert all(r["server_certificate"] == "shop" for r in records)
    old_record = next(r for r in records if len(r.get("http") or []) == 2)
    assert [h["host"] for h in old_record["http"]] == [HOST, HOST]
