"""Fail-open and fallback end to end (issue 6): a real tlsgw on a namespace bridge, killed,
stopped (with and without a drain of the sessions in flight), bypassed by hand, and in
fail-closed mode.

"Untouched" is checked the way a client would notice: the TLS handshake verifies against
the public root alone, which a certificate forged by the gateway never does.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.operations import lab_env
from gateway.lab.scenario import InterceptionLab, environment_ready
from netfilter.fallback import ALIVE_TIMEOUT
from tests.support.operations import (
    Download,
    HeldSession,
    bulk_body,
    gateway_config,
    nft_table,
    probe_result,
    start_probe,
    tlsgw,
    wait_for_log,
)

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"
# The bound: after a SIGKILL, new connections pass within one second.
FAIL_OPEN_BOUND = 1.0
# The drain tests' download: 24 MiB at 4 MiB/s lasts about 6 s, long enough to stop the
# gateway, look at it and open a new connection while the download is still in flight;
# and far more than the client's receive buffer (bulk_body caps it) and the gateway's
# send buffer (4 MiB at most) hold, so most of it crosses the gateway after the signal.
BULK_MB = 24
RATE = "4M"
DRAIN_STARTED = "new flows cross the bridge untouched"
# Bounds for waits that are not asserted on (a loaded 2-core box).
EXIT_WAIT = 60.0


@pytest.fixture
def gateway(env: InterceptionLab) -> Iterator[InterceptionLab]:
    env.start_gateway()
    try:
        yield env
    finally:
        env.stop_gateway()
        env.lab.run(env.lab.gateway_ns, ["sh", "-c", "nft delete table bridge tlsgw; nft delete table ip tlsgw"],
                    check=False)


def kept_set(env: InterceptionLab) -> str:
    return nft_table(env).split("set proxied")[1].split("chain")[0]


def intercepted(env: InterceptionLab) -> bool:
    cert, _ = env.peek_certificate(HOST)
    return cert is not None and "Signing CA" in cert.issuer.rfc4514_string()


def untouched(env: InterceptionLab) -> bool:
    cert, _ = env.peek_certificate(HOST)
    return cert is not None and "Signing CA" not in cert.issuer.rfc4514_string()


def test_sigkill_new_connections_pass_untouched_within_one_second(gateway: InterceptionLab) -> None:
    """No process acts after the kill: the dead-man element of the bridge table expires."""
    assert intercepted(gateway)
    probe = start_probe(gateway, HOST)
    assert gateway.gateway is not None
    killed = time.monotonic()
    gateway.gateway.popen.send_signal(signal.SIGKILL)
    passed, output = probe_result(probe)
    assert passed is not None, f"no untouched connection after the kill: {output}"
    elapsed = passed - killed
    print(f"\nSIGKILL -> first untouched connection: {elapsed * 1000:.0f} ms (dead-man timeout "
          f"{ALIVE_TIMEOUT * 1000:.0f} ms)")
    assert elapsed < FAIL_OPEN_BOUND, output
    # The rules are still there: the kernel stopped diverting on its own.
    table = nft_table(gateway)
    assert "chain prerouting" in table and "tcp timeout" not in table.split("set fallback")[0]
    assert untouched(gateway)
    # ExecStopPost's cleanup then removes them.
    cleanup = gateway.lab.run(gateway.lab.gateway_ns, [
        sys.executable, "-m", "gateway", "cleanup", "--config", str(gateway.config_path)], check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert nft_table(gateway) == ""


def test_stop_leaves_the_bridge_forwarding_untouched(gateway: InterceptionLab) -> None:
    assert intercepted(gateway)
    log = gateway.stop_gateway()
    assert "steering rules removed" in log
    assert nft_table(gateway) == ""
    assert untouched(gateway)


def test_manual_bypass_keeps_a_decrypted_session_alive(gateway: InterceptionLab) -> None:
    session = HeldSession(gateway, HOST)
    try:
        assert "Signing CA" in session.issuer  # decrypted by the gateway
        assert session.request() == f"response hello from {HOST}"

        on = tlsgw(gateway, "bypass", "on")
        assert on.returncode == 0, on.stderr
        assert "fallback engaged (manual)" in on.stdout
        assert untouched(gateway)  # new flows bypass
        assert session.request() == f"response hello from {HOST}"  # the live session goes on
        status = tlsgw(gateway, "status", "--json")
        assert '"manual"' in status.stdout and '"engaged": true' in status.stdout
        assert "192.0.2.10 . %d . 192.0.2.20 . 443" % session.port in nft_table(gateway)

        off = tlsgw(gateway, "bypass", "off")
        assert off.returncode == 0, off.stderr
        assert intercepted(gateway)
        assert session.request() == f"response hello from {HOST}"
    finally:
        session.close()
    # Kept tuples are forgotten once their sockets close.
    deadline = time.monotonic() + 10
    while "elements" in kept_set(gateway) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "elements" not in kept_set(gateway)
    records = [r for r in gateway.flow_records(HOST, wait_for=1) if r["client_port"] == session.port]
    assert len(records) == 1 and records[0]["outcome"] == "decrypted"


def test_manual_bypass_survives_a_restart(gateway: InterceptionLab) -> None:
    """An administrator's fallback is not silently undone by a crash and restart."""
    assert tlsgw(gateway, "bypass", "on").returncode == 0
    gateway.stop_gateway()
    gateway.start_gateway()
    assert untouched(gateway)
    assert "manual fallback is on" in (gateway.workdir / "gateway.log").read_text()
    assert tlsgw(gateway, "bypass", "off").returncode == 0
    assert intercepted(gateway)


def test_fail_closed_drops_steered_flows_while_dead(env: InterceptionLab) -> None:
    env.start_gateway(gateway_config(env, fail_mode="closed"))
    try:
        assert intercepted(env)
        assert env.gateway is not None
        env.gateway.popen.send_signal(signal.SIGKILL)
        env.gateway.popen.wait()
        deadline = time.monotonic() + 5
        while "tcp timeout" in nft_table(env).split("set fallback")[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "tcp timeout" not in nft_table(env).split("set fallback")[0]
        blocked = env.curl(HOST, timeout=2)
        assert blocked.returncode != 0  # dropped: neither forged nor untouched
        cleanup = env.lab.run(env.lab.gateway_ns, [sys.executable, "-m", "gateway", "cleanup", "--config",
                                                   str(env.config_path)], check=False)
        assert "fail_mode is closed" in cleanup.stdout
        assert "fail-closed" in nft_table(env)
    finally:
        env.stop_gateway()
        env.lab.run(env.lab.gateway_ns, ["sh", "-c", "nft delete table bridge tlsgw; nft delete table ip tlsgw"],
                    check=False)


def _remove_tables(env: InterceptionLab) -> None:
    env.lab.run(env.lab.gateway_ns, ["sh", "-c", "nft delete table bridge tlsgw; nft delete table ip tlsgw"],
                check=False)


def test_stop_drains_a_download_in_flight_while_new_flows_pass_untouched(env: InterceptionLab) -> None:
    """SIGTERM: the download that tlsgw decrypts goes on to its last byte, a connection
    opened meanwhile meets the origin's own certificate, and then tlsgw leaves by itself,
    its rules gone."""
    with bulk_body(env, HOST, BULK_MB) as body:
        env.start_gateway(gateway_config(env, drain_timeout=EXIT_WAIT))
        env.clear_logs()
        try:
            download = Download(env, HOST, rate=RATE)
            assert download.wait_in_flight(), download.finish()
            assert env.gateway is not None
            process = env.gateway.popen
            process.send_signal(signal.SIGTERM)
            assert wait_for_log(env, DRAIN_STARTED), env.gateway.log_tail()
            status = tlsgw(env, "status")
            assert "DRAINING" in status.stdout and "ENGAGED (drain)" in status.stdout, status.stdout + status.stderr
            assert untouched(env)  # new flows bypass tlsgw during the drain
            assert process.poll() is None and "chain prerouting" in nft_table(env)  # still draining
            code, received, error = download.finish()
            assert code == 0, error
            assert len(received) == len(body) and hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
            process.wait(timeout=EXIT_WAIT)
            log = env.stop_gateway()
        finally:
            env.stop_gateway()
            _remove_tables(env)
    assert process.returncode == 0, log
    assert "drain ended after" in log and "no session left in flight" in log, log
    assert "cutting" not in log
    assert nft_table(env) == ""
    records = env.flow_records(HOST, wait_for=1)
    assert [r["outcome"] for r in records] == ["decrypted"]  # the download, by tlsgw; the peek bypassed it


def test_no_drain_cuts_the_session_in_flight(env: InterceptionLab) -> None:
    """`drain_timeout: 0` is the stop of before: rules gone, sessions cut at once."""
    with bulk_body(env, HOST, BULK_MB) as body:
        env.start_gateway(gateway_config(env, drain_timeout=0))
        try:
            download = Download(env, HOST, rate=RATE)
            assert download.wait_in_flight(), download.finish()
            log = env.stop_gateway()
            code, received, _ = download.finish()
        finally:
            env.stop_gateway()
            _remove_tables(env)
    assert code != 0 and len(received) < len(body)
    assert "cutting 1 session(s) still in flight" in log, log
    assert DRAIN_STARTED not in log
    assert nft_table(env) == ""


def test_second_signal_ends_the_drain_at_once(env: InterceptionLab) -> None:
    with bulk_body(env, HOST, BULK_MB) as body:
        env.start_gateway(gateway_config(env, drain_timeout=EXIT_WAIT))
        try:
            download = Download(env, HOST, rate=RATE)
            assert download.wait_in_flight(), download.finish()
            assert env.gateway is not None
            process = env.gateway.popen
            process.send_signal(signal.SIGTERM)
            assert wait_for_log(env, DRAIN_STARTED), env.gateway.log_tail()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=EXIT_WAIT)  # well before the drain's own end (not asserted on)
            code, received, _ = download.finish()
            log = env.stop_gateway()
        finally:
            env.stop_gateway()
            _remove_tables(env)
    assert "SIGINT again: ending the drain now" in log and "drain ended after" in log, log
    assert "a second stop signal" in log and "cutting 1 session(s) still in flight" in log, log
    assert code != 0 and len(received) < len(body)
    assert nft_table(env) == ""

