"""Reading what operators bring: certificates and keys in PEM, DER and PKCS#12, and pairing
them up. Pure: bytes in, certificates and keys out; nothing is written here.

Formats (the product's two: "PEM/DER" with the key in a separate file, and PKCS#12):
- PEM: any number of certificates, and possibly private keys too (many tools write a
  combined file); keys may be encrypted, with a password.
- DER: one certificate (or, in a key file, one key).
- PKCS#12 (.p12/.pfx): certificates with friendly names ("aliases") and keys, protected
  by a password; legacy (RC2/3DES, as `openssl pkcs12 -legacy` and older Windows write)
  and modern (PBES2/AES) encryption alike.

PKCS#12 with several keys: `cryptography`'s `load_pkcs12` verifies the integrity MAC and
returns every certificate but only the *first* key. The other keys are read here from the
PKCS#12 SafeBags directly (the shrouded key bags of the unencrypted SafeContents, where
OpenSSL, Java keytool and Windows put them) and decrypted with the same password as
PKCS#8, then matched to their certificates by public key. Only the outer structure is
walked, and only after `load_pkcs12` accepted the file, so a malformed file never gets
this far.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.config.names import CERTIFICATE
from gateway.errors import PkiError
from gateway.pki.keys import PrivateKey, WrongPasswordError, key_matches_certificate, parse_private_key

_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:ENCRYPTED |RSA |EC )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL)
# A PKCS#12 alias becomes part of a certificate name, whose characters are restricted.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\- ]+")
# Chains deeper than this are not chains but loops or junk.
MAX_CHAIN_LENGTH = 10


class FileFormat(enum.Enum):
    PEM = "pem"
    DER = "der"
    PKCS12 = "pkcs12"


@dataclass(frozen=True, slots=True, repr=False)
class ParsedFile:
    """Everything one file held."""

    certificates: tuple[x509.Certificate, ...]
    keys: tuple[PrivateKey, ...] = ()
    aliases: tuple[str | None, ...] = ()
    """PKCS#12 friendly names, one per certificate (None where absent or not PKCS#12)."""
    format: FileFormat = FileFormat.PEM

    def __repr__(self) -> str:
        return f"ParsedFile({self.format.value}, {len(self.certificates)} certificates, {len(self.keys)} keys)"

    def alias_of(self, cert: x509.Certificate) -> str | None:
        for candidate, alias in zip(self.certificates, self.aliases):
            if candidate == cert:
                return alias
        return None


@dataclass(frozen=True, slots=True, repr=False)
class KeyedCertificate:
    """A certificate with its key and the chain found for it in the same file."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    alias: str | None = None

    def __repr__(self) -> str:
        return f"KeyedCertificate({self.certificate.subject.rfc4514_string()!r}, alias={self.alias!r})"


def detect_format(data: bytes, filename: str = "") -> FileFormat:
    """PEM by its armour; PKCS#12 by extension or by failing to be one DER certificate."""
    if b"-----BEGIN" in data:
        return FileFormat.PEM
    if filename.lower().endswith((".p12", ".pfx")):
        return FileFormat.PKCS12
    try:
        x509.load_der_x509_certificate(data)
        return FileFormat.DER
    except ValueError:
        return FileFormat.PKCS12 if _looks_like_pkcs12(data) else FileFormat.DER


def parse_certificate_file(data: bytes, *, source: str, password: bytes | None = None,
                           fmt: FileFormat | None = None) -> ParsedFile:
    """Read a certificate file in any supported format.

    Raises:
        PkiError: naming `source`: no certificate in it, not the format given, a PKCS#12
            password that does not open it (`WrongPasswordError`), or an encrypted PEM
            key without a password.
    """
    fmt = fmt or detect_format(data, source)
    if fmt is FileFormat.PKCS12:
        return parse_pkcs12(data, source=source, password=password)
    if fmt is FileFormat.DER:
        try:
            return ParsedFile((x509.load_der_x509_certificate(data),), (), (None,), FileFormat.DER)
        except ValueError as exc:
            raise PkiError(f"{source}: not a DER certificate ({_reason(exc)})") from None
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise PkiError(f"{source}: no readable PEM certificate in it ({_reason(exc)})") from None
    keys = tuple(parse_private_key(m.group(0), source=f"{source} (private key #{i + 1})", password=password)
                 for i, m in enumerate(_PEM_KEY.finditer(data)))
    return ParsedFile(certs, keys, (None,) * len(certs), FileFormat.PEM)


def parse_key_file(data: bytes, *, source: str, password: bytes | None = None) -> PrivateKey:
    """A separate key file, PEM or DER, encrypted or not; the first key of a PEM file."""
    match = _PEM_KEY.search(data)
    return parse_private_key(match.group(0) if match else data, source=source, password=password)


def parse_pkcs12(data: bytes, *, source: str, password: bytes | None = None) -> ParsedFile:
    """Every certificate (with alias) and every key of a PKCS#12 file; see the module docstring."""
    attempts = [password] if password is not None else [None, b""]
    loaded = None
    for attempt in attempts:
        try:
            loaded = pkcs12.load_pkcs12(data, attempt)
            password = attempt
            break
        except ValueError:
            continue
        except TypeError as exc:  # unsupported content (e.g. a key type OpenSSL rejects)
            raise PkiError(f"{source}: PKCS#12 content cannot be used ({_reason(exc)})") from None
    if loaded is None:
        if not _looks_like_pkcs12(data):
            raise PkiError(f"{source}: not a PKCS#12 file")
        if password is None:
            raise WrongPasswordError(f"{source}: the PKCS#12 file is protected by a password; give it")
        raise WrongPasswordError(f"{source}: the password does not open this PKCS#12 file")
    entries = ([loaded.cert] if loaded.cert is not None else []) + list(loaded.additional_certs)
    certs = tuple(entry.certificate for entry in entries)
    aliases = tuple(_decode_alias(entry.friendly_name) for entry in entries)
    keys: list[PrivateKey] = []
    if loaded.key is not None:
        keys.append(loaded.key)  # type: ignore[arg-type]
    for index, bag in enumerate(_pkcs12_key_bags(data)):
        try:
            key = parse_private_key(bag, source=f"{source} (key #{index + 1})", password=password or b"")
        except PkiError:
            continue  # a bag cryptography cannot open; the first key is already in hand
        if not any(_same_key(key, known) for known in keys):
            keys.append(key)
    if not certs:
        raise PkiError(f"{source}: the PKCS#12 file holds no certificate")
    return ParsedFile(certs, tuple(keys), aliases, FileFormat.PKCS12)


def pair_keys(parsed: ParsedFile, *, source: str) -> list[KeyedCertificate]:
    """Each key with its certificate and the chain the file holds for it.

    Raises:
        PkiError: a key matches no certificate of the file.
    """
    pairs: list[KeyedCertificate] = []
    for index, key in enumerate(parsed.keys):
        cert = next((c for c in parsed.certificates if key_matches_certificate(key, c)), None)
        if cert is None:
            raise PkiError(f"{source}: private key #{index + 1} belongs to none of the certificates in the file")
        others = [c for c in parsed.certificates if c != cert]
        pairs.append(KeyedCertificate(cert, key, build_chain(cert, others), parsed.alias_of(cert)))
    return pairs


def find_certificate_for_key(certificates: Sequence[x509.Certificate], key: PrivateKey) -> x509.Certificate | None:
    return next((c for c in certificates if key_matches_certificate(key, c)), None)


def build_chain(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """The certificates of `pool` that lead from `leaf` upwards, issuer first, by subject and
    signature; certificates that are not on the path are left out."""
    chain: list[x509.Certificate] = []
    current = leaf
    while len(chain) < MAX_CHAIN_LENGTH and not is_self_issued(current):
        issuer = next((c for c in pool if c not in chain and c != current and issued_by(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key signed `cert` (names and signature; not dates or usage)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: all mean "no"
        return False
    return True


def is_self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def entry_names(base: str, aliases: Sequence[str | None]) -> list[str]:
    """Store names for the certificates of one file: the base name when there is one,
    else the base name plus `_` plus each alias (made safe), or plus a number where an
    alias is missing, as the product names the certificates of a PKCS#12 file."""
    if len(aliases) == 1:
        return [base]
    names: list[str] = []
    for index, alias in enumerate(aliases):
        suffix = _NAME_UNSAFE.sub("-", alias).strip(" -") if alias else ""
        names.append(f"{base}_{suffix or index + 1}")
    return names


def certificate_name_problem(name: str) -> str | None:
    return CERTIFICATE.problem(name)


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _same_key(a: PrivateKey, b: PrivateKey) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(*der) == b.public_key().public_bytes(*der)


def _decode_alias(name: bytes | None) -> str | None:
    if not name:
        return None
    return name.decode("utf-8", errors="replace")


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- a minimal walk over PKCS#12's outer DER structure (RFC 7292) -------------------------

_OID_DATA = bytes.fromhex("2a864886f70d010701")                 # 1.2.840.113549.1.7.1
_OID_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0101")          # 1.2.840.113549.1.12.10.1.1
_OID_SHROUDED_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0102")  # 1.2.840.113549.1.12.10.1.2
_SEQUENCE, _OCTET_STRING, _OID, _INTEGER, _CONTEXT_0 = 0x30, 0x04, 0x06, 0x02, 0xA0


class _DerError(ValueError):
    pass


def _tlv(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at `offset`; definite lengths only."""
    if offset + 2 > end:
        raise _DerError("truncated")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > end:
            raise _DerError("unsupported length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > end:
        raise _DerError("truncated")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, content start, content end, element start) of each element in a range."""
    out = []
    while start < end:
        tag, content_start, content_end = _tlv(data, start, end)
        out.append((tag, content_start, content_end, start))
        start = content_end
    return out


def _octets(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The content range of an OCTET STRING at `start` (BER-style constructed ones are not
    supported: OpenSSL, keytool and Windows write primitive ones)."""
    tag, s, e = _tlv(data, start, end)
    if tag != _OCTET_STRING:
        raise _DerError("expected OCTET STRING")
    return s, e


def _looks_like_pkcs12(data: bytes) -> bool:
    """PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, macData OPTIONAL }."""
    try:
        tag, start, end = _tlv(data, 0, len(data))
        if tag != _SEQUENCE:
            return False
        kids = _children(data, start, end)
        return len(kids) >= 2 and kids[0][0] == _INTEGER and data[kids[0][1]:kids[0][2]] == b"\x03"
    except _DerError:
        return False


def _pkcs12_key_bags(data: bytes) -> list[bytes]:
    """DER PrivateKeyInfo / EncryptedPrivateKeyInfo of every key bag in the file's
    unencrypted SafeContents; [] when the structure is not the expected one."""
    try:
        _, start, end = _tlv(data, 0, len(data))
        auth_safe = _children(data, start, end)[1]
        oid, content = _children(data, auth_safe[1], auth_safe[2])[:2]
        if data[oid[1]:oid[2]] != _OID_DATA or content[0] != _CONTEXT_0:
            return []
        s, e = _octets(data, content[1], content[2])
        _, s, e = _tlv(data, s, e)  # AuthenticatedSafe ::= SEQUENCE OF ContentInfo
        bags: list[bytes] = []
        for info in _children(data, s, e):
            parts = _children(data, info[1], info[2])
            if len(parts) < 2 or data[parts[0][1]:parts[0][2]] != _OID_DATA or parts[1][0] != _CONTEXT_0:
                continue  # encryptedData: certificates, usually; not walked
            cs, ce = _octets(data, parts[1][1], parts[1][2])
            _, cs, ce = _tlv(data, cs, ce)  # SafeContents ::= SEQUENCE OF SafeBag
            for bag in _children(data, cs, ce):
                fields = _children(data, bag[1], bag[2])
                if len(fields) < 2 or fields[0][0] != _OID or fields[1][0] != _CONTEXT_0:
                    continue
                if data[fields[0][1]:fields[0][2]] in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
                    _, vs, ve = _tlv(data, fields[1][1], fields[1][2])
                    element_start = fields[1][1]
                    bags.append(data[element_start:ve])
        return bags
    except (_DerError, IndexError):
        return []
