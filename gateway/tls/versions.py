"""Protocol versions on the two legs of a decrypted flow, and the parity rule between them.

The rule (issue 5): a client behind tlsgw is never less safe than on a direct connection.
Two halves make it hold:

1. Upstream, tlsgw offers the server no more than the client itself offered: versions
   within the client's range, suites among the client's (`upstream_offer`). The server
   therefore picks what it would have picked for the client, never something the client
   would have refused (a TLS 1.3-only client is never carried over TLS 1.2 upstream).
2. Toward the client, tlsgw accepts nothing weaker than what the server gave for that
   flow (`parity_floor`, `client_side_bounds`, `client_side_suites`): upstream TLS 1.3
   means TLS 1.3 toward the client; upstream TLS 1.2 means at least 1.2; an ECDHE
   upstream means ECDHE toward the client (forward secrecy); an AEAD upstream means AEAD.
   The highest enabled version stays the maximum, so TLS 1.3 is preferred whenever the
   client has it.

pyOpenSSL cannot set versions or cipher lists per connection, so each distinct offer or
floor is a context variant (`gateway.tls.contexts.UpstreamContexts` / `ClientContexts`);
the values here are their hashable keys.

Pure: no OpenSSL calls.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field

from gateway.config.model import TlsVersion
from gateway.tls.ciphers import (
    Signature,
    Suite,
    SuiteSelection,
    for_signature,
    offered_by_client,
    suite_by_openssl_name,
    usable_in,
)
from gateway.tls.clienthello import EXT_SUPPORTED_VERSIONS, ClientHello

# OpenSSL's names (`Connection.get_protocol_version_name()`) → the model's versions.
# OpenSSL says "TLSv1" where the product and the configuration say "TLSv1.0".
OPENSSL_VERSION_NAMES: dict[str, TlsVersion] = {
    "SSLv3": TlsVersion.SSL3,
    "TLSv1": TlsVersion.TLS1_0,
    "TLSv1.1": TlsVersion.TLS1_1,
    "TLSv1.2": TlsVersion.TLS1_2,
    "TLSv1.3": TlsVersion.TLS1_3,
}

WIRE_VERSIONS: dict[int, TlsVersion] = {
    0x0300: TlsVersion.SSL3,
    0x0301: TlsVersion.TLS1_0,
    0x0302: TlsVersion.TLS1_1,
    0x0303: TlsVersion.TLS1_2,
    0x0304: TlsVersion.TLS1_3,
}


def version_from_openssl(name: str) -> TlsVersion:
    """Raises ValueError for a name OpenSSL uses for nothing tlsgw enables ("DTLSv1", "unknown")."""
    try:
        return OPENSSL_VERSION_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown protocol version name {name!r}") from None


def client_versions(hello: ClientHello) -> frozenset[TlsVersion]:
    """The versions the client can speak. With supported_versions (RFC 8446) the list is
    exact; a client without it names only its highest version and may speak any below."""
    if EXT_SUPPORTED_VERSIONS in hello.extensions:
        return frozenset(WIRE_VERSIONS[v] for v in hello.supported_versions if v in WIRE_VERSIONS)
    highest = WIRE_VERSIONS.get(min(hello.legacy_version, 0x0303))
    if highest is None:
        return frozenset()
    return frozenset(v for v in TlsVersion if v <= highest)


# ---------------------------------------------------------------------------------------
# Upstream: offer what the client offered, within the proxy's settings.


class OfferRefusal(enum.Enum):
    """Why a client cannot be decrypted before anything is sent upstream. The values are
    counter names (see `gateway.tls.protocol_stats`)."""

    NO_COMMON_VERSION = "protocolVersion"
    """The client offers no version the proxy enables."""
    NO_COMMON_CIPHER = "clientCipherOther"
    """The client offers no cipher suite the proxy enables (the product's clientCipherOther)."""


@dataclass(frozen=True, slots=True)
class UpstreamOffer:
    """What the upstream leg offers the server for one client: the key of an upstream
    context variant, and part of the key of the upstream session cache."""

    min_version: TlsVersion
    max_version: TlsVersion
    tls12: tuple[Suite, ...]
    """Empty when `min_version` is TLS 1.3."""
    tls13: tuple[Suite, ...]
    """Empty when `max_version` is below TLS 1.3."""
    _hash: int = field(init=False, repr=False, compare=False)
    """Computed once: an offer is a dictionary key looked up several times per connection."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.min_version.value, self.max_version.value, self.tls12,
                                                self.tls13)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def selection(self) -> SuiteSelection:
        return SuiteSelection(self.tls12, self.tls13)


def upstream_offer(hello: ClientHello, protocols: Collection[TlsVersion], selection: SuiteSelection,
                   client_facing: Signature | None) -> UpstreamOffer | OfferRefusal:
    """Versions and suites to offer upstream for this client.

    `client_facing`: the key type of the certificate tlsgw will show the client (forged
    leaves: ECDSA; a server proxy: its certificate's key). TLS 1.2 is only offered
    upstream if the client also offered a TLS 1.2 suite that certificate can serve, or
    the upstream could settle on TLS 1.2 with a client that then cannot complete it.
    None skips that check.
    """
    common = client_versions(hello) & frozenset(protocols)
    if not common:
        return OfferRefusal.NO_COMMON_VERSION
    codes = frozenset(hello.cipher_suites)
    tls13 = offered_by_client(selection.tls13, codes) if TlsVersion.TLS1_3 in common else ()
    below13 = [v for v in common if v < TlsVersion.TLS1_3]
    tls12: tuple[Suite, ...] = ()
    if below13:
        tls12 = tuple(s for s in offered_by_client(selection.tls12, codes) if s.min_version <= max(below13))
        if client_facing is not None and not for_signature(tls12, client_facing):
            tls12 = ()
    # The versions that have a suite: a client offering TLS 1.0-1.2 but only GCM suites
    # speaks TLS 1.2 at least; one without a TLS 1.3 suite, TLS 1.2 at most.
    workable = [v for v in common if (tls13 if v is TlsVersion.TLS1_3 else usable_in(tls12, v))]
    if not workable:
        return OfferRefusal.NO_COMMON_CIPHER
    low, high = min(workable), max(workable)
    return UpstreamOffer(low, high, tls12 if low < TlsVersion.TLS1_3 else (),
                         tls13 if high is TlsVersion.TLS1_3 else ())


# ---------------------------------------------------------------------------------------
# Toward the client: nothing weaker than what the server gave.


@dataclass(frozen=True, slots=True)
class ParityFloor:
    """The least the client-facing leg may negotiate for one flow; the key of a
    client-facing context variant."""

    min_version: TlsVersion
    forward_secret: bool
    """Only (EC)DHE key exchanges."""
    aead: bool
    """Only AEAD bulk ciphers."""


def parity_floor(upstream_version: str, upstream_cipher: str | None,
                 protocols: Collection[TlsVersion]) -> ParityFloor:
    """The floor for the client-facing leg after the upstream negotiated
    `upstream_version` (OpenSSL's name, "TLSv1.2") with `upstream_cipher` (OpenSSL's name).

    Never below the proxy's own lowest version. An upstream cipher tlsgw does not know
    (it cannot have offered it) counts as the strongest kind: forward-secret AEAD.
    """
    version = max(version_from_openssl(upstream_version), min(protocols))
    suite = suite_by_openssl_name(upstream_cipher)
    if suite is None:
        return ParityFloor(version, forward_secret=True, aead=True)
    return ParityFloor(version, forward_secret=suite.forward_secret, aead=suite.aead)


def client_side_bounds(upstream_version: str, upstream_cipher: str | None,
                       protocols: Collection[TlsVersion]) -> tuple[TlsVersion, TlsVersion]:
    """(min, max) for the client-facing leg: at least what the upstream got, at most the
    proxy's highest (so TLS 1.3 whenever both the client and the proxy have it).

    Raises:
        ValueError: the upstream negotiated a version above the proxy's highest, which a
            context built from the same settings cannot do (a wiring mistake).
    """
    floor = parity_floor(upstream_version, upstream_cipher, protocols)
    high = max(protocols)
    if floor.min_version > high:
        raise ValueError(f"upstream negotiated {upstream_version}, above the proxy's highest {high.label}")
    return floor.min_version, high


def client_side_suites(selection: SuiteSelection, floor: ParityFloor) -> SuiteSelection:
    """The proxy's suites minus those weaker than the floor. TLS 1.3 suites are all
    forward-secret AEAD and stay; TLS 1.2 suites go entirely when the floor is TLS 1.3."""
    if floor.min_version is TlsVersion.TLS1_3:
        return SuiteSelection((), selection.tls13)
    tls12 = tuple(
        s for s in selection.tls12
        if s.min_version <= TlsVersion.TLS1_2
        and (s.forward_secret or not floor.forward_secret)
        and (s.aead or not floor.aead)
    )
    return SuiteSelection(tls12, selection.tls13)


def client_meets_floor(hello: ClientHello, floor: ParityFloor, selection: SuiteSelection,
                       protocols: Collection[TlsVersion], client_facing: Signature | None) -> bool:
    """Whether this client can complete the client-facing handshake under `floor`: it
    offers a version in range and, in that range, a suite tlsgw would accept. False means
    the handshake would fail; count it as `refused.parity` rather than a client error."""
    high = max(protocols)
    versions = {v for v in client_versions(hello) if floor.min_version <= v <= high}
    if not versions:
        return False
    allowed = client_side_suites(selection, floor)
    codes = frozenset(hello.cipher_suites)
    if TlsVersion.TLS1_3 in versions and offered_by_client(allowed.tls13, codes):
        return True
    tls12 = offered_by_client(allowed.tls12, codes)
    if client_facing is not None:
        tls12 = for_signature(tls12, client_facing)
    return any(usable_in(tls12, v) for v in versions if v < TlsVersion.TLS1_3)

