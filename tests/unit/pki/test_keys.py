from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from gateway.errors import PkiError
from gateway.pki.keys import (
    KeyKind,
    describe_key,
    generate_key,
    key_kind_of,
    key_matches_certificate,
    parse_private_key_pem,
    private_key_to_pem,
    public_key_bits,
)
from tests.support.pki_factory import TestKey, TestPki, issue


@pytest.mark.parametrize(
    "kind",
    [KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.RSA_2048],  # 3072/4096 only cost time: same code path
    ids=lambda k: k.value,
)
def test_generate_key_makes_the_kind_asked_for(kind: KeyKind) -> None:
    assert key_kind_of(generate_key(kind)) is kind


def test_key_kind_values_are_the_configuration_spelling() -> None:
    assert KeyKind("ecdsa-p256") is KeyKind.EC_P256
    assert KeyKind("rsa-4096") is KeyKind.RSA_4096
    assert [k.is_rsa for k in KeyKind] == [True, True, True, False, False]


def test_key_matches_certificate_only_for_its_own_key(pki: TestPki, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = pki.leaf(["a.example.test"])
    assert key_matches_certificate(leaf.key, leaf.cert)
    assert not key_matches_certificate(other_ec_key, leaf.cert)


def test_key_matches_certificate_false_across_key_types(pki: TestPki, rsa1024: rsa.RSAPrivateKey) -> None:
    leaf = pki.leaf(["a.example.test"])
    assert not key_matches_certificate(rsa1024, leaf.cert)


@pytest.mark.parametrize(
    ("key_name", "bits"),
    [("rsa1024", 1024), ("rsa2048", 2048), ("p256", 256), ("p384", 384), ("ed25519", 256)],
    ids=["rsa-1024", "rsa-2048", "ec-p256", "ec-p384", "ed25519"],
)
def test_public_key_bits_per_key_type(key_name: str, bits: int, request: pytest.FixtureRequest) -> None:
    keys: dict[str, Callable[[], TestKey]] = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }
    key = keys[key_name]() if key_name in keys else request.getfixturevalue(key_name)
    cert = issue("k.example.test", key=key, names=["k.example.test"]).cert
    assert public_key_bits(cert) == bits


def test_private_key_pem_round_trips(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = private_key_to_pem(other_ec_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    again = parse_private_key_pem(pem, source="mem")
    assert again.private_numbers() == other_ec_key.private_numbers()  # type: ignore[union-attr]


def test_parse_private_key_rejects_garbage_naming_source() -> None:
    with pytest.raises(PkiError, match="/x/key.pem"):
        parse_private_key_pem(b"not a key", source="/x/key.pem")


def test_parse_private_key_rejects_encrypted_key_without_password(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = other_ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(PkiError, match="encrypted"):
        parse_private_key_pem(pem, source="k")


def test_parse_private_key_rejects_key_that_cannot_sign() -> None:
    pem = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PkiError, match="cannot be used"):
        parse_private_key_pem(pem, source="k")


def test_describe_key_never_shows_material(other_ec_key: ec.EllipticCurvePrivateKey, rsa1024: rsa.RSAPrivateKey) -> None:
    assert describe_key(other_ec_key) == "EC secp256r1"
    assert describe_key(rsa1024) == "RSA-1024"
    assert describe_key(None) == "no key"
