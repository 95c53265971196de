"""The lab: a client, a bridging gateway and two HTTPS servers, in network namespaces.

Used by the demo, the integration tests and the benchmark, so that all three exercise the
same wiring as a real "bump in the wire" appliance (DESIGN.md sections 1 and 3)::

    tgw-c-ID  (client)    eth0 192.0.2.10
                            ||  veth
    tgw-g-ID  (gateway)   eth1 (client_port)
                            |
                          br0 192.0.2.2/24, MAC = bridge_mac, ip_forward=0
                            |
                          eth2 (server_port)
                            ||  veth
    tgw-n-ID  (switch)    up0 --- sw0 --- s1 ==veth== tgw-s1-ID (server1) eth0 192.0.2.20  shop.example
                                   |
                                   +----- s2 ==veth== tgw-s2-ID (server2) eth0 192.0.2.21  www.bank.example

One /24 (192.0.2.0/24, TEST-NET-1), one L2 segment: the gateway is a bridge with exactly
two ports, like the segments of the configuration (`client_port`, `server_port`). The two
servers sit behind a plain switch namespace (`sw0`) so that the gateway still has a
single server-side port, as on a real appliance whose server port goes to a LAN.

Choices, and why:
- Every name carries the run's 8-character id (`tgw-c-1a2b3c4d`), so runs never collide
  and teardown can find everything. Interface names inside the namespaces are fixed and
  short (`eth0`, `eth1`, `br0`): veths are created directly in their namespaces and never
  exist in the host's, where a name could clash.
- `br0` has an address (`.2`): the gateway's IP stack needs one on the bridge for TPROXY's
  local delivery and for its own spoofed upstream connections (DESIGN.md section 3).
- `br0` gets a fixed, locally administered MAC (`bridge_mac`), because a bridge without
  one takes the lowest port MAC and changes it when ports change; the gateway's divert
  rule rewrites destination MACs to it.
- `net.ipv4.ip_forward=0` in the gateway (and the switch): nothing is ever routed. A frame
  that is diverted to the IP stack but finds no TPROXY listener is dropped, not routed
  through br0 with a changed TTL and MAC (the L3 fail-open DESIGN.md section 3 warns of).
  Forwarding is set explicitly because new namespaces inherit the host's IPv4 settings.
- STP is off and the forward delay is 0, so ports forward the moment they are up.
- Host names (`shop.example`, `www.bank.example`) exist only for the client, through
  `/etc/netns/<client ns>/hosts`, which `ip netns exec` mounts over `/etc/hosts`.
- The lab applies no tlsgw rules and sets no bridge-netfilter or rp_filter sysctls: that
  is the gateway's job, and a test of the gateway must see it do it.

Processes started through `Lab.spawn` (or handed to `Lab.track`) are stopped by PID
before the namespaces are deleted: a process survives the deletion of its namespace.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from types import TracebackType
from typing import Protocol

from gateway.lab import netns
from gateway.lab.netns import BackgroundProcess, NetnsError

logger = logging.getLogger(__name__)

LAB_NETWORK = IPv4Network("192.0.2.0/24")  # TEST-NET-1 (RFC 5737): never routed anywhere real
GATEWAY_INTERFACE = IPv4Interface("192.0.2.2/24")
CLIENT_INTERFACE = IPv4Interface("192.0.2.10/24")
SERVER1_INTERFACE = IPv4Interface("192.0.2.20/24")
SERVER2_INTERFACE = IPv4Interface("192.0.2.21/24")

DEFAULT_HOSTS: Mapping[str, IPv4Address] = {
    "shop.example": SERVER1_INTERFACE.ip,
    "www.bank.example": SERVER2_INTERFACE.ip,
}

# 8 characters keep the longest namespace name ("tgw-s1-" + id) at 15, so the same id can
# also be used in interface names if a caller wants to.
RUN_ID_PATTERN = re.compile(r"^[a-z0-9]{1,8}$")
HOST_INTERFACE = "eth0"
SWITCH_BRIDGE = "sw0"
SWITCH_UPLINK = "up0"


class Stoppable(Protocol):
    def stop(self) -> object: ...


@dataclass(frozen=True, slots=True)
class LabHost:
    """One end host of the lab: a namespace with one interface and one address."""

    role: str
    """`client`, `server1` or `server2`."""
    namespace: str
    interface: str
    interface_address: IPv4Interface

    @property
    def address(self) -> IPv4Address:
        return self.interface_address.ip


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def bridge_mac_for(run_id: str) -> str:
    """A locally administered unicast MAC (first octet 0x02) derived from the run id."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


class Lab:
    """The namespaces and links of one lab run.

    Use as a context manager, or call `build()` and, in a `finally`, `teardown()`.
    `teardown()` is idempotent and also cleans up after a `build()` that failed halfway.
    """

    def __init__(
        self,
        *,
        hosts: Mapping[str, IPv4Address | str] | None = None,
        run_id: str | None = None,
        bridge: str = "br0",
        client_port: str = "eth1",
        server_port: str = "eth2",
    ) -> None:
        """
        Args:
            hosts: names that resolve inside the client namespace, name -> address;
                default `DEFAULT_HOSTS` (`shop.example` -> server1,
                `www.bank.example` -> server2).
            run_id: 1..8 characters `[a-z0-9]`; default a fresh random id.
            bridge, client_port, server_port: interface names in the gateway namespace.

        Raises:
            NetnsError: an invalid run id or interface name.
        """
        self.run_id = run_id if run_id is not None else new_run_id()
        if not RUN_ID_PATTERN.match(self.run_id):
            raise NetnsError(("Lab", f"run_id={self.run_id}"), "run id must be 1..8 characters of [a-z0-9]")
        self.bridge = netns.check_ifname(bridge)
        self.client_port = netns.check_ifname(client_port)
        self.server_port = netns.check_ifname(server_port)
        self.bridge_mac = bridge_mac_for(self.run_id)
        self.network = LAB_NETWORK
        self.gateway_interface = GATEWAY_INTERFACE

        self.client_ns = f"tgw-c-{self.run_id}"
        self.gateway_ns = f"tgw-g-{self.run_id}"
        self.switch_ns = f"tgw-n-{self.run_id}"
        self.server1_ns = f"tgw-s1-{self.run_id}"
        self.server2_ns = f"tgw-s2-{self.run_id}"

        self.client = LabHost("client", self.client_ns, HOST_INTERFACE, CLIENT_INTERFACE)
        self.server1 = LabHost("server1", self.server1_ns, HOST_INTERFACE, SERVER1_INTERFACE)
        self.server2 = LabHost("server2", self.server2_ns, HOST_INTERFACE, SERVER2_INTERFACE)

        entries = DEFAULT_HOSTS if hosts is None else hosts
        self.hosts: dict[str, IPv4Address] = {name: IPv4Address(str(addr)) for name, addr in entries.items()}
        self._tracked: list[Stoppable] = []
        self._built = False

    # --- names and addresses -----------------------------------------------------------

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, in creation order."""
        return (self.client_ns, self.gateway_ns, self.switch_ns, self.server1_ns, self.server2_ns)

    @property
    def servers(self) -> tuple[LabHost, LabHost]:
        return (self.server1, self.server2)

    @property
    def client_address(self) -> IPv4Address:
        return self.client.address

    @property
    def server1_address(self) -> IPv4Address:
        return self.server1.address

    @property
    def server2_address(self) -> IPv4Address:
        return self.server2.address

    @property
    def gateway_address(self) -> IPv4Address:
        return self.gateway_interface.ip

    @property
    def built(self) -> bool:
        return self._built

    # --- lifecycle ---------------------------------------------------------------------

    def build(self) -> Lab:
        """Create namespaces, links, bridges, addresses and the client's hosts file.

        Raises:
            NetnsError: a step failed; everything created so far has been removed.
        """
        if self._built:
            return self
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        self._built = True
        logger.debug("lab %s built: %s", self.run_id, ", ".join(self.namespaces))
        return self

    def _build(self) -> None:
        for name in self.namespaces:
            netns.create_namespace(name)
        for name in (self.gateway_ns, self.switch_ns):
            netns.set_sysctl(name, "net.ipv4.ip_forward", 0)

        gw, sw = self.gateway_ns, self.switch_ns
        netns.add_veth(gw, self.client_port, self.client_ns, HOST_INTERFACE)
        netns.add_veth(gw, self.server_port, sw, SWITCH_UPLINK)
        netns.add_veth(sw, "s1", self.server1_ns, HOST_INTERFACE)
        netns.add_veth(sw, "s2", self.server2_ns, HOST_INTERFACE)

        netns.add_bridge(gw, self.bridge, mac=self.bridge_mac)
        netns.add_bridge(sw, SWITCH_BRIDGE)
        for port in (self.client_port, self.server_port):
            netns.enslave(gw, port, self.bridge)
        for port in (SWITCH_UPLINK, "s1", "s2"):
            netns.enslave(sw, port, SWITCH_BRIDGE)

        netns.add_address(gw, self.bridge, self.gateway_interface)
        for host in (self.client, self.server1, self.server2):
            netns.add_address(host.namespace, host.interface, host.interface_address)

        for port in (self.client_port, self.server_port, self.bridge):
            netns.set_up(gw, port)
        for port in (SWITCH_UPLINK, "s1", "s2", SWITCH_BRIDGE):
            netns.set_up(sw, port)
        for host in (self.client, self.server1, self.server2):
            netns.set_up(host.namespace, host.interface)

        netns.write_hosts(self.client_ns, self.hosts)

    def teardown(self) -> None:
        """Stop tracked processes (by PID), then delete every namespace and /etc/netns dir.

        Idempotent, and attempts every step even when one fails.

        Raises:
            NetnsError: the first step that failed, after all were attempted.
        """
        errors: list[BaseException] = []
        while self._tracked:
            item = self._tracked.pop()
            try:
                item.stop()
            except Exception as e:  # keep going: leaving namespaces behind is worse
                logger.warning("lab %s: stopping %r failed: %s", self.run_id, item, e)
                errors.append(e)
        for name in reversed(self.namespaces):
            try:
                netns.delete_namespace(name)
            except Exception as e:
                logger.warning("lab %s: deleting namespace %s failed: %s", self.run_id, name, e)
                errors.append(e)
        self._built = False
        if errors:
            raise errors[0]

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    # --- processes ---------------------------------------------------------------------

    def track(self, item: Stoppable) -> None:
        """Have `teardown()` call `item.stop()` (last tracked, first stopped)."""
        self._tracked.append(item)

    def spawn(self, namespace: str, argv: Sequence[str], *, log_path: Path | None = None) -> BackgroundProcess:
        """Start a background process in one of the lab's namespaces; stopped at teardown."""
        self._check_namespace(namespace)
        process = netns.spawn_in(namespace, argv, log_path=log_path)
        self.track(process)
        return process

    def run(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = netns.COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in one of the lab's namespaces (see `netns.run_in`)."""
        self._check_namespace(namespace)
        return netns.run_in(namespace, argv, check=check, input=input, timeout=timeout)

    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise NetnsError(("Lab", namespace), f"not a namespace of lab {self.run_id}")

    def __repr__(self) -> str:
        return f"Lab(run_id={self.run_id!r}, built={self._built})"
