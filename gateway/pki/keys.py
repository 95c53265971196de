"""Private keys: which kinds tlsgw makes, how they are encoded, and how they are compared.

tlsgw only ever needs keys that can sign (a CA issuing certificates, a server in a TLS
handshake), so `PrivateKey` is the signing subset of what `cryptography` can load.

Encoding is PKCS#8 PEM. Keys are stored unencrypted for now: `private_key_to_pem` and
`parse_private_key_pem` are the only two places that encode or decode key material, so
encryption at rest (a later issue) plugs in there, with a passphrase source, without any
caller changing.

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


# --- encoding: the encryption-at-rest seam -------------------------------------------------


def private_key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the key file's 0600 mode is the protection for now).

    Encryption at rest replaces `NoEncryption()` here with
    `BestAvailableEncryption(passphrase)` and gives this function a passphrase source.
    """
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def parse_private_key_pem(data: bytes, *, source: str) -> PrivateKey:
    """Decode a PEM private key (PKCS#8, or traditional RSA/EC PEM as other tools write).

    Raises:
        PkiError: naming `source` (the file) when the data is not a usable private key,
            is encrypted (not supported yet), or cannot sign (DH, X25519, DSA).
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PkiError(f"{source}: private key is encrypted; encrypted keys are not supported yet: "
                       "decrypt it with `openssl pkey -in KEY -out key.pem` and keep mode 0600") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{source}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise PkiError(f"{source}: {type(key).__name__} keys cannot be used; use an RSA or ECDSA key")
    return key
