"""Reading certificate and key files (issue 4): PEM, DER, PKCS#12 (one key or several),
passwords, and pairing keys with certificates."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.errors import PkiError
from gateway.pki.importing import (
    FileFormat,
    build_chain,
    detect_format,
    entry_names,
    pair_keys,
    parse_certificate_file,
    parse_key_file,
    parse_pkcs12,
)
from gateway.pki.keys import EncryptedKeyError, WrongPasswordError, key_matches_certificate
from tests.support.pkcs12_files import merge_pkcs12, pkcs12_file
from tests.support.pki_factory import Issued, TestPki, ec_key


@pytest.fixture(scope="module")
def leaf(pki: TestPki) -> Issued:
    return pki.leaf(["www.example.test"], key=ec_key())


def _encrypted(issued: Issued, password: bytes, encoding: serialization.Encoding = serialization.Encoding.PEM) -> bytes:
    return issued.key.private_bytes(encoding, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(password))


def test_formats_are_detected(leaf: Issued) -> None:
    assert detect_format(leaf.cert_pem) is FileFormat.PEM
    assert detect_format(leaf.cert.public_bytes(serialization.Encoding.DER)) is FileFormat.DER
    assert detect_format(pkcs12_file(leaf.key, leaf.cert)) is FileFormat.PKCS12
    assert detect_format(b"\x30\x00", "x.pfx") is FileFormat.PKCS12


def test_pem_with_chain_and_key_in_one_file(leaf: Issued, pki: TestPki) -> None:
    parsed = parse_certificate_file(leaf.cert_pem + pki.intermediate.cert_pem + leaf.key_pem, source="f")
    assert parsed.certificates == (leaf.cert, pki.intermediate.cert)
    [pair] = pair_keys(parsed, source="f")
    assert pair.certificate == leaf.cert and pair.chain == (pki.intermediate.cert,)


def test_der_certificate(leaf: Issued) -> None:
    parsed = parse_certificate_file(leaf.cert.public_bytes(serialization.Encoding.DER), source="f")
    assert parsed.certificates == (leaf.cert,) and parsed.format is FileFormat.DER


BAD_FILES = {
    "text": b"hello",
    "truncated-pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "key-only": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    "empty": b"",
}


@pytest.mark.parametrize("data", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_certificate_file_is_refused_naming_it(data: bytes) -> None:
    with pytest.raises(PkiError, match="/in/cert.pem"):
        parse_certificate_file(data, source="/in/cert.pem")


def test_forced_format_that_does_not_fit_is_refused(leaf: Issued) -> None:
    with pytest.raises(PkiError, match="not a DER certificate"):
        parse_certificate_file(leaf.cert_pem, source="f", fmt=FileFormat.DER)
    with pytest.raises(PkiError, match="not a PKCS#12 file"):
        parse_certificate_file(leaf.cert.public_bytes(serialization.Encoding.DER), source="f", fmt=FileFormat.PKCS12)


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER], ids=["pem", "der"])
def test_encrypted_key_file_needs_its_password(leaf: Issued, encoding: serialization.Encoding) -> None:
    data = _encrypted(leaf, b"pw", encoding)
    key = parse_key_file(data, source="k", password=b"pw")
    assert key_matches_certificate(key, leaf.cert)
    with pytest.raises(EncryptedKeyError, match="give its password"):
        parse_key_file(data, source="k")
    with pytest.raises(WrongPasswordError, match="does not decrypt"):
        parse_key_file(data, source="k", password=b"wrong")


def test_password_for_a_clear_key_is_ignored(leaf: Issued) -> None:
    assert key_matches_certificate(parse_key_file(leaf.key_pem, source="k", password=b"pw"), leaf.cert)


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
def test_pkcs12_with_chain_and_alias(leaf: Issued, pki: TestPki, legacy: bool) -> None:
    data = pkcs12_file(leaf.key, leaf.cert, [pki.intermediate.cert, pki.root.cert], alias=b"web", legacy=legacy)
    parsed = parse_pkcs12(data, source="p", password=b"secret")
    [pair] = pair_keys(parsed, source="p")
    assert pair.alias == "web" and pair.chain == (pki.intermediate.cert, pki.root.cert)


def test_pkcs12_wrong_or_missing_password_is_said_so(leaf: Issued) -> None:
    data = pkcs12_file(leaf.key, leaf.cert)
    with pytest.raises(WrongPasswordError, match="does not open"):
        parse_pkcs12(data, source="p", password=b"wrong")
    with pytest.raises(WrongPasswordError, match="protected by a password"):
        parse_pkcs12(data, source="p")


def test_pkcs12_without_password_opens_without_one(leaf: Issued) -> None:
    parsed = parse_pkcs12(pkcs12_file(leaf.key, leaf.cert, password=None), source="p")
    assert parsed.keys and parsed.certificates == (leaf.cert,)


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
def test_pkcs12_with_several_keys_pairs_each(pki: TestPki, legacy: bool) -> None:
    a, b = pki.leaf(["a.example.test"], key=ec_key()), pki.leaf(["b.example.test"], key=ec_key())
    data = merge_pkcs12([pkcs12_file(a.key, a.cert, alias=b"alpha", legacy=legacy),
                         pkcs12_file(b.key, b.cert, [pki.intermediate.cert], alias=b"beta", legacy=legacy)])
    pairs = pair_keys(parse_pkcs12(data, source="p", password=b"secret"), source="p")
    assert {(p.alias, p.certificate) for p in pairs} == {("alpha", a.cert), ("beta", b.cert)}
    assert all(key_matches_certificate(p.key, p.certificate) for p in pairs)


def test_key_matching_no_certificate_is_refused(leaf: Issued, pki: TestPki) -> None:
    parsed = parse_certificate_file(pki.root.cert_pem + leaf.key_pem, source="f")
    with pytest.raises(PkiError, match="none of the certificates"):
        pair_keys(parsed, source="f")


def test_chain_is_ordered_and_ignores_unrelated_certificates(leaf: Issued, pki: TestPki) -> None:
    stranger = TestPki.create(name="other").root.cert
    assert build_chain(leaf.cert, [pki.root.cert, stranger, pki.intermediate.cert]) == (
        pki.intermediate.cert, pki.root.cert)


NAMES = {
    "one": (["x"], ["web"]),
    "aliases": (["alpha", "beta"], ["web_alpha", "web_beta"]),
    "unsafe-alias": (["a.b@c", "ok"], ["web_a-b-c", "web_ok"]),
    "missing-alias": ([None, "beta"], ["web_1", "web_beta"]),
}


@pytest.mark.parametrize(("aliases", "names"), NAMES.values(), ids=NAMES.keys())
def test_entry_names_are_base_plus_alias(aliases: list[str | None], names: list[str]) -> None:
    assert entry_names("web", aliases) == names
