"""Store operations of issue 4: several entries at once, replacement keeping the old entry,
deletion, signing requests, entry information, the default CA package. Each multi-step
operation must leave the store unchanged when it fails."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from gateway.errors import PkiError
from gateway.pki import store as store_module
from gateway.pki.csr import AltNames, SubjectFields, build_request
from gateway.pki.keys import KeyKind, generate_key
from gateway.pki.store import (
    CertificateExistsError,
    CertStore,
    EntryInfo,
    EntryKind,
    KeyState,
    NewEntry,
    PendingRequest,
)
from tests.support.pki_factory import TestPki, ec_key


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "pki")


def _listing(store: CertStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir() if p.name != ".lock")


def test_save_all_writes_every_entry(store: CertStore, pki: TestPki) -> None:
    a, b = pki.leaf(["a.example.test"]), pki.leaf(["b.example.test"], key=ec_key())
    store.save_all([NewEntry("a", a.cert, a.key), NewEntry("b", b.cert, b.key, (pki.intermediate.cert,))])
    assert store.names() == ("a", "b")
    assert store.load("b").chain == (pki.intermediate.cert,)


def test_save_all_with_a_taken_name_writes_nothing(store: CertStore, pki: TestPki) -> None:
    store.save("b", pki.root.cert)
    a = pki.leaf(["a.example.test"])
    with pytest.raises(CertificateExistsError, match="'b'"):
        store.save_all([NewEntry("a", a.cert, a.key), NewEntry("b", a.cert, a.key)])
    assert store.names() == ("b",) and store.load("b").certificate == pki.root.cert


def test_save_all_failing_halfway_removes_what_it_already_placed(
    store: CertStore, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pki.leaf(["a.example.test"]), pki.leaf(["b.example.test"])
    store.save("existing", pki.root.cert)
    real_rename = os.rename
    calls = []

    def failing_second(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(dst)
        if Path(dst).name == "b":
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", failing_second)
    with pytest.raises(PkiError, match="No space left"):
        store.save_all([NewEntry("a", a.cert, a.key), NewEntry("b", b.cert, b.key)])
    monkeypatch.undo()
    assert store.names() == ("existing",)
    assert _listing(store) == ["existing"]  # no temporaries left either


def test_save_all_refuses_one_name_twice(store: CertStore, pki: TestPki) -> None:
    with pytest.raises(PkiError, match="twice"):
        store.save_all([NewEntry("a", pki.root.cert), NewEntry("a", pki.intermediate.cert)])
    assert store.names() == ()


def test_replace_keeps_the_old_entry_under_the_replaced_name(store: CertStore, pki: TestPki) -> None:
    old, new = pki.leaf(["www.example.test"]), pki.leaf(["www.example.test"], key=ec_key())
    store.save("web", old.cert, old.key, info=EntryInfo(exportable=True))
    store.replace_keeping_old(NewEntry("web", new.cert, new.key, info=EntryInfo(origin="replacement")), "web_REPLACED")
    assert store.load("web").certificate == new.cert
    kept = store.load("web_REPLACED")
    assert kept.certificate == old.cert and kept.key is not None and kept.info.exportable
    assert _listing(store) == ["web", "web_REPLACED"]


def test_replace_without_rename_exchange_gives_the_same_result(
    store: CertStore, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_exchange", lambda a, b: False)
    store.save("root", pki.root.cert)
    store.replace_keeping_old(NewEntry("root", pki.intermediate.cert), "root_REPLACED")
    assert store.load("root").certificate == pki.intermediate.cert
    assert store.load("root_REPLACED").certificate == pki.root.cert


def test_replace_refuses_when_an_earlier_replaced_entry_exists(store: CertStore, pki: TestPki) -> None:
    store.save("root", pki.root.cert)
    store.save("root_REPLACED", pki.intermediate.cert)
    with pytest.raises(CertificateExistsError, match="discard-previous"):
        store.replace_keeping_old(NewEntry("root", pki.leaf(["x.test"]).cert), "root_REPLACED")
    assert store.load("root").certificate == pki.root.cert
    store.replace_keeping_old(NewEntry("root", pki.leaf(["x.test"]).cert), "root_REPLACED", discard_previous=True)
    assert store.load("root_REPLACED").certificate == pki.root.cert


def test_replace_of_a_missing_entry_is_refused(store: CertStore, pki: TestPki) -> None:
    with pytest.raises(PkiError, match="nothing to replace"):
        store.replace_keeping_old(NewEntry("web", pki.root.cert), "web_REPLACED")


def test_replace_failing_to_keep_the_old_entry_restores_it(
    store: CertStore, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("root", pki.root.cert)
    real_rename = os.rename

    def failing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "root_REPLACED":
            raise OSError(13, "Permission denied")
        real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", failing)
    with pytest.raises(PkiError, match="Permission denied"):
        store.replace_keeping_old(NewEntry("root", pki.intermediate.cert), "root_REPLACED")
    monkeypatch.undo()
    assert store.load("root").certificate == pki.root.cert
    assert _listing(store) == ["root"]


def test_delete_removes_the_entry_and_refuses_a_missing_one(store: CertStore, pki: TestPki) -> None:
    store.save("root", pki.root.cert)
    store.delete("root")
    assert store.names() == () and _listing(store) == []
    with pytest.raises(PkiError, match="does not exist"):
        store.delete("root")


def test_info_round_trips_and_is_inferred_without_a_file(store: CertStore, pki: TestPki) -> None:
    store.save("signing", pki.root.cert, info=EntryInfo(EntryKind.CERTIFICATE, exportable=True, origin="created"))
    assert store.load("signing").info.exportable and store.load("signing").info.origin == "created"
    store.save("root", pki.root.cert)
    assert store.load("root").info.kind is EntryKind.CA
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    assert store.load("web").info == EntryInfo(EntryKind.CERTIFICATE)


def test_key_state_tells_missing_broken_and_unencrypted(store: CertStore, pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"])
    store.save("web", leaf.cert, leaf.key)
    assert store.key_state("web", leaf.cert)[0] is KeyState.UNENCRYPTED
    store.save("root", pki.root.cert)
    assert store.key_state("root", pki.root.cert)[0] is KeyState.NONE
    store.key_path("web").write_bytes(store_module.KeyProtection().encode(ec_key(), what="x"))
    state, why = store.key_state("web", leaf.cert)
    assert state is KeyState.BROKEN and "public keys differ" in why
    os.chmod(store.key_path("web"), 0o644)
    state, why = store.key_state("web", leaf.cert)
    assert state is KeyState.BROKEN and "0644" in why


def test_requests_round_trip_apart_from_certificates(store: CertStore) -> None:
    key = generate_key(KeyKind.EC_P256)
    csr = build_request(key, SubjectFields("www.example.test"), AltNames(), signing=False)
    store.save_request(PendingRequest("web", csr, key, signing=False, exportable=True))
    assert store.request_names() == ("web",) and store.names() == ()
    loaded = store.load_request("web")
    assert isinstance(loaded, PendingRequest)
    assert loaded.csr == csr and loaded.exportable and not loaded.signing
    assert os.stat(store.requests_directory / "web" / "key.pem").st_mode & 0o777 == 0o600
    with pytest.raises(CertificateExistsError):
        store.save_request(PendingRequest("web", csr, key, signing=False))
    store.delete_request("web")
    assert store.request_names() == ()
    with pytest.raises(PkiError, match="no signing request"):
        store.load_request("web")


def test_default_ca_package_is_replaced_atomically(store: CertStore, pki: TestPki) -> None:
    path = store.write_default_ca_package(pki.root.cert_pem)
    path2 = store.write_default_ca_package(pki.intermediate.cert_pem)
    assert path == path2 == store.default_ca_package_path
    assert path.read_bytes() == pki.intermediate.cert_pem
    assert store.names() == () and _listing(store) == ["default-ca-package.pem"]


def test_lock_excludes_a_second_holder_until_released(store: CertStore) -> None:
    def try_lock() -> bool:
        fd = os.open(store.directory / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with store.locked():
        assert not try_lock()
    assert try_lock()
