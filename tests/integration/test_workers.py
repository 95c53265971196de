"""Worker processes (issue 8, `gateway.workers: 2`) in the lab: connections spread over both
workers, counters and sessions summed by the main process, reload reaching every worker
(or none), a killed worker restarted, no worker outliving the gateway, and a stop that
drains the workers' sessions before it stops them."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.lab.scenario import InterceptionLab, environment_ready
from tests.support.operations import (
    Download,
    HeldSession,
    bulk_body,
    gateway_config,
    lab_env,
    nft_table,
    tlsgw,
    wait_for_log,
)

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"
FLOWS = 20  # both workers get some: all 20 hashed to one of two listeners has odds of 2 in a million
WAIT = 30.0  # seconds to wait for a restart or an exit on a loaded 2-core box (not asserted on)


@pytest.fixture
def gateway(env: InterceptionLab) -> Iterator[InterceptionLab]:
    env.start_gateway(gateway_config(env, workers=2))
    try:
        yield env
    finally:
        env.stop_gateway()


def status(env: InterceptionLab) -> dict[str, Any]:
    answer = tlsgw(env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)  # type: ignore[no-any-return]


def worker_pids(env: InterceptionLab) -> list[int]:
    return [w["pid"] for w in status(env)["workers"] if w["state"] == "serving"]


def fetch(env: InterceptionLab, count: int = FLOWS) -> None:
    """`count` new TLS connections to HOST from the client, one after the other."""
    loop = (f"for i in $(seq {count}); do curl -sS -o /dev/null --max-time 10 --cacert {env.client_bundle} "
            f"https://{HOST}/ || exit 1; done")
    done = env.lab.run(env.lab.client_ns, ["sh", "-c", loop], check=False, timeout=count * 15)
    assert done.returncode == 0, done.stderr


def new_records(env: InterceptionLab, before: int, count: int = FLOWS) -> list[dict[str, Any]]:
    records = env.flow_records(wait_for=before + count)
    assert len(records) == before + count
    return records[before:]


def pid_of(record: dict[str, Any]) -> int:
    """The process that served a flow: flow ids start with its PID in hex (proxy/flow.py)."""
    return int(record["flow"].split("-")[0], 16)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def listening(env: InterceptionLab, port: int) -> bool:
    return bool(env.lab.run(env.lab.gateway_ns, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip())


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_connections_are_served_by_both_workers_and_counted_once(gateway: InterceptionLab) -> None:
    pids = worker_pids(gateway)
    assert len(pids) == 2 and gateway.gateway is not None and gateway.gateway.pid not in pids
    before = len(gateway.flow_records())
    fetch(gateway)
    served = Counter(pid_of(r) for r in new_records(gateway, before))
    assert set(served) == set(pids)  # both workers, and nobody else

    stats = json.loads(tlsgw(gateway, "stats", "--json").stdout)
    assert stats["view"]["connections"]["seen"] == FLOWS
    assert stats["view"]["connections"]["decrypted"] == FLOWS
    assert {w["pid"]: w["counters"]["connections"] for w in stats["workers"]} == dict(served)
    assert "connections per worker process" in tlsgw(gateway, "stats").stdout

    session = HeldSession(gateway, HOST)
    try:
        listing = json.loads(tlsgw(gateway, "sessions", "--json").stdout)
        mine = [s for s in listing["sessions"] if s["client"] == f"192.0.2.10:{session.port}"]
        assert len(mine) == 1 and mine[0]["worker"] in pids and mine[0]["outcome"] == "decrypted"
        assert listing["active"] == 1
        assert status(gateway)["sessions"]["active"] == 1
    finally:
        session.close()


def test_reload_reaches_every_worker_and_a_bad_one_none(gateway: InterceptionLab) -> None:
    pids = worker_pids(gateway)
    config = copy.deepcopy(gateway.config)
    config["gateway"]["workers"] = 2
    config["decryption_policies"][0]["domains"].append(HOST)
    gateway.write_config(config)
    answer = tlsgw(gateway, "reload")
    assert answer.returncode == 0, answer.stderr
    before = len(gateway.flow_records())
    fetch(gateway)
    records = new_records(gateway, before)
    assert {pid_of(r) for r in records} == set(pids)
    assert {r["outcome"] for r in records} == {"not decrypted"}  # the new domain exception, in both

    gateway.config_path.write_text(gateway.config_path.read_text() + "\nsurprise: 1\n")
    answer = tlsgw(gateway, "reload")
    assert answer.returncode == 2 and "surprise" in answer.stderr
    before += FLOWS
    fetch(gateway)
    records = new_records(gateway, before)
    assert {pid_of(r) for r in records} == set(pids) and {r["outcome"] for r in records} == {"not decrypted"}
    assert worker_pids(gateway) == pids


def test_a_configuration_one_worker_cannot_use_changes_nothing(gateway: InterceptionLab) -> None:
    """The main process validates the file, but binding the new port is the workers' job:
    a port some other program holds fails the reload in the workers, and every worker
    keeps the old configuration, as do the rules."""
    blocker = gateway.lab.spawn(gateway.lab.gateway_ns, [sys.executable, "-c", (
        "import socket, time\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 9443)); s.listen()\n"
        "time.sleep(600)\n")])
    try:
        assert wait_until(lambda: listening(gateway, 9443))
        config = gateway_config(gateway, workers=2, listen_port=9443)
        config["decryption_policies"][0]["domains"].append(HOST)
        gateway.write_config(config)
        answer = tlsgw(gateway, "reload")
        assert answer.returncode == 1
        assert "worker" in answer.stderr and "9443" in answer.stderr
        assert "tproxy to :8443" in gateway.lab.run(gateway.lab.gateway_ns,
                                                     ["nft", "list", "table", "ip", "tlsgw"]).stdout
        before = len(gateway.flow_records())
        fetch(gateway)
        records = new_records(gateway, before)
        assert {r["outcome"] for r in records} == {"decrypted"}  # the domain exception did not come in
        assert {pid_of(r) for r in records} == set(worker_pids(gateway))
        assert status(gateway)["last_reload"]["ok"] is False
    finally:
        blocker.stop()


def test_manual_bypass_keeps_the_sessions_of_every_worker(gateway: InterceptionLab) -> None:
    """The kept tuples of a fallback are read from the workers' sockets, not the main
    process's (which has none): a session held by a worker goes on."""
    session = HeldSession(gateway, HOST)
    try:
        assert "Signing CA" in session.issuer
        on = tlsgw(gateway, "bypass", "on")
        assert on.returncode == 0, on.stderr
        assert f"192.0.2.10 . {session.port} . 192.0.2.20 . 443" in nft_table(gateway)
        cert, _ = gateway.peek_certificate(HOST)
        assert cert is not None and "Signing CA" not in cert.issuer.rfc4514_string()  # new flows bypass
        assert session.request() == f"response hello from {HOST}"
        assert tlsgw(gateway, "bypass", "off").returncode == 0
    finally:
        session.close()


def test_a_killed_worker_is_restarted_and_traffic_keeps_flowing(gateway: InterceptionLab) -> None:
    victim, survivor = worker_pids(gateway)
    os.kill(victim, signal.SIGKILL)  # a worker of the gateway this test started
    assert wait_until(lambda: len(worker_pids(gateway)) == 2 and victim not in worker_pids(gateway))
    pids = worker_pids(gateway)
    assert survivor in pids
    row = next(w for w in status(gateway)["workers"] if w["pid"] not in (victim, survivor))
    assert row["restarts"] == 1 and "SIGKILL" in row["last_exit"]
    before = len(gateway.flow_records())
    fetch(gateway)
    assert {pid_of(r) for r in new_records(gateway, before)} == set(pids)
    assert f"pid {victim}) was killed by SIGKILL" in (gateway.workdir / "gateway.log").read_text()


def test_stopping_the_gateway_stops_every_worker(env: InterceptionLab) -> None:
    env.start_gateway(gateway_config(env, workers=2))
    try:
        pids = worker_pids(env)
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        log = env.stop_gateway()
    assert not any(alive(p) for p in pids)
    assert "Traceback" not in log


def test_stop_drains_the_sessions_of_the_workers(env: InterceptionLab) -> None:
    """The sessions live in the workers: SIGTERM to the main process lets a worker's
    download finish (new flows already bypass), and only then are the workers stopped."""
    # 24 MiB at 4 MiB/s: about 6 s, far more than the socket buffers on the way hold.
    with bulk_body(env, HOST, 24) as body:
        env.start_gateway(gateway_config(env, workers=2, drain_timeout=60))
        try:
            pids = worker_pids(env)
            download = Download(env, HOST, rate="4M")
            assert download.wait_in_flight(), download.finish()
            assert env.gateway is not None
            process = env.gateway.popen
            process.send_signal(signal.SIGTERM)
            assert wait_for_log(env, "new flows cross the bridge untouched"), env.gateway.log_tail()
            answer = status(env)
            assert answer["state"] == "draining" and answer["sessions"]["active"] == 1
            assert all(alive(p) for p in pids)  # still serving the download
            cert, _ = env.peek_certificate(HOST)
            assert cert is not None and "Signing CA" not in cert.issuer.rfc4514_string()  # new flows bypass
            code, received, error = download.finish()
            process.wait(timeout=WAIT)
            log = env.stop_gateway()
        finally:
            env.stop_gateway()
    assert code == 0, error
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    assert "no session left in flight" in log and "cutting" not in log, log
    assert not any(alive(p) for p in pids)
    assert nft_table(env) == ""


def test_workers_die_with_a_killed_gateway(env: InterceptionLab) -> None:
    """PR_SET_PDEATHSIG: nobody is left to stop them by PID, the kernel does."""
    env.start_gateway(gateway_config(env, workers=2))
    try:
        pids = worker_pids(env)
        assert env.gateway is not None
        env.gateway.popen.send_signal(signal.SIGKILL)
        assert wait_until(lambda: not any(alive(p) for p in pids))
    finally:
        env.stop_gateway()
        # The killed gateway left its rules to the dead-man switch; put the bridge back now.
        env.lab.run(env.lab.gateway_ns, [sys.executable, "-m", "gateway", "cleanup", "--config",
                                         str(env.config_path)], check=False)
