"""The running gateway as a service (issue 6): reload with good and bad configurations,
the control socket's permission checks with real non-root callers, status, stats,
sessions, the log query, the metrics endpoint, and the systemd notify protocol."""

from __future__ import annotations

import copy
import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.lab.scenario import InterceptionLab, environment_ready
from tests.support.operations import HeldSession, gateway_config, lab_env, nft_table, tlsgw

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"


@pytest.fixture
def gateway(env: InterceptionLab) -> Iterator[InterceptionLab]:
    env.start_gateway()
    try:
        yield env
    finally:
        env.stop_gateway()


def intercepted(env: InterceptionLab) -> bool:
    cert, _ = env.peek_certificate(HOST)
    assert cert is not None
    return "Signing CA" in cert.issuer.rfc4514_string()


def status(env: InterceptionLab) -> dict[str, Any]:
    answer = tlsgw(env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)  # type: ignore[no-any-return]


def listening(env: InterceptionLab, port: int) -> bool:
    out = env.lab.run(env.lab.gateway_ns, ["ss", "-Hltn", f"sport = :{port}"]).stdout
    return bool(out.strip())


# -- reload -----------------------------------------------------------------------------------


def test_bad_config_is_refused_with_the_error_and_nothing_changes(gateway: InterceptionLab) -> None:
    gateway.config_path.write_text(gateway.config_path.read_text() + "\nsurprise: 1\n")
    answer = tlsgw(gateway, "reload")
    assert answer.returncode == 2
    assert "surprise" in answer.stderr and "unknown key" in answer.stderr
    assert intercepted(gateway)
    last = status(gateway)["last_reload"]
    assert last["ok"] is False and "surprise" in last["message"]
    # The same through SIGHUP: logged, nothing changed.
    assert gateway.gateway is not None
    gateway.gateway.popen.send_signal(1)
    deadline = time.monotonic() + 10
    log = gateway.workdir / "gateway.log"
    while "reload refused" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "reload refused, configuration unchanged" in log.read_text()
    assert intercepted(gateway)


def test_good_config_applies_new_policy_while_live_sessions_keep_theirs(gateway: InterceptionLab) -> None:
    session = HeldSession(gateway, HOST)
    try:
        assert "Signing CA" in session.issuer
        config = copy.deepcopy(gateway.config)
        config["decryption_policies"][0]["domains"].append(HOST)
        gateway.write_config(config)
        answer = tlsgw(gateway, "reload")
        assert answer.returncode == 0, answer.stderr
        assert "configuration reloaded" in answer.stdout and "switched" not in answer.stdout
        assert not intercepted(gateway)  # new flows: not decrypted now
        assert session.request() == f"response hello from {HOST}"  # the old one: still decrypted
    finally:
        session.close()
    mine = [r for r in gateway.flow_records(HOST, wait_for=2) if r["client_port"] == session.port]
    assert [r["outcome"] for r in mine] == ["decrypted"]


def test_disabling_the_policy_switches_rules_without_cutting_its_sessions(gateway: InterceptionLab) -> None:
    session = HeldSession(gateway, HOST)
    try:
        config = copy.deepcopy(gateway.config)
        config["profiles"][0]["client_policies"][0]["enabled"] = False
        gateway.write_config(config)
        answer = tlsgw(gateway, "reload")
        assert answer.returncode == 0, answer.stderr
        assert "steering rules and listeners switched" in answer.stdout
        assert "tcp dport 443" not in nft_table(gateway)  # port 443 is no longer steered...
        assert not intercepted(gateway)
        assert session.request() == f"response hello from {HOST}"  # ...but the live session is kept
        assert f"192.0.2.10 . {session.port} . 192.0.2.20 . 443" in nft_table(gateway)
    finally:
        session.close()


def test_moving_the_listener_switches_rules_and_retires_the_old_one(gateway: InterceptionLab) -> None:
    session = HeldSession(gateway, HOST)
    try:
        gateway.write_config(gateway_config(gateway, listen_port=9443))
        answer = tlsgw(gateway, "reload")
        assert answer.returncode == 0, answer.stderr
        assert "tproxy to :9443" in gateway.lab.run(gateway.lab.gateway_ns, ["nft", "list", "table", "ip",
                                                                             "tlsgw"]).stdout
        assert listening(gateway, 9443) and listening(gateway, 8443)  # the old one still has a session
        assert intercepted(gateway)  # new flows through the new listener
        assert session.request() == f"response hello from {HOST}"
    finally:
        session.close()
    deadline = time.monotonic() + 10
    while listening(gateway, 8443) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening(gateway, 8443)


# -- what the gateway tells ---------------------------------------------------------------------


def test_status_stats_sessions_log_and_metrics(env: InterceptionLab) -> None:
    env.start_gateway(gateway_config(env, metrics={"listen": "127.0.0.1:9598"}))
    try:
        assert intercepted(env)
        assert env.curl("www.bank.example").returncode == 0  # not decrypted: a domain exception
        session = HeldSession(env, HOST)
        try:
            listing = json.loads(tlsgw(env, "sessions", "--json").stdout)
            mine = [s for s in listing["sessions"] if s["client"] == f"192.0.2.10:{session.port}"]
            assert len(mine) == 1 and mine[0]["server"] == "192.0.2.20:443"
            assert mine[0]["sni"] == HOST and mine[0]["outcome"] == "decrypted"
            text = tlsgw(env, "status").stdout
            assert "fallback:   off" in text and "policy:     default/client/out" in text
        finally:
            session.close()

        stats = json.loads(tlsgw(env, "stats", "--json", "--history").stdout)
        view = stats["view"]
        assert view["connections"]["decrypted"] >= 2 and view["connections"]["not_decrypted"] >= 1
        assert view["by_reason"]["not_decrypted"]["domain_exception"] >= 1
        seen = stats["current_minute"]["seen"] + sum(row["seen"] for row in stats["history"])
        assert seen == view["connections"]["seen"]  # every connection since start is in the view
        assert "SSL traffic per minute" in tlsgw(env, "stats", "--history").stdout

        found = json.loads(tlsgw(env, "log", "--json", "--sni", "*.bank.example").stdout)["records"]
        assert found and all(r["sni"] == "www.bank.example" and r["outcome"] == "not decrypted" for r in found)
        assert json.loads(tlsgw(env, "log", "--json", "--outcome", "blocked").stdout)["records"] == []
        bad = tlsgw(env, "log", "--since", "yesterday")
        assert bad.returncode == 1 and "yesterday" in bad.stderr

        metrics = env.lab.run(env.lab.gateway_ns, ["curl", "-sS", "http://127.0.0.1:9598/metrics"]).stdout
        assert "# TYPE tlsgw_connections_total counter" in metrics
        assert 'tlsgw_flows_total{outcome="not decrypted"}' in metrics
        assert "tlsgw_traffic_current_minute" in metrics
        missing = env.lab.run(env.lab.gateway_ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                  "http://127.0.0.1:9598/"]).stdout
        assert missing == "404"
    finally:
        env.stop_gateway()


def test_metrics_endpoint_is_off_unless_configured(gateway: InterceptionLab) -> None:
    probe = gateway.lab.run(gateway.lab.gateway_ns, ["curl", "-s", "http://127.0.0.1:9598/metrics"], check=False)
    assert probe.returncode != 0


# -- permissions ------------------------------------------------------------------------------


class Accounts:
    """Groups for one test run: the role groups (made only when the host lacks them) and a
    control group of its own; removed afterwards."""

    ROLES = ("tlsgw-admin", "tlsgw-operator", "tlsgw-auditor")

    def __init__(self) -> None:
        self.access = f"tgw{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def __enter__(self) -> Accounts:
        for name in (*self.ROLES, self.access):
            try:
                grp.getgrnam(name)
            except KeyError:
                subprocess.run(["groupadd", "--system", name], check=True)
                self.created.append(name)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.created):
            subprocess.run(["groupdel", name], check=False)

    def gid(self, name: str) -> int:
        return grp.getgrnam(name).gr_gid


def unused_uid() -> int:
    uid = 61000
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def as_user(env: InterceptionLab, accounts: Accounts, groups: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tlsgw ARGS` as a non-root user with exactly these supplementary groups."""
    gids = ",".join(str(accounts.gid(g)) for g in groups) or "-1"
    primary = str(accounts.gid(groups[0])) if groups else "65534"
    argv = ["setpriv", f"--reuid={unused_uid()}", f"--regid={primary}",
            f"--groups={gids}" if groups else "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            sys.executable, "-m", "gateway", *args, "--socket", str(env.workdir / "control.sock")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v groupadd setpriv"], capture_output=True).returncode != 0,
                    reason="needs groupadd and setpriv")
def test_permissions_follow_the_callers_groups(env: InterceptionLab) -> None:
    with Accounts() as accounts:
        config = gateway_config(env, control={**env.config["gateway"]["control"], "group": accounts.access})
        config["profiles"][0]["client_policies"][0]["locked"] = True
        os.chmod(env.workdir, 0o711)  # let the callers reach the socket; the socket itself is 0660
        env.start_gateway(config)
        try:
            sock = env.workdir / "control.sock"
            assert (sock.stat().st_mode & 0o777) == 0o660 and sock.stat().st_gid == accounts.gid(accounts.access)

            def run(role: str | None, *args: str) -> subprocess.CompletedProcess[str]:
                return as_user(env, accounts, [accounts.access, *([role] if role else [])], *args)

            assert run("tlsgw-auditor", "status").returncode == 0
            denied = run("tlsgw-auditor", "reload")
            assert denied.returncode == 77 and "tlsgw-operator or tlsgw-admin" in denied.stderr
            assert run("tlsgw-operator", "reload").returncode == 0
            denied = run("tlsgw-operator", "bypass", "on")
            assert denied.returncode == 77 and "tlsgw-admin" in denied.stderr
            assert run("tlsgw-admin", "bypass", "on").returncode == 0
            assert run("tlsgw-admin", "bypass", "off").returncode == 0
            assert run(None, "status").returncode == 77  # in the control group, but no role
            outsider = as_user(env, accounts, ["tlsgw-admin"], "status")  # a role, but not the control group
            assert outsider.returncode == 1 and "permission denied" in outsider.stderr

            # A locked policy: operators may not reload a change to it, administrators may.
            locked_change = copy.deepcopy(config)
            locked_change["profiles"][0]["client_policies"][0]["never_decrypt"] = ["192.0.2.10/32"]
            env.write_config(locked_change)
            denied = run("tlsgw-operator", "reload")
            assert denied.returncode == 77 and "locked client policy 'out'" in denied.stderr
            assert intercepted(env)
            assert run("tlsgw-admin", "reload").returncode == 0
            assert not intercepted(env)  # 192.0.2.10 is never decrypted now
        finally:
            env.stop_gateway()
            os.chmod(env.workdir, 0o700)


# -- systemd ----------------------------------------------------------------------------------


class FakeSystemd:
    """A NOTIFY_SOCKET: collects the daemon's datagrams, and notes whether the steering
    rules were in place when READY=1 arrived."""

    def __init__(self, env: InterceptionLab, path: Path) -> None:
        self.env = env
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.rules_at_ready: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data))
            if "READY=1" in data and self.rules_at_ready is None:
                self.rules_at_ready = nft_table(self.env)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def having(self, field: str) -> list[float]:
        return [t for t, m in self.messages if field in m.split("\n")]


def test_ready_after_rules_watchdog_keepalives_and_stopping(env: InterceptionLab,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    systemd = FakeSystemd(env, env.workdir / "notify.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(env.workdir / "notify.sock"))
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # keep-alives every 0.5 s
        env.start_gateway()
        monkeypatch.delenv("NOTIFY_SOCKET")
        monkeypatch.delenv("WATCHDOG_USEC")
        deadline = time.monotonic() + 10
        while len(systemd.having("WATCHDOG=1")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(systemd.having("READY=1")) == 1
        assert systemd.rules_at_ready is not None and "chain prerouting" in systemd.rules_at_ready
        assert len(systemd.having("WATCHDOG=1")) >= 4
        env.stop_gateway()
        assert systemd.having("STOPPING=1")
        ready = next(m for _, m in systemd.messages if "READY=1" in m)
        assert "STATUS=serving 1 segment(s)" in ready and "MAINPID=" in ready
    finally:
        env.stop_gateway()
        systemd.close()

