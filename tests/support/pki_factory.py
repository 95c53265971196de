"""Build throw-away PKIs for tests, unit and integration alike.

Everything is generated at test time with `cryptography`, so nothing in the repository
can expire. The factory deliberately *can* build broken certificates (expired, wrong
host, self-signed, RSA-1024, an intermediate without CA:TRUE): they are the cases the
gateway must refuse. SHA-1 signatures are not offered: `cryptography` refuses to sign
with SHA-1 (DESIGN.md section 3); a test that needs one must use the `openssl` command.

RSA key generation is slow (tens of milliseconds for 2048 bits), so callers should
generate few keys and share them (session-scoped fixtures), and prefer `ec_key()` when
the key type does not matter.

Typical use::

    pki = TestPki.create()                       # root + intermediate, EC keys
    leaf = pki.leaf(["www.example.test"])        # signed by the intermediate
    leaf.write(tmp_path / "web", chain=[pki.intermediate])   # cert.pem + key.pem (0600)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TestKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# Fixed "now" for tests that want reproducible validity windows; tests that exercise real
# TLS stacks (which read the wall clock) should pass `utcnow()` instead.
EPOCH = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: TestKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, chain: Sequence[Issued] = (), *, with_key: bool = True) -> tuple[Path, Path]:
        """Write `cert.pem` (certificate then chain) and `key.pem` (0600) into `directory`.

        The layout is the one `gateway.pki.store` reads, so a test can drop a certificate
        straight into a store directory.
        """
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path = directory / "cert.pem"
        key_path = directory / "key.pem"
        cert_path.write_bytes(self.cert_pem + b"".join(c.cert_pem for c in chain))
        if with_key:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key_pem)
            os.chmod(key_path, 0o600)
        return cert_path, key_path


def _subject(common_name: str | None) -> x509.Name:
    if common_name is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    common_name: str | None,
    *,
    key: TestKey,
    issuer: Issued | None = None,
    names: Iterable[str] = (),
    ca: bool = False,
    path_length: int | None = None,
    basic_constraints: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    server_auth: bool = True,
    now: dt.datetime | None = None,
) -> Issued:
    """Issue one certificate; `issuer=None` makes it self-signed.

    Defaults give a well-formed webpki certificate: one day before `now` until 90 days
    after, SAN from `names`, key usages fitting `ca`, SKI/AKI, SHA-256.
    """
    now = now or utcnow()
    not_before = not_before or now - dt.timedelta(days=1)
    not_after = not_after or now + dt.timedelta(days=90)
    subject = _subject(common_name)
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )
    else:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        )
    builder = builder.add_extension(usage, critical=True)
    names = list(names)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=common_name is None
        )
    if not ca and server_auth:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    digest = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer_key, digest), key)


@dataclass(frozen=True, slots=True)
class TestPki:
    """A root, an intermediate under it, and a shared leaf key: the shape of a public CA."""

    __test__ = False  # not a pytest test class despite the name

    root: Issued
    intermediate: Issued
    leaf_key: TestKey
    now: dt.datetime

    @classmethod
    def create(
        cls,
        *,
        name: str = "tlsgw test",
        root_key: TestKey | None = None,
        intermediate_key: TestKey | None = None,
        leaf_key: TestKey | None = None,
        now: dt.datetime | None = None,
    ) -> TestPki:
        now = now or utcnow()
        # The CAs span years around `now` so that leaves dated in the past or the future
        # (expired, not yet valid) are still inside their issuers' validity.
        years = dt.timedelta(days=3650)
        root = issue(f"{name} root CA", key=root_key or ec_key(), ca=True, path_length=1,
                     not_before=now - years, not_after=now + years, now=now)
        intermediate = issue(f"{name} intermediate CA", key=intermediate_key or ec_key(), issuer=root,
                             ca=True, path_length=0, not_before=now - years, not_after=now + years, now=now)
        return cls(root, intermediate, leaf_key or ec_key(), now)

    def leaf(
        self,
        names: Sequence[str],
        *,
        key: TestKey | None = None,
        issuer: Issued | None = None,
        common_name: str | None = "",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        server_auth: bool = True,
    ) -> Issued:
        """A server certificate for `names` under the intermediate (or `issuer`).

        `common_name=""` (default) copies the first name into the CN; `None` leaves the
        subject empty (SAN then critical, as RFC 5280 requires).
        """
        cn = (names[0] if names else "leaf") if common_name == "" else common_name
        return issue(cn, key=key or self.leaf_key, issuer=issuer or self.intermediate, names=names,
                     not_before=not_before, not_after=not_after, server_auth=server_auth, now=self.now)

    def expired_leaf(self, names: Sequence[str], **kwargs: object) -> Issued:
        return self.leaf(names, not_before=self.now - dt.timedelta(days=400),
                         not_after=self.now - dt.timedelta(days=10), **kwargs)  # type: ignore[arg-type]

    def future_leaf(self, names: Sequence[str], **kwargs: object) -> Issued:
        return self.leaf(names, not_before=self.now + dt.timedelta(days=10),
                         not_after=self.now + dt.timedelta(days=100), **kwargs)  # type: ignore[arg-type]

    def self_signed(self, names: Sequence[str], *, key: TestKey | None = None) -> Issued:
        return issue(names[0], key=key or self.leaf_key, names=names, now=self.now)

    def non_ca_intermediate(self) -> Issued:
        """An 'intermediate' whose basicConstraints says CA:FALSE: must not issue anything."""
        return issue("not a CA", key=ec_key(), issuer=self.root, ca=False, server_auth=False, now=self.now)

    def write_root(self, path: Path) -> Path:
        """Write the root certificate alone as a PEM bundle (for `default_ca_bundle`)."""
        path.write_bytes(self.root.cert_pem)
        return path
