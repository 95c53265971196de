"""Private keys kept only in the running gateway's memory (`pki.persist_keys: false`,
the product's "Persist Private Keys" off).

Theory of operation:
- `tlsgw cert import` (import-signed, replace) writes the certificate to the store as
  usual, with `EntryInfo.memory_key` set and no key file, and hands the key to the
  running gateway over its control socket (`Command.IMPORT_KEYS`, admin only). The
  gateway keeps it in a `MemoryKeys` overlay (`gateway.runtime.ProcessMaterial`) that
  the store consults when an entry has no key file (`CertStore.load`), and sends it to
  every worker process over its channel with each configuration (a worker restarted
  later gets it too). Nothing of it is ever written to disk or logged.
- Keys are found by the public key they belong to (SHA-256 of the SubjectPublicKeyInfo),
  not by name: the key of `web` still serves the same certificate after
  `tlsgw cert replace` kept it as `web_REPLACED`, and a key can never be paired with
  another certificate.
- After a restart the overlay is empty: a certificate marked `memory_key` loads without
  its key, its proxy is out of service until the key is imported again (the same
  `tlsgw cert import` command), and `tlsgw cert list`, `tlsgw status`, `check-config`
  and the daemon's log say so.

Pure: keys in, keys out; the wire form (PEM strings) is what travels over the local
control socket and the worker socketpairs, never anywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from gateway.errors import PkiError
from gateway.pki.keys import PrivateKey, describe_key, parse_private_key, private_key_to_pem

MEMORY_KEY_STATE = "key in gateway memory only (re-import after restart)"
MISSING_KEY_STATE = "no key: import it again"
# A key import carries PEM keys on one control-socket line: an RSA-4096 key is about
# 3.3 KB of PEM, so 1 MiB holds some 300 of them (a PKCS#12 file with many certificates).
MAX_KEYS_PER_IMPORT = 256


def public_key_id(public_key: CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: which key pair a key or certificate belongs to."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def certificate_key_id(cert: x509.Certificate) -> str:
    return public_key_id(cert.public_key())


def reimport_hint(name: str) -> str:
    """How to give the gateway a lost key again (the first import's command works again)."""
    return (f"import it again with the same files: tlsgw cert import {_quoted(name)} CERTFILE --key KEYFILE "
            "(or FILE.p12)")


def _quoted(name: str) -> str:
    return f"'{name}'" if " " in name else name


@dataclass(frozen=True, slots=True, repr=False)
class MemoryKey:
    """One key held in memory, and the name it was imported under (for `tlsgw status`)."""

    name: str
    key: PrivateKey
    key_id: str
    """`public_key_id` of the key's public half."""

    def __repr__(self) -> str:
        return f"MemoryKey({self.name!r}, {describe_key(self.key)}, {self.key_id[:16]})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, repr=False)
class MemoryKeys:
    """The keys a gateway process holds in memory only, by `public_key_id`. Immutable: a
    change makes a new overlay, so a runtime keeps the one it was built with."""

    by_key_id: Mapping[str, MemoryKey] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"MemoryKeys({len(self.by_key_id)} key(s): {', '.join(self.names()) or '-'})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.by_key_id)

    def names(self) -> list[str]:
        return sorted({k.name for k in self.by_key_id.values()})

    def key_for(self, cert: x509.Certificate) -> PrivateKey | None:
        """The private key of `cert`'s public key, if this process was given it."""
        found = self.by_key_id.get(certificate_key_id(cert))
        return found.key if found is not None else None

    def with_keys(self, keys: Iterable[tuple[str, PrivateKey]]) -> MemoryKeys:
        """A new overlay with `keys` ((name, key) pairs) added; a key given again replaces
        the earlier one (its name may have changed)."""
        merged = dict(self.by_key_id)
        for name, key in keys:
            key_id = public_key_id(key.public_key())
            merged[key_id] = MemoryKey(name, key, key_id)
        return MemoryKeys(merged)

    def held(self) -> list[dict[str, str]]:
        """What `tlsgw status` shows (and `tlsgw cert list` compares): names and key ids, never keys."""
        return [{"name": k.name, "key_id": k.key_id}
                for k in sorted(self.by_key_id.values(), key=lambda k: (k.name, k.key_id))]

    def to_wire(self) -> list[dict[str, str]]:
        """Every key as unencrypted PKCS#8 PEM, for a worker process's channel only."""
        return [key_to_wire(k.name, k.key) for k in sorted(self.by_key_id.values(), key=lambda k: k.key_id)]

    @classmethod
    def from_wire(cls, items: object) -> MemoryKeys:
        """Raises: PkiError naming the entry that is not a usable key."""
        return cls().with_keys(keys_from_wire(items))


def key_to_wire(name: str, key: PrivateKey, certificate: x509.Certificate | None = None) -> dict[str, str]:
    """One key as it travels over the control socket or a worker channel: name, PEM, and
    (from the CLI) the certificate it belongs to, so the gateway checks the pair itself."""
    item = {"name": name, "key": private_key_to_pem(key).decode("ascii")}
    if certificate is not None:
        item["certificate"] = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return item


def keys_from_wire(items: object, *, require_certificate: bool = False) -> list[tuple[str, PrivateKey]]:
    """Decode `key_to_wire` items; with `require_certificate`, check each key against the
    certificate that came with it.

    Raises:
        PkiError: naming the item (by position and name) that is malformed, is no
            usable private key, or is not the key of its certificate. Never quotes the key.
    """
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise PkiError("keys: expected a list of {name, key} objects")
    if len(items) > MAX_KEYS_PER_IMPORT:
        raise PkiError(f"keys: {len(items)} keys in one import; at most {MAX_KEYS_PER_IMPORT}")
    decoded: list[tuple[str, PrivateKey]] = []
    for index, item in enumerate(items):
        name, pem, cert_pem = _fields(item, index, require_certificate)
        source = f"keys[{index}] (certificate {name!r})"
        key = parse_private_key(pem.encode("ascii", "replace"), source=source)
        if cert_pem is not None:
            try:
                cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii", "replace"))
            except ValueError:
                raise PkiError(f"{source}: the certificate is not readable PEM") from None
            if certificate_key_id(cert) != public_key_id(key.public_key()):
                raise PkiError(f"{source}: the private key is not the key of the certificate "
                               "(their public keys differ)")
        decoded.append((name, key))
    return decoded


def _fields(item: Any, index: int, require_certificate: bool) -> tuple[str, str, str | None]:
    if not isinstance(item, Mapping):
        raise PkiError(f"keys[{index}]: expected an object with name and key")
    name, pem, cert_pem = item.get("name"), item.get("key"), item.get("certificate")
    if not isinstance(name, str) or not name:
        raise PkiError(f"keys[{index}]: name must be a certificate name")
    if not isinstance(pem, str) or not pem.startswith("-----BEGIN"):
        raise PkiError(f"keys[{index}] (certificate {name!r}): key must be a PEM private key")
    if cert_pem is not None and not isinstance(cert_pem, str):
        raise PkiError(f"keys[{index}] (certificate {name!r}): certificate must be PEM text")
    if require_certificate and cert_pem is None:
        raise PkiError(f"keys[{index}] (certificate {name!r}): the certificate must come with its key")
    return name, pem, cert_pem
