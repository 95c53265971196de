"""Sites tlsgw has learnt it cannot intercept, relayed untouched for a while.

Two lessons, both from the issue 5 rules:

- A server that asks for a client certificate cannot be intercepted: tlsgw cannot
  present the client's certificate (it never has the key). The first such flow is relayed
  untouched once detected; `note_client_certificate_requested` makes later flows to that
  site skip decryption from the ClientHello on, for
  `client_proxy.client_certificate_bypass_seconds`.
- A client that refuses the forged certificate although it was issued by the trusted
  signing CA is pinning the real one (an app with a built-in key, HPKP-style). One refusal
  can be noise (a browser closing a preconnected socket), so `pinning_failures` of them
  within `pinning_window_seconds` make the site bypassed for `pinning_bypass_seconds`.
  Refusals of the *untrusted* CA (an invalid upstream shown on purpose) are the intended
  outcome and must not be noted (`is_pinning_symptom` says so).

A site is (server address, port, SNI): one address often serves many names, and a name
pinned in one app says nothing about the others. The trade-off of sharing the bypass
between clients: one client that keeps refusing forged certificates for a site causes
that site to be relayed untouched for every client for a while; it is bounded by time,
logged, and it is the product's behaviour (a site that cannot be intercepted for one
client usually cannot for any).

Bounded: at most `max_sites` sites are remembered; the least recently touched go first.
Pure: `now` (seconds, any monotonic origin) is passed in; tests inject it.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from gateway.config.model import ClientProxy

# Sites remembered at once: entries are a few hundred bytes, and a LAN reaches far fewer
# uninterceptable sites than this in a bypass period.
MAX_SITES = 10_000


@dataclass(frozen=True, slots=True)
class Site:
    server: IPv4Address
    port: int
    sni: str | None
    """As in the ClientHello (lowercase, no trailing dot); None when absent."""


class BypassReason(enum.Enum):
    """The reason logged with outcome "bypassed"."""

    CLIENT_CERTIFICATE = "client certificate requested"
    PINNED = "pinned"

    @property
    def log_text(self) -> str:
        """The outcome and reason as the issue words them: "bypassed: pinned"."""
        return f"bypassed: {self.value}"


@dataclass(frozen=True, slots=True)
class BypassSettings:
    client_certificate_seconds: float = 3600.0
    pinning_failures: int = 3
    pinning_window_seconds: float = 600.0
    pinning_seconds: float = 3600.0

    @classmethod
    def of(cls, proxy: ClientProxy) -> BypassSettings:
        return cls(
            client_certificate_seconds=proxy.client_certificate_bypass_seconds,
            pinning_failures=proxy.pinning_failures,
            pinning_window_seconds=proxy.pinning_window_seconds,
            pinning_seconds=proxy.pinning_bypass_seconds,
        )


@dataclass(slots=True)
class _SiteState:
    reason: BypassReason | None = None
    until: float = 0.0
    failures: list[float] = field(default_factory=list)
    """Times of recent pinning symptoms, oldest first."""


@dataclass(frozen=True, slots=True)
class ActiveBypass:
    site: Site
    reason: BypassReason
    until: float


class SiteBypassCache:
    """Process-wide: survives configuration reloads (what a site does does not change
    with tlsgw's configuration); durations come from the client proxy at each call."""

    def __init__(self, max_sites: int = MAX_SITES) -> None:
        if max_sites < 1:
            raise ValueError("max_sites must be at least 1")
        self.max_sites = max_sites
        self._sites: OrderedDict[Site, _SiteState] = OrderedDict()

    def lookup(self, site: Site, now: float) -> BypassReason | None:
        """Why flows to `site` are relayed untouched now, or None to decide as usual."""
        state = self._sites.get(site)
        if state is None or state.reason is None:
            return None
        if now >= state.until:
            state.reason = None
            self._forget_if_empty(site, state)
            return None
        return state.reason

    def note_client_certificate_requested(self, site: Site, now: float, settings: BypassSettings) -> None:
        state = self._touch(site)
        state.reason, state.until = BypassReason.CLIENT_CERTIFICATE, now + settings.client_certificate_seconds
        state.failures.clear()

    def note_pinning_failure(self, site: Site, now: float, settings: BypassSettings) -> BypassReason | None:
        """Record one refusal of a trusted forged certificate. Returns PINNED when this one
        starts a bypass (so the caller logs it once), else None."""
        state = self._touch(site)
        if state.reason is not None and now < state.until:
            return None  # already bypassed; flows should not have been decrypted
        window_start = now - settings.pinning_window_seconds
        state.failures = [t for t in state.failures if t > window_start]
        state.failures.append(now)
        if len(state.failures) < settings.pinning_failures:
            return None
        state.reason, state.until = BypassReason.PINNED, now + settings.pinning_seconds
        state.failures.clear()
        return BypassReason.PINNED

    def active(self, now: float) -> list[ActiveBypass]:
        """Sites bypassed now, for `tlsgw status` (and, should it ever be wanted, for
        mirroring address-only bypasses into the kernel's bypass set)."""
        return [ActiveBypass(site, s.reason, s.until) for site, s in self._sites.items()
                if s.reason is not None and now < s.until]

    def __len__(self) -> int:
        return len(self._sites)

    def _touch(self, site: Site) -> _SiteState:
        state = self._sites.get(site)
        if state is None:
            state = self._sites[site] = _SiteState()
        self._sites.move_to_end(site)
        while len(self._sites) > self.max_sites:
            self._sites.popitem(last=False)
        return state

    def _forget_if_empty(self, site: Site, state: _SiteState) -> None:
        if state.reason is None and not state.failures:
            self._sites.pop(site, None)


# OpenSSL reasons on tlsgw's side when a client aborts the handshake because of the
# certificate it was shown.
_CERTIFICATE_ALERTS = ("unknown ca", "bad certificate", "certificate unknown", "unsupported certificate")


def is_pinning_symptom(*, trusted_issuer: bool, handshake_failure: str | None,
                       handshake_completed: bool, client_sent_data: bool) -> bool:
    """Whether a client-facing leg ended the way a pinning client ends it.

    Either the client aborted the handshake with a certificate alert, or it completed the
    handshake and closed without sending a single byte (apps that check the pin after
    the handshake, such as OkHttp's CertificatePinner). Only for certificates forged
    under the trusted signing CA: refusing the untrusted CA is what it is for.
    """
    if not trusted_issuer:
        return False
    if handshake_failure is not None:
        lowered = handshake_failure.lower()
        return any(alert in lowered for alert in _CERTIFICATE_ALERTS)
    return handshake_completed and not client_sent_data
