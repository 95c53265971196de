"""Keys at rest (issue 4): the key secret, where the service finds it, and how keys are
sealed, refused or kept out of the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import ConfigError, PkiError
from gateway.pki.keys import private_key_to_pem
from gateway.pki.keyseal import (
    CREDENTIAL_NAME,
    KeyProtection,
    KeysNotPersistedError,
    MissingKeySecretError,
    create_key_secret,
    find_key_secret,
    load_key_secret,
    parse_key_secret,
)
from gateway.config.model import PkiSection
from gateway.pki.store import CertStore, KeyState, open_store
from tests.support.pki_factory import TestPki

SECRET = b"0123456789abcdef0123456789abcdef"


def _secret_file(path: Path, data: bytes = SECRET + b"\n", mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_secret_is_the_first_line_without_its_newline() -> None:
    assert parse_key_secret(SECRET + b"\r\nignored\n", source="t").value == SECRET


@pytest.mark.parametrize("data", [b"", b"\n" + SECRET, b"short\n"], ids=["empty", "empty-first-line", "short"])
def test_short_secret_is_refused(data: bytes) -> None:
    with pytest.raises(PkiError, match="at least 16"):
        parse_key_secret(data, source="t")


def test_secret_repr_shows_only_its_source() -> None:
    secret = parse_key_secret(SECRET, source="file /x")
    assert SECRET.decode() not in repr(secret) and "file /x" in repr(secret)
    assert SECRET.decode() not in repr(KeyProtection(secret))


def test_missing_secret_file_is_no_secret(tmp_path: Path) -> None:
    assert load_key_secret(tmp_path / "absent") is None


@pytest.mark.parametrize("mode", [0o640, 0o604], ids=["group-read", "other-read"])
def test_secret_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path / "s", mode=mode)
    with pytest.raises(PkiError, match=f"chmod 600 {path}"):
        load_key_secret(path)


def test_symlinked_secret_is_refused(tmp_path: Path) -> None:
    target = _secret_file(tmp_path / "s")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(PkiError, match="symbolic link"):
        load_key_secret(tmp_path / "link")


def test_systemd_credential_wins_over_the_configured_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    _secret_file(creds / CREDENTIAL_NAME, b"C" * 20)
    configured = _secret_file(tmp_path / "s", b"F" * 20)
    secret = find_key_secret(str(configured), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert secret is not None and secret.value == b"C" * 20 and "credential" in secret.source


def test_configured_file_is_used_without_a_credential(tmp_path: Path) -> None:
    configured = _secret_file(tmp_path / "s", b"F" * 20)
    secret = find_key_secret(str(configured), environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "none")})
    assert secret is not None and secret.value == b"F" * 20


def test_explicit_file_wins_and_must_exist(tmp_path: Path) -> None:
    explicit = _secret_file(tmp_path / "e", b"E" * 20)
    configured = _secret_file(tmp_path / "s", b"F" * 20)
    secret = find_key_secret(str(configured), explicit_file=str(explicit), environ={})
    assert secret is not None and secret.value == b"E" * 20
    with pytest.raises(PkiError, match="does not exist"):
        find_key_secret(str(configured), explicit_file=str(tmp_path / "nope"), environ={})


def test_create_key_secret_writes_a_usable_0600_secret_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "key-secret"
    create_key_secret(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    first = load_key_secret(path)
    assert first is not None and len(first.value) >= 40
    with pytest.raises(PkiError, match="already exists"):
        create_key_secret(path)
    again = load_key_secret(path)
    assert again is not None and again.value == first.value


def test_sealed_key_round_trips_and_is_encrypted_pkcs8(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    protection = KeyProtection(parse_key_secret(SECRET, source="t"), encrypt=True)
    data = protection.encode(other_ec_key, what="k")
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    again = protection.decode(data, source="k")
    assert again.private_numbers() == other_ec_key.private_numbers()  # type: ignore[union-attr]


def test_encryption_required_without_secret_refuses_to_write(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MissingKeySecretError, match="create-key-secret"):
        KeyProtection(None, encrypt=True).encode(other_ec_key, what="certificate 'x'")


def test_opting_out_writes_unencrypted(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    data = KeyProtection(None, encrypt=False).encode(other_ec_key, what="k")
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_persist_keys_off_refuses_every_key_and_says_why(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    protection = KeyProtection(parse_key_secret(SECRET, source="t"), encrypt=True, persist=False)
    with pytest.raises(KeysNotPersistedError, match="persist_keys is false.*memory"):
        protection.encode(other_ec_key, what="certificate 'x'")


def test_low_value_key_skips_both_policies(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    data = KeyProtection(None, encrypt=True, persist=False).encode(other_ec_key, what="k", low_value=True)
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_sealed_key_without_secret_names_the_way_to_give_one(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    sealed = private_key_to_pem(other_ec_key, SECRET)
    with pytest.raises(MissingKeySecretError, match="pki.key_secret_file"):
        KeyProtection(None).decode(sealed, source="k")


def test_sealed_key_with_another_secret_is_refused(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    sealed = private_key_to_pem(other_ec_key, SECRET)
    with pytest.raises(PkiError, match="another secret"):
        KeyProtection(parse_key_secret(b"x" * 20, source="t")).decode(sealed, source="k")


def test_unencrypted_key_still_loads_in_a_sealing_store(other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    protection = KeyProtection(parse_key_secret(SECRET, source="t"), encrypt=True)
    assert protection.decode(private_key_to_pem(other_ec_key), source="k") is not None


def test_sealing_store_round_trips_and_reports_key_states(tmp_path: Path, pki: TestPki) -> None:
    secret_file = _secret_file(tmp_path / "secret")
    pki_section = PkiSection(dir=str(tmp_path / "pki"), key_secret_file=str(secret_file))
    store = open_store(pki_section, environ={})
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    assert store.key_path("web").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert store.load("web").key is not None
    assert store.key_state("web", leaf.cert)[0] is KeyState.SEALED
    without_secret = CertStore(tmp_path / "pki")
    assert without_secret.key_state("web", leaf.cert)[0] is KeyState.LOCKED
    with pytest.raises(MissingKeySecretError):
        without_secret.load("web")
    assert without_secret.load("web", with_key=False).certificate == leaf.cert


def test_open_store_reports_an_unusable_secret_at_its_config_path(tmp_path: Path) -> None:
    bad = _secret_file(tmp_path / "secret", mode=0o644)
    with pytest.raises(ConfigError) as err:
        open_store(PkiSection(dir=str(tmp_path), key_secret_file=str(bad)), environ={})
    assert err.value.issues[0].path == "pki.key_secret_file"
