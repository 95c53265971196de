"""Subjects, alternative names and signing requests (issue 4), with the guide's rules."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import PkiError
from gateway.pki.ca import create_ca, is_ca
from gateway.pki.csr import AltNames, SubjectFields, build_request, check_alt_names, check_subject
from gateway.pki.keys import KeyKind, generate_key

FULL = SubjectFields(common_name="Example CA", email="pki@example.com", organizational_unit="R&D",
                     organization="Example Corp", locality="Saint Louis", state="Missouri", country="us")


def test_full_subject_is_normalised_and_ordered() -> None:
    subject = check_subject(FULL)
    assert subject.country == "US"
    assert subject.to_name().rfc4514_string() == (
        "1.2.840.113549.1.9.1=pki@example.com,CN=Example CA,OU=R&D,O=Example Corp,L=Saint Louis,ST=Missouri,C=US")


SUBJECT_PROBLEMS = {
    "no-cn": (SubjectFields(""), "common name"),
    "country-three-letters": (SubjectFields("x", country="USA"), "two-letter"),
    "country-digits": (SubjectFields("x", country="1A"), "two-letter"),
    "email-without-at": (SubjectFields("x", email="pki.example.com"), "e-mail"),
    "cn-too-long": (SubjectFields("x" * 65), "limit is 64"),
    "cn-wildcard-inside": (SubjectFields("www.*.example.com"), "leftmost"),
    "cn-wildcard-without-dot": (SubjectFields("*example.com"), "'\\*.'"),
    "control-character": (SubjectFields("x", organization="a\nb"), "control"),
}


@pytest.mark.parametrize(("fields", "message"), SUBJECT_PROBLEMS.values(), ids=SUBJECT_PROBLEMS.keys())
def test_subject_problem_is_named(fields: SubjectFields, message: str) -> None:
    with pytest.raises(PkiError, match=message):
        check_subject(fields)


def test_every_subject_problem_is_reported_at_once() -> None:
    with pytest.raises(PkiError) as err:
        check_subject(SubjectFields("", country="USA", email="nope"))
    assert all(word in str(err.value) for word in ("common name", "two-letter", "e-mail"))


def test_leftmost_wildcard_common_name_is_accepted() -> None:
    assert check_subject(SubjectFields("*.example.com")).common_name == "*.example.com"


DNS_CASES = {
    "wildcard-leftmost": ("*.example.com", None),
    "plain": ("WWW.Example.COM.", None),
    "wildcard-in-the-middle": ("www.*.example.com", "leftmost"),
    "wildcard-glued": ("*example.com", "'\\*.'"),
    "wildcard-partial-label": ("w*.example.com", "leftmost"),
    "wildcard-alone": ("*", "'\\*.'"),
    "space": ("www example.com", "invalid label"),
}


@pytest.mark.parametrize(("name", "problem"), DNS_CASES.values(), ids=DNS_CASES.keys())
def test_dns_names_follow_the_wildcard_rule(name: str, problem: str | None) -> None:
    if problem is None:
        assert check_alt_names([name]).dns[0] == name.lower().rstrip(".")
    else:
        with pytest.raises(PkiError, match=problem):
            check_alt_names([name])


def test_alt_names_drop_duplicates_and_check_rfc822() -> None:
    alt = check_alt_names(["a.example.com", "A.example.com"], ["u@example.com", "u@example.com"])
    assert alt == AltNames(("a.example.com",), ("u@example.com",))
    with pytest.raises(PkiError, match="RFC822"):
        check_alt_names([], ["not-an-address"])


def _ext(csr: x509.CertificateSigningRequest, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return csr.extensions.get_extension_for_class(kind).value


def test_signing_request_asks_for_a_ca_with_cert_signing() -> None:
    key = generate_key(KeyKind.EC_P256)
    csr = build_request(key, check_subject(FULL), check_alt_names([], ["susan@example.com"]), signing=True)
    assert csr.is_signature_valid
    constraints = _ext(csr, x509.BasicConstraints)
    assert isinstance(constraints, x509.BasicConstraints) and constraints.ca and constraints.path_length == 0
    usage = _ext(csr, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage) and usage.key_cert_sign and usage.crl_sign
    san = _ext(csr, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.RFC822Name) == ["susan@example.com"]


def test_endpoint_request_asks_for_server_auth_and_adds_its_host_name() -> None:
    key = generate_key(KeyKind.EC_P256)
    csr = build_request(key, check_subject(SubjectFields("www.example.com")), check_alt_names(["*.example.com"]),
                        signing=False)
    constraints = _ext(csr, x509.BasicConstraints)
    assert isinstance(constraints, x509.BasicConstraints) and not constraints.ca
    eku = _ext(csr, x509.ExtendedKeyUsage)
    assert isinstance(eku, x509.ExtendedKeyUsage) and ExtendedKeyUsageOID.SERVER_AUTH in eku
    san = _ext(csr, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com", "*.example.com"]


def test_created_signing_certificate_carries_every_field() -> None:
    subject = check_subject(FULL)
    alt = check_alt_names(["login.example.com"], ["susan@example.com"])
    cert, key = create_ca(subject.common_name, key_kind=KeyKind.EC_P384, days=30, subject=subject.to_name(),
                          alt_names=alt.to_extension())
    assert is_ca(cert) and cert.subject == cert.issuer == subject.to_name()
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["login.example.com"]
    assert san.get_values_for_type(x509.RFC822Name) == ["susan@example.com"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 31  # 30 days + the 1-day backdate


def test_validity_beyond_year_9999_is_refused() -> None:
    with pytest.raises(PkiError, match="9999"):
        create_ca("x", key_kind=KeyKind.EC_P256, days=10**7)
