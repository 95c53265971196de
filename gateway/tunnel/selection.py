"""Which inner TCP connections of a segment's tunnels tlsgw takes to its proxy.

The same classes of flows as the bridge steering of plain traffic (`netfilter.plan`):
the client policies' detection ports, and each enabled server policy's server proxy
(its destinations and detection ports), all within the segment's own address limits.
A tunneled SYN that matches none of them - a port no policy detects, a server no
server proxy names - crosses the bridge untouched inside its tunnel, never reaching the
proxy at all. Pure: configuration in, predicates out.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from gateway.config.model import GatewayConfig, PortRange, Segment, networks_contain, ports_contain


@dataclass(frozen=True, slots=True)
class FlowClass:
    ports: tuple[PortRange, ...]
    sources: tuple[IPv4Network, ...]
    """Client addresses; empty means any."""
    destinations: tuple[tuple[IPv4Network, ...], ...]
    """The server address must be in every one of these tuples (segment limit, proxy's list)."""

    def matches(self, client: IPv4Address, server: IPv4Address, port: int) -> bool:
        return (
            ports_contain(self.ports, port)
            and (not self.sources or networks_contain(self.sources, client))
            and all(networks_contain(d, server) for d in self.destinations)
        )


@dataclass(frozen=True, slots=True)
class Selection:
    """The flow classes of each segment, by segment index."""

    classes: tuple[tuple[FlowClass, ...], ...]

    def matches(self, segment: int, client: bytes, server: bytes, port: int) -> bool:
        """Whether a new inner connection (packed addresses) is one to inspect."""
        if not 0 <= segment < len(self.classes):
            return False
        found = self.classes[segment]
        if not found:
            return False
        client_ip, server_ip = IPv4Address(client), IPv4Address(server)
        return any(c.matches(client_ip, server_ip, port) for c in found)

    def ports(self, segment: int) -> tuple[PortRange, ...]:
        """Every detection port of a segment, sorted and without duplicates (for rules)."""
        return tuple(sorted({p for c in self.classes[segment] for p in c.ports}))


def build_selection(config: GatewayConfig) -> Selection:
    return Selection(tuple(segment_classes(config, s) for s in config.gateway.segments))


def segment_classes(config: GatewayConfig, segment: Segment) -> tuple[FlowClass, ...]:
    own = (tuple(segment.destinations),) if segment.destinations else ()
    classes: list[FlowClass] = []
    client_ports = config.client_detection_ports(segment)
    if client_ports:
        classes.append(FlowClass(client_ports, tuple(segment.sources), own))
    if config.gateway.ssl_inspection.server:
        for policy in config.profile(segment.profile).server_policies:
            if not policy.enabled:
                continue
            proxy = config.server_proxy(policy.server_proxy)
            if proxy.detection_ports and proxy.destinations:
                classes.append(FlowClass(proxy.detection_ports, tuple(segment.sources),
                                         (*own, tuple(proxy.destinations))))
    return tuple(classes)
