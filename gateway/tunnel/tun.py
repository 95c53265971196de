"""The I/O shell of tunnel inspection: packet sockets on the bridge ports, one TUN device
per segment, the kernel rules of `netfilter.tunnel_plan`, and the loop between them.

    bridge port ──AF_PACKET──► TunnelSwitch.from_port ──► send on the other port (untouched)
                                                      └─► write to TUN tlsgwt<i>
    TUN tlsgwt<i> ──read──► TunnelSwitch.from_kernel ──► send on a bridge port (encapsulated)

Everything that decides is in `switch.py` (pure); this module only moves bytes, on the
daemon's asyncio loop (`add_reader`: no thread, no task per packet). It runs inside the
gateway's network namespace, as the daemon does.

Order of `start()`: sockets and TUN devices first (so no diverted frame can find nobody
reading), then routing, then the nft tables with the first renewal of the dead-man's
switch in the same transaction. `stop()` removes the tables first - from then on the
kernel bridges tunnels itself - then routing, then closes everything. A killed process
leaves the tables behind, but their `alive` elements expire within
`tunnel_plan.ALIVE_TIMEOUT`, which stops the divert (fail-open), and the TUN devices
vanish with the process.

Error handling: one packet's failure to be sent (ENOBUFS, a frame above the port's MTU)
is counted and dropped, like a congested link would; it never stops the loop. Kernel set-up
failures raise `TunnelError` naming the command, after undoing what was done.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import logging
import os
import socket
import struct
import subprocess
import time
from collections.abc import Sequence

from gateway.config.model import GatewayConfig
from gateway.errors import TlsgwError
from gateway.observability.counters import Counters
from gateway.tunnel.flows import FlowTable
from gateway.tunnel.mss import inner_mtu, max_inner_mss
from gateway.tunnel.selection import build_selection
from gateway.tunnel.switch import Discard, Emit, Forward, Inject, SegmentPorts, TunnelAction, TunnelSwitch
from netfilter.tunnel_plan import (
    ALIVE_REFRESH_INTERVAL,
    FALLBACK_RULE_PRIORITY,
    MARK_RULE_PRIORITY,
    TunnelPlan,
    parse_counters,
    render_alive_refresh,
    render_counters_query,
    render_tunnel_nft,
    render_tunnel_remove,
    tunnel_plan,
)

logger = logging.getLogger(__name__)

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
# linux/if_packet.h, linux/if_ether.h, asm-generic/socket.h
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
# Classic BPF opcodes (linux/bpf_common.h) and the ancillary offset of the VLAN tag flag
# (linux/filter.h SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT).
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS, _JEQ_K, _RET_K = 0x20, 0x28, 0x30, 0x15, 0x06
SKF_AD_VLAN_TAG_PRESENT = -0x1000 + 44

READ_SIZE = 65536  # one whole frame or packet; GRO never hands a tap more than 64 KiB
BATCH = 64
"""Frames read per wake-up before yielding to the loop, so one busy port cannot starve
the other, the TUN devices and the proxy's own sessions."""
SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts of a 10 Gbit/s port for about 3 ms
EXPIRE_INTERVAL = 1.0
KERNEL_COUNTER_INTERVAL = 2.0  # seconds between reads of the kernel's tunnel counters
MAX_STALE_RULES = 16  # copies of one rule a series of killed runs could have left
NFT_TIMEOUT = 10.0


class TunnelError(TlsgwError):
    """Setting up tunnel inspection failed; names the command or device."""


def tap_filter() -> list[tuple[int, int, int, int]]:
    """Classic BPF for the bridge-port taps: exactly the frames the bridge rule of
    `netfilter.tunnel_plan` takes off the bridge (untagged IPv4, protocol GRE or IP-in-IP;
    `frames.owned_by_divert`). Everything else the port carries never wakes tlsgw up.
    Rows are (code, jt, jf, k); jumps are relative to the next row."""
    accept, drop = 7, 8

    def to(target: int, row: int) -> int:
        return target - row - 1

    return [
        (_LD_W_ABS, 0, 0, SKF_AD_VLAN_TAG_PRESENT & 0xFFFFFFFF),  # 0: VLAN tag in the metadata?
        (_JEQ_K, 0, to(drop, 1), 0),               # 1: tagged -> drop
        (_LD_H_ABS, 0, 0, 12),                     # 2: ethertype
        (_JEQ_K, 0, to(drop, 3), 0x0800),          # 3: not IPv4 -> drop
        (_LD_B_ABS, 0, 0, 23),                     # 4: IPv4 protocol
        (_JEQ_K, to(accept, 5), 0, 47),            # 5: GRE
        (_JEQ_K, to(accept, 6), to(drop, 6), 4),   # 6: IP-in-IP
        (_RET_K, 0, 0, READ_SIZE),                 # 7: accept, the whole frame
        (_RET_K, 0, 0, 0),                         # 8: drop
    ]


def attach_filter(sock: socket.socket, program: Sequence[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *row) for row in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def open_port_socket(ifname: str) -> socket.socket:
    """A packet socket that receives the port's incoming tunnel frames and can send on it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        attach_filter(sock, tap_filter())  # before bind: no unfiltered frame is ever queued
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # our own sends are not input
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise TunnelError(f"packet socket on bridge port {ifname}: {exc.strerror or exc}") from exc
    return sock


def open_tun(name: str) -> int:
    """Create the TUN device `name` (IPv4 packets without a header); returns its fd. The
    device lives as long as the fd: it vanishes with the process, whatever happens."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunnelError(f"/dev/net/tun: {exc.strerror}") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TunnelError(f"TUN device {name}: {exc.strerror}") from exc
    return fd


def write_sysctl(key: str, value: str) -> None:
    try:
        with open(f"/proc/sys/net/{key}", "w") as sysctl:
            sysctl.write(value)
    except OSError as exc:
        raise TunnelError(f"sysctl net/{key}={value}: {exc.strerror}") from exc


def run_command(argv: Sequence[str], stdin: str | None = None, tolerate: Sequence[str] = ()) -> None:
    """Run an `ip`/`nft` command; its failure becomes a TunnelError with the command line."""
    command = " ".join(argv)
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TunnelError(f"{command}: {exc}") from exc
    if done.returncode != 0 and not any(t in done.stderr for t in tolerate):
        raise TunnelError(f"{command}: {done.stderr.strip() or f'exit {done.returncode}'}")


class TunnelService:
    """Tunnel inspection for every segment of a configuration; `start`, `serve`, `stop`."""

    def __init__(self, config: GatewayConfig, counters: Counters) -> None:
        settings = config.gateway.tunnels
        self.plan: TunnelPlan = tunnel_plan(config)
        self.counters = counters
        self.flows = FlowTable(idle_timeout=config.gateway.idle_timeout + 60.0)
        segments = tuple(SegmentPorts(s.index, s.name, s.client_port, s.server_port) for s in self.plan.segments)
        self.switch = TunnelSwitch(segments, build_selection(config), self.flows,
                                   max_inner_mss(settings.outer_mtu), counters)
        self.tun_mtu = inner_mtu(settings.outer_mtu)
        self._ports: dict[str, socket.socket] = {}
        self._tuns: dict[int, int] = {}
        self._routing: list[list[str]] = []
        self._rules_applied = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kernel_counts: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open sockets and TUN devices, route, then divert. Undoes everything on failure."""
        if not self.plan.segments:
            logger.warning("tunnels enabled, but no segment has a policy to inspect; no tunnel is diverted")
            return
        try:
            for port in self.plan.ports:
                self._ports[port] = open_port_socket(port)
            for segment in self.plan.segments:
                self._tuns[segment.index] = open_tun(segment.tun)
                # Inner packets come from addresses routed elsewhere (or nowhere); and the
                # device carries IPv4 only (no router solicitations to drop and count), so
                # both are set before it comes up.
                write_sysctl(f"ipv4/conf/{segment.tun}/rp_filter", "0")
                write_sysctl(f"ipv6/conf/{segment.tun}/disable_ipv6", "1")
                run_command(["ip", "link", "set", "dev", segment.tun, "mtu", str(self.tun_mtu), "up"])
            self._route()
            run_command(["nft", "-f", "-"], stdin=render_tunnel_nft(self.plan) + render_alive_refresh(self.plan))
            self._rules_applied = True
        except BaseException:
            self.stop()
            raise
        logger.info("tunnel inspection ready: GRE and IP-in-IP on %s, TUN %s, inner MSS clamped to %d",
                    ", ".join(self.plan.ports), ", ".join(s.tun for s in self.plan.segments),
                    self.switch.mss_limit)

    def reconfigure(self, config: GatewayConfig) -> None:
        """After a reload: new policies select new flows (flows already taken keep going).

        The devices, marks and routing tables stay those of the start; a reload that would
        change them (segments added or removed, `gateway.tunnels`) takes effect at restart.
        """
        plan = tunnel_plan(config)
        shape = [(s.index, s.tun, s.client_port, s.server_port, s.out_mark, s.route_table) for s in plan.segments]
        if shape != [(s.index, s.tun, s.client_port, s.server_port, s.out_mark, s.route_table)
                     for s in self.plan.segments]:
            logger.warning("reload: the tunnel devices would change; tunnels keep the segments of the start "
                           "until tlsgw restarts")
            return
        if self._rules_applied and plan != self.plan:
            try:
                run_command(["nft", "-f", "-"], stdin=render_tunnel_nft(plan) + render_alive_refresh(plan))
            except TunnelError as exc:
                logger.error("reload: tunnel rules unchanged: %s", exc)
                return
        self.plan = plan
        self.switch.selection = build_selection(config)

    def _route(self) -> None:
        for segment in self.plan.segments:
            table = str(segment.route_table)
            self._ip(["route", "replace", "default", "dev", segment.tun, "table", table],
                     ["route", "flush", "table", table])
            self._ip(["rule", "add", "pref", str(MARK_RULE_PRIORITY), "fwmark", f"{segment.out_mark:#x}",
                      "lookup", table],
                     ["rule", "del", "pref", str(MARK_RULE_PRIORITY), "fwmark", f"{segment.out_mark:#x}",
                      "lookup", table])
        fallback = str(self.plan.fallback_table)
        self._ip(["rule", "add", "pref", str(FALLBACK_RULE_PRIORITY), "iif", "lo", "ipproto", "tcp",
                  "lookup", fallback],
                 ["rule", "del", "pref", str(FALLBACK_RULE_PRIORITY), "iif", "lo", "ipproto", "tcp",
                  "lookup", fallback])

    def _ip(self, add: list[str], undo: list[str]) -> None:
        if add[0] == "rule":
            # `ip rule add` happily adds a duplicate: clear what a killed tlsgw left behind.
            for _ in range(MAX_STALE_RULES):
                if subprocess.run(["ip", *undo], capture_output=True, check=False).returncode != 0:
                    break
        run_command(["ip", *add])
        self._routing.append(undo)

    def stop(self) -> None:
        """Idempotent: tables, routing, readers, devices and sockets, in that order."""
        if self._rules_applied:
            self.fold_kernel_counters()
            try:
                run_command(["nft", "-f", "-"], stdin=render_tunnel_remove(self.plan))
            except TunnelError as exc:
                logger.error("removing the tunnel rules failed: %s", exc)
            self._rules_applied = False
        while self._routing:
            undo = self._routing.pop()
            try:
                run_command(["ip", *undo], tolerate=("No such", "not exist"))
            except TunnelError as exc:
                logger.error("%s", exc)
        if self._loop is not None and not self._loop.is_closed():
            for sock in self._ports.values():
                self._loop.remove_reader(sock.fileno())
            for fd in self._tuns.values():
                self._loop.remove_reader(fd)
        self._loop = None
        for sock in self._ports.values():
            sock.close()
        for fd in self._tuns.values():
            os.close(fd)
        if self._ports or self._tuns:
            tunnel = {k: v for k, v in self.counters.snapshot().items() if k.startswith("tunnel.")}
            logger.info("tunnel counters: %s", json.dumps(tunnel, sort_keys=True))
        self._ports.clear()
        self._tuns.clear()

    async def serve(self) -> None:
        """Move packets until cancelled; renew the dead-man's switch and expire flows."""
        if not self._ports:
            return
        loop = self._loop = asyncio.get_running_loop()
        for port, sock in self._ports.items():
            loop.add_reader(sock.fileno(), self._on_port, port, sock)
        for fd in self._tuns.values():
            loop.add_reader(fd, self._on_tun, fd)
        next_expiry = next_count = time.monotonic()
        while True:
            await asyncio.sleep(ALIVE_REFRESH_INTERVAL)
            try:
                await asyncio.to_thread(run_command, ["nft", "-f", "-"], render_alive_refresh(self.plan))
            except TunnelError as exc:  # the switch expires and tunnels pass untouched: logged, retried
                logger.error("renewing the tunnel divert failed: %s", exc)
            now = time.monotonic()
            if now >= next_expiry:
                self.switch.expire(now)
                next_expiry = now + EXPIRE_INTERVAL
            if now >= next_count:
                await asyncio.to_thread(self.fold_kernel_counters)
                next_count = now + KERNEL_COUNTER_INTERVAL

    def fold_kernel_counters(self) -> None:
        """Add what the kernel counted since the last call to `tunnel.unsupported.<name>`."""
        try:
            done = subprocess.run(render_counters_query(self.plan), capture_output=True, text=True,
                                  timeout=NFT_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return
        for name, packets in parse_counters(done.stdout).items():
            last = self._kernel_counts.get(name, 0)
            # A table replaced by a reload starts its counters at zero again.
            delta = packets - last if packets >= last else packets
            if delta:
                self.counters.add(f"tunnel.unsupported.{name}", delta)
            self._kernel_counts[name] = packets

    # -- the data path ---------------------------------------------------------------------------

    def _on_port(self, port: str, sock: socket.socket) -> None:
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                frame = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.add("tunnel.errors.receive")
                logger.debug("receive on %s: %s", port, exc)
                return
            self._do(self.switch.from_port(port, frame, now))

    def _on_tun(self, fd: int) -> None:
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                packet = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.add("tunnel.errors.receive")
                logger.debug("read from TUN: %s", exc)
                return
            self._do(self.switch.from_kernel(packet, now))

    def _do(self, action: TunnelAction) -> None:
        try:
            if isinstance(action, (Forward, Emit)):
                self._ports[action.port].send(action.frame)
            elif isinstance(action, Inject):
                os.write(self._tuns[action.segment], action.packet)
            else:
                assert isinstance(action, Discard)
        except OSError as exc:
            # A full queue or an oversized frame: lost like on a congested link, counted.
            name = errno.errorcode.get(exc.errno or 0, "error").lower()
            self.counters.add(f"tunnel.errors.send.{name}")
