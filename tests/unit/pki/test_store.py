from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import PkiError
from gateway.pki import store as store_module
from gateway.pki.keys import key_matches_certificate
from gateway.pki.store import CertificateExistsError, CertStore, StoredCert
from tests.support.pki_factory import Issued, TestPki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "pki")


def test_save_then_load_round_trips_cert_chain_and_key(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key, chain=[pki.intermediate.cert])
    loaded = store.load("web")
    assert loaded.name == "web"
    assert loaded.certificate == leaf.cert
    assert loaded.chain == (pki.intermediate.cert,)
    assert loaded.key is not None and key_matches_certificate(loaded.key, leaf.cert)


def test_save_writes_the_documented_layout_and_modes(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key, chain=[pki.intermediate.cert])
    entry = store.directory / "web"
    assert _mode(store.directory) == 0o700
    assert _mode(entry) == 0o700
    assert _mode(entry / "key.pem") == 0o600
    assert sorted(p.name for p in entry.iterdir()) == ["cert.pem", "key.pem"]
    assert (entry / "cert.pem").read_bytes() == leaf.cert_pem + pki.intermediate.cert_pem
    assert (entry / "key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8


def test_save_without_key_loads_without_key(store: CertStore, pki: TestPki) -> None:
    store.save("root", pki.root.cert)
    assert store.load("root").key is None
    assert not store.key_path("root").exists()


def test_names_and_exists_list_only_complete_entries(store: CertStore, pki: TestPki) -> None:
    assert store.names() == ()  # the directory does not even exist yet
    store.save("b", pki.root.cert)
    store.save("a", pki.intermediate.cert)
    (store.directory / "empty").mkdir()
    (store.directory / ".tmp-c-123").mkdir()
    (store.directory / ".tmp-c-123" / "cert.pem").write_bytes(pki.root.cert_pem)
    assert store.names() == ("a", "b")
    assert store.exists("a")
    assert not store.exists("empty")
    assert not store.exists("missing")


def test_save_replaces_existing_entry_and_leaves_no_temporaries(store: CertStore, pki: TestPki) -> None:
    first = pki.leaf(["one.example.test"])
    second = pki.leaf(["two.example.test"])
    store.save("web", first.cert, first.key)
    store.save("web", second.cert, second.key)
    assert store.load("web").certificate == second.cert
    assert [p.name for p in store.directory.iterdir()] == ["web"]


def test_save_replaces_existing_entry_without_rename_exchange(
    store: CertStore, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filesystems without RENAME_EXCHANGE take the move-aside path."""
    monkeypatch.setattr(store_module, "_exchange", lambda a, b: False)
    store.save("web", pki.root.cert)
    store.save("web", pki.intermediate.cert)
    assert store.load("web").certificate == pki.intermediate.cert
    assert [p.name for p in store.directory.iterdir()] == ["web"]


def test_rename_exchange_swaps_two_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").touch()
    (tmp_path / "b").mkdir()
    assert store_module._exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "x").exists() and not (tmp_path / "a" / "x").exists()


def test_save_without_replace_keeps_existing_entry(store: CertStore, pki: TestPki) -> None:
    first = pki.leaf(["one.example.test"])
    store.save("web", first.cert, first.key)
    with pytest.raises(CertificateExistsError):
        store.save("web", pki.root.cert, replace=False)
    assert store.load("web").certificate == first.cert
    assert [p.name for p in store.directory.iterdir()] == ["web"]


def test_save_refuses_key_of_another_certificate(
    store: CertStore, pki: TestPki, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = pki.leaf(["www.example.test"])
    with pytest.raises(PkiError, match="'web'.*does not match"):
        store.save("web", leaf.cert, other_ec_key)
    assert not store.exists("web")


def test_load_refuses_group_readable_key_naming_file_mode_and_fix(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    key_path = store.key_path("web")
    os.chmod(key_path, 0o644)
    with pytest.raises(PkiError) as err:
        store.load("web")
    message = str(err.value)
    assert str(key_path) in message
    assert "0644" in message
    assert f"chmod 600 {key_path}" in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660], ids=["group-read", "other-read", "group-rw"])
def test_load_refuses_key_readable_by_anyone_else(store: CertStore, pki: TestPki, mode: int) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    os.chmod(store.key_path("web"), mode)
    with pytest.raises(PkiError, match=f"{mode:04o}"):
        store.load("web")


def test_load_without_key_ignores_key_file(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    os.chmod(store.key_path("web"), 0o644)
    assert store.load("web", with_key=False).key is None


def test_load_refuses_mismatched_key_naming_both_files(
    tmp_path: Path, pki: TestPki, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = pki.leaf(["www.example.test"])
    Issued(leaf.cert, other_ec_key).write(tmp_path / "pki" / "web")
    store = CertStore(tmp_path / "pki")
    with pytest.raises(PkiError) as err:
        store.load("web")
    assert str(store.key_path("web")) in str(err.value)
    assert str(store.cert_path("web")) in str(err.value)


def test_load_refuses_symlinked_key(store: CertStore, pki: TestPki, tmp_path: Path) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert)
    leaf.write(tmp_path / "other")
    os.symlink(tmp_path / "other" / "key.pem", store.key_path("web"))
    with pytest.raises(PkiError, match="symbolic link"):
        store.load("web")


def test_load_missing_entry_names_certificate_and_file(store: CertStore) -> None:
    with pytest.raises(PkiError) as err:
        store.load("nope")
    assert "'nope'" in str(err.value)
    assert str(store.cert_path("nope")) in str(err.value)


def test_load_garbage_certificate_names_file(store: CertStore) -> None:
    (store.directory / "bad").mkdir(parents=True)
    store.cert_path("bad").write_bytes(b"hello")
    with pytest.raises(PkiError, match=str(store.cert_path("bad"))):
        store.load("bad")


def test_files_written_by_the_test_factory_load(tmp_path: Path, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    leaf.write(tmp_path / "web", chain=[pki.intermediate])
    loaded = CertStore(tmp_path).load("web")
    assert loaded.chain == (pki.intermediate.cert,)
    assert loaded.key is not None


def test_traditional_ec_key_format_is_accepted(tmp_path: Path, pki: TestPki) -> None:
    """Keys written by `openssl ecparam -genkey` are "BEGIN EC PRIVATE KEY", not PKCS#8."""
    leaf = pki.leaf(["www.example.test"])
    leaf.write(tmp_path / "web")
    (tmp_path / "web" / "key.pem").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ))
    assert CertStore(tmp_path).load("web").key is not None


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "a/b", "a\x00b", "x" * 129, "tab\there"],
    ids=["empty", "dot-hidden", "dotdot", "slash", "nul", "too-long", "control-char"],
)
def test_unusable_names_are_refused(store: CertStore, pki: TestPki, name: str) -> None:
    with pytest.raises(PkiError, match="not usable"):
        store.save(name, pki.root.cert)


def test_repr_never_shows_key_material(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    stored = store.save("web", leaf.cert, leaf.key)
    text = repr(stored) + str(stored)
    secret = leaf.key.private_numbers().private_value  # type: ignore[union-attr]
    assert str(secret) not in text
    assert format(secret, "x") not in text
    assert "PRIVATE" not in text and "object at" not in text
    assert "EC secp256r1" in text and "'web'" in text


def test_stored_cert_is_frozen(pki: TestPki) -> None:
    stored = StoredCert("x", pki.root.cert)
    with pytest.raises(AttributeError):
        stored.name = "y"  # type: ignore[misc]
