from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.model import DEFAULT_CA_BUNDLE, TrustStore
from gateway.errors import PkiError
from gateway.pki.store import CertStore
from gateway.pki.trust import load_ca_bundle, load_trust_anchors
from tests.support.pki_factory import TestPki


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "pki")


@pytest.mark.skipif(not os.path.exists(DEFAULT_CA_BUNDLE), reason=f"{DEFAULT_CA_BUNDLE} absent (ca-certificates)")
def test_trust_store_with_default_bundle_loads(store: CertStore) -> None:
    anchors = load_trust_anchors(store, TrustStore("default"), DEFAULT_CA_BUNDLE)
    assert anchors.name == "default"
    assert len(anchors.certificates) > 100
    assert anchors.store is not None


@pytest.mark.skipif(not os.path.exists(DEFAULT_CA_BUNDLE), reason=f"{DEFAULT_CA_BUNDLE} absent (ca-certificates)")
def test_default_bundle_is_parsed_once(store: CertStore) -> None:
    assert load_ca_bundle(DEFAULT_CA_BUNDLE) is load_ca_bundle(DEFAULT_CA_BUNDLE)


def test_changed_bundle_is_parsed_again(tmp_path: Path, pki: TestPki) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.root.cert_pem)
    assert load_ca_bundle(str(bundle)) == (pki.root.cert,)
    bundle.write_bytes(pki.root.cert_pem + pki.intermediate.cert_pem)
    assert load_ca_bundle(str(bundle)) == (pki.root.cert, pki.intermediate.cert)


def test_unreadable_certificate_in_bundle_is_skipped(tmp_path: Path, pki: TestPki) -> None:
    bundle = tmp_path / "bundle.pem"
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle.write_bytes(broken + pki.root.cert_pem)
    assert load_ca_bundle(str(bundle)) == (pki.root.cert,)


@pytest.mark.parametrize(
    ("content", "match"), [(None, "does not exist"), (b"no pem here", "no PEM certificate")],
    ids=["missing", "empty"],
)
def test_bad_bundle_names_file(tmp_path: Path, store: CertStore, content: bytes | None, match: str) -> None:
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    with pytest.raises(PkiError, match=match) as err:
        load_trust_anchors(store, TrustStore("ts"), str(bundle))
    assert str(bundle) in str(err.value) and "'ts'" in str(err.value)


def test_named_ca_certificates_are_added_without_duplicates(tmp_path: Path, store: CertStore, pki: TestPki) -> None:
    bundle = pki.write_root(tmp_path / "bundle.pem")
    store.save("corp-root", pki.root.cert)
    store.save("corp-intermediate", pki.intermediate.cert)
    anchors = load_trust_anchors(
        store, TrustStore("ts", ca_certificates=("corp-root", "corp-intermediate")), str(bundle)
    )
    assert anchors.certificates == (pki.root.cert, pki.intermediate.cert)


def test_named_certificates_only_when_default_excluded(store: CertStore, pki: TestPki) -> None:
    store.save("corp", pki.root.cert)
    anchors = load_trust_anchors(
        store, TrustStore("ts", include_default_ca=False, ca_certificates=("corp",)), "/nonexistent"
    )
    assert anchors.certificates == (pki.root.cert,)


def test_named_certificate_must_be_a_ca(store: CertStore, pki: TestPki) -> None:
    store.save("web", pki.leaf(["a.example.test"]).cert)
    with pytest.raises(PkiError, match="'ts'.*'web'.*not a CA"):
        load_trust_anchors(store, TrustStore("ts", include_default_ca=False, ca_certificates=("web",)), "/x")


def test_missing_named_certificate_names_trust_store_and_file(store: CertStore) -> None:
    with pytest.raises(PkiError) as err:
        load_trust_anchors(store, TrustStore("ts", include_default_ca=False, ca_certificates=("gone",)), "/x")
    assert "'ts'" in str(err.value) and str(store.cert_path("gone")) in str(err.value)


def test_empty_trust_store_has_no_verification_store(store: CertStore) -> None:
    anchors = load_trust_anchors(store, TrustStore("none", include_default_ca=False), "/x")
    assert anchors.certificates == () and anchors.store is None
