from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.ca import create_ca
from gateway.pki.forge import MAX_BACKDATE, MAX_LEAF_LIFETIME, LeafKeys, forge_leaf, forged_validity
from gateway.pki.keys import KeyKind, PrivateKey
from gateway.pki.trust import TrustAnchors
from gateway.pki.verify import VerifyFailure, verify_upstream
from tests.support.pki_factory import Issued, TestPki, issue

CA = tuple[x509.Certificate, PrivateKey]
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _san(cert: x509.Certificate) -> list[object]:
    return [n.value for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]


def _forge(upstream: Issued | x509.Certificate, ca: CA, now: dt.datetime, leaf_key: PrivateKey,
           sni: str | None = None) -> x509.Certificate:
    cert = upstream.cert if isinstance(upstream, Issued) else upstream
    return forge_leaf(cert, ca[0], ca[1], leaf_key, now=now, sni=sni)


def test_forged_certificate_mirrors_cn_and_dns_and_ip_names(pki: TestPki, site: Issued, signing_ca: CA) -> None:
    forged = _forge(site, signing_ca, pki.now, pki.leaf_key)
    assert forged.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")])
    assert _san(forged) == ["www.example.test", "*.img.example.test", ipaddress.ip_address("192.0.2.10")]


def test_forged_certificate_drops_san_types_other_than_dns_and_ip(pki: TestPki, signing_ca: CA) -> None:
    upstream = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m.example.test")]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(pki.leaf_key.public_key())
        .serial_number(7)
        .not_valid_before(pki.now - DAY)
        .not_valid_after(pki.now + DAY)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("m.example.test"), x509.RFC822Name("admin@example.test"),
            x509.UniformResourceIdentifier("https://example.test/"),
        ]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    assert _san(_forge(upstream, signing_ca, pki.now, pki.leaf_key)) == ["m.example.test"]


@pytest.mark.parametrize(
    ("cn", "expected"),
    [("old.example.test", "old.example.test"), ("198.51.100.7", ipaddress.ip_address("198.51.100.7"))],
    ids=["dns-cn", "ip-cn"],
)
def test_upstream_without_san_gets_its_cn_as_san(pki: TestPki, signing_ca: CA, cn: str, expected: object) -> None:
    upstream = issue(cn, key=pki.leaf_key, issuer=pki.intermediate)  # no names: no SAN
    assert _san(_forge(upstream, signing_ca, pki.now, pki.leaf_key)) == [expected]


def test_upstream_without_cn_gives_empty_subject_and_critical_san(pki: TestPki, signing_ca: CA) -> None:
    upstream = pki.leaf(["nocn.example.test"], common_name=None)
    forged = _forge(upstream, signing_ca, pki.now, pki.leaf_key)
    assert forged.subject == x509.Name([])
    assert forged.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_sni_not_covered_by_upstream_is_never_added(pki: TestPki, site: Issued, signing_ca: CA) -> None:
    forged = _forge(site, signing_ca, pki.now, pki.leaf_key, sni="evil.example.test")
    assert "evil.example.test" not in _san(forged)
    anchors = TrustAnchors.from_certificates("client", [signing_ca[0]])
    result = verify_upstream([forged], "evil.example.test", anchors, now=pki.now, min_key_length=2048)
    assert result.reason is VerifyFailure.HOSTNAME_MISMATCH


@pytest.mark.parametrize("host", ["www.example.test", "a.img.example.test", "192.0.2.10"],
                         ids=["dns", "wildcard", "ip"])
def test_forged_certificate_verifies_under_its_ca_for_upstream_names(
    pki: TestPki, site: Issued, signing_ca: CA, host: str
) -> None:
    forged = _forge(site, signing_ca, pki.now, pki.leaf_key)
    anchors = TrustAnchors.from_certificates("client", [signing_ca[0]])
    result = verify_upstream([forged], host, anchors, now=pki.now, min_key_length=2048)
    assert result.ok, result.detail
    assert result.chain == (forged, signing_ca[0])


def test_forged_certificate_extensions(pki: TestPki, site: Issued, signing_ca: CA) -> None:
    forged = _forge(site, signing_ca, pki.now, pki.leaf_key)
    ext = forged.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign  # EC leaf key
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(pki.leaf_key.public_key())
    ca_ski = signing_ca[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert forged.issuer == signing_ca[0].subject
    assert isinstance(forged.signature_hash_algorithm, hashes.SHA256)
    assert forged.public_key() == pki.leaf_key.public_key()
    forged.verify_directly_issued_by(signing_ca[0])
    assert 0 < forged.serial_number <= 2**128


def test_rsa_leaf_key_also_allows_key_encipherment(pki: TestPki, site: Issued, signing_ca: CA,
                                                   rsa2048: rsa.RSAPrivateKey) -> None:
    forged = _forge(site, signing_ca, pki.now, rsa2048)
    assert forged.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_two_forgeries_have_different_serials(pki: TestPki, site: Issued, signing_ca: CA) -> None:
    one = _forge(site, signing_ca, pki.now, pki.leaf_key)
    two = _forge(site, signing_ca, pki.now, pki.leaf_key)
    assert one.serial_number != two.serial_number


# --- validity ----------------------------------------------------------------------------

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("up_start", "up_end", "start", "end"),
    [
        # Ordinary upstream: backdated an hour, ends with the upstream.
        (NOW - 30 * DAY, NOW + 60 * DAY, NOW - HOUR, NOW + 60 * DAY),
        # Upstream issued minutes ago: never starts before it.
        (NOW - 10 * dt.timedelta(minutes=1), NOW + 60 * DAY, NOW - 10 * dt.timedelta(minutes=1), NOW + 60 * DAY),
        # Long-lived upstream: capped at 397 days.
        (NOW - DAY, NOW + 800 * DAY, NOW - HOUR, NOW + 397 * DAY),
        # Expired upstream: keeps its own dates so the client sees "expired" too.
        (NOW - 400 * DAY, NOW - 10 * DAY, NOW - 400 * DAY, NOW - 10 * DAY),
        # Not yet valid: starts with it, still capped.
        (NOW + 10 * DAY, NOW + 900 * DAY, NOW + 10 * DAY, NOW + 407 * DAY),
    ],
    ids=["ordinary", "fresh", "long-lived", "expired", "not-yet-valid"],
)
def test_forged_validity(pki: TestPki, up_start: dt.datetime, up_end: dt.datetime,
                         start: dt.datetime, end: dt.datetime) -> None:
    upstream = pki.leaf(["v.example.test"], not_before=up_start, not_after=up_end)
    assert forged_validity(upstream.cert, NOW) == (start, end)


@pytest.mark.parametrize("days_left", [1, 90, 397, 398, 5000], ids=lambda d: f"{d}d")
def test_forgery_never_outlives_upstream_nor_397_days(pki: TestPki, signing_ca: CA, days_left: int) -> None:
    upstream = pki.leaf(["v.example.test"], not_before=NOW - 30 * DAY, not_after=NOW + days_left * DAY)
    forged = _forge(upstream, signing_ca, NOW, pki.leaf_key)
    assert forged.not_valid_after_utc <= upstream.cert.not_valid_after_utc
    assert forged.not_valid_after_utc <= NOW + MAX_LEAF_LIFETIME
    assert forged.not_valid_before_utc >= NOW - MAX_BACKDATE
    assert forged.not_valid_after_utc - forged.not_valid_before_utc <= dt.timedelta(days=398)


def test_expired_upstream_forged_under_untrusted_ca_stays_expired(pki: TestPki, signing_ca: CA) -> None:
    # An untrusted CA that has existed since before the upstream expired, so the only
    # thing a client trusting it could object to is the forgery's dates.
    untrusted_ca = create_ca("untrusted", key_kind=KeyKind.EC_P256, now=pki.now - 1000 * DAY)
    upstream = pki.expired_leaf(["old.example.test"])
    forged = _forge(upstream, untrusted_ca, pki.now, pki.leaf_key)
    assert forged.not_valid_before_utc == upstream.cert.not_valid_before_utc
    assert forged.not_valid_after_utc == upstream.cert.not_valid_after_utc < pki.now
    client = TrustAnchors.from_certificates("client", [signing_ca[0]])
    assert verify_upstream([forged], "old.example.test", client, now=pki.now,
                           min_key_length=2048).reason is VerifyFailure.UNTRUSTED
    trusting = TrustAnchors.from_certificates("x", [untrusted_ca[0]])
    result = verify_upstream([forged], "old.example.test", trusting, now=pki.now, min_key_length=2048)
    assert result.reason is VerifyFailure.EXPIRED


# --- leaf keys ---------------------------------------------------------------------------


def test_leaf_keys_generate_lazily_once() -> None:
    keys = LeafKeys()
    assert keys.kind is KeyKind.EC_P256
    assert "not generated" in repr(keys)
    key = keys.get()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert keys.get() is key
    assert repr(keys) == "LeafKeys(ecdsa-p256, EC secp256r1)"


def test_leaf_keys_rsa_option() -> None:
    keys = LeafKeys(KeyKind.RSA_2048)
    assert isinstance(keys.get(), rsa.RSAPrivateKey)
    assert keys.get().key_size == 2048  # type: ignore[union-attr]
