"""What is known about a flow when a decision is taken: addresses, segment, and what the
client's ClientHello said. Built by the proxy shell, consumed by the pure engine."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address


@dataclass(frozen=True, slots=True)
class FlowFacts:
    segment: str
    client: IPv4Address
    client_port: int
    server: IPv4Address
    server_port: int
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    offered_versions: tuple[int, ...] = ()
    """TLS wire versions the client offered (0x0304 = TLS 1.3), from supported_versions."""
