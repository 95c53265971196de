"""Certificate revocation lists for trust stores: revoked upstream certificates are
rejected where a CRL is configured (issue 5), as a browser with that CRL would.

`cryptography`'s verifier builds and checks the path but knows nothing of revocation, so
once a chain has verified, each certificate on it (except the trust anchor) is looked up
in the CRLs of its issuer. A CRL counts only if its signature verifies with the issuer's
key and its issuer name matches: a CRL from anyone else could otherwise "revoke" a site.

A CRL past its nextUpdate is still used (a certificate it lists stays revoked), and
said at load; there is no fetching of CRLs or OCSP here: tlsgw never contacts anything
but the flow's own server, and the operator installs CRLs as files.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from gateway.errors import PkiError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevocationLists:
    """CRLs by issuer name."""

    by_issuer: dict[x509.Name, tuple[x509.CertificateRevocationList, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_issuer)

    def revoked(self, chain: Sequence[x509.Certificate]) -> str | None:
        """Why a certificate of the verified `chain` (leaf first, anchor last) is revoked,
        or None."""
        for cert, issuer in zip(chain, chain[1:]):
            for crl in self.by_issuer.get(cert.issuer, ()):
                if not _signed_by(crl, issuer):
                    continue
                entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if entry is not None:
                    when = entry.revocation_date_utc.date().isoformat()
                    return (f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                            f"was revoked on {when} by {issuer.subject.rfc4514_string()}")
        return None


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def load_crls(paths: Sequence[str], trust_store: str, now: dt.datetime | None = None) -> RevocationLists:
    """Read PEM or DER CRL files. Raises PkiError naming the trust store and the file."""
    now = now or dt.datetime.now(dt.timezone.utc)
    by_issuer: dict[x509.Name, tuple[x509.CertificateRevocationList, ...]] = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise PkiError(f"trust store {trust_store!r}: CRL {path}: {exc.strerror}") from None
        try:
            crl = (x509.load_pem_x509_crl(data) if b"-----BEGIN X509 CRL-----" in data
                   else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise PkiError(f"trust store {trust_store!r}: {path} is not a CRL (PEM or DER): {exc}") from None
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            logger.warning("trust store %r: CRL %s is past its next update (%s); still honoured",
                           trust_store, path, next_update.isoformat())
        by_issuer[crl.issuer] = (*by_issuer.get(crl.issuer, ()), crl)
    return RevocationLists(by_issuer)
