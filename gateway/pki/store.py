"""The certificate store: named certificates, with their chains and keys, on disk.

Layout (one directory, default `/var/lib/tlsgw/pki`, mode 0700)::

    <dir>/<name>/cert.pem   the certificate, then its chain (if any), PEM
    <dir>/<name>/key.pem    its private key, PKCS#8 PEM, mode 0600 (absent for CA-only entries)

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

Keys are unencrypted for now; encryption at rest plugs into
`gateway.pki.keys.private_key_to_pem` / `parse_private_key_pem`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.model import DEFAULT_PKI_DIR
from gateway.errors import PkiError
from gateway.pki.keys import PrivateKey, describe_key, key_matches_certificate, parse_private_key_pem, private_key_to_pem

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
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


@dataclass(frozen=True, slots=True, repr=False)
class StoredCert:
    """One named entry of the store, loaded and checked."""

    name: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    """Certificates sent after `certificate` in a handshake, issuer first."""
    key: PrivateKey | None = None
    """Matches `certificate` whenever present (checked at load)."""

    def __repr__(self) -> str:
        # Never the key itself: its repr would be harmless today, but a future key type's
        # might not be, and this object ends up in logs and tracebacks.
        return (
            f"StoredCert(name={self.name!r}, subject={self.certificate.subject.rfc4514_string()!r}, "
            f"sha256={sha256_fingerprint(self.certificate)}, chain={len(self.chain)}, key={describe_key(self.key)})"
        )

    __str__ = __repr__


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

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_PKI_DIR) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CertStore({str(self.directory)!r})"

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
        if with_key and key_path.exists():
            key = parse_private_key_pem(_read_key(key_path, name), source=f"certificate {name!r}: {key_path}")
            if not key_matches_certificate(key, certs[0]):
                raise PkiError(f"certificate {name!r}: {key_path} is not the key of {cert_path} "
                               "(their public keys differ)")
        return StoredCert(name, certs[0], tuple(certs[1:]), key)

    # --- writing ------------------------------------------------------------------------

    def save(
        self,
        name: str,
        cert: x509.Certificate,
        key: PrivateKey | None = None,
        chain: Sequence[x509.Certificate] = (),
        *,
        replace: bool = True,
    ) -> StoredCert:
        """Write entry `name` atomically and return it as `load` would.

        With `replace=False` an existing entry is left alone and `CertificateExistsError`
        is raised, which lets concurrent first-use creators agree on one winner.

        Raises:
            PkiError: the key does not match `cert`, or the store cannot be written.
        """
        check_name(name)
        if key is not None and not key_matches_certificate(key, cert):
            raise PkiError(f"certificate {name!r}: the key given does not match the certificate")
        self._ensure_directory()
        target = self.directory / name
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{name}-", dir=self.directory))
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot write in {self.directory} ({exc.strerror})") from None
        try:
            os.chmod(tmp, DIR_MODE)
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain))
            _write_file(tmp / CERT_FILE, pem, CERT_MODE)
            if key is not None:
                _write_file(tmp / KEY_FILE, private_key_to_pem(key), KEY_MODE)
            _fsync_dir(tmp)
            _move_into_place(tmp, target, name, replace=replace)
            _fsync_dir(self.directory)
        except OSError as exc:
            raise PkiError(f"certificate {name!r}: cannot write {target} ({exc.strerror})") from None
        finally:
            # After a swap `tmp` holds the previous entry; after a failure, the new one.
            shutil.rmtree(tmp, ignore_errors=True)
        return StoredCert(name, cert, tuple(chain), key)

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise PkiError(f"{self.directory}: cannot create the PKI store ({exc.strerror})") from None


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
