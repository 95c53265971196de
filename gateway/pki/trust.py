"""Trust stores: the roots an upstream certificate must chain to.

A configured trust store (`gateway.config.model.TrustStore`) is the default CA package
(Mozilla's bundle, as Debian's ca-certificates ships it) if `include_default_ca`, plus
named CA certificates from the PKI store. `load_trust_anchors` turns it into
`TrustAnchors`, which `gateway.pki.verify` uses.

The bundle (~150 certificates, ~220 KB) is parsed once per path and modification time
and reused by every trust store and every reload that names it; a changed file (an
update of ca-certificates) is parsed again on the next load.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cryptography import utils as crypto_utils
from cryptography import x509
from cryptography.x509.verification import Store

from gateway.config.model import TrustStore
from gateway.errors import PkiError
from gateway.pki.ca import is_ca
from gateway.pki.revocation import RevocationLists, load_crls
from gateway.pki.store import CertStore

logger = logging.getLogger(__name__)

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True, slots=True, eq=False)
class TrustAnchors:
    """The roots of one trust store, ready for `cryptography.x509.verification`.

    Compared by identity: two loads of one trust store are equal only if they are the
    same object, which is what a cache keyed by it needs.
    """

    name: str
    certificates: tuple[x509.Certificate, ...]
    store: Store | None
    """None when there are no certificates (cryptography cannot build an empty Store):
    then nothing verifies."""
    by_subject: Mapping[x509.Name, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    """Roots by subject, so a failed verification can tell "no known issuer" apart."""
    revocation: RevocationLists = field(default_factory=RevocationLists)
    """The trust store's CRLs (issue 5); empty when none is configured."""

    @classmethod
    def from_certificates(cls, name: str, certificates: Iterable[x509.Certificate]) -> TrustAnchors:
        unique = tuple(dict.fromkeys(certificates))  # drop duplicates, keep order
        by_subject: dict[x509.Name, tuple[x509.Certificate, ...]] = {}
        for cert in unique:
            by_subject[cert.subject] = (*by_subject.get(cert.subject, ()), cert)
        return cls(name, unique, Store(list(unique)) if unique else None, by_subject)

    def __repr__(self) -> str:
        return f"TrustAnchors({self.name!r}, {len(self.certificates)} certificates)"


def load_trust_anchors(store: CertStore, trust_store: TrustStore, default_bundle_path: str) -> TrustAnchors:
    """Assemble `trust_store` from the default bundle and the PKI store.

    Raises:
        PkiError: the bundle is missing or unreadable, or a named certificate is missing
            or not a CA certificate; the message names the trust store and the file.
    """
    certs: list[x509.Certificate] = []
    if trust_store.include_default_ca:
        try:
            certs.extend(load_ca_bundle(default_bundle_path))
        except PkiError as exc:
            raise PkiError(f"trust store {trust_store.name!r}: {exc}") from None
    for name in trust_store.ca_certificates:
        try:
            cert = store.load(name, with_key=False).certificate
        except PkiError as exc:
            raise PkiError(f"trust store {trust_store.name!r}: {exc}") from None
        if not is_ca(cert):
            raise PkiError(f"trust store {trust_store.name!r}: certificate {name!r} ({store.cert_path(name)}) "
                           "is not a CA certificate (basicConstraints CA:TRUE)")
        certs.append(cert)
    anchors = TrustAnchors.from_certificates(trust_store.name, certs)
    if trust_store.crl_files:
        anchors = replace(anchors, revocation=load_crls(trust_store.crl_files, trust_store.name))
    return anchors


# path -> ((st_dev, st_ino, st_mtime_ns, st_size), certificates)
_bundle_cache: dict[str, tuple[tuple[int, int, int, int], tuple[x509.Certificate, ...]]] = {}


def load_ca_bundle(path: str) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM bundle, parsed once per file version.

    A certificate `cryptography` cannot parse is skipped with a warning rather than
    failing the whole bundle: one odd root must not take every trust store down.

    Raises:
        PkiError: the file is missing, unreadable, or holds no certificate.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PkiError(f"CA bundle {path} does not exist (install the ca-certificates package, import "
                       "one with `tlsgw cert update-default-ca FILE`, or set pki.default_ca_bundle)") from None
    except OSError as exc:
        raise PkiError(f"CA bundle {path}: {exc.strerror}") from None
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _bundle_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PkiError(f"CA bundle {path}: {exc.strerror}") from None
    certs = parse_ca_bundle(data, path)
    if not certs:
        raise PkiError(f"CA bundle {path} holds no PEM certificate")
    _bundle_cache[path] = (stamp, certs)
    return certs


def parse_ca_bundle(data: bytes, path: str) -> tuple[x509.Certificate, ...]:
    """Every readable certificate of a PEM bundle; unreadable ones are skipped with a warning."""
    with warnings.catch_warnings():
        # Mozilla's bundle has a root with a non-positive serial; cryptography warns about
        # it on every parse, and the warning tells an operator nothing they can act on.
        warnings.simplefilter("ignore", crypto_utils.CryptographyDeprecationWarning)
        try:
            return tuple(x509.load_pem_x509_certificates(data))
        except ValueError:
            pass  # at least one block is unparsable: take the others one by one
        certs: list[x509.Certificate] = []
        for index, block in enumerate(_PEM_CERT.findall(data)):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                logger.warning("CA bundle %s: certificate #%d skipped, unreadable: %s", path, index + 1, exc)
        return tuple(certs)
