"""A server proxy's certificates and the choice among them by the client's SNI.

A server proxy holds 1 to 1000 certificates of the organisation's own services and must
present, per connection, the one a client expects for the name it asked for. The choice
follows how a client will check the certificate (RFC 6125 section 6.4), so the pick is
one the client accepts whenever any of the certificates would be accepted:

- A certificate's names are its SAN DNS names, or its subject CN when it has no SAN at
  all (a SAN with only IP addresses still hides the CN, as it does for clients).
- `*.example.com` matches exactly one label: `a.example.com`, never `example.com` nor
  `a.b.example.com`. This is certificate wildcard semantics, deliberately unlike the
  decryption policy's domain patterns (`gateway.policy.domains`), which match any depth.
  Partial-label wildcards (`w*.example.com`) are not matched: browsers refuse them too.
- An exact name beats a wildcard. Since a wildcard covers one label, exactly one wildcard
  suffix can match an SNI (the SNI without its first label), which is also the longest
  and most specific one; when several certificates claim the same name or wildcard, the
  first in configuration order wins.
- Names compare case-insensitively, and a trailing dot is ignored.
- No SNI, or no certificate matches: the proxy's first certificate (the product's rule).

With 1000 certificates a linear scan per handshake would cost as much as the handshake's
own parsing, so the names are indexed once at construction: one dict lookup for the exact
name, one for the wildcard suffix.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.errors import PkiError
from gateway.pki.store import StoredCert


class SniMatch(enum.Enum):
    """How the certificate was chosen, in the words a troubleshooting log uses."""

    EXACT = "exact"
    WILDCARD = "wildcard"
    FALLBACK = "fallback"
    """No SNI, or no certificate names it: the proxy's first certificate."""


def normalise_dns_name(name: str) -> str:
    """Lower case without one trailing dot: how SNI and certificate names are compared."""
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a client checks `cert` against: SAN DNS names, else the CN (normalised).

    A malformed SAN extension yields no names: such a certificate can only be the fallback.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raw = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:
        return ()
    else:
        raw = list(san.get_values_for_type(x509.DNSName))
    names = (normalise_dns_name(n) for n in raw if isinstance(n, str))
    return tuple(n for n in names if n)


def _wildcard_suffix(name: str) -> str | None:
    """`example.com` for `*.example.com`; None for exact names and unusable wildcards."""
    if not name.startswith("*."):
        return None
    suffix = name[2:]
    if not suffix or "*" in suffix or suffix.startswith("."):
        return None
    return suffix


class ServerCertificates:
    """The certificates of one server proxy, indexed by name for `pick`.

    Immutable after construction; safe to share between the sessions of one Runtime.
    """

    __slots__ = ("_certificates", "_exact", "_wildcard")

    def __init__(self, certificates: Iterable[StoredCert]) -> None:
        """`certificates` in configuration order (the first is the fallback).

        Raises:
            PkiError: no certificate at all (the loader guarantees at least one).
        """
        self._certificates: tuple[StoredCert, ...] = tuple(certificates)
        if not self._certificates:
            raise PkiError("a server proxy needs at least one certificate")
        self._exact: dict[str, StoredCert] = {}
        self._wildcard: dict[str, StoredCert] = {}
        for stored in self._certificates:
            for name in certificate_names(stored.certificate):
                suffix = _wildcard_suffix(name)
                if suffix is not None:
                    self._wildcard.setdefault(suffix, stored)
                elif "*" not in name:
                    self._exact.setdefault(name, stored)

    def __repr__(self) -> str:
        return (f"ServerCertificates({len(self._certificates)} certificates, first={self.first.name!r}, "
                f"{len(self._exact)} exact names, {len(self._wildcard)} wildcards)")

    def __len__(self) -> int:
        return len(self._certificates)

    @property
    def certificates(self) -> tuple[StoredCert, ...]:
        """All of them, in configuration order."""
        return self._certificates

    @property
    def first(self) -> StoredCert:
        """The fallback for clients without SNI or with a name no certificate holds."""
        return self._certificates[0]

    def match(self, sni: str | None) -> tuple[StoredCert, SniMatch]:
        """The certificate to present for `sni`, and how it was chosen."""
        host = normalise_dns_name(sni) if sni else ""
        # A '*' in the SNI is no host name; it must not match a wildcard as if it were one.
        if host and "*" not in host:
            exact = self._exact.get(host)
            if exact is not None:
                return exact, SniMatch.EXACT
            label, dot, parent = host.partition(".")
            if label and dot and parent:
                wildcard = self._wildcard.get(parent)
                if wildcard is not None:
                    return wildcard, SniMatch.WILDCARD
        return self._certificates[0], SniMatch.FALLBACK

    def pick(self, sni: str | None) -> StoredCert:
        """The certificate to present for `sni` (see the module docstring for the rules)."""
        return self.match(sni)[0]
