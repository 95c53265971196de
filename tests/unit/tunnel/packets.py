"""Tunnel test traffic built with scapy, an encoder independent of `gateway.tunnel`."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Packet

CLIENT_MAC = "02:00:00:00:00:0a"
ROUTER_MAC = "02:00:00:00:00:14"
OUTER_CLIENT = "192.0.2.10"
OUTER_SERVER = "192.0.2.20"
INNER_CLIENT = "10.1.0.10"
INNER_SERVER = "10.2.0.20"


def inner_tcp(sport: int = 40000, dport: int = 443, flags: str = "S", mss: int | None = 1460,
              src: str = INNER_CLIENT, dst: str = INNER_SERVER, payload: bytes = b"") -> Packet:
    options = [("MSS", mss)] if mss is not None else []
    return IP(src=src, dst=dst, ttl=64) / TCP(sport=sport, dport=dport, flags=flags, options=options) / payload


def gre(inner: Packet | bytes, *, key: int | None = None, ttl: int = 64, tos: int = 0, ip_flags: int = 0,
        src: str = OUTER_CLIENT, dst: str = OUTER_SERVER, **gre_fields: Any) -> Packet:
    fields: dict[str, Any] = dict(gre_fields)
    if key is not None:
        fields.update(key_present=1, key=key)
    return IP(src=src, dst=dst, ttl=ttl, tos=tos, flags=ip_flags) / GRE(**fields) / inner


def ipip(inner: Packet | bytes, *, ttl: int = 64, tos: int = 0, src: str = OUTER_CLIENT,
         dst: str = OUTER_SERVER) -> Packet:
    return IP(src=src, dst=dst, ttl=ttl, tos=tos, proto=4) / inner


def ether(packet: Packet, src: str = CLIENT_MAC, dst: str = ROUTER_MAC) -> bytes:
    return bytes(Ether(src=src, dst=dst) / packet)


__all__ = ["IP", "IPv6", "TCP", "UDP", "GRE", "Ether", "Packet", "inner_tcp", "gre", "ipip", "ether"]
