"""A bounded, expiring cache of upstream TLS sessions, so tlsgw resumes with a server as
the client's own browser would (session tickets, RFC 5077 / RFC 8446 4.6.1).

Why it is keyed finely. A session is only offered to the server it came from, under the
name it was made for: the key is (server address, port, SNI) plus the upstream offer the
connection was made with, because pyOpenSSL accepts a session only on a connection of
the very Context that made it, and that context is chosen by offer
(`gateway.tls.contexts.UpstreamContexts`). Resuming does not skip validation: OpenSSL
keeps the server's chain in the session, and the flow validates it again as for a full
handshake.

Why it expires on its own clock. Servers state a ticket lifetime, but pyOpenSSL does not
expose it; offering an expired ticket only costs a full handshake, so a fixed bound that
is generous for servers and short enough to let go of stale entries is enough.

Pure: `now` is passed in; values are opaque (an `OpenSSL.SSL.Session` in the daemon).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

# Most distinct upstream sites remembered at once: a session is about 1-2 KB, so this
# bounds the cache near 20 MB while covering the sites of a large office.
UPSTREAM_SESSIONS_MAX = 10_000
# Seconds a session is offered again. Servers commonly grant 5 minutes (nginx's default
# ssl_session_timeout) to a day; an hour resumes most repeat visits.
UPSTREAM_SESSION_LIFETIME = 3600.0


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    expires: float


class SessionCache(Generic[V]):
    """Least-recently-used eviction above `max_entries`; entries older than `lifetime`
    are never returned."""

    def __init__(self, max_entries: int = UPSTREAM_SESSIONS_MAX,
                 lifetime: float = UPSTREAM_SESSION_LIFETIME) -> None:
        if max_entries < 1 or lifetime <= 0:
            raise ValueError("max_entries must be at least 1 and lifetime positive")
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()

    def get(self, key: Hashable, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, value: V, now: float) -> None:
        """Remember `value` (replacing an older one: TLS 1.3 servers send fresh tickets)."""
        self._entries[key] = _Entry(value, now + self.lifetime)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        """Forget a session, e.g. after the server refused to resume it."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
