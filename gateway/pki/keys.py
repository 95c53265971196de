"""Private keys: which kinds tlsgw makes, how they are encoded, and how they are compared.

tlsgw only ever needs keys that can sign (a CA issuing certificates, a server in a TLS
handshake), so `PrivateKey` is the signing subset of what `cryptography` can load.

Encoding is PKCS#8 PEM. `private_key_to_pem` and `parse_private_key` are the only places
that encode or decode key material; encryption at rest (`gateway.pki.keyseal`) passes
them its passphrase, and imports pass the operator's password.

Never log or format a private key; `describe_key` gives the words to use instead.
"""

from __future__ import annotations

import enum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from gateway.errors import PkiError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
"""A key that can sign certificates and TLS handshakes."""

# 65537 is the only exponent anything interoperable uses; smaller ones invite attacks.
RSA_PUBLIC_EXPONENT = 65537


class KeyKind(enum.Enum):
    """The keys tlsgw generates; the value is the spelling used in configuration and CLI."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ecdsa-p256"
    EC_P384 = "ecdsa-p384"

    @property
    def is_rsa(self) -> bool:
        return self in (KeyKind.RSA_2048, KeyKind.RSA_3072, KeyKind.RSA_4096)


_RSA_BITS = {KeyKind.RSA_2048: 2048, KeyKind.RSA_3072: 3072, KeyKind.RSA_4096: 4096}
_CURVES: dict[KeyKind, type[ec.EllipticCurve]] = {KeyKind.EC_P256: ec.SECP256R1, KeyKind.EC_P384: ec.SECP384R1}


def generate_key(kind: KeyKind) -> PrivateKey:
    """A fresh key of `kind`. RSA takes tens to hundreds of milliseconds: do it rarely."""
    if kind in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=_RSA_BITS[kind])
    return ec.generate_private_key(_CURVES[kind]())


def key_kind_of(key: PrivateKey) -> KeyKind | None:
    """The `KeyKind` that `key` is, or None for kinds tlsgw does not generate."""
    if isinstance(key, rsa.RSAPrivateKey):
        return {2048: KeyKind.RSA_2048, 3072: KeyKind.RSA_3072, 4096: KeyKind.RSA_4096}.get(key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": KeyKind.EC_P256, "secp384r1": KeyKind.EC_P384}.get(key.curve.name)
    return None


def describe_key(key: PrivateKey | None) -> str:
    """Words for a key in logs and reprs ("RSA-2048", "EC secp256r1"): never its material."""
    if key is None:
        return "no key"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    return "Ed448"


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_certificate(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when `key` is the private half of `cert`'s public key.

    Compares the DER SubjectPublicKeyInfo, which is exact for every key type; a mismatch
    here would otherwise surface much later as an opaque TLS handshake failure.
    """
    try:
        return _spki(key.public_key()) == _spki(cert.public_key())
    except (UnsupportedAlgorithm, ValueError):
        return False


def public_key_bits(cert: x509.Certificate) -> int:
    """Size of the certificate's public key in bits: RSA modulus, EC curve, 256/456 for EdDSA.

    Comparable with `min_key_length` only for RSA (the product's rule); a 256-bit EC key
    is stronger than a 2048-bit RSA key.
    """
    public_key = cert.public_key()
    if isinstance(public_key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        return public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return 456
    raise PkiError(f"certificate {cert.subject.rfc4514_string()!r} has an unsupported public key type")


def is_rsa_certificate(cert: x509.Certificate) -> bool:
    return isinstance(cert.public_key(), rsa.RSAPublicKey)


# --- encoding --------------------------------------------------------------------------------


class EncryptedKeyError(PkiError):
    """The key is encrypted and no password was given."""


class WrongPasswordError(PkiError):
    """The key (or PKCS#12 file) is encrypted and the password given does not open it."""


def private_key_to_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with `password` when one is given.

    Encryption is PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), as `cryptography`'s
    BestAvailableEncryption writes it, so `openssl pkey -in key.pem` opens it with the
    same password: an operator can always recover a key without tlsgw.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def is_encrypted_pem(data: bytes) -> bool:
    """True for PKCS#8 `ENCRYPTED PRIVATE KEY` and traditional `Proc-Type: 4,ENCRYPTED` PEM."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def parse_private_key(data: bytes, *, source: str, password: bytes | None = None) -> PrivateKey:
    """Decode a private key: PEM or DER, PKCS#8 or traditional RSA/EC, encrypted or not.

    A password given for a key that is not encrypted is ignored (the same password often
    comes with a PKCS#12 file and a PEM key alike).

    Raises:
        EncryptedKeyError: the key is encrypted and `password` is None.
        WrongPasswordError: `password` does not decrypt it.
        PkiError: naming `source` when the data is no private key, or one that cannot
            sign (DH, X25519, DSA). Messages never contain key material.
    """
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        key = loader(data, password=None)
    except TypeError:
        if password is None:
            raise EncryptedKeyError(f"{source}: the private key is encrypted; give its password") from None
        try:
            key = loader(data, password=password)
        except ValueError:
            raise WrongPasswordError(f"{source}: the password does not decrypt the private key") from None
        except UnsupportedAlgorithm as exc:
            raise PkiError(f"{source}: the private key is encrypted with an unsupported algorithm ({exc})") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{source}: not a readable private key ({_reason(exc)})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise PkiError(f"{source}: {type(key).__name__} keys cannot be used; use an RSA or ECDSA key")
    return key


def parse_private_key_pem(data: bytes, *, source: str, password: bytes | None = None) -> PrivateKey:
    """`parse_private_key` for callers that only ever hold PEM (kept for them)."""
    return parse_private_key(data, source=source, password=password)


def _reason(exc: Exception) -> str:
    """cryptography's words for a parse failure, on one line (they never quote the input)."""
    return " ".join(str(exc).split()) or type(exc).__name__
