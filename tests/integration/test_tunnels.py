"""TLS inside GRE and IP-in-IP tunnels, end to end (issue 7).

The client and server namespaces run their own user-space tunnel endpoints
(`tests/support/tunnel_endpoint.py`: TUN device + raw socket; these kernels have no GRE
or IP-in-IP devices), so every packet between the inner addresses 10.1.0.10 and
10.2.0.20 crosses the gateway's bridge inside a tunnel. `shop.example` resolves to the
inner server address for the client. A real tlsgw with `gateway.tunnels.enabled` runs on
the bridge; curl and openssl s_client are the client, nginx the server.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from gateway.lab.origin import OriginOptions
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import CLIENT_INTERFACE, SERVER1_INTERFACE, SERVER2_INTERFACE, Lab

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

ENDPOINT = Path(__file__).resolve().parents[1] / "support" / "tunnel_endpoint.py"
INNER_CLIENT = "10.1.0.10"
INNER_SERVER = "10.2.0.20"
HOSTS = {"shop.example": IPv4Address(INNER_SERVER), "www.bank.example": SERVER2_INTERFACE.ip}
BULK_MB = 4
# The client endpoint's outer TTL and TOS (DSCP 10), and the server endpoint's: distinct,
# so a test can tell which header a re-encapsulated packet repeats.
CLIENT_OUTER = {"ttl": 33, "tos": 40}
SERVER_OUTER = {"ttl": 50, "tos": 8}
WAIT = 30.0  # seconds for things that take well under one; generous for a loaded CI box


@dataclass
class TunnelEnds:
    client_stats: Path
    server_stats: Path

    def stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return (json.loads(self.client_stats.read_text()), json.loads(self.server_stats.read_text()))


@pytest.fixture(scope="module")
def env() -> Iterator[InterceptionLab]:
    lab = InterceptionLab(lab=Lab(hosts=HOSTS), origin_options=OriginOptions(http_port=80, bulk_mb=BULK_MB))
    try:
        lab.start(with_gateway=False)
        lab.config = copy.deepcopy(lab.config)
        lab.config["gateway"]["tunnels"] = {"enabled": True}
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def gateway(env: InterceptionLab) -> InterceptionLab:
    """tlsgw running with tunnels enabled; the inspection and access logs emptied."""
    if env.gateway is None or not env.gateway.alive():
        env.stop_gateway()
        env.start_gateway()
    env.clear_logs()
    return env


@contextmanager
def tunnel(env: InterceptionLab, mode: str, key: int | None = None, seq: bool = False) -> Iterator[TunnelEnds]:
    """Tunnel endpoints in the client and server1 namespaces, stopped (by PID) on exit."""
    lab = env.lab
    ends = TunnelEnds(env.workdir / f"tunnel-client-{mode}.json", env.workdir / f"tunnel-server-{mode}.json")
    options = [*(["--key", str(key)] if key is not None else []), *(["--seq"] if seq else [])]
    sides = [
        (lab.client_ns, CLIENT_INTERFACE.ip, SERVER1_INTERFACE.ip, INNER_CLIENT, "10.2.0.0/24", CLIENT_OUTER,
         ends.client_stats),
        (lab.server1_ns, SERVER1_INTERFACE.ip, CLIENT_INTERFACE.ip, INNER_SERVER, "10.1.0.0/24", SERVER_OUTER,
         ends.server_stats),
    ]
    processes = []
    try:
        for namespace, local, remote, address, route, outer, stats in sides:
            log = env.workdir / f"tunnel-{namespace}.log"
            log.write_text("")
            processes.append((lab.spawn(namespace, [
                sys.executable, str(ENDPOINT), "--mode", mode, *options, "--local", str(local),
                "--remote", str(remote), "--address", address, "--route", route,
                "--ttl", str(outer["ttl"]), "--tos", str(outer["tos"]), "--stats", str(stats)], log_path=log), log))
        for process, log in processes:
            wait_until(lambda: "ready" in log.read_text() or not process.alive(), f"tunnel endpoint {log}")
            assert process.alive(), log.read_text()
        yield ends
    finally:
        for process, _ in processes:
            process.stop()


def wait_until(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def counters(env: InterceptionLab) -> dict[str, int]:
    """The running gateway's counters, as `tlsgw stats --json` prints them."""
    done = subprocess.run([sys.executable, "-m", "gateway", "stats", "--json", "--config", str(env.config_path)],
                          capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout)["counters"])


def http(env: InterceptionLab, path: str = "/") -> subprocess.CompletedProcess[str]:
    return env.lab.run(env.lab.client_ns, ["curl", "-sS", "--max-time", "15", f"http://shop.example{path}"],
                       check=False, timeout=WAIT)


# -- inspected inside the tunnel ------------------------------------------------------------

TUNNELS = [("gre", None, {"type": "gre", "gre_key": None}),
           ("gre", 42, {"type": "gre", "gre_key": 42}),
           ("ipip", None, {"type": "ipip"})]


@pytest.mark.parametrize("mode,key,details", TUNNELS, ids=["gre-without-key", "gre-with-key", "ip-in-ip"])
def test_https_inside_a_tunnel_is_decrypted_and_logged_with_the_tunnel(
        gateway: InterceptionLab, mode: str, key: int | None, details: dict[str, Any]) -> None:
    with tunnel(gateway, mode, key) as ends:
        fetch = gateway.fetch("shop.example")
    assert fetch.ok, fetch.curl_error
    assert fetch.body == "hello from shop.example\n"
    assert fetch.issuer is not None and "tlsgw Demo Signing CA" in fetch.issuer, "the forged certificate"
    assert fetch.verify_ok

    records = gateway.flow_records(sni="shop.example", wait_for=2)
    assert len(records) == 2, records  # curl's and s_client's connections
    expected = {**details, "outer_client": str(CLIENT_INTERFACE.ip), "outer_server": str(SERVER1_INTERFACE.ip)}
    for record in records:
        assert record["tunnel"] == expected
        assert (record["client"], record["server"], record["server_port"]) == (INNER_CLIENT, INNER_SERVER, 443)
    assert {r["outcome"] for r in records} == {"decrypted"}
    assert any(r["http"] and r["http"][0]["path"] == "/" for r in records)

    seen = gateway.origins[0].wait_for_access_log(1)
    assert any(e.request == "GET / HTTP/1.1" for e in seen), seen
    assert {str(e.remote_addr) for e in seen} == {INNER_CLIENT}, "the server sees the inner client address"

    client_side, server_side = ends.stats()
    assert server_side["stats"].get("dropped.key_or_type", 0) == 0, "same key, same shape, both directions"
    assert client_side["stats"].get("dropped.key_or_type", 0) == 0
    # Re-encapsulated toward the server: the client endpoint's outer TTL and DSCP; toward
    # the client: the server endpoint's (or, before it spoke, the client's swapped).
    assert set(server_side["outer"]) == {"ttl=33 tos=40"}
    assert "ttl=50 tos=8" in client_side["outer"]
    assert set(client_side["outer"]) <= {"ttl=50 tos=8", "ttl=33 tos=40"}


# -- crossing untouched -----------------------------------------------------------------------


def test_tunneled_flow_matching_no_policy_crosses_untouched(gateway: InterceptionLab) -> None:
    before = counters(gateway)
    with tunnel(gateway, "gre", key=7):
        answer = http(gateway)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == "hello from shop.example\n"
    assert gateway.flow_records(timeout=0.5) == [], "never reached the proxy"
    seen = gateway.origins[0].wait_for_access_log(1)
    assert [(str(e.remote_addr), e.ssl_protocol, e.request) for e in seen] == [(INNER_CLIENT, "", "GET / HTTP/1.1")]
    after = counters(gateway)
    assert after.get("tunnel.not_inspected", 0) > before.get("tunnel.not_inspected", 0)
    assert after.get("tunnel.flows", 0) == before.get("tunnel.flows", 0)


@pytest.mark.parametrize("mode,seq,reason", [("gre", True, "gre_sequence"), ("nested", False, "nested")],
                         ids=["gre-with-sequence-numbers", "nested-tunnel"])
def test_unsupported_tunnels_cross_untouched_and_are_counted(
        gateway: InterceptionLab, mode: str, seq: bool, reason: str) -> None:
    before = counters(gateway)
    with tunnel(gateway, mode, key=5, seq=seq):
        fetch = gateway.fetch("shop.example")
    assert fetch.ok, fetch.curl_error
    assert fetch.issuer is not None and "Demo Public Root CA" in fetch.issuer, "the server's own certificate"
    assert gateway.flow_records(timeout=0.5) == []
    after = counters(gateway)
    assert after.get(f"tunnel.unsupported.{reason}", 0) > before.get(f"tunnel.unsupported.{reason}", 0)


# Frames built by scapy, sent by a plain packet socket (scapy's own sendp second-guesses
# IPv6 routes the lab does not have).
SEND_FRAMES = """
import socket, sys
from scapy.all import Ether, IP, IPv6, GRE, TCP, UDP, Raw
link = Ether(src="02:00:00:00:00:10", dst="02:00:00:00:00:20")
frames = [link / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(sport=2152, dport=2152) / Raw(b"\\x30\\xff\\x00\\x00"),
          link / IPv6(src="2001:db8::10", dst="2001:db8::20") / GRE() / IP() / TCP(dport=443),
          link / IP(src="192.0.2.10", dst="192.0.2.20", proto=41) / IPv6() / TCP(dport=443)]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((sys.argv[1], 0))
for frame in frames:
    for _ in range(3):
        sock.send(bytes(frame))
"""


def test_tunnels_the_bridge_carries_itself_are_counted_by_reason(gateway: InterceptionLab) -> None:
    """GTP-U, IPv6 outside and 6in4 never reach tlsgw: the kernel counts them."""
    before = counters(gateway)
    gateway.lab.run(gateway.lab.client_ns, [sys.executable, "-c", SEND_FRAMES, "eth0"], timeout=WAIT)
    reasons = ("gtp", "ipv6_outer", "ipv6_inner")

    def counted() -> bool:
        now = counters(gateway)
        return all(now.get(f"tunnel.unsupported.{r}", 0) - before.get(f"tunnel.unsupported.{r}", 0) >= 3
                   for r in reasons)

    wait_until(counted, "the kernel's tunnel counters")


# -- tlsgw going away -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill"], ids=["stopped", "killed"])
def test_tunnel_keeps_flowing_when_tlsgw_goes_away(gateway: InterceptionLab, how: str) -> None:
    """A download inside a tunnel that tlsgw carries (untouched: port 80) survives tlsgw
    stopping; after a SIGKILL, the dead-man's switch hands the tunnel back to the bridge."""
    before = counters(gateway)
    target = gateway.workdir / "bulk.out"
    target.unlink(missing_ok=True)
    with tunnel(gateway, "gre", key=9):
        download = gateway.lab.spawn(gateway.lab.client_ns, [
            "curl", "-sS", "--limit-rate", "1M", "--max-time", "60", "-o", str(target), "http://shop.example/bulk"])
        wait_until(lambda: target.exists() and target.stat().st_size > 256 * 1024, "the download to start")
        assert counters(gateway).get("tunnel.not_inspected", 0) > before.get("tunnel.not_inspected", 0), \
            "tlsgw carries the tunnel before it goes away"
        assert gateway.gateway is not None
        if how == "sigkill":
            gateway.gateway.popen.kill()
        gateway.stop_gateway()
        download.popen.wait(timeout=90)
        assert download.returncode == 0, download.log_tail()
        assert target.stat().st_size == BULK_MB * 1024 * 1024
        after = gateway.fetch("shop.example")  # new TLS flows in the tunnel: plain bridge, real certificate
    assert after.ok, after.curl_error
    assert after.issuer is not None and "Demo Public Root CA" in after.issuer
