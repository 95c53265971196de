"""PKCS#12 files for import tests, built with `cryptography` (no external tools).

`cryptography` writes one key per file; `merge_pkcs12` joins the SafeContents of several
such files into one PFX without a MAC, which is what a keystore with several keys
(Java keytool, Windows) looks like to a parser, so the multi-key path can be tested
without a JVM. Files with several keys made by the real keytool are in the
interoperability tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.pki.importing import _children, _tlv
from tests.support.pki_factory import TestKey

_OID_DATA = bytes.fromhex("06092a864886f70d010701")


def legacy_encryption(password: bytes) -> serialization.KeySerializationEncryption:
    """3DES + SHA-1 MAC, as `openssl pkcs12 -legacy` and old Windows write."""
    return (serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password))


def pkcs12_file(key: TestKey | None, cert: x509.Certificate | None, chain: Sequence[x509.Certificate] = (),
                *, alias: bytes | None = b"entry", password: bytes | None = b"secret", legacy: bool = False) -> bytes:
    if password is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    elif legacy:
        encryption = legacy_encryption(password)
    else:
        encryption = serialization.BestAvailableEncryption(password)
    cas = list(chain) or None
    return pkcs12.serialize_key_and_certificates(alias, key, cert, cas, encryption)  # type: ignore[arg-type]


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _content_infos(pfx: bytes) -> list[bytes]:
    _, start, end = _tlv(pfx, 0, len(pfx))
    auth_safe = _children(pfx, start, end)[1]
    content = _children(pfx, auth_safe[1], auth_safe[2])[1]
    _, s, e = _tlv(pfx, content[1], content[2])  # OCTET STRING
    _, s, e = _tlv(pfx, s, e)  # SEQUENCE OF ContentInfo
    return [pfx[c[3]:c[2]] for c in _children(pfx, s, e)]


def merge_pkcs12(files: Sequence[bytes]) -> bytes:
    """One PFX (no MAC) holding the SafeContents of every file; same password for all."""
    infos = b"".join(info for pfx in files for info in _content_infos(pfx))
    auth_safe = _der(0x30, _OID_DATA + _der(0xA0, _der(0x04, _der(0x30, infos))))
    return _der(0x30, _der(0x02, b"\x03") + auth_safe)
