"""A user-space tunnel endpoint for the lab: GRE (with or without key, or with sequence
numbers), IP-in-IP, or GRE inside GRE, between a TUN device and a raw IP socket.

The lab's kernels have no GRE or IP-in-IP devices, so the client and server namespaces
run one of these each, as the two routers at the ends of a tunnel would. Run inside a
namespace (as root):

    python tunnel_endpoint.py --mode gre --key 42 --local 192.0.2.10 --remote 192.0.2.20 \\
        --address 10.1.0.10 --route 10.2.0.0/24 [--ttl 33 --tos 40] [--stats FILE]

Deliberately independent of `gateway.tunnel` (stdlib only, its own encoder and decoder),
so the lab checks tlsgw against a second implementation. Packets with another key, from
another address or of another shape are dropped and counted; on SIGTERM the counts and
the outer TTL/TOS values seen are written as JSON to `--stats`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
GRE_KEY, GRE_SEQ = 0x2000, 0x1000
PROTO_IPIP, PROTO_GRE = 4, 47
MTU = 1400  # below the lab's 1500 minus any outer header this script builds (20 + 20 + 12)


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Endpoint:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.local = socket.inet_aton(args.local)
        self.remote = socket.inet_aton(args.remote)
        self.seq = 0
        self.stats: Counter[str] = Counter()
        self.outer_seen: Counter[str] = Counter()
        proto = PROTO_IPIP if args.mode == "ipip" else PROTO_GRE
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        self.sock.setsockopt(socket.SOL_IP, socket.IP_TTL, args.ttl)
        self.sock.setsockopt(socket.SOL_IP, socket.IP_TOS, args.tos)
        self.sock.bind((args.local, 0))
        self.tun = open_tun(args.tun)

    def gre_header(self) -> bytes:
        flags = (GRE_KEY if self.args.key is not None else 0) | (GRE_SEQ if self.args.seq else 0)
        header = struct.pack("!HH", flags, 0x0800)
        if self.args.key is not None:
            header += struct.pack("!I", self.args.key)
        if self.args.seq:
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            header += struct.pack("!I", self.seq)
        return header

    def middle_ipv4(self, inner: bytes) -> bytes:
        """The second IPv4 header of `nested` mode: IP-in-IP inside the GRE tunnel."""
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), 0, 0, 64, PROTO_IPIP, 0,
                             self.local, self.remote)
        value = checksum(header)
        return header[:10] + struct.pack("!H", value) + header[12:] + inner

    def send(self, inner: bytes) -> None:
        mode = self.args.mode
        if mode == "ipip":
            payload = inner
        elif mode == "nested":
            payload = self.gre_header() + self.middle_ipv4(inner)
        else:
            payload = self.gre_header() + inner
        self.sock.sendto(payload, (self.args.remote, 0))
        self.stats["sent"] += 1

    def receive(self, packet: bytes) -> bytes | None:
        """Outer IPv4 packet -> the inner packet for the TUN device, or None (counted)."""
        header_len = (packet[0] & 0x0F) * 4
        if packet[12:16] != self.remote:
            self.stats["dropped.other_source"] += 1
            return None
        self.outer_seen[f"ttl={packet[8]} tos={packet[1]}"] += 1
        body = packet[header_len:]
        if self.args.mode == "ipip":
            return body
        flags, proto = struct.unpack_from("!HH", body)
        offset = 4
        key = None
        if flags & GRE_KEY:
            key = struct.unpack_from("!I", body, offset)[0]
            offset += 4
        if flags & GRE_SEQ:
            offset += 4
        if key != self.args.key or proto != 0x0800:
            self.stats["dropped.key_or_type"] += 1
            return None
        inner = body[offset:]
        if self.args.mode == "nested":
            if len(inner) < 20 or inner[9] != PROTO_IPIP:
                self.stats["dropped.not_nested"] += 1
                return None
            inner = inner[(inner[0] & 0x0F) * 4:]
        return inner

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.tun, selectors.EVENT_READ, "tun")
        selector.register(self.sock, selectors.EVENT_READ, "sock")
        while True:
            for key, _ in selector.select():
                if key.data == "tun":
                    self.send(os.read(self.tun, 65535))
                else:
                    inner = self.receive(self.sock.recv(65535))
                    if inner is not None:
                        os.write(self.tun, inner)
                        self.stats["received"] += 1

    def write_stats(self) -> None:
        if self.args.stats:
            with open(self.args.stats, "w") as out:
                json.dump({"stats": self.stats, "outer": self.outer_seen}, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("gre", "ipip", "nested"), default="gre")
    parser.add_argument("--key", type=int, default=None)
    parser.add_argument("--seq", action="store_true", help="GRE sequence numbers (RFC 2890)")
    parser.add_argument("--local", required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--address", required=True, help="inner address of this end")
    parser.add_argument("--route", required=True, help="inner network of the other end")
    parser.add_argument("--tun", default="tun0")
    parser.add_argument("--ttl", type=int, default=64)
    parser.add_argument("--tos", type=int, default=0)
    parser.add_argument("--stats", default=None)
    args = parser.parse_args(argv)
    endpoint = Endpoint(args)
    for command in (["ip", "addr", "add", f"{args.address}/32", "dev", args.tun],
                    ["ip", "link", "set", args.tun, "mtu", str(MTU), "up"],
                    ["ip", "route", "add", args.route, "dev", args.tun]):
        subprocess.run(command, check=True)

    def stop(signum: int, frame: object) -> None:
        endpoint.write_stats()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"tunnel endpoint {args.mode} {args.local} -> {args.remote} ready", flush=True)
    endpoint.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
