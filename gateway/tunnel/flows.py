"""The tunnel flow table: which inner TCP connections tlsgw took out of which tunnel.

An inspected tunneled flow has two legs, like any proxied flow, and both live inside
the same tunnel:

    client leg    client:cport -> server:443   the connection the client opened; the
                                               gateway's listener accepted it (TPROXY)
    upstream leg  client:uport -> server:443   the gateway's own connection to the server,
                                               from the client's address, another port

The client leg is registered when its SYN comes out of the tunnel (`open_client_leg`),
with the `TunnelContext`: the outer header as the client's tunnel endpoint sent it, and
the bridge ports and Ethernet addresses to answer on. The upstream leg's port is only
known when the kernel emits its SYN into the TUN device; it is bound to the context of
the same (client, server, server port) - the "peer" - by `bind_upstream_leg`. The
server's answers then teach the context the outer header of the server's endpoint
(`learn_reverse`), which is what packets toward the client carry from then on.

Every entry expires `idle_timeout` seconds after its last packet, or, once a FIN or RST
has been seen, `closed_linger` seconds after its last packet (long enough for the closing
handshake and retransmissions; TIME_WAIT lives on the gateway's sockets, not here). `expire(now)` is called about once
a second by the shell. The clock is always passed in, so the table is pure and tests
run in no time.

Limitation: two tunnels carrying the same inner (client, server, port) at once cannot
be told apart by the gateway's sockets, which see only inner addresses. While the first
has an open connection, the second is passed untouched (`conflicts` counts it), never
mixed into the first; once the first's connections are closing or gone, a new
connection moves the peer to the new tunnel (a tunnel re-keyed, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from gateway.tunnel.frames import Link, OuterHeader, TunnelKind

# Seconds a leg stays after a FIN or RST: covers the closing exchange and a few
# retransmissions of it, far below a connection's idle time.
CLOSED_LINGER = 30.0
# Bound on the entries of the table, as the proxy bounds its concurrent sessions; new
# flows beyond it are passed untouched rather than growing the table without limit.
MAX_ENTRIES = 65536

FlowKey = tuple[bytes, int, bytes, int]
"""(source address, source port, destination address, destination port), addresses packed."""
PeerKey = tuple[bytes, bytes, int]
"""(client address, server address, server port)."""


@dataclass(slots=True)
class TunnelContext:
    """One tunnel as seen for one peer: how to answer each side."""

    segment: int
    """Index of the segment in `gateway.segments`."""
    client_port: str
    """Bridge port the client's outer packets arrive on (and answers to it leave by)."""
    server_port: str
    forward: OuterHeader
    """The outer header of the client's endpoint (client -> server direction)."""
    forward_link: Link
    reverse: OuterHeader | None = None
    """The outer header of the server's endpoint, once it has sent something."""
    reverse_link: Link | None = None

    def toward_client(self) -> tuple[OuterHeader, Link]:
        if self.reverse is not None and self.reverse_link is not None:
            return self.reverse, self.reverse_link
        return self.forward.reversed(), self.forward_link.reversed()

    def toward_server(self) -> tuple[OuterHeader, Link]:
        return self.forward, self.forward_link

    def describe(self) -> dict[str, Any]:
        """The tunnel details of the SSL inspection log (`FlowRecord.tunnel`)."""
        details: dict[str, Any] = {
            "type": self.forward.kind.value,
            "outer_client": str(IPv4Address(self.forward.src)),
            "outer_server": str(IPv4Address(self.forward.dst)),
        }
        if self.forward.kind is TunnelKind.GRE:
            details["gre_key"] = self.forward.key
        return details


@dataclass(slots=True)
class _Entry:
    context: TunnelContext
    last_seen: float
    closing: bool = False
    peer: _Entry | None = None
    """A leg's peer entry, refreshed with the leg, so a peer lives as long as its legs."""
    open_legs: int = 0
    """A peer's legs that have seen no FIN or RST yet."""


@dataclass(slots=True)
class FlowTable:
    idle_timeout: float
    closed_linger: float = CLOSED_LINGER
    max_entries: int = MAX_ENTRIES
    _client: dict[FlowKey, _Entry] = field(default_factory=dict)
    _upstream: dict[FlowKey, _Entry] = field(default_factory=dict)
    _peers: dict[PeerKey, _Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._client) + len(self._upstream)

    @property
    def full(self) -> bool:
        return len(self) >= self.max_entries

    # -- the client leg ------------------------------------------------------------------

    def open_client_leg(self, key: FlowKey, context: TunnelContext, now: float) -> bool:
        """Register a new client leg (its SYN just came out of the tunnel).

        Returns False, registering nothing, when the table is full or the peer is already
        carried by another tunnel; the caller then passes the packet untouched.
        """
        if self.full:
            return False
        peer = (key[0], key[2], key[3])
        known = self._peers.get(peer)
        if known is not None and not known.context.forward.same_tunnel(context.forward):
            if known.open_legs:
                return False
            known = None  # only closing legs left: the peer moved to another tunnel (a new key, say)
        if known is None:
            known = self._peers[peer] = _Entry(context, now)
        known.last_seen = now
        known.open_legs += 1
        # One context per peer: same tunnel, same answers for every connection of it.
        self._client[key] = _Entry(known.context, now, peer=known)
        return True

    def client_leg(self, key: FlowKey, now: float, closing: bool = False) -> TunnelContext | None:
        """The context of a client leg, keyed client -> server; refreshes its timer."""
        entry = self._client.get(key)
        if entry is None:
            return None
        self._touch(entry, now, closing)
        return entry.context

    # -- the upstream leg ----------------------------------------------------------------

    def bind_upstream_leg(self, key: FlowKey, now: float) -> TunnelContext | None:
        """Bind the gateway's upstream SYN (client:uport -> server:port) to its peer's tunnel."""
        peer = self._peers.get((key[0], key[2], key[3]))
        if peer is None or self.full:
            return None
        peer.last_seen = now
        peer.open_legs += 1
        self._upstream[key] = _Entry(peer.context, now, peer=peer)
        return peer.context

    def upstream_leg(self, key: FlowKey, now: float, closing: bool = False) -> TunnelContext | None:
        """The context of an upstream leg, keyed client:uport -> server:port."""
        entry = self._upstream.get(key)
        if entry is None:
            return None
        self._touch(entry, now, closing)
        return entry.context

    # -- what the server's endpoint sends --------------------------------------------------

    @staticmethod
    def learn_reverse(context: TunnelContext, outer: OuterHeader, link: Link | None) -> bool:
        """Remember the server endpoint's header; False if it is not this tunnel's reverse."""
        if not outer.same_tunnel(context.forward.reversed()):
            return False
        context.reverse = outer
        if link is not None:
            context.reverse_link = link
        return True

    # -- the flow log ------------------------------------------------------------------------

    def describe(self, client: str, client_port: int, server: str, server_port: int) -> dict[str, Any] | None:
        """Tunnel details for the flow log of the connection the proxy accepted, or None.

        The proxy's accepted socket names exactly the client leg: its peer is the client,
        its local address the original destination.
        """
        try:
            key = (IPv4Address(client).packed, client_port, IPv4Address(server).packed, server_port)
        except ValueError:
            return None
        entry = self._client.get(key)
        return entry.context.describe() if entry is not None else None

    # -- expiry ------------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop entries past their time; returns how many legs went."""
        gone = 0
        for table in (self._client, self._upstream):
            stale = [key for key, entry in table.items() if self._expired(entry, now)]
            for key in stale:
                entry = table.pop(key)
                if not entry.closing and entry.peer is not None:
                    entry.peer.open_legs -= 1
            gone += len(stale)
        for peer in [p for p, e in self._peers.items() if now - e.last_seen > self.idle_timeout]:
            del self._peers[peer]
        return gone

    def _expired(self, entry: _Entry, now: float) -> bool:
        limit = self.closed_linger if entry.closing else self.idle_timeout
        return now - entry.last_seen > limit

    @staticmethod
    def _touch(entry: _Entry, now: float, closing: bool) -> None:
        # Every packet refreshes, also after a FIN: a half-closed connection may stream
        # for a long time; the short linger only counts from its last packet.
        entry.last_seen = now
        if entry.peer is not None:
            entry.peer.last_seen = now
            if closing and not entry.closing:
                entry.peer.open_legs -= 1
        entry.closing = entry.closing or closing
