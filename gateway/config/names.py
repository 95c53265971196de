"""The naming rules of the product tlsgw is modelled on, as small checks.

Each check returns `None` when the value is acceptable, or a sentence saying what is wrong,
so the loader can attach it to the field's path and keep going. The rules come from the
product's user guide (`reference/ssl-inspection-user-guide.txt`): names are made of
letters, digits, underscores, hyphens and spaces; a client proxy name is limited to 128
characters, a trust store name to 64, every description to 512; a CA certificate may not
be called `ca`. Where the guide is silent (segments, profiles, policies, categories) the
client proxy's rule applies, so one rule covers every name an operator types.

Host names and domain patterns live here too because both the loader (domain exceptions)
and the ClientHello parser (SNI) must agree on what a host name is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DESCRIPTION_MAX_LENGTH = 512

_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_\- ]+")
_BAD_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_\- ]")


@dataclass(frozen=True, slots=True)
class NameRule:
    """How one kind of object may be named."""

    kind: str
    """The product's word for the object, used in messages ("client proxy")."""
    max_length: int = 128
    reserved: frozenset[str] = frozenset()
    """Names refused whatever their case (the guide forbids a certificate called `ca`)."""

    def problem(self, name: str) -> str | None:
        if not name:
            return f"a {self.kind} name must not be empty"
        if len(name) > self.max_length:
            return f"{self.kind} name is {len(name)} characters long; the limit is {self.max_length}"
        if not _NAME_CHARACTERS.fullmatch(name):
            bad = _BAD_NAME_CHARACTER.search(name)
            found = f" (found {bad.group()!r})" if bad else ""
            return (
                f"{self.kind} name {name!r} may only contain letters, digits, underscores, "
                f"hyphens and spaces{found}"
            )
        if name != name.strip():
            # Allowed characters, but " web1" and "web1" would look alike in every listing.
            return f"{self.kind} name {name!r} must not start or end with a space"
        if name.lower() in self.reserved:
            return f"a {self.kind} may not be named {name!r}"
        return None


SEGMENT = NameRule("segment")
SERVER_PROXY = NameRule("server proxy")
CLIENT_PROXY = NameRule("client proxy", max_length=128)
DECRYPTION_POLICY = NameRule("decryption policy")
TRUST_STORE = NameRule("trust store", max_length=64)
PROFILE = NameRule("inspection profile")
SERVER_POLICY = NameRule("server policy")
CLIENT_POLICY = NameRule("client policy")
CATEGORY = NameRule("category")
# Applies to every certificate reference (signing certificates, server certificates, trust
# store CAs): they all name entries of the same PKI store.
CERTIFICATE = NameRule("certificate", reserved=frozenset({"ca"}))


def description_problem(text: str) -> str | None:
    if len(text) > DESCRIPTION_MAX_LENGTH:
        return f"description is {len(text)} characters long; the limit is {DESCRIPTION_MAX_LENGTH}"
    return None


# Linux refuses interface names longer than IFNAMSIZ - 1 or containing '/', ':' or white
# space (net/core/dev.c dev_valid_name); checking here turns a netlink error at start-up
# into a configuration message.
_IFNAMSIZ = 16


def interface_name_problem(name: str) -> str | None:
    if not name:
        return "an interface name must not be empty"
    if len(name) >= _IFNAMSIZ:
        return f"interface name {name!r} is {len(name)} characters long; Linux allows at most {_IFNAMSIZ - 1}"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return f"interface name {name!r} is not valid: no '/', ':' or spaces, and not '.' or '..'"
    return None


# Host names as they appear in SNI and in domain exceptions. Letters, digits and hyphens
# (RFC 1123) plus underscores, because real services use them (`_dmarc`, some CDN names)
# and browsers send them in SNI; refusing them would make those flows unparseable rather
# than safer.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HOST_NAME_MAX_LENGTH = 253


def normalise_host_name(name: str) -> str:
    """Lowercase without one trailing dot: the form SNI matching uses (see policy.domains)."""
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def host_name_problem(name: str) -> str | None:
    """Whether an already normalised (lowercase, no trailing dot) name is a host name."""
    if not name:
        return "a host name must not be empty"
    if not name.isascii():
        return f"host name {name!r} is not ASCII; write internationalised names in their xn-- form"
    if len(name) > _HOST_NAME_MAX_LENGTH:
        return f"host name is {len(name)} characters long; the limit is {_HOST_NAME_MAX_LENGTH}"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            if not label:
                return f"host name {name!r} has an empty label"
            if "*" in label:
                return f"host name {name!r} contains '*': a wildcard may only be the leftmost label, as '*.'"
            return (
                f"host name {name!r} has an invalid label {label!r}: labels are 1 to 63 letters, "
                "digits, hyphens or underscores and do not start or end with a hyphen"
            )
    return None


def domain_pattern_problem(pattern: str) -> str | None:
    """Check a normalised domain pattern: a host name, or `*.` followed by one.

    The guide's rule for wildcards: the asterisk and the period together, and only in the
    leftmost position. `*.company.com` covers subdomains at any depth, not `company.com`.
    """
    if pattern.startswith("*."):
        base = pattern[2:]
        if not base:
            return "'*.' must be followed by a domain"
        return host_name_problem(base)
    if pattern.startswith("*"):
        return f"domain {pattern!r}: a wildcard must be written '*.' followed by a domain"
    return host_name_problem(pattern)
