"""The TCP connections this process owns, as the flow tuples a fallback must keep diverted.

When fallback is engaged, every packet of a session already proxied must still reach
the gateway. Rather than trusting bookkeeping in the proxy (which cannot see a socket
still in the accept queue or an upstream connect in progress), the kernel is asked:
`/proc/self/net/tcp` lists the TCP sockets of this network namespace and
`/proc/self/fd` says which of them are ours. For each socket of ours the packets that
must keep coming are those *towards* it: remote address and port to local address and
port. That single rule covers the client legs (client -> original server address, which
TPROXY made the local address) and the upstream legs (server -> the client's address,
to which the upstream socket is bound).

A socket tlsgw has closed may still have work: unsent data in its send queue, or its
FIN not yet acknowledged (FIN_WAIT1, CLOSING, LAST_ACK). The kernel keeps it as an orphan
with no owner (inode 0), so the owner test cannot see it; its packets must still come
here or the last bytes of a response are lost when a fallback or a stop's drain lets go.
A tuple the caller already keeps therefore stays kept while its orphan is delivering.

`parse_proc_net_tcp` is pure; `own_flow_tuples` is the reader (a few tens of
milliseconds for 20,000 sockets; the daemon runs it in a worker thread).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from netfilter.fallback import FlowTuple

# include/net/tcp_states.h. LISTEN sockets have no peer; CLOSE ones are gone; TIME_WAIT
# entries carry no inode (no owner). Every other state still exchanges packets - the
# half-closed ones included, so a session closing during a fallback completes its close.
_NO_PEER_STATES = frozenset({0x07, 0x0A})
# Closed by their owner, still sending (data or FIN) and waiting for the peer's ACK.
_DELIVERING_ORPHAN_STATES = frozenset({0x04, 0x09, 0x0B})  # FIN_WAIT1, LAST_ACK, CLOSING
_STATE_NAMES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
                7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


@dataclass(frozen=True, slots=True)
class TcpSocket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    inode: int

    @property
    def state_name(self) -> str:
        return _STATE_NAMES.get(self.state, str(self.state))

    def inbound(self) -> FlowTuple:
        """The direction of this connection that arrives at this socket."""
        return FlowTuple(self.remote[0], self.remote[1], self.local[0], self.local[1])


def _address(field: str, byteorder: str) -> tuple[str, int]:
    host, port = field.split(":")
    # The kernel prints the __be32 address as a native integer, so its bytes are in the
    # machine's order.
    packed = int(host, 16).to_bytes(4, byteorder)  # type: ignore[arg-type]
    return str(IPv4Address(packed)), int(port, 16)


def parse_proc_net_tcp(text: str, byteorder: str = sys.byteorder) -> list[TcpSocket]:
    """Every entry of a /proc/net/tcp table (the header line is skipped)."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        sockets.append(TcpSocket(_address(fields[1], byteorder), _address(fields[2], byteorder),
                                 int(fields[3], 16), int(fields[9])))
    return sockets


def flow_tuples(sockets: Iterable[TcpSocket], inodes: frozenset[int],
                kept: frozenset[FlowTuple] = frozenset()) -> list[FlowTuple]:
    """Inbound tuples of the connected sockets whose inode is in `inodes`, and of the
    orphans still delivering whose tuple is in `kept` (pure)."""
    found = set()
    for s in sockets:
        if s.inode != 0:
            if s.inode in inodes and s.state not in _NO_PEER_STATES:
                found.add(s.inbound())
        elif s.state in _DELIVERING_ORPHAN_STATES and kept and s.inbound() in kept:
            found.add(s.inbound())
    return sorted(found)


def own_socket_inodes(fd_dir: str = "/proc/self/fd") -> frozenset[int]:
    found = set()
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return frozenset(found)


def own_flow_tuples(worker_pids: Iterable[int] = (), kept: frozenset[FlowTuple] = frozenset()) -> list[FlowTuple]:
    """The inbound tuples of every connected TCP socket of this process and of its worker
    processes (issue 8: with `gateway.workers` above one, the sessions live there), and
    of the closed ones among `kept` that are still delivering."""
    inodes = own_socket_inodes()
    for pid in worker_pids:
        try:
            inodes |= own_socket_inodes(f"/proc/{pid}/fd")
        except OSError:  # exited meanwhile: its sockets are gone with it
            continue
    with open("/proc/self/net/tcp", encoding="ascii") as table:
        return flow_tuples(parse_proc_net_tcp(table.read()), inodes, kept)
