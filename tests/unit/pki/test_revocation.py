"""CRLs of a trust store (issue 5): a revoked upstream is rejected like a browser with
that CRL would; a CRL not signed by the certificate's issuer revokes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.load import parse_config
from gateway.errors import PkiError
from gateway.pki.revocation import load_crls
from gateway.pki.trust import TrustAnchors
from gateway.pki.verify import VerifyFailure, verify_upstream
from tests.support.pki_factory import Issued, TestPki, ec_key

HOST = "www.example.test"


def crl(issuer: Issued, serials: list[int], now: dt.datetime, signer: object = None,
        age: dt.timedelta = dt.timedelta(hours=1), validity: dt.timedelta = dt.timedelta(days=7)
        ) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(now - age).next_update(now - age + validity))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(minutes=5)).build())
    return builder.sign(signer or issuer.key, hashes.SHA256())  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, item: x509.CertificateRevocationList, der: bool = False) -> str:
    path = tmp_path / name
    path.write_bytes(item.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return str(path)


def anchors_with(pki: TestPki, paths: list[str]) -> TrustAnchors:
    anchors = TrustAnchors.from_certificates("test", [pki.root.cert])
    return dataclasses.replace(anchors, revocation=load_crls(paths, "test", now=pki.now))


def verify(pki: TestPki, anchors: TrustAnchors, leaf: Issued) -> VerifyFailure | None:
    result = verify_upstream([leaf.cert, pki.intermediate.cert], HOST, anchors, now=pki.now, min_key_length=2048)
    return result.reason


def test_leaf_listed_by_its_issuer_is_revoked(pki: TestPki, site: Issued, tmp_path: Path) -> None:
    path = write(tmp_path, "int.crl", crl(pki.intermediate, [site.cert.serial_number], pki.now))
    assert verify(pki, anchors_with(pki, [path]), site) is VerifyFailure.REVOKED


def test_intermediate_revoked_by_root_in_der(pki: TestPki, site: Issued, tmp_path: Path) -> None:
    path = write(tmp_path, "root.crl", crl(pki.root, [pki.intermediate.cert.serial_number], pki.now), der=True)
    assert verify(pki, anchors_with(pki, [path]), site) is VerifyFailure.REVOKED


def test_crl_not_listing_the_certificate_changes_nothing(pki: TestPki, site: Issued, tmp_path: Path) -> None:
    path = write(tmp_path, "int.crl", crl(pki.intermediate, [site.cert.serial_number + 1], pki.now))
    assert verify(pki, anchors_with(pki, [path]), site) is None


def test_crl_forged_by_another_key_revokes_nothing(pki: TestPki, site: Issued, tmp_path: Path) -> None:
    forged = crl(pki.intermediate, [site.cert.serial_number], pki.now, signer=ec_key())
    assert verify(pki, anchors_with(pki, [write(tmp_path, "forged.crl", forged)]), site) is None


def test_stale_crl_is_still_honoured(pki: TestPki, site: Issued, tmp_path: Path) -> None:
    stale = crl(pki.intermediate, [site.cert.serial_number], pki.now, age=dt.timedelta(days=9))
    assert verify(pki, anchors_with(pki, [write(tmp_path, "stale.crl", stale)]), site) is VerifyFailure.REVOKED


def test_unreadable_or_garbage_crl_names_trust_store_and_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"not a crl")
    with pytest.raises(PkiError, match="trust store 'lab'.*garbage.crl"):
        load_crls([str(garbage)], "lab")
    with pytest.raises(PkiError, match="missing.crl"):
        load_crls([str(tmp_path / "missing.crl")], "lab")


def test_loader_reads_crl_files_and_requires_absolute_paths() -> None:
    text = """
trust_stores:
  - {name: lab, include_default_ca: false, crl_files: [/etc/tlsgw/crl/root.crl, relative.crl]}
"""
    with pytest.raises(Exception) as info:
        parse_config(text)
    assert [i.path for i in info.value.issues] == ["trust_stores[0].crl_files[1]"]  # type: ignore[attr-defined]
