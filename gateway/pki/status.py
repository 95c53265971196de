"""The status column of `tlsgw cert list`, in the product's words.

One status per entry, the first that applies:
1. `broken key`: a certificate (not a CA entry) whose key is missing, unreadable, sealed
   with another secret, or not its key; or whose key was kept only in the gateway's memory
   (`pki.persist_keys: false`) and no running gateway holds it. The product's "Repair" is `tlsgw cert replace`
   (or delete and import again).
2. `expired` / `not yet valid`: outside its validity period (the clock is passed in).
3. `no trust anchor`: no path from the certificate, through its own chain and the CA
   certificates, to a trust anchor. Anchors are the store's CA entries, the default CA
   package, and a self-signed certificate for itself. As in the product, a root that
   only travels inside a certificate's chain is not an anchor: import it with
   `tlsgw cert import-ca`.
4. `valid`.

Pure: certificates, the key state and the clock in, a status out.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence

from cryptography import x509

from gateway.pki.importing import MAX_CHAIN_LENGTH, issued_by, is_self_issued
from gateway.pki.store import EntryKind, KeyState


class CertStatus(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    NO_TRUST_ANCHOR = "no trust anchor"
    BROKEN_KEY = "broken key"


class Anchors:
    """Trust anchors by subject, for path building."""

    def __init__(self, certificates: Iterable[x509.Certificate]) -> None:
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in certificates:
            self._by_subject.setdefault(cert.subject, []).append(cert)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_subject.values())

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        return next((a for a in self._by_subject.get(cert.issuer, ()) if issued_by(cert, a)), None)

    def contains(self, cert: x509.Certificate) -> bool:
        return cert in self._by_subject.get(cert.subject, ())


def has_trust_anchor(cert: x509.Certificate, chain: Sequence[x509.Certificate], anchors: Anchors,
                     intermediates: Sequence[x509.Certificate] = ()) -> bool:
    """Whether a path leads from `cert` to an anchor through `chain` and `intermediates`."""
    if anchors.contains(cert) or (is_self_issued(cert) and issued_by(cert, cert)):
        return True
    pool = [*chain, *intermediates]
    current, seen = cert, [cert]
    for _ in range(MAX_CHAIN_LENGTH):
        if anchors.issuer_of(current) is not None:
            return True
        parent = next((c for c in pool if c not in seen and issued_by(current, c)), None)
        if parent is None:
            return False
        if anchors.contains(parent):
            return True
        seen.append(parent)
        current = parent
    return False


def assess(cert: x509.Certificate, chain: Sequence[x509.Certificate], *, kind: EntryKind, key_state: KeyState,
           anchors: Anchors, now: dt.datetime, intermediates: Sequence[x509.Certificate] = ()) -> CertStatus:
    """The entry's status; see the module docstring for the order."""
    if kind is EntryKind.CERTIFICATE and key_state in (KeyState.NONE, KeyState.BROKEN, KeyState.MEMORY_MISSING):
        return CertStatus.BROKEN_KEY
    if now > cert.not_valid_after_utc:
        return CertStatus.EXPIRED
    if now < cert.not_valid_before_utc:
        return CertStatus.NOT_YET_VALID
    if not has_trust_anchor(cert, chain, anchors, intermediates):
        return CertStatus.NO_TRUST_ANCHOR
    return CertStatus.VALID
