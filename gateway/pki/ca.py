"""Certificate authorities: creating one, recognising one, and the installation's untrusted CA.

Two CAs matter to the client proxy:
- the *signing certificate* (`client_proxies[].signing_certificate`): the organisation's
  CA, which clients trust, and which signs forged certificates for upstreams that
  verified;
- the *untrusted CA* (`tlsgw-untrusted-ca`): created by each installation on first use,
  never exported, never trusted by anyone. When an upstream certificate is invalid and
  the policy says not to block, the client is shown a certificate signed by this CA, so
  the client's own validation fails as it would have without tlsgw. An invalid upstream
  is never laundered into a certificate that looks trusted (DESIGN.md section 4).
  Each installation generating its own means that no shared, published key exists that
  someone could be talked into trusting.
"""

from __future__ import annotations

import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import NameOID

from gateway.errors import PkiError
from gateway.pki.keys import KeyKind, PrivateKey, generate_key
from gateway.pki.store import CertificateExistsError, CertStore, EntryInfo, EntryKind, StoredCert

UNTRUSTED_CA_NAME = "tlsgw-untrusted-ca"
# Ten years: a signing CA is installed on every client, so replacing it is expensive.
DEFAULT_CA_DAYS = 3650
# A CA's own notBefore is backdated so that clients with a slow clock accept it at once.
CA_BACKDATE = dt.timedelta(days=1)
# 128 random bits make serials unpredictable (the defence against chosen-prefix collision
# attacks that CA/B Forum BR 7.1 requires at least 64 bits for); +1 keeps them positive.
SERIAL_BITS = 128


def new_serial_number() -> int:
    """A random positive certificate serial number, well below RFC 5280's 20-octet limit."""
    return secrets.randbits(SERIAL_BITS) + 1


def signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    """The hash to sign with: SHA-256, or none for EdDSA keys, which hash internally."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def create_ca(
    common_name: str,
    *,
    key_kind: KeyKind = KeyKind.RSA_2048,
    days: int = DEFAULT_CA_DAYS,
    organization: str | None = None,
    now: dt.datetime | None = None,
    key: PrivateKey | None = None,
    subject: x509.Name | None = None,
    alt_names: x509.SubjectAlternativeName | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA allowed to sign end-entity certificates only (pathlen 0).

    RSA-2048 is the default key because every client accepts it; pass `key` to certify
    an existing key instead of generating one of `key_kind`. `subject` (built from
    `gateway.pki.csr.SubjectFields`) replaces the CN/O pair; `alt_names` adds the
    product's extra DNS and RFC822 names.
    """
    if days < 1:
        raise PkiError(f"CA {common_name!r}: validity must be at least one day, not {days}")
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        not_after = now + dt.timedelta(days=days)
    except OverflowError:  # past year 9999, which X.509's GeneralizedTime cannot encode
        raise PkiError(f"CA {common_name!r}: {days} days would end after the year 9999; choose fewer days") from None
    key = key or generate_key(key_kind)
    if subject is None:
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        subject = x509.Name(attributes)
    name = subject
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(new_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    )
    if alt_names is not None:
        builder = builder.add_extension(alt_names, critical=False)
    return builder.sign(key, signature_hash(key)), key


def is_ca(cert: x509.Certificate) -> bool:
    """True when `cert` may issue certificates: basicConstraints CA:TRUE, and keyCertSign
    if it restricts its key usage at all."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def require_signing_ca(stored: StoredCert) -> StoredCert:
    """Return `stored` if it can sign forged certificates (a CA with its key), else raise PkiError."""
    if not is_ca(stored.certificate):
        raise PkiError(f"certificate {stored.name!r} is not a CA certificate (basicConstraints CA:TRUE "
                       "with keyCertSign), so it cannot be a signing certificate")
    if stored.key is None:
        raise PkiError(f"certificate {stored.name!r} has no private key in the PKI store, "
                       "so it cannot be a signing certificate")
    return stored


def ensure_untrusted_ca(store: CertStore, *, now: dt.datetime | None = None) -> StoredCert:
    """Load this installation's untrusted CA, creating it on first use.

    Safe when several workers start at once: creation uses `save(replace=False)` and the
    losers load the winner's CA, so all workers present the same one.

    Raises:
        PkiError: the stored entry is unreadable, not a CA, or has no key.
    """
    if not store.exists(UNTRUSTED_CA_NAME):
        # The random suffix tells installations apart in a client's error dialog.
        cert, key = create_ca(
            f"tlsgw untrusted CA {secrets.token_hex(4)}",
            organization="tlsgw (this CA is deliberately not trusted)",
            key_kind=KeyKind.EC_P256,  # nobody validates it; the fastest to make
            now=now,
        )
        try:
            # low_value_key: sealed when there is a secret, but never refused by the key
            # policies: this key signs only what clients must reject (gateway.pki.keyseal).
            return store.save(UNTRUSTED_CA_NAME, cert, key, replace=False, low_value_key=True,
                              info=EntryInfo(EntryKind.CERTIFICATE, origin="created"))
        except CertificateExistsError:
            pass
    return require_signing_ca(store.load(UNTRUSTED_CA_NAME))
