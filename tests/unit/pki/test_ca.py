from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.errors import PkiError
from gateway.pki.ca import (
    UNTRUSTED_CA_NAME,
    create_ca,
    ensure_untrusted_ca,
    is_ca,
    new_serial_number,
    require_signing_ca,
)
from gateway.pki.keys import KeyKind, PrivateKey, key_matches_certificate
from gateway.pki.store import CertStore, StoredCert
from tests.support.pki_factory import TestPki, issue


def test_create_ca_has_webpki_ca_extensions(signing_ca: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = signing_ca
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed by its own key
    assert key_matches_certificate(key, cert)
    assert 0 < cert.serial_number < 2**159


def test_create_ca_names_dates_and_existing_key(rsa2048: rsa.RSAPrivateKey) -> None:
    now = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    cert, key = create_ca("Corp CA", organization="Corp", days=30, now=now, key=rsa2048)
    assert key is rsa2048
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Corp CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Corp"
    assert cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc == now + dt.timedelta(days=30)


def test_create_ca_refuses_nonpositive_validity() -> None:
    with pytest.raises(PkiError, match="at least one day"):
        create_ca("x", days=0, key_kind=KeyKind.EC_P256)


def test_serial_numbers_are_positive_random_and_distinct() -> None:
    serials = {new_serial_number() for _ in range(200)}
    assert len(serials) == 200
    assert all(0 < s <= 2**128 for s in serials)
    assert max(serials) > 2**100  # 128 random bits, not a counter


@pytest.mark.parametrize(
    ("what", "expected"),
    [("root", True), ("intermediate", True), ("leaf", False), ("ca-without-certsign", False),
     ("no-basic-constraints", False)],
    ids=lambda v: str(v),
)
def test_is_ca(pki: TestPki, what: str, expected: bool) -> None:
    if what == "root":
        cert = pki.root.cert
    elif what == "intermediate":
        cert = pki.intermediate.cert
    elif what == "leaf":
        cert = pki.leaf(["a.example.test"]).cert
    elif what == "no-basic-constraints":
        cert = issue("x", key=pki.leaf_key, basic_constraints=False).cert
    else:
        # CA:TRUE, but keyUsage limited to digitalSignature: may not sign certificates.
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .public_key(pki.leaf_key.public_key())
            .serial_number(1)
            .not_valid_before(pki.now)
            .not_valid_after(pki.now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .sign(pki.leaf_key, hashes.SHA256())
        )
    assert is_ca(cert) is expected


def test_require_signing_ca_refuses_ca_without_key(pki: TestPki) -> None:
    with pytest.raises(PkiError, match="'corp'.*no private key"):
        require_signing_ca(StoredCert("corp", pki.root.cert))


def test_require_signing_ca_refuses_non_ca(pki: TestPki) -> None:
    leaf = pki.leaf(["a.example.test"])
    with pytest.raises(PkiError, match="'web' is not a CA"):
        require_signing_ca(StoredCert("web", leaf.cert, (), leaf.key))


def test_ensure_untrusted_ca_creates_once_then_reuses(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "pki")
    first = ensure_untrusted_ca(store)
    second = ensure_untrusted_ca(CertStore(tmp_path / "pki"))
    assert first.name == UNTRUSTED_CA_NAME
    assert second.certificate == first.certificate
    assert is_ca(first.certificate) and first.key is not None
    assert stat.S_IMODE(store.key_path(UNTRUSTED_CA_NAME).stat().st_mode) == 0o600


def test_ensure_untrusted_ca_differs_per_installation(tmp_path: Path) -> None:
    one = ensure_untrusted_ca(CertStore(tmp_path / "one"))
    two = ensure_untrusted_ca(CertStore(tmp_path / "two"))
    assert one.certificate.public_key() != two.certificate.public_key()
    assert one.certificate.subject != two.certificate.subject


def test_ensure_untrusted_ca_refuses_a_non_ca_in_its_place(tmp_path: Path, pki: TestPki) -> None:
    store = CertStore(tmp_path)
    leaf = pki.leaf(["a.example.test"])
    store.save(UNTRUSTED_CA_NAME, leaf.cert, leaf.key)
    with pytest.raises(PkiError, match=UNTRUSTED_CA_NAME):
        ensure_untrusted_ca(store)
