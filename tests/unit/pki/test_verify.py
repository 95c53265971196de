from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config.model import DEFAULT_CA_BUNDLE
from gateway.pki.trust import TrustAnchors, load_ca_bundle
from gateway.pki.verify import VerifyFailure, VerifyResult, verify_upstream
from tests.support.pki_factory import Issued, TestPki, ec_key, issue

DAY = dt.timedelta(days=1)
HOST = "www.example.test"


def _verify(pki: TestPki, anchors: TrustAnchors, chain: list[Issued | x509.Certificate], host: str | None = HOST,
            *, min_key_length: int = 2048, now: dt.datetime | None = None) -> VerifyResult:
    certs = [c.cert if isinstance(c, Issued) else c for c in chain]
    return verify_upstream(certs, host, anchors, now=now or pki.now, min_key_length=min_key_length)


def _assert_fails(result: VerifyResult, reason: VerifyFailure) -> None:
    assert not result.ok
    assert result.reason is reason, result.detail
    assert result.detail
    assert result.chain == ()


@pytest.mark.parametrize("host", [HOST, "WWW.Example.Test.", "x.img.example.test", "192.0.2.10"],
                         ids=["dns", "case-and-dot", "wildcard", "ip"])
def test_valid_chain_is_accepted(pki: TestPki, anchors: TrustAnchors, site: Issued, host: str) -> None:
    result = _verify(pki, anchors, [site, pki.intermediate], host)
    assert result.ok and result.reason is None, result.detail
    assert result.chain == (site.cert, pki.intermediate.cert, pki.root.cert)


def test_chain_sent_with_its_root_is_accepted(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    assert _verify(pki, anchors, [site, pki.intermediate, pki.root]).ok


def test_no_certificate(pki: TestPki, anchors: TrustAnchors) -> None:
    _assert_fails(_verify(pki, anchors, []), VerifyFailure.NO_CERTIFICATE)


def test_missing_intermediate_is_untrusted(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    _assert_fails(_verify(pki, anchors, [site]), VerifyFailure.UNTRUSTED)


def test_self_signed_is_untrusted(pki: TestPki, anchors: TrustAnchors) -> None:
    result = _verify(pki, anchors, [pki.self_signed([HOST])])
    _assert_fails(result, VerifyFailure.UNTRUSTED)
    assert "self-signed" in result.detail


def test_chain_to_another_root_is_untrusted(pki: TestPki, anchors: TrustAnchors) -> None:
    other = TestPki.create(name="other")
    _assert_fails(_verify(pki, anchors, [other.leaf([HOST]), other.intermediate]), VerifyFailure.UNTRUSTED)


@pytest.mark.skipif(not os.path.exists(DEFAULT_CA_BUNDLE), reason=f"{DEFAULT_CA_BUNDLE} absent (ca-certificates)")
def test_test_pki_is_untrusted_by_the_default_bundle(pki: TestPki, site: Issued) -> None:
    mozilla = TrustAnchors.from_certificates("default", load_ca_bundle(DEFAULT_CA_BUNDLE))
    _assert_fails(_verify(pki, mozilla, [site, pki.intermediate]), VerifyFailure.UNTRUSTED)


def test_empty_trust_store_trusts_nothing(pki: TestPki, site: Issued) -> None:
    empty = TrustAnchors.from_certificates("empty", [])
    _assert_fails(_verify(pki, empty, [site, pki.intermediate]), VerifyFailure.UNTRUSTED)


def test_expired_leaf_is_expired(pki: TestPki, anchors: TrustAnchors) -> None:
    _assert_fails(_verify(pki, anchors, [pki.expired_leaf([HOST]), pki.intermediate]), VerifyFailure.EXPIRED)


def test_future_leaf_is_not_yet_valid(pki: TestPki, anchors: TrustAnchors) -> None:
    _assert_fails(_verify(pki, anchors, [pki.future_leaf([HOST]), pki.intermediate]), VerifyFailure.NOT_YET_VALID)


def test_expired_intermediate_is_expired(pki: TestPki, anchors: TrustAnchors) -> None:
    old = issue("old intermediate", key=ec_key(), issuer=pki.root, ca=True, path_length=0,
                not_before=pki.now - 400 * DAY, not_after=pki.now - DAY)
    leaf = pki.leaf([HOST], issuer=old, not_before=pki.now - 300 * DAY, not_after=pki.now + 30 * DAY)
    result = _verify(pki, anchors, [leaf, old])
    _assert_fails(result, VerifyFailure.EXPIRED)
    assert "old intermediate" in result.detail


def test_expired_root_is_expired(pki: TestPki) -> None:
    root = issue("old root", key=ec_key(), ca=True, not_before=pki.now - 400 * DAY, not_after=pki.now - DAY)
    leaf = issue(HOST, key=pki.leaf_key, issuer=root, names=[HOST], not_before=pki.now - 100 * DAY)
    result = _verify(pki, TrustAnchors.from_certificates("old", [root.cert]), [leaf])
    _assert_fails(result, VerifyFailure.EXPIRED)
    assert "old root" in result.detail


def test_wrong_host_is_hostname_mismatch(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    result = _verify(pki, anchors, [site, pki.intermediate], "other.example.test")
    _assert_fails(result, VerifyFailure.HOSTNAME_MISMATCH)
    assert "other.example.test" in result.detail


@pytest.mark.parametrize("host", ["a.b.img.example.test", "img.example.test", "192.0.2.11"],
                         ids=["wildcard-one-label-only", "wildcard-not-apex", "other-ip"])
def test_names_the_certificate_does_not_cover_mismatch(pki: TestPki, anchors: TrustAnchors, site: Issued,
                                                       host: str) -> None:
    _assert_fails(_verify(pki, anchors, [site, pki.intermediate], host), VerifyFailure.HOSTNAME_MISMATCH)


def test_host_that_cannot_be_a_name_is_a_mismatch(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    _assert_fails(_verify(pki, anchors, [site, pki.intermediate], "a_b.example.test"),
                  VerifyFailure.HOSTNAME_MISMATCH)


def test_expired_and_wrong_host_is_not_only_dates(pki: TestPki, anchors: TrustAnchors) -> None:
    result = _verify(pki, anchors, [pki.expired_leaf([HOST]), pki.intermediate], "other.example.test")
    _assert_fails(result, VerifyFailure.HOSTNAME_MISMATCH)


def test_expired_and_untrusted_is_untrusted(pki: TestPki, anchors: TrustAnchors) -> None:
    _assert_fails(_verify(pki, anchors, [pki.expired_leaf([HOST])]), VerifyFailure.UNTRUSTED)


def test_rsa_1024_leaf_is_weak(pki: TestPki, anchors: TrustAnchors, rsa1024: rsa.RSAPrivateKey) -> None:
    leaf = pki.leaf([HOST], key=rsa1024)
    result = _verify(pki, anchors, [leaf, pki.intermediate])
    _assert_fails(result, VerifyFailure.WEAK_KEY)
    assert "1024" in result.detail


def test_rsa_1024_leaf_accepted_when_minimum_allows(pki: TestPki, anchors: TrustAnchors,
                                                    rsa1024: rsa.RSAPrivateKey) -> None:
    assert _verify(pki, anchors, [pki.leaf([HOST], key=rsa1024), pki.intermediate], min_key_length=1024).ok


def test_minimum_key_length_above_server_key_is_weak(pki: TestPki, anchors: TrustAnchors,
                                                     rsa2048: rsa.RSAPrivateKey) -> None:
    leaf = pki.leaf([HOST], key=rsa2048)
    assert _verify(pki, anchors, [leaf, pki.intermediate], min_key_length=2048).ok
    _assert_fails(_verify(pki, anchors, [leaf, pki.intermediate], min_key_length=3072), VerifyFailure.WEAK_KEY)


def test_minimum_key_length_applies_to_rsa_only(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    assert _verify(pki, anchors, [site, pki.intermediate], min_key_length=4096).ok  # EC P-256 leaf


def test_expired_weak_leaf_is_weak_not_expired(pki: TestPki, anchors: TrustAnchors,
                                               rsa1024: rsa.RSAPrivateKey) -> None:
    leaf = pki.expired_leaf([HOST], key=rsa1024)
    _assert_fails(_verify(pki, anchors, [leaf, pki.intermediate]), VerifyFailure.WEAK_KEY)


def test_rsa_1024_intermediate_is_weak(pki: TestPki, anchors: TrustAnchors, rsa1024: rsa.RSAPrivateKey) -> None:
    weak = issue("weak intermediate", key=rsa1024, issuer=pki.root, ca=True, path_length=0)
    _assert_fails(_verify(pki, anchors, [pki.leaf([HOST], issuer=weak), weak]), VerifyFailure.WEAK_KEY)


def test_intermediate_without_ca_flag_is_rejected(pki: TestPki, anchors: TrustAnchors) -> None:
    not_ca = pki.non_ca_intermediate()
    result = _verify(pki, anchors, [pki.leaf([HOST], issuer=not_ca), not_ca])
    _assert_fails(result, VerifyFailure.OTHER)
    assert "basicConstraints" in result.detail


def test_leaf_without_san_is_rejected(pki: TestPki, anchors: TrustAnchors) -> None:
    leaf = issue(HOST, key=pki.leaf_key, issuer=pki.intermediate)  # CN only: browsers ignore CN
    _assert_fails(_verify(pki, anchors, [leaf, pki.intermediate]), VerifyFailure.OTHER)


def test_without_host_only_the_chain_is_checked(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    assert _verify(pki, anchors, [site, pki.intermediate], None).ok
    _assert_fails(_verify(pki, anchors, [site], None), VerifyFailure.UNTRUSTED)
    _assert_fails(_verify(pki, anchors, [pki.expired_leaf([HOST]), pki.intermediate], None), VerifyFailure.EXPIRED)


def test_naive_now_is_taken_as_utc(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    assert _verify(pki, anchors, [site, pki.intermediate], now=pki.now.replace(tzinfo=None)).ok


@pytest.mark.parametrize(
    ("reason", "is_date"),
    [(VerifyFailure.EXPIRED, True), (VerifyFailure.NOT_YET_VALID, True), (VerifyFailure.UNTRUSTED, False),
     (VerifyFailure.HOSTNAME_MISMATCH, False), (VerifyFailure.WEAK_KEY, False), (VerifyFailure.OTHER, False)],
    ids=lambda v: str(getattr(v, "value", v)),
)
def test_is_validity_period_separates_date_reasons(reason: VerifyFailure, is_date: bool) -> None:
    assert reason.is_validity_period is is_date
