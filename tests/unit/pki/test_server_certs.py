from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import PkiError
from gateway.pki.server_certs import ServerCertificates, SniMatch, certificate_names
from gateway.pki.store import StoredCert
from tests.support.pki_factory import TestPki, ec_key, issue

# (certificate name, SAN entries, CN) in configuration order. `None` CN: empty subject.
_PROXY_CERTS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("first", ("first.example.test",), "first.example.test"),
    ("www", ("www.example.test",), "www.example.test"),
    ("wild", ("*.example.test",), "*.example.test"),
    ("wild-sub", ("*.sub.example.test",), None),
    ("deep", ("a.sub.example.test",), "a.sub.example.test"),
    ("cn-only", (), "legacy.example.test"),
    ("san-hides-cn", ("shown.other.test",), "hidden.other.test"),
    ("ip-san-hides-cn", ("192.0.2.1",), "iponly.other.test"),
    ("www-again", ("www.example.test", "*.example.test"), "www.example.test"),
    ("partial", ("w*.partial.test",), "w*.partial.test"),
    ("mixed-case", ("*.Upper.Example.TEST", "Shop.Example.NET."), None),
)


@pytest.fixture(scope="module")
def proxy_certs() -> ServerCertificates:
    pki = TestPki.create()
    stored = [
        StoredCert(name, issue(cn, key=pki.leaf_key, issuer=pki.intermediate, names=san, now=pki.now).cert,
                   (pki.intermediate.cert,), pki.leaf_key)
        for name, san, cn in _PROXY_CERTS
    ]
    return ServerCertificates(stored)


@pytest.mark.parametrize(
    ("sni", "expected", "how"),
    [
        ("www.example.test", "www", SniMatch.EXACT),
        ("WWW.Example.Test", "www", SniMatch.EXACT),
        ("www.example.test.", "www", SniMatch.EXACT),
        ("shop.example.test", "wild", SniMatch.WILDCARD),
        ("SHOP.example.test.", "wild", SniMatch.WILDCARD),
        ("sub.example.test", "wild", SniMatch.WILDCARD),
        ("b.sub.example.test", "wild-sub", SniMatch.WILDCARD),
        ("a.sub.example.test", "deep", SniMatch.EXACT),
        ("x.y.example.test", "first", SniMatch.FALLBACK),
        ("example.test", "first", SniMatch.FALLBACK),
        ("legacy.example.test", "cn-only", SniMatch.EXACT),
        ("shown.other.test", "san-hides-cn", SniMatch.EXACT),
        ("hidden.other.test", "first", SniMatch.FALLBACK),
        ("iponly.other.test", "first", SniMatch.FALLBACK),
        ("192.0.2.1", "first", SniMatch.FALLBACK),
        ("www.partial.test", "first", SniMatch.FALLBACK),
        ("w*.partial.test", "first", SniMatch.FALLBACK),
        ("*.example.test", "first", SniMatch.FALLBACK),
        (".example.test", "first", SniMatch.FALLBACK),
        ("a.upper.example.test", "mixed-case", SniMatch.WILDCARD),
        ("shop.example.net", "mixed-case", SniMatch.EXACT),
        ("nowhere.invalid", "first", SniMatch.FALLBACK),
        ("", "first", SniMatch.FALLBACK),
        (None, "first", SniMatch.FALLBACK),
    ],
    ids=[
        "exact",
        "exact-case-insensitive",
        "exact-trailing-dot",
        "wildcard-one-label",
        "wildcard-case-and-trailing-dot",
        "wildcard-label-that-is-also-a-parent",
        "most-specific-wildcard",
        "exact-beats-more-specific-wildcard",
        "wildcard-not-two-labels",
        "wildcard-not-bare-domain",
        "cn-when-no-san",
        "san-name",
        "san-hides-cn",
        "ip-only-san-hides-cn",
        "ip-literal-not-a-dns-name",
        "partial-label-wildcard-not-matched",
        "partial-wildcard-sni-not-matched",
        "wildcard-sni-not-matched",
        "empty-first-label",
        "wildcard-in-cert-lowercased",
        "exact-in-cert-lowercased-and-dot-stripped",
        "no-match",
        "empty-sni",
        "no-sni",
    ],
)
def test_pick_chooses_by_sni(proxy_certs: ServerCertificates, sni: str | None, expected: str, how: SniMatch) -> None:
    cert, match = proxy_certs.match(sni)
    assert (cert.name, match) == (expected, how)
    assert proxy_certs.pick(sni).name == expected


def test_pick_prefers_earlier_certificate_when_names_repeat(proxy_certs: ServerCertificates) -> None:
    # "www-again" also holds www.example.test and *.example.test, but comes later.
    assert proxy_certs.pick("www.example.test").name == "www"
    assert proxy_certs.pick("other.example.test").name == "wild"
    assert "www-again" in [c.name for c in proxy_certs.certificates]


def test_first_and_certificates_keep_configuration_order(proxy_certs: ServerCertificates) -> None:
    assert [c.name for c in proxy_certs.certificates] == [name for name, _, _ in _PROXY_CERTS]
    assert proxy_certs.first.name == "first"
    assert len(proxy_certs) == len(_PROXY_CERTS)


def test_single_certificate_serves_every_sni(pki: TestPki) -> None:
    only = StoredCert("only", pki.leaf(["only.example.test"]).cert, (), pki.leaf_key)
    certs = ServerCertificates([only])
    assert certs.pick("only.example.test") is only
    assert certs.pick("else.example.test") is only
    assert certs.pick(None) is only


def test_no_certificates_is_refused() -> None:
    with pytest.raises(PkiError):
        ServerCertificates([])


@pytest.mark.parametrize(
    ("san", "cn", "expected"),
    [
        (("a.example.test", "B.Example.Test."), "ignored.example.test", ("a.example.test", "b.example.test")),
        ((), "Legacy.Example.Test", ("legacy.example.test",)),
        (("192.0.2.7",), "cn.example.test", ()),
        ((), None, ()),
    ],
    ids=["san-normalised", "cn-without-san", "ip-san-hides-cn", "no-names"],
)
def test_certificate_names_follow_rfc6125(
    pki: TestPki, san: tuple[str, ...], cn: str | None, expected: tuple[str, ...]
) -> None:
    cert = issue(cn, key=pki.leaf_key, issuer=pki.intermediate, names=san, now=pki.now).cert
    assert certificate_names(cert) == expected


# --- 1000 certificates: the product's maximum --------------------------------------------

_MANY = 1000


def _many_certificates(key: ec.EllipticCurvePrivateKey) -> list[StoredCert]:
    """Certificate i holds host<i>.example.test and *.svc<i>.example.test; one shared key
    keeps generation fast (EC signing), as key diversity is irrelevant to selection."""
    return [
        StoredCert(
            f"cert{i}",
            issue(f"host{i}.example.test", key=key,
                  names=(f"host{i}.example.test", f"*.svc{i}.example.test")).cert,
            (),
            key,
        )
        for i in range(_MANY)
    ]


@pytest.fixture(scope="module")
def many() -> ServerCertificates:
    return ServerCertificates(_many_certificates(ec_key()))


@pytest.mark.parametrize("i", [0, 1, 499, 998, 999], ids=lambda i: f"cert{i}")
def test_pick_among_1000_finds_exact_and_wildcard(many: ServerCertificates, i: int) -> None:
    assert many.match(f"host{i}.example.test") == (many.certificates[i], SniMatch.EXACT)
    assert many.match(f"api.svc{i}.example.test") == (many.certificates[i], SniMatch.WILDCARD)


def test_pick_among_1000_is_right_for_every_certificate(many: ServerCertificates) -> None:
    wrong = [i for i in range(_MANY)
             if many.pick(f"HOST{i}.example.test.").name != f"cert{i}"
             or many.pick(f"x.svc{i}.example.test").name != f"cert{i}"]
    assert wrong == []


def test_pick_among_1000_falls_back_to_first(many: ServerCertificates) -> None:
    assert many.pick(f"host{_MANY}.example.test").name == "cert0"
    assert many.pick("a.b.svc7.example.test").name == "cert0"
    assert many.pick(None).name == "cert0"
