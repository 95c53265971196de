"""Subjects, alternative names and certificate signing requests, checked as the product does.

The same fields describe a self-signed signing CA (`tlsgw cert create-signing`) and a
request (`tlsgw cert create-request`): common name, e-mail, OU, O, L, ST, two-letter
country, extra DNS names and RFC822 (e-mail) names. Everything is checked before a key is
generated, and all problems are reported at once.

Wildcards follow the guide: `*.` together, only as the leftmost label
(`*.example.com`, not `www.*.example.com` nor `*example.com`), in DNS names and in a
common name that looks like a host name.

A request for a signing certificate asks for CA basic constraints (pathlen 0) and the
keyCertSign and cRLSign key usages; a request for a server endpoint asks for CA:FALSE,
digitalSignature (plus keyEncipherment for RSA keys) and serverAuth. A CA may ignore what
is asked: `import-signed` checks what came back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config.names import domain_pattern_problem, normalise_host_name
from gateway.errors import PkiError
from gateway.pki.ca import signature_hash
from gateway.pki.keys import PrivateKey

# Upper bounds of RFC 5280 appendix A (ub-common-name 64, ub-organization-name 64,
# ub-organizational-unit-name 64, ub-locality-name 128, ub-state-name 128,
# ub-emailaddress-length 255): longer values make certificates other software rejects.
MAX_LENGTHS = {"common name": 64, "organizational unit": 64, "organization": 64, "locality": 128,
               "state": 128, "e-mail": 255}
# Deliberately loose: one @, something on each side, no spaces. Mail systems accept far
# more than any regular expression can check; this catches typing mistakes only.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_COUNTRY = re.compile(r"[A-Za-z]{2}")


@dataclass(frozen=True, slots=True)
class SubjectFields:
    """The distinguished name, in the product's words."""

    common_name: str
    email: str | None = None
    organizational_unit: str | None = None
    organization: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str | None = None
    """ISO 3166 two-letter code, upper case after `check_subject`."""

    def to_name(self) -> x509.Name:
        attributes = [
            (NameOID.COUNTRY_NAME, self.country),
            (NameOID.STATE_OR_PROVINCE_NAME, self.state),
            (NameOID.LOCALITY_NAME, self.locality),
            (NameOID.ORGANIZATION_NAME, self.organization),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit),
            (NameOID.COMMON_NAME, self.common_name),
            (NameOID.EMAIL_ADDRESS, self.email),
        ]
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes if value])


@dataclass(frozen=True, slots=True)
class AltNames:
    """Subject alternative names: DNS names (wildcards leftmost only) and RFC822 names."""

    dns: tuple[str, ...] = ()
    rfc822: tuple[str, ...] = ()

    def to_extension(self) -> x509.SubjectAlternativeName | None:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        names += [x509.RFC822Name(e) for e in self.rfc822]
        return x509.SubjectAlternativeName(names) if names else None


def looks_like_host_name(text: str) -> bool:
    """A common name meant as a host name ("www.example.com", "*.example.com"), as opposed
    to a label ("Example Corp Inspection CA")."""
    return "." in text and " " not in text


def _email_problem(what: str, value: str) -> str | None:
    if not value.isascii() or not _EMAIL.fullmatch(value):
        return f"{what} {value!r} is not an e-mail address (name@domain)"
    if len(value) > MAX_LENGTHS["e-mail"]:
        return f"{what} is {len(value)} characters long; the limit is {MAX_LENGTHS['e-mail']}"
    return None


def check_subject(fields: SubjectFields) -> SubjectFields:
    """Return `fields` normalised (country upper case, blanks dropped), or raise PkiError
    listing every problem."""
    problems: list[str] = []
    texts = {
        "common name": fields.common_name, "organizational unit": fields.organizational_unit,
        "organization": fields.organization, "locality": fields.locality, "state": fields.state,
    }
    cleaned: dict[str, str | None] = {}
    for what, value in texts.items():
        value = value.strip() if value is not None else None
        cleaned[what] = value or None
        if value and len(value) > MAX_LENGTHS[what]:
            problems.append(f"{what} is {len(value)} characters long; the limit is {MAX_LENGTHS[what]}")
        if value and not value.isprintable():
            problems.append(f"{what} {value!r} contains control characters")
    common_name = cleaned["common name"]
    if common_name is None:
        problems.append("a common name (CN) is required")
    elif "*" in common_name:
        problem = domain_pattern_problem(normalise_host_name(common_name))
        if problem:
            problems.append(f"common name: {problem}")
    email = (fields.email or "").strip() or None
    if email:
        problem = _email_problem("e-mail", email)
        if problem:
            problems.append(problem)
    country = (fields.country or "").strip() or None
    if country is not None and not _COUNTRY.fullmatch(country):
        problems.append(f"country {country!r} must be a two-letter ISO code such as US or DE")
    if problems:
        raise PkiError("; ".join(problems))
    return SubjectFields(
        common_name=common_name or "", email=email, organizational_unit=cleaned["organizational unit"],
        organization=cleaned["organization"], locality=cleaned["locality"], state=cleaned["state"],
        country=country.upper() if country else None,
    )


def check_alt_names(dns: Iterable[str] = (), rfc822: Iterable[str] = ()) -> AltNames:
    """Normalise DNS names (lower case, no trailing dot) and check both lists; duplicates
    are dropped. Raises PkiError listing every problem."""
    problems: list[str] = []
    dns_names: list[str] = []
    for raw in dns:
        name = normalise_host_name(raw.strip())
        problem = domain_pattern_problem(name)
        if problem:
            problems.append(f"DNS name {raw!r}: {problem}")
        elif name not in dns_names:
            dns_names.append(name)
    emails: list[str] = []
    for raw in rfc822:
        value = raw.strip()
        problem = _email_problem("RFC822 name", value)
        if problem:
            problems.append(problem)
        elif value not in emails:
            emails.append(value)
    if problems:
        raise PkiError("; ".join(problems))
    return AltNames(tuple(dns_names), tuple(emails))


def endpoint_alt_names(subject: SubjectFields, alt: AltNames) -> AltNames:
    """A server endpoint's names with its common name added when it is a host name:
    browsers ignore the CN and match only the subject alternative names."""
    if looks_like_host_name(subject.common_name):
        cn = normalise_host_name(subject.common_name)
        if domain_pattern_problem(cn) is None and cn not in alt.dns:
            return AltNames((cn, *alt.dns), alt.rfc822)
    return alt


def ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )


def endpoint_key_usage(key: PrivateKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def build_request(key: PrivateKey, subject: SubjectFields, alt: AltNames, *, signing: bool
                  ) -> x509.CertificateSigningRequest:
    """A PKCS#10 request signed by `key` (SHA-256), with the extensions the module
    docstring lists. Expects checked fields (`check_subject`, `check_alt_names`)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject.to_name())
    if signing:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(ca_key_usage(), critical=True)
    else:
        alt = endpoint_alt_names(subject, alt)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(endpoint_key_usage(key), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    san = alt.to_extension()
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, signature_hash(key))


def request_alt_names(csr: x509.CertificateSigningRequest) -> AltNames:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return AltNames()
    return AltNames(tuple(san.get_values_for_type(x509.DNSName)), tuple(san.get_values_for_type(x509.RFC822Name)))
