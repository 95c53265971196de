"""The certificate store: named certificates, with their chains and keys, on disk.

Layout (one directory, default `/var/lib/tlsgw/pki`, mode 0700)::

    <dir>/<name>/cert.pem       the certificate, then its chain (if any), PEM
    <dir>/<name>/key.pem        its private key, PKCS#8 PEM, mode 0600 (absent for CA-only
                                entries); sealed with the key secret (`gateway.pki.keyseal`)
    <dir>/<name>/info.json      what tlsgw knows beyond the certificate: kind (certificate or
                                CA certificate), whether the key may be exported, origin,
                                whether its key lives only in the gateway's memory
    <dir>/.requests/<name>/     pending signing requests: request.pem, key.pem, info.json
    <dir>/default-ca-package.pem  the default CA package, when updated with
                                `tlsgw cert update-default-ca` (`pki.default_ca_bundle: store`)
    <dir>/.lock                 serialises the CLI's multi-step changes

A name is one path component, so a configuration can refer to certificates by name
(`server_proxies[].certificates`, `client_proxies[].signing_certificate`,
`trust_stores[].ca_certificates`) and the store maps it to files.

Why the rules:
- A key file readable by group or others is refused, not fixed silently: somebody
  made it so, and an operator must know the key may have leaked.
- A key that does not match its certificate is refused at load, where the message can
  name the files, rather than failing later as an opaque TLS handshake error.
- `save` never leaves a half-written entry: it builds the entry in a temporary
  directory beside it and renames it into place. Replacing an existing entry swaps the
  two directories atomically (`renameat2(RENAME_EXCHANGE)`), so a reader sees the old
  entry or the new one, never a mix or nothing.

- Operations that touch several entries (a PKCS#12 file with several certificates, a
  replacement that keeps the old entry as `NAME_REPLACED`) stage every new entry first
  and then rename them into place, undoing the renames already done if one fails: an
  error leaves the store as it was. (A crash between two renames can leave the first
  ones done; every entry is still whole.)

Which key files are written sealed, unsealed or not at all is `KeyProtection`'s choice
(`gateway.pki.keyseal`); this module only moves the bytes it returns. With
`pki.persist_keys: false` an entry has no key file and is marked `memory_key`; the store
then takes its key from a `MemoryKeys` overlay (`gateway.pki.memory_keys`), which only a
running gateway has.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import enum
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.model import DEFAULT_CA_PACKAGE_FILE, DEFAULT_PKI_DIR, PkiSection
from gateway.errors import ConfigError, ConfigIssue, PkiError
from gateway.pki.keys import PrivateKey, describe_key, key_matches_certificate
from gateway.pki.keyseal import KeyProtection, find_key_secret
from gateway.pki.memory_keys import MEMORY_KEY_STATE, MISSING_KEY_STATE, MemoryKeys

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
INFO_FILE = "info.json"
REQUEST_FILE = "request.pem"
REQUESTS_DIR = ".requests"
LOCK_FILE = ".lock"
DIR_MODE = 0o700
KEY_MODE = 0o600
# Certificates are public, but they live in a 0700 directory anyway; 0644 lets an
# operator copy one out without sudo once they are in.
CERT_MODE = 0o644
# Entries being written or replaced; never listed as names.
_TEMP_PREFIX = ".tmp-"
# Longer names are almost certainly a mistake, and keep paths well under PATH_MAX.
MAX_NAME_LENGTH = 128


class CertificateExistsError(PkiError):
    """`save(..., replace=False)` found the name already taken (e.g. by another worker)."""


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER certificate: how certificates are named in logs."""
    return cert.fingerprint(hashes.SHA256()).hex()


def describe_certificate(cert: x509.Certificate) -> str:
    """Subject and fingerprint, the way logs refer to a certificate."""
    return f"{cert.subject.rfc4514_string() or '<empty subject>'} sha256={sha256_fingerprint(cert)}"


class EntryKind(enum.Enum):
    """The product's two certificate workspaces, which share one name space here."""

    CERTIFICATE = "certificate"
    """A certificate with its private key: a signing CA or a server endpoint."""
    CA = "ca"
    """A CA certificate for trust stores (and chains); a key is never kept for it."""


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the store records beside a certificate (`info.json`)."""

    kind: EntryKind = EntryKind.CERTIFICATE
    exportable: bool = False
    """The key may leave tlsgw (`tlsgw cert export --key-out`); never true by default."""
    origin: str = ""
    """How the entry came to be: created, imported, pkcs12, signed request, replacement."""
    created: str = ""
    """When it was written, ISO 8601 UTC."""
    memory_key: bool = False
    """Its private key is kept only in the running gateway's memory (`pki.persist_keys:
    false`); the store holds no key file for it (`gateway.pki.memory_keys`)."""

    def to_json(self) -> bytes:
        fields: dict[str, object] = {"kind": self.kind.value, "exportable": self.exportable, "origin": self.origin,
                                     "created": self.created}
        if self.memory_key:
            fields["memory_key"] = True
        return json.dumps(fields, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> EntryInfo:
        try:
            raw = json.loads(data)
            return cls(kind=EntryKind(raw.get("kind", "certificate")), exportable=raw.get("exportable") is True,
                       origin=str(raw.get("origin", "")), created=str(raw.get("created", "")),
                       memory_key=raw.get("memory_key") is True)
        except (ValueError, AttributeError) as exc:
            raise PkiError(f"{source}: unreadable entry information ({exc})") from None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True, repr=False)
class StoredCert:
    """One named entry of the store, loaded and checked."""

    name: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    """Certificates sent after `certificate` in a handshake, issuer first."""
    key: PrivateKey | None = None
    """Matches `certificate` whenever present (checked at load)."""
    info: EntryInfo = field(default_factory=EntryInfo)

    def __repr__(self) -> str:
        # Never the key itself: its repr would be harmless today, but a future key type's
        # might not be, and this object ends up in logs and tracebacks.
        return (
            f"StoredCert(name={self.name!r}, subject={self.certificate.subject.rfc4514_string()!r}, "
            f"sha256={sha256_fingerprint(self.certificate)}, chain={len(self.chain)}, key={describe_key(self.key)})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True, repr=False)
class NewEntry:
    """An entry to write: what `save_all` and `replace_keeping_old` take."""

    name: str
    certificate: x509.Certificate
    key: PrivateKey | None = None
    chain: tuple[x509.Certificate, ...] = ()
    info: EntryInfo | None = None

    def __repr__(self) -> str:
        return f"NewEntry({self.name!r}, {describe_certificate(self.certificate)}, key={describe_key(self.key)})"


@dataclass(frozen=True, slots=True, repr=False)
class PendingRequest:
    """A certificate signing request waiting for the CA's answer, with its key."""

    name: str
    csr: x509.CertificateSigningRequest
    key: PrivateKey
    signing: bool
    """Asked for a signing (CA) certificate rather than a server endpoint."""
    exportable: bool = False
    created: str = ""

    def __repr__(self) -> str:
        subject = self.csr.subject.rfc4514_string()
        return f"PendingRequest({self.name!r}, subject={subject!r}, key={describe_key(self.key)})"


class KeyState(enum.Enum):
    """What `CertStore.key_state` found, without raising: what `tlsgw cert list` shows."""

    NONE = "none"
    """No key file."""
    SEALED = "sealed"
    """Encrypted with the key secret, and it opens and matches."""
    UNENCRYPTED = "unencrypted"
    """Readable, matches, but not sealed."""
    LOCKED = "sealed, not checked"
    """Sealed, and this process has no secret to open it with."""
    BROKEN = "broken"
    """Unreadable, wrong mode, wrong secret, or not the certificate's key."""
    MEMORY = MEMORY_KEY_STATE
    """No key file by design (`memory_key`): the running gateway holds the key in memory."""
    MEMORY_MISSING = MISSING_KEY_STATE
    """No key file by design (`memory_key`), and no running gateway holds the key (it was
    restarted since the import, or is not running)."""


def check_name(name: str) -> str:
    """Return `name` if it can be a store entry (one safe path component), else raise PkiError."""
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or not name.isprintable()
    ):
        raise PkiError(f"certificate name {name!r} is not usable in the PKI store: use 1-{MAX_NAME_LENGTH} "
                       "printable characters, no '/', not starting with '.'")
    return name


class CertStore:
    """Named certificates in one directory; see the module docstring for the layout."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_PKI_DIR,
                 protection: KeyProtection | None = None, memory_keys: MemoryKeys | None = None) -> None:
        self.directory = Path(directory)
        self.protection = protection or KeyProtection()
        self.memory_keys = memory_keys or MemoryKeys()
        """Keys of `memory_key` entries; only a running gateway has any."""

    def __repr__(self) -> str:
        return f"CertStore({str(self.directory)!r}, {self.protection!r})"

    def info_path(self, name: str) -> Path:
        return self.directory / check_name(name) / INFO_FILE

    @property
    def default_ca_package_path(self) -> Path:
        return self.directory / DEFAULT_CA_PACKAGE_FILE

    def cert_path(self, name: str) -> Path:
        return self.directory / check_name(name) / CERT_FILE

    def key_path(self, name: str) -> Path:
        return self.directory / check_name(name) / KEY_FILE

    def exists(self, name: str) -> bool:
        return self.cert_path(name).is_file()

    def names(self) -> tuple[str, ...]:
        """Every entry with a certificate, sorted; an absent store directory holds none."""
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise PkiError(f"{self.directory}: cannot list the PKI store ({exc.strerror})") from None
        return tuple(sorted(
            p.name for p in entries
            if not p.name.startswith(".") and (p / CERT_FILE).is_file()
        ))

    # --- reading ------------------------------------------------------------------------

    def load(self, name: str, *, with_key: bool = True) -> StoredCert:
        """Load entry `name`: certificate, chain and (if `with_key` and present) key.

        Raises:
            PkiError: naming the certificate and the file when the entry is missing or
                unreadable, the key file is readable by group or others, or the key does
                not match the certificate.
        """
        cert_path = self.cert_path(name)
        data = _read(cert_path, name, what="certificate")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise PkiError(f"certificate {name!r}: {cert_path} holds no readable PEM certificate ({exc})") from None
        key = None
        key_path = self.key_path(name)
        info = self.load_info(name, certs[0])
        if with_key and key_path.exists():
            key = self.protection.decode(_read_key(key_path, name), source=f"certificate {name!r}: {key_path}")
            if not key_matches_certificate(key, certs[0]):
                raise PkiError(f"certificate {name!r}: {key_path} is not the key of {cert_path} "
                               "(their public keys differ)")
        elif with_key and info.memory_key:
            key = self.memory_keys.key_for(certs[0])  # matches by construction: found by its public key
        return StoredCert(name, certs[0], tuple(certs[1:]), key, info)

    def load_info(self, name: str, cert: x509.Certificate | None = None) -> EntryInfo:
        """The entry's `info.json`; for entries written without one, what the files say:
        a key file makes it a certificate, a CA certificate without key a CA entry."""
        path = self.info_path(name)
        try:
            return EntryInfo.from_json(path.read_bytes(), source=str(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot read {path} ({exc.strerror})") from None
        if self.key_path(name).exists() or cert is None or not _claims_ca(cert):
            return EntryInfo(EntryKind.CERTIFICATE)
        return EntryInfo(EntryKind.CA)

    def key_state(self, name: str, cert: x509.Certificate) -> tuple[KeyState, str]:
        """The state of the entry's key file and, when broken, why (never its contents)."""
        key_path = self.key_path(name)
        if not key_path.exists():
            try:
                memory = self.load_info(name, cert).memory_key
            except PkiError as exc:
                return KeyState.BROKEN, str(exc)
            if not memory:
                return KeyState.NONE, ""
            return (KeyState.MEMORY if self.memory_keys.key_for(cert) is not None else KeyState.MEMORY_MISSING), ""
        try:
            data = _read_key(key_path, name)
            sealed = self.protection.is_sealed(data)
            if sealed and self.protection.secret is None:
                return KeyState.LOCKED, ""
            key = self.protection.decode(data, source=f"certificate {name!r}: {key_path}")
        except PkiError as exc:
            return KeyState.BROKEN, str(exc)
        if not key_matches_certificate(key, cert):
            return KeyState.BROKEN, f"{key_path} is not the key of the certificate (their public keys differ)"
        return (KeyState.SEALED if sealed else KeyState.UNENCRYPTED), ""

    # --- writing ------------------------------------------------------------------------

    def save(
        self,
        name: str,
        cert: x509.Certificate,
        key: PrivateKey | None = None,
        chain: Sequence[x509.Certificate] = (),
        *,
        replace: bool = True,
        info: EntryInfo | None = None,
        low_value_key: bool = False,
    ) -> StoredCert:
        """Write entry `name` atomically and return it as `load` would.

        With `replace=False` an existing entry is left alone and `CertificateExistsError`
        is raised, which lets concurrent first-use creators agree on one winner.
        `low_value_key` is for the untrusted CA only (see `gateway.pki.keyseal`).

        Raises:
            PkiError: the key does not match `cert`, the key protection refuses to write
                it (`KeysNotPersistedError`, `MissingKeySecretError`), or the store
                cannot be written.
        """
        check_name(name)
        entry = NewEntry(name, cert, key, tuple(chain), info)
        self._ensure_directory()
        tmp = self._stage(entry, low_value_key=low_value_key)
        target = self.directory / name
        try:
            _move_into_place(tmp, target, name, replace=replace)
            _fsync_dir(self.directory)
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot write {target} ({exc.strerror})") from None
        finally:
            # After a swap `tmp` holds the previous entry; after a failure, the new one.
            shutil.rmtree(tmp, ignore_errors=True)
        return StoredCert(name, cert, tuple(chain), key, info or EntryInfo())

    def save_all(self, entries: Sequence[NewEntry]) -> tuple[StoredCert, ...]:
        """Write several new entries, all or none (a PKCS#12 file with several certificates).

        Raises:
            CertificateExistsError: one of the names is taken (nothing is written).
            PkiError: as `save`; whatever was already renamed into place is removed again.
        """
        if not entries:
            raise PkiError("nothing to write: no certificate was given")
        names = [e.name for e in entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PkiError(f"certificate names {', '.join(map(repr, duplicates))} would be used twice")
        for entry in entries:
            if (self.directory / check_name(entry.name)).exists():
                raise CertificateExistsError(f"certificate {entry.name!r} already exists in {self.directory}")
        self._ensure_directory()
        staged: list[tuple[NewEntry, Path]] = []
        placed: list[Path] = []
        try:
            for entry in entries:
                staged.append((entry, self._stage(entry)))
            for entry, tmp in staged:
                target = self.directory / entry.name
                try:
                    os.rename(tmp, target)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise CertificateExistsError(f"certificate {entry.name!r} already exists in "
                                                     f"{self.directory}") from None
                    raise PkiError(f"certificate {entry.name!r}: cannot write {target} ({exc.strerror})") from None
                placed.append(target)
            _fsync_dir(self.directory)
        except BaseException:
            for target in placed:
                self._discard(target)
            raise
        finally:
            for _, tmp in staged:
                shutil.rmtree(tmp, ignore_errors=True)
        return tuple(StoredCert(e.name, e.certificate, e.chain, e.key, e.info or EntryInfo()) for e in entries)

    def replace_keeping_old(self, new: NewEntry, old_name: str, *, discard_previous: bool = False) -> None:
        """Put `new` in place of the entry of the same name, which is kept as `old_name`.

        The name never disappears: the new entry is swapped in with RENAME_EXCHANGE where
        the system has it, so a gateway reloading at that moment finds the old entry or
        the new one. If keeping the old entry fails, the swap is undone.

        Raises:
            PkiError: no entry to replace; `old_name` taken and not `discard_previous`;
                the store cannot be written. The store is unchanged in each case.
        """
        target = self.directory / check_name(new.name)
        kept = self.directory / check_name(old_name)
        self.check_replaceable(new.name, old_name, discard_previous=discard_previous)
        tmp = self._stage(new)
        try:
            if kept.exists():
                self._discard(kept)
            if _exchange(tmp, target):
                try:
                    os.rename(tmp, kept)  # `tmp` now holds the old entry
                except OSError:
                    _exchange(tmp, target)  # put the old entry back under its name
                    raise
            else:
                os.rename(target, kept)
                try:
                    os.rename(tmp, target)
                except OSError:
                    os.rename(kept, target)
                    raise
            _fsync_dir(self.directory)
        except OSError as exc:
            raise PkiError(f"certificate {new.name!r}: cannot replace {target} ({exc.strerror})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def check_replaceable(self, name: str, old_name: str, *, discard_previous: bool = False) -> None:
        """Raise what `replace_keeping_old` would raise about the names, before any work."""
        if not self.exists(name):
            raise PkiError(f"certificate {name!r} does not exist in {self.directory}; nothing to replace")
        if (self.directory / check_name(old_name)).exists() and not discard_previous:
            raise CertificateExistsError(f"certificate {old_name!r} already exists (kept from an earlier "
                                         f"replacement); delete it first or pass --discard-previous")

    def delete(self, name: str) -> None:
        """Remove an entry at once: it is renamed away first, so no half-deleted entry is seen."""
        target = self.directory / check_name(name)
        if not target.is_dir():
            raise PkiError(f"certificate {name!r} does not exist in {self.directory}")
        self._discard(target)

    def update_info(self, name: str, info: EntryInfo) -> None:
        """Rewrite an entry's info.json in place (atomically, by rename)."""
        path = self.info_path(name)
        tmp = path.with_name(f"{_TEMP_PREFIX}{INFO_FILE}")
        try:
            tmp.unlink(missing_ok=True)
            _write_file(tmp, info.to_json(), CERT_MODE)
            os.rename(tmp, path)
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot write {path} ({exc.strerror})") from None

    # --- signing requests ---------------------------------------------------------------

    @property
    def requests_directory(self) -> Path:
        return self.directory / REQUESTS_DIR

    def request_names(self) -> tuple[str, ...]:
        try:
            entries = list(self.requests_directory.iterdir())
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise PkiError(f"{self.requests_directory}: cannot list signing requests ({exc.strerror})") from None
        return tuple(sorted(p.name for p in entries if not p.name.startswith(".") and (p / REQUEST_FILE).is_file()))

    def request_exists(self, name: str) -> bool:
        return (self.requests_directory / check_name(name) / REQUEST_FILE).is_file()

    def save_request(self, request: PendingRequest) -> None:
        """Write a pending request and its key (sealed as any key), refusing an existing name."""
        name = check_name(request.name)
        self.protection.check_can_write(f"signing request {name!r}")
        self._ensure_directory()
        directory = self.requests_directory
        try:
            directory.mkdir(mode=DIR_MODE, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{name}-", dir=directory))
        except OSError as exc:
            raise PkiError(f"signing request {name!r}: cannot write in {directory} ({exc.strerror})") from None
        try:
            os.chmod(tmp, DIR_MODE)
            _write_file(tmp / REQUEST_FILE, request.csr.public_bytes(serialization.Encoding.PEM), CERT_MODE)
            _write_file(tmp / KEY_FILE, self.protection.encode(request.key, what=f"signing request {name!r}"), KEY_MODE)
            meta = {"signing": request.signing, "exportable": request.exportable,
                    "created": request.created or now_iso()}
            _write_file(tmp / INFO_FILE, json.dumps(meta).encode() + b"\n", CERT_MODE)
            _fsync_dir(tmp)
            try:
                os.rename(tmp, directory / name)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise CertificateExistsError(f"signing request {name!r} already exists") from None
                raise
            _fsync_dir(directory)
        except OSError as exc:
            raise PkiError(f"signing request {name!r}: cannot write it ({exc.strerror})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_request_csr(self, name: str) -> x509.CertificateSigningRequest:
        """A pending request's CSR alone (what goes to the CA; never the key)."""
        path = self.requests_directory / check_name(name) / REQUEST_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PkiError(f"no signing request named {name!r} in {self.directory}") from None
        except OSError as exc:
            raise PkiError(f"signing request {name!r}: cannot read {path} ({exc.strerror})") from None
        try:
            return x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise PkiError(f"signing request {name!r}: {path} is not a PEM request ({exc})") from None

    def load_request(self, name: str) -> PendingRequest:
        """A pending request with its key, unsealed."""
        csr = self.load_request_csr(name)
        directory = self.requests_directory / name
        key_path = directory / KEY_FILE
        key = self.protection.decode(_read_key(key_path, name), source=f"signing request {name!r}: {key_path}")
        try:
            meta = json.loads((directory / INFO_FILE).read_bytes())
        except (OSError, ValueError):
            meta = {}
        return PendingRequest(name, csr, key, signing=meta.get("signing") is True,
                              exportable=meta.get("exportable") is True, created=str(meta.get("created", "")))

    def delete_request(self, name: str) -> None:
        target = self.requests_directory / check_name(name)
        if not target.is_dir():
            raise PkiError(f"no signing request named {name!r} in {self.directory}")
        self._discard(target)

    # --- the default CA package -----------------------------------------------------------

    def write_default_ca_package(self, pem: bytes) -> Path:
        """Replace the store's copy of the default CA package atomically (mode 0644)."""
        self._ensure_directory()
        path = self.default_ca_package_path
        tmp = path.with_name(f"{_TEMP_PREFIX}{path.name}-{os.getpid()}")
        try:
            tmp.unlink(missing_ok=True)
            _write_file(tmp, pem, CERT_MODE)
            os.rename(tmp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PkiError(f"{path}: cannot write the default CA package ({exc.strerror})") from None
        return path

    # --- helpers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (flock on `.lock`) for a check-then-write sequence, so two
        `tlsgw cert` commands cannot both decide a name is free."""
        self._ensure_directory()
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise PkiError(f"{path}: cannot lock the PKI store ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _stage(self, entry: NewEntry, *, low_value_key: bool = False) -> Path:
        """Write `entry` into a new temporary directory inside the store; return it."""
        name = check_name(entry.name)
        if entry.key is not None and not key_matches_certificate(entry.key, entry.certificate):
            raise PkiError(f"certificate {name!r}: the key given does not match the certificate")
        key_pem = (self.protection.encode(entry.key, what=f"certificate {name!r}", low_value=low_value_key)
                   if entry.key is not None else None)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{name}-", dir=self.directory))
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot write in {self.directory} ({exc.strerror})") from None
        try:
            os.chmod(tmp, DIR_MODE)
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (entry.certificate, *entry.chain))
            _write_file(tmp / CERT_FILE, pem, CERT_MODE)
            if key_pem is not None:
                _write_file(tmp / KEY_FILE, key_pem, KEY_MODE)
            if entry.info is not None:
                _write_file(tmp / INFO_FILE, entry.info.to_json(), CERT_MODE)
            _fsync_dir(tmp)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PkiError(f"certificate {name!r}: cannot write in {self.directory} ({exc.strerror})") from None
        return tmp

    def _discard(self, target: Path) -> None:
        """Rename `target` to a temporary name (atomic disappearance), then remove it."""
        aside = target.with_name(f"{_TEMP_PREFIX}gone-{target.name}-{os.getpid()}")
        try:
            os.rename(target, aside)
        except OSError as exc:
            raise PkiError(f"{target}: cannot remove it ({exc.strerror})") from None
        shutil.rmtree(aside, ignore_errors=True)

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise PkiError(f"{self.directory}: cannot create the PKI store ({exc.strerror})") from None


def open_store(pki: PkiSection, *, key_secret_file: str | None = None,
               environ: Mapping[str, str] | None = None, secret_hint: str | None = None,
               memory_keys: MemoryKeys | None = None) -> CertStore:
    """The store as the configuration describes it: directory, key secret, key policies;
    `memory_keys`: the keys the running gateway holds in memory only.

    Used by the daemon (every load and reload) and by `tlsgw cert`.

    Raises:
        ConfigError: at `pki.key_secret_file` when the secret exists but cannot be used.
    """
    try:
        secret = find_key_secret(pki.key_secret_file, explicit_file=key_secret_file, environ=environ)
    except PkiError as exc:
        raise ConfigError([ConfigIssue("pki.key_secret_file", str(exc))]) from None
    hint = secret_hint or (f"put one in {pki.key_secret_file} (pki.key_secret_file) or give the systemd "
                           "credential tlsgw-key-secret")
    return CertStore(pki.dir, KeyProtection(secret, encrypt=pki.encrypt_keys, persist=pki.persist_keys,
                                            secret_hint=hint), memory_keys)


def _claims_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _read(path: Path, name: str, *, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"certificate {name!r}: {what} file {path} does not exist") from None
    except OSError as exc:
        raise PkiError(f"certificate {name!r}: cannot read {path} ({exc.strerror})") from None


def _read_key(path: Path, name: str) -> bytes:
    """Read a key file, refusing it when group or others may read it (checked on the open file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PkiError(f"certificate {name!r}: key file {path} is a symbolic link; "
                           "store the key file itself") from None
        raise PkiError(f"certificate {name!r}: cannot read {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise PkiError(f"certificate {name!r}: key file {path} has mode {mode:04o}, readable by "
                           f"group or others; fix it with: chmod 600 {path}")
        return f.read()


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have taken bits away from a cert file
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, target: Path, name: str, *, replace: bool) -> None:
    """Rename `tmp` to `target`; an existing `target` is swapped into `tmp` (if `replace`)."""
    try:
        os.rename(tmp, target)
        return
    except OSError as exc:
        # rename() over a non-empty directory fails with ENOTEMPTY (or EEXIST).
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if not replace:
        raise CertificateExistsError(f"certificate {name!r}: {target} already exists")
    if not _exchange(tmp, target):
        # No RENAME_EXCHANGE (old kernel or filesystem): move the old entry aside first.
        # Readers may briefly find no entry, but never a half-written one.
        aside = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{name}-old-", dir=target.parent))
        try:
            os.rename(target, aside / "entry")
            try:
                os.rename(tmp, target)
            except OSError:
                os.rename(aside / "entry", target)  # put the previous entry back
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(2); False when the system cannot."""
    # The process's own symbols include libc's; glibc has had renameat2 since 2.28.
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
