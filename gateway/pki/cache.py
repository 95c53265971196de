"""A bounded cache of forged certificates, so a busy site costs one signature, not one per flow.

The key is everything a forgery depends on: the signing CA, the exact upstream
certificate (SHA-256 of its DER, so a renewed upstream gets a new forgery), and the leaf
key kind (the key itself is fixed per kind for the process lifetime, see
`gateway.pki.forge`). The SNI is not part of it because a forgery never contains it.

An entry is dropped when the clock passes its notAfter - except a forgery that was
already expired when made (it mirrors an expired upstream, and forging it again would
give the same dates), which stays until evicted. Least recently used entries go first
when the cache is full.

Not thread-safe: the proxy runs one asyncio loop per process.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.pki import forge
from gateway.pki.forge import LeafKeys
from gateway.pki.keys import KeyKind, PrivateKey

# A forged certificate and its parsed object take a few KB; 4096 sites cover a large
# office's working set (sslsplit keeps every forgery until expiry) for ~20 MB at most.
DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class ForgeKey:
    ca_fingerprint: bytes
    upstream_fingerprint: bytes
    leaf_kind: KeyKind

    @classmethod
    def of(cls, ca_cert: x509.Certificate, upstream: x509.Certificate, leaf_kind: KeyKind) -> ForgeKey:
        return cls(ca_cert.fingerprint(hashes.SHA256()), upstream.fingerprint(hashes.SHA256()), leaf_kind)


@dataclass(frozen=True, slots=True)
class _Entry:
    certificate: x509.Certificate
    stale_after: dt.datetime | None
    """None for a forgery that was born expired (see the module docstring)."""


class ForgeCache:
    """LRU map ForgeKey -> forged certificate, with hit/miss counters for metrics."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[ForgeKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ForgeCache({len(self)}/{self.max_entries}, hits={self.hits}, misses={self.misses})"

    def get(self, key: ForgeKey, *, now: dt.datetime) -> x509.Certificate | None:
        """The cached forgery for `key`, or None (counted as a miss) if absent or stale."""
        entry = self._entries.get(key)
        if entry is not None and entry.stale_after is not None and now >= entry.stale_after:
            del self._entries[key]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.certificate

    def put(self, key: ForgeKey, certificate: x509.Certificate, *, now: dt.datetime) -> None:
        not_after = certificate.not_valid_after_utc
        self._entries[key] = _Entry(certificate, not_after if not_after > now else None)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get_or_forge(
        self,
        upstream: x509.Certificate,
        ca_cert: x509.Certificate,
        ca_key: PrivateKey,
        leaf_keys: LeafKeys,
        *,
        now: dt.datetime,
        sni: str | None = None,
    ) -> x509.Certificate:
        """The forgery of `upstream` under `ca_cert` for `leaf_keys.get()`, signing only on a miss.

        The usual entry point: `misses` then counts the signatures made.
        """
        key = ForgeKey.of(ca_cert, upstream, leaf_keys.kind)
        cached = self.get(key, now=now)
        if cached is not None:
            return cached
        forged = forge.forge_leaf(upstream, ca_cert, ca_key, leaf_keys.get(), now=now, sni=sni)
        self.put(key, forged, now=now)
        return forged

    def clear(self) -> None:
        """Drop every entry (e.g. when the signing CA is replaced on reload); counters stay."""
        self._entries.clear()
