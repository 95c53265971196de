"""Fail-open and fallback end to end (issue 6): a real tlsgw on a namespace bridge, killed,
stopped, bypassed by hand, and in fail-closed mode.

"Untouched" is checked the way a client would notice: the TLS handshake verifies against
the public root alone, which a certificate forged by the gateway never does.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.operations import lab_env
from gateway.lab.scenario import InterceptionLab, environment_ready
from netfilter.fallback import ALIVE_TIMEOUT
from tests.support.operations import (
    HeldSession,
    gateway_config,
    nft_table,
    probe_result,
    start_probe,
    tlsgw,
)

env = lab_env  # the shared module-scoped lab (tests/support/operations.py)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOST = "shop.example"
# The bound: after a SIGKILL, new connections pass within one second.
FAIL_OPEN_BOUND = 1.0


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
