"""plan + render + NftBackend + routing + sysctls, end to end on a real bridge.

    client ns               gateway ns                         server ns
    eth0 192.0.2.10 ==veth== eth1 -- br0 192.0.2.1 -- eth2 ==veth== eth0 192.0.2.20
                                     (tlsgw rules)              echo of the peer on :443

Without tlsgw's rules the client talks to the server directly. With them, the
connection must land on a transparent listener in the gateway that sees the server's
address as its local address, and whose own upstream connection - bound to the
client's address - reaches the server and gets its answer back (DESIGN.md section 3
step 5). That exercises every rule: the client-side divert and TPROXY for the client
leg, the server-side divert and the socket-transparent rule for the upstream leg's
return traffic, and the policy routing for both. After `remove`, the client talks to the
server directly again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from netfilter.nft_backend import NftBackend
from netfilter.plan import steering
from netfilter.routing import ensure_policy_routing, remove_policy_routing
from netfilter.sysctl import prepare_steering, restore
from tests.support.netfilter_netns import COMMAND_TIMEOUT_S, in_netns, namespace, require_root, run
from tests.support.steering_samples import one_segment

pytestmark = pytest.mark.netns

CLIENT_IP, SERVER_IP, GATEWAY_CIDR = "192.0.2.10", "192.0.2.20", "192.0.2.1/24"
SERVER_PORT = 443
LISTEN_PORT = 8443  # one_segment(): listen_port 8443, segment index 0

# The server tells each peer which address it came from.
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(("server saw " + peer[0]).encode())
    c.close()
"""

# A minimal stand-in for tlsgw's proxy: IP_TRANSPARENT listener; for each connection,
# an upstream socket bound to the client's address connects to the original destination
# (getsockname()), and the server's answer is relayed. One JSON line per connection.
# The timeout only bounds a lost upstream SYN (the connection then fails visibly).
LISTENER = """
import json, socket, sys
IP_TRANSPARENT = 19
s = socket.socket()
s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    local = c.getsockname()
    try:
        up = socket.socket()
        up.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        up.settimeout(10)
        up.bind((peer[0], 0))
        up.connect(local)
        answer = up.recv(100).decode()
        up.close()
    except OSError as exc:
        answer = "upstream failed: " + repr(exc)
    print(json.dumps({"local": local, "peer": peer, "upstream": answer}), flush=True)
    c.sendall(("gateway relayed: " + answer).encode())
    c.close()
"""

# Prints "connected <reply>"; the timeout only bounds a lost SYN.
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    print("connected " + s.recv(200).decode(), flush=True)
"""


@dataclass(frozen=True)
class Topology:
    client: str
    gateway: str
    server: str
    bridge_mac: str


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_root("nft")
    with ExitStack() as stack:
        client = stack.enter_context(namespace("tlsgw-nfc-"))
        gateway = stack.enter_context(namespace("tlsgw-nfg-"))
        server = stack.enter_context(namespace("tlsgw-nfs-"))
        g = ("ip", "-n", gateway)
        run(*g, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        run(*g, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", client)
        run(*g, "link", "add", "eth2", "type", "veth", "peer", "name", "eth0", "netns", server)
        for port in ("eth1", "eth2"):
            run(*g, "link", "set", port, "master", "br0", "up")
        run(*g, "addr", "add", GATEWAY_CIDR, "dev", "br0")
        run(*g, "link", "set", "br0", "up")
        # Nothing may be routed: a diverted packet that misses TPROXY is dropped, never
        # forwarded to the server (which would hide a broken rule as a refused connection).
        in_netns(gateway, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
        for ns, address in ((client, CLIENT_IP), (server, SERVER_IP)):
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        (link,) = json.loads(run(*g, "-j", "link", "show", "br0"))
        yield Topology(client, gateway, server, link["address"])


def _connect(topology: Topology) -> str:
    return in_netns(topology.client, sys.executable, "-c", CLIENT, SERVER_IP, str(SERVER_PORT)).strip()


def _start(namespace: str, script: str, port: int) -> subprocess.Popen[str]:
    """Start a Python server in `namespace` and wait until it listens."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


DIRECT = f"connected server saw {CLIENT_IP}"
PROXIED = f"connected gateway relayed: server saw {CLIENT_IP}"


def test_steered_connection_is_proxied_transparently_both_ways(topology: Topology) -> None:
    ruleset = steering(one_segment(), topology.bridge_mac)
    assert ruleset.routing is not None
    backend = NftBackend(topology.gateway)
    processes: list[subprocess.Popen[str]] = []
    try:
        processes.append(_start(topology.server, SERVER, SERVER_PORT))
        processes.append(listener := _start(topology.gateway, LISTENER, LISTEN_PORT))
        assert listener.stdout is not None
        assert _connect(topology) == DIRECT, "without rules the bridge must forward untouched"

        backend.check(ruleset)
        state = prepare_steering(ruleset, topology.gateway)
        ensure_policy_routing(ruleset.routing.mark, ruleset.routing.table, topology.gateway)
        backend.apply(ruleset)

        assert _connect(topology) == PROXIED
        accepted = json.loads(listener.stdout.readline())
        assert accepted["local"] == [SERVER_IP, SERVER_PORT], "getsockname() must be the original destination"
        assert accepted["peer"][0] == CLIENT_IP

        backend.remove(ruleset)
        remove_policy_routing(ruleset.routing.mark, ruleset.routing.table, topology.gateway)
        restore(state)
        assert _connect(topology) == DIRECT, "after remove, the bridge must forward untouched again"
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=COMMAND_TIMEOUT_S)
