"""Successful upstream verifications remembered for a few minutes (issue 8).

Building and checking a path with the webpki verifier was 7 % of tlsgw's CPU per new
connection in the handshake profile, and a site's servers send the same chain to every
connection. Browsers cache verification results for the same reason.

Why a cached success is as good as a fresh one: the key holds every byte of the chain as
the server sent it, the host it was checked for and the minimum key length; a cache
belongs to one runtime snapshot, whose trust stores and CRLs do not change (a reload
builds a new snapshot with an empty cache); an entry is used for at most `ttl` seconds,
and only stored when every certificate of the verified path stays valid past that time.
Failures are never cached: a certificate that is not yet valid may become valid, and a
failure is rare and logged with its own reason each time.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.pki.trust import TrustAnchors
from gateway.pki.verify import VerifyResult, verify_upstream

TTL_SECONDS = 300.0
MAX_ENTRIES = 4096

_Key = tuple[str | None, int, tuple[bytes, ...]]


class VerifyCache:
    """`verify_upstream` with memory, for one snapshot's trust anchors."""

    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = dt.timedelta(seconds=ttl)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, _Key], tuple[dt.datetime, VerifyResult]] = OrderedDict()
        self.hits = 0

    def verify(self, chain: Sequence[x509.Certificate], host: str | None, anchors: TrustAnchors, *,
               now: dt.datetime, min_key_length: int) -> VerifyResult:
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        key = (id(anchors), (host, min_key_length, tuple(c.public_bytes(Encoding.DER) for c in chain)))
        cached = self._entries.get(key)
        if cached is not None:
            stored_at, result = cached
            if stored_at <= now < stored_at + self.ttl:
                self._entries.move_to_end(key)
                self.hits += 1
                return result
            del self._entries[key]
        result = verify_upstream(chain, host, anchors, now=now, min_key_length=min_key_length)
        if result.ok and result.chain and all(c.not_valid_after_utc > now + self.ttl for c in result.chain):
            self._entries[key] = (now, result)
            # The anchors are kept alive by the snapshot that owns this cache, so their
            # id() cannot be reused while an entry names it.
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return result
