"""Limits end to end (issue 6): the concurrency limit with its once-per-episode log line,
and no descriptor or task left behind after 10,000 connections of every kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.policy.limits import CRITICAL_THRESHOLD_MESSAGE
from tests.support.operations import HeldSession, gateway_config, lab_env, tlsgw, write_script

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"


def issuer(env: InterceptionLab) -> str:
    cert, _ = env.peek_certificate(HOST)
    assert cert is not None
    return cert.issuer.rfc4514_string()


def test_over_the_limit_new_flows_bypass_and_the_log_says_so_once_per_episode(env: InterceptionLab) -> None:
    env.start_gateway(gateway_config(env, limits={"max_concurrent": 1, "on_exceed": "bypass"}))
    log = env.workdir / "gateway.log"
    try:
        held = HeldSession(env, HOST)
        try:
            assert "Signing CA" in held.issuer
            for _ in range(3):
                assert "Signing CA" not in issuer(env)  # bypassed: the server's own certificate
            assert held.request() == f"response hello from {HOST}"
        finally:
            held.close()
        assert log.read_text().count(CRITICAL_THRESHOLD_MESSAGE) == 1
        assert f"{CRITICAL_THRESHOLD_MESSAGE} (1); new flows are bypassed" in log.read_text()
        records = [r for r in env.flow_records(HOST, wait_for=4) if r["outcome"] == "bypassed"]
        assert len(records) == 3
        assert {r["reason"] for r in records} == {"max concurrent connections (1) reached"}

        # The held session ended: below the limit again, so the next overload is a new episode.
        assert "Signing CA" in issuer(env)
        held = HeldSession(env, HOST)
        try:
            assert "Signing CA" not in issuer(env)
        finally:
            held.close()
        assert log.read_text().count(CRITICAL_THRESHOLD_MESSAGE) == 2
        stats = json.loads(tlsgw(env, "stats", "--json").stdout)
        assert stats["view"]["connections"]["over_limit"] == 4
        assert stats["view"]["by_reason"]["bypassed"] == {"limit": 4}
    finally:
        env.stop_gateway()


# Runs in the client namespace: N connections, C at a time, of five kinds, so every path
# of a flow ends at least a few hundred times: decrypted (full TLS both sides), spliced
# (a domain exception), closed before any byte, not TLS (reset), and a ClientHello cut
# short by the client.
LOAD = r"""
import asyncio, ssl, sys
total, concurrency = int(sys.argv[1]), int(sys.argv[2])
shop, bank = sys.argv[3], sys.argv[4]
plain = ssl.create_default_context()
plain.check_hostname = False
plain.verify_mode = ssl.CERT_NONE
HELLO_START = bytes.fromhex("16030100c8010000c40303") + bytes(32)

async def one(i):
    kind = i % 20
    try:
        if kind == 0:
            r, w = await asyncio.open_connection(shop, 443, ssl=plain, server_hostname="shop.example")
            w.write(b"GET / HTTP/1.0\r\nHost: shop.example\r\n\r\n")
            await r.read()
        elif kind < 8:
            r, w = await asyncio.open_connection(bank, 443, ssl=plain, server_hostname="www.bank.example")
        else:
            r, w = await asyncio.open_connection(shop, 443)
            if kind < 12:
                w.write(b"GET / HTTP/1.0\r\n\r\n")
                await w.drain()
                try:
                    await r.read()
                except ConnectionResetError:
                    pass  # not TLS: the gateway resets, as it should
            elif kind < 16:
                w.write(HELLO_START)
                await w.drain()
        w.close()
        try:
            await w.wait_closed()
        except (OSError, ssl.SSLError):
            pass
        return True
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return False

async def main():
    gate = asyncio.Semaphore(concurrency)
    async def bounded(i):
        async with gate:
            return await asyncio.wait_for(one(i), 30)
    results = await asyncio.gather(*(bounded(i) for i in range(total)), return_exceptions=True)
    print("done", sum(1 for r in results if r is True), len(results), flush=True)

asyncio.run(main())
"""

CONNECTIONS = 10_000
CONCURRENCY = 200


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_ten_thousand_connections_leave_no_descriptor_or_task_behind(env: InterceptionLab) -> None:
    env.start_gateway()
    try:
        assert env.gateway is not None
        pid = env.gateway.pid
        script = write_script(env, "load.py", LOAD)
        servers = [str(env.lab.hosts[h]) for h in ("shop.example", "www.bank.example")]

        def load(total: int) -> str:
            done = env.lab.run(env.lab.client_ns, [sys.executable, str(script), str(total), str(CONCURRENCY), *servers],
                               timeout=600)
            return done.stdout

        load(40)  # warm-up: forged certificate cached, lazy imports done, nft shell running
        time.sleep(1)
        baseline_fds = open_fds(pid)
        baseline_tasks = json.loads(tlsgw(env, "status", "--json").stdout)["health"]["tasks"]
        before = json.loads(tlsgw(env, "stats", "--json").stdout)["counters"]

        started = time.monotonic()
        out = load(CONNECTIONS)
        elapsed = time.monotonic() - started
        completed, attempted = map(int, out.split()[1:3])
        assert attempted == CONNECTIONS
        print(f"\n{CONNECTIONS} connections ({completed} completed by the client) in {elapsed:.1f}s; "
              f"gateway fds at baseline {baseline_fds}")

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(tlsgw(env, "status", "--json").stdout)
            if open_fds(pid) <= baseline_fds and status["sessions"]["active"] == 0:
                break
            time.sleep(0.5)
        assert open_fds(pid) == baseline_fds, subprocess.run(["ls", "-l", f"/proc/{pid}/fd"], capture_output=True,
                                                             text=True).stdout[-3000:]
        assert status["sessions"]["active"] == 0
        assert status["health"]["tasks"] == baseline_tasks
        after = json.loads(tlsgw(env, "stats", "--json").stdout)["counters"]
        seen = (after.get("connections", 0) + after.get("refused.peer_gone", 0)
                - before.get("connections", 0) - before.get("refused.peer_gone", 0))
        assert seen == CONNECTIONS  # every one went through the gateway
        assert completed >= CONNECTIONS * 0.99
    finally:
        env.stop_gateway()
