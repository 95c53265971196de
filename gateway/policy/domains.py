"""Domain patterns of decryption policies.

The product's rule: `*.company.com` exempts subdomains at any depth
(`legal.compliance.company.com` too) but not `company.com` itself, which needs its own
entry. Matching is on lowercase names without a trailing dot, because SNI is sent that way
and a trailing dot must not become a way around an exemption.
"""

from __future__ import annotations

from dataclasses import dataclass


def normalise_host(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """`example.com` (exact) or `*.example.com` (any subdomain, any depth)."""

    text: str

    @property
    def is_wildcard(self) -> bool:
        return self.text.startswith("*.")

    @property
    def base(self) -> str:
        return self.text[2:] if self.is_wildcard else self.text

    def matches(self, host: str) -> bool:
        host = normalise_host(host)
        if self.is_wildcard:
            return host.endswith("." + self.base)
        return host == self.text


def first_match(patterns: tuple[str, ...], host: str | None) -> str | None:
    """The first pattern (as written) that matches `host`, or None; no host matches nothing."""
    if not host:
        return None
    for text in patterns:
        if DomainPattern(normalise_host(text)).matches(host):
            return text
    return None
