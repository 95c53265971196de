"""Private keys at rest: sealed with a key-encryption secret the service is given at start.

Theory of operation:
- The secret is one line of text (at least `MIN_SECRET_LENGTH` characters) in a file
  that only root may read. The service finds it, in this order: an explicit path (the
  CLI's `--key-secret-file`), the systemd credential `tlsgw-key-secret`
  (`$CREDENTIALS_DIRECTORY/tlsgw-key-secret`, set by `LoadCredential=` or
  `LoadCredentialEncrypted=`), then `pki.key_secret_file` (default
  `/etc/tlsgw/key-secret`). A missing file is "no secret"; an unreadable one, one
  readable by group or others, or one too short is an error at start.
- Keys are written as encrypted PKCS#8 PEM with the secret as the password (PBES2:
  PBKDF2-HMAC-SHA256 + AES-256-CBC). The format is the one `openssl pkey` reads, so an
  operator with the secret can always recover a key without tlsgw:
  `openssl pkey -in key.pem -passin file:/etc/tlsgw/key-secret`.
  PBKDF2's modest iteration count is no weakness here because the secret is random
  (`create_key_secret` writes 32 random bytes, base64), not a memorable password; a
  short secret is refused rather than stretched.
- Keeping the secret apart from the store (`/etc/tlsgw` or a systemd credential vs
  `/var/lib/tlsgw/pki`) is what makes the sealing worth having: a backup, a disk image
  or a copy of the store alone does not reveal a key.

Policies (`pki.encrypt_keys`, `pki.persist_keys`) live in `KeyProtection`:
- `encrypt_keys: true` (the default): a key is written only sealed; with no secret,
  writing is refused with the way to provide one. Reading accepts sealed keys (with the
  secret) and unencrypted ones (stores from before, or the lab's), which
  `tlsgw cert seal-keys` turns into sealed ones.
- `encrypt_keys: false`: the operator opted out; keys are written unencrypted (0600).
- `persist_keys: false` (the product's "Persist Private Keys" off): no key is written
  at all (`KeysNotPersistedError`); imported keys live only in the running gateway's
  memory (`gateway.pki.memory_keys`), and keys tlsgw would create are refused.

One exception, on purpose: the *untrusted* CA's key (`gateway.pki.ca`) is written
whatever the policy (sealed when a secret exists). It signs only certificates that are
meant to be rejected, so its disclosure gives nobody anything, and refusing it would stop
the gateway from starting for no gain.
"""

from __future__ import annotations

import base64
import errno
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import PkiError
from gateway.pki.keys import (
    EncryptedKeyError,
    PrivateKey,
    WrongPasswordError,
    is_encrypted_pem,
    parse_private_key,
    private_key_to_pem,
)

CREDENTIAL_NAME = "tlsgw-key-secret"
# 16 characters of base64 are 96 bits: below that, PBKDF2's 2048 rounds would be the only
# defence left, which is not enough for a secret an attacker can guess offline.
MIN_SECRET_LENGTH = 16
# 32 random bytes: the AES-256 key size, so the secret is never the weaker link.
GENERATED_SECRET_BYTES = 32

PERSIST_KEYS_OFF = (
    "pki.persist_keys is false: tlsgw writes no private key to disk; a key imported with "
    "`tlsgw cert import` (or import-signed, replace) is handed to the running gateway, which "
    "keeps it only in its memory, and must be imported again after every restart of the gateway"
)
CREATED_KEYS_REFUSED = (
    "a key tlsgw creates itself would exist nowhere but in memory and be lost for good at the "
    "next restart, so none is created in this mode: create it with pki.persist_keys: true (or "
    "elsewhere) and import it, or set pki.persist_keys: true to keep keys in the store, sealed "
    "with the key secret"
)


class KeysNotPersistedError(PkiError):
    """`pki.persist_keys` is false and something tried to write a private key."""


class MissingKeySecretError(PkiError):
    """A key must be sealed or unsealed and the service was given no secret."""


@dataclass(frozen=True, slots=True, repr=False)
class KeySecret:
    """The key-encryption secret and where it came from (the only part ever shown)."""

    value: bytes
    source: str
    """"file /etc/tlsgw/key-secret" or "systemd credential tlsgw-key-secret"."""

    def __repr__(self) -> str:
        return f"KeySecret(from {self.source})"

    __str__ = __repr__


def parse_key_secret(data: bytes, *, source: str) -> KeySecret:
    """The first line of `data`, as `openssl -passin file:` reads it.

    Raises:
        PkiError: naming `source` when the line is empty or shorter than MIN_SECRET_LENGTH.
    """
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if len(line) < MIN_SECRET_LENGTH:
        raise PkiError(f"key secret ({source}) is {len(line)} characters long; use at least "
                       f"{MIN_SECRET_LENGTH} random characters (tlsgw cert create-key-secret makes one)")
    return KeySecret(line, source)


def load_key_secret(path: str | os.PathLike[str], *, source: str | None = None) -> KeySecret | None:
    """Read a secret file; None when it does not exist.

    Raises:
        PkiError: the file is unreadable, a symbolic link, readable by group or others,
            or holds too short a secret.
    """
    source = source or f"file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PkiError(f"key secret {path} is a symbolic link; point the setting at the file itself") from None
        raise PkiError(f"key secret {path}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise PkiError(f"key secret {path} has mode {mode:04o}, readable by group or others; "
                           f"fix it with: chmod 600 {path}")
        return parse_key_secret(handle.read(), source=source)


def find_key_secret(configured_file: str | None, *, explicit_file: str | None = None,
                    environ: Mapping[str, str] | None = None) -> KeySecret | None:
    """The secret from the first source that has one (see the module docstring), or None.

    An explicit file that does not exist is an error, since the operator named it.
    """
    if explicit_file is not None:
        secret = load_key_secret(explicit_file)
        if secret is None:
            raise PkiError(f"key secret {explicit_file} does not exist")
        return secret
    environ = os.environ if environ is None else environ
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        secret = load_key_secret(Path(credentials) / CREDENTIAL_NAME, source=f"systemd credential {CREDENTIAL_NAME}")
        if secret is not None:
            return secret
    if configured_file:
        return load_key_secret(configured_file)
    return None


def create_key_secret(path: str | os.PathLike[str]) -> None:
    """Write a new random secret to `path` (mode 0600); never overwrites an existing file.

    Raises:
        PkiError: the file exists (replacing a secret would lock every sealed key away)
            or cannot be written.
    """
    value = base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)) + b"\n"
    target = Path(path)
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise PkiError(f"key secret {target} already exists; keys sealed with it would be lost if it "
                       "were replaced") from None
    except OSError as exc:
        raise PkiError(f"key secret {target}: cannot create it ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(value)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True, slots=True, repr=False)
class KeyProtection:
    """How a store writes and reads private keys. The default is the library default:
    unencrypted, persisted (what tests and the lab use); the CLI and the daemon build
    theirs from `pki` settings with `gateway.pki.store.open_store`."""

    secret: KeySecret | None = None
    encrypt: bool = False
    """Refuse to write a key unsealed (`pki.encrypt_keys`)."""
    persist: bool = True
    """Write keys at all (`pki.persist_keys`)."""
    secret_hint: str = "set pki.key_secret_file or give the systemd credential tlsgw-key-secret"
    """How to provide a secret, for error messages (the CLI names its own option)."""

    def __repr__(self) -> str:
        return (f"KeyProtection(secret={'from ' + self.secret.source if self.secret else 'none'}, "
                f"encrypt={self.encrypt}, persist={self.persist})")

    def check_can_write(self, what: str) -> None:
        """Raise the error `encode` would raise, before any work is done."""
        if not self.persist:
            raise KeysNotPersistedError(f"{what}: {PERSIST_KEYS_OFF}; {CREATED_KEYS_REFUSED}")
        if self.encrypt and self.secret is None:
            raise MissingKeySecretError(
                f"{what}: private keys are stored encrypted and tlsgw has no key secret; create one "
                f"with `tlsgw cert create-key-secret` and {self.secret_hint}, or opt out of "
                "encryption with pki.encrypt_keys: false")

    def encode(self, key: PrivateKey, *, what: str, low_value: bool = False) -> bytes:
        """The bytes of a key file: sealed when a secret exists.

        `low_value` keys (the untrusted CA's) skip both policies; see the module docstring.
        """
        if not low_value:
            self.check_can_write(what)
        return private_key_to_pem(key, self.secret.value if self.secret else None)

    def decode(self, data: bytes, *, source: str) -> PrivateKey:
        """Decode a key file, unsealing it when it is encrypted.

        Raises:
            MissingKeySecretError: the key is sealed and there is no secret.
            PkiError: the secret does not open it, or it is no usable key.
        """
        if is_encrypted_pem(data) and self.secret is None:
            raise MissingKeySecretError(f"{source}: the private key is sealed and tlsgw has no key secret; "
                                        f"{self.secret_hint}")
        try:
            return parse_private_key(data, source=source, password=self.secret.value if self.secret else None)
        except WrongPasswordError:
            raise PkiError(f"{source}: the key secret ({self.secret.source if self.secret else 'none'}) does "
                           "not open this private key; it was sealed with another secret") from None
        except EncryptedKeyError:  # DER or an unusual PEM header that is_encrypted_pem missed
            raise MissingKeySecretError(f"{source}: the private key is sealed and tlsgw has no key secret; "
                                        f"{self.secret_hint}") from None

    @staticmethod
    def is_sealed(data: bytes) -> bool:
        return is_encrypted_pem(data)
