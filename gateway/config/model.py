"""The configuration model, in the words of the product tlsgw is modelled on.

Every class is frozen: a loaded configuration is a value. A reload builds a new one and
swaps it in whole, so a session keeps the policy objects it started with (DESIGN.md
section 4). The loader (`gateway.config.load`) is the only producer; it validates the
whole file and cross-references before any of these objects reaches the rest of tlsgw,
so code that consumes them may assume names resolve and values are in range.

Field docstrings are the reference text for `tlsgw check-config --explain`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

DEFAULT_CONFIG_PATH = "/etc/tlsgw/tlsgw.yaml"
DEFAULT_PKI_DIR = "/var/lib/tlsgw/pki"
DEFAULT_INSPECTION_LOG = "/var/log/tlsgw/inspection.jsonl"
# Debian's ca-certificates package: Mozilla's bundle, as the product's "default CA package".
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class DecryptedService(enum.Enum):
    """The service carried inside TLS, so inspection knows how to read the plaintext."""

    HTTP = "http"
    IMAP = "imap"
    POP3 = "pop3"
    OTHER = "other"


class TlsVersion(enum.IntEnum):
    """Ordered so that "every version between lowest and highest" is a range check."""

    SSL3 = 0
    TLS1_0 = 1
    TLS1_1 = 2
    TLS1_2 = 3
    TLS1_3 = 4

    @property
    def label(self) -> str:
        return {0: "SSLv3", 1: "TLSv1.0", 2: "TLSv1.1", 3: "TLSv1.2", 4: "TLSv1.3"}[self.value]


# Secure default (issue 5): TLS 1.2 and 1.3 only.
DEFAULT_PROTOCOLS: tuple[TlsVersion, ...] = (TlsVersion.TLS1_2, TlsVersion.TLS1_3)


class OnExceed(enum.Enum):
    """What happens to new flows above `limits.max_concurrent`."""

    BYPASS = "bypass"
    BLOCK = "block"


class NetfilterBackendName(enum.Enum):
    NFTABLES = "nftables"
    IPTABLES = "iptables"


@dataclass(frozen=True, slots=True, order=True)
class PortRange:
    """An inclusive TCP port range; a single port has `low == high`."""

    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def overlaps(self, other: PortRange) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def ports_contain(ranges: tuple[PortRange, ...], port: int) -> bool:
    return any(port in r for r in ranges)


def networks_contain(networks: tuple[IPv4Network, ...], address: IPv4Address) -> bool:
    return any(address in n for n in networks)


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent: int = 10000
    """Most inspected connections at once; new flows above it get `on_exceed`."""
    on_exceed: OnExceed = OnExceed.BYPASS
    """`bypass` (relay untouched, the default: fail open) or `block`."""


@dataclass(frozen=True, slots=True)
class SslInspection:
    client: bool = True
    """Global switch for SSL client inspection (outbound, forged certificates)."""
    server: bool = True
    """Global switch for SSL server inspection (inbound, the organisation's own keys)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A pair of bridge ports with the inspection profile that applies between them."""

    name: str
    client_port: str
    """Bridge port on the side of the clients (interface name)."""
    server_port: str
    """Bridge port on the side of the servers or the Internet (interface name)."""
    profile: str
    """Name of the inspection profile applied to flows on this segment."""
    vlans: tuple[int, ...] = ()
    """Only frames of these VLAN IDs are considered; empty means untagged and all."""
    sources: tuple[IPv4Network, ...] = ()
    """Only flows from these client addresses are considered; empty means all."""
    destinations: tuple[IPv4Network, ...] = ()
    """Only flows to these server addresses are considered; empty means all."""


@dataclass(frozen=True, slots=True)
class NetfilterSettings:
    backend: NetfilterBackendName = NetfilterBackendName.NFTABLES
    """Which firewall the steering rules are written to: `nftables` (default) or `iptables`."""
    table: str = "tlsgw"
    """Name of tlsgw's own tables; nothing else is ever touched."""
    mark: int = 0x1
    """Firewall mark that routes steered packets to the local stack (DESIGN.md section 3 step 4)."""
    route_table: int = 100
    """Policy-routing table holding `local 0.0.0.0/0 dev lo`."""


@dataclass(frozen=True, slots=True)
class GatewaySection:
    bridge: str = "br0"
    """The Linux bridge the segment ports belong to."""
    segments: tuple[Segment, ...] = ()
    ssl_inspection: SslInspection = SslInspection()
    limits: Limits = Limits()
    listen_port: int = 8443
    """First local TPROXY port; segment N listens on `listen_port + N`."""
    inspection_log: str = DEFAULT_INSPECTION_LOG
    """Where the SSL inspection log (JSON lines, one per flow) is appended."""
    netfilter: NetfilterSettings = NetfilterSettings()
    handshake_timeout: float = 10.0
    """Seconds a peer may take to complete its side of the TLS handshake."""
    idle_timeout: float = 300.0
    """Seconds without data in either direction before a relayed session is closed."""


@dataclass(frozen=True, slots=True)
class PkiSection:
    dir: str = DEFAULT_PKI_DIR
    """Certificate store: one directory per named certificate (see `gateway.pki.store`)."""
    default_ca_bundle: str = DEFAULT_CA_BUNDLE
    """PEM bundle used when a trust store includes the default CA package."""


@dataclass(frozen=True, slots=True)
class ServerProxy:
    """One of the organisation's own TLS services, whose keys tlsgw holds."""

    name: str
    destinations: tuple[IPv4Network, ...]
    """Server IPv4 addresses or CIDR ranges."""
    detection_ports: tuple[PortRange, ...]
    certificates: tuple[str, ...]
    """1..1000 certificate names from the PKI store, duplicates dropped; the first is the fallback."""
    decrypted_service: DecryptedService = DecryptedService.HTTP
    description: str = ""
    protocols: tuple[TlsVersion, ...] = DEFAULT_PROTOCOLS
    logging: bool = False
    """Detailed troubleshooting log for this proxy."""
    tcp_reset_server: bool = False
    """Send a TCP reset to the server for blocked sessions."""


@dataclass(frozen=True, slots=True)
class ClientProxy:
    """How outbound client traffic is decrypted: the CA that forges, and how strict to be."""

    name: str
    signing_certificate: str
    """A CA certificate with its key, from the PKI store; clients must trust it."""
    detection_ports: tuple[PortRange, ...]
    decrypted_service: DecryptedService = DecryptedService.HTTP
    description: str = ""
    min_key_length: int = 2048
    """Upstream certificates with a smaller RSA key are invalid."""
    block_invalid_certificates: bool = True
    """Block flows whose upstream certificate is invalid; otherwise the client is shown an
    untrusted certificate so that it sees the failure itself."""
    block_expired_certificates: bool = True
    """Block flows whose upstream certificate is expired or not yet valid; otherwise as above."""
    downgrade_http2: bool = False
    """Remove `h2` from ALPN so HTTP/2 is downgraded to HTTP/1.1."""
    protocols: tuple[TlsVersion, ...] = DEFAULT_PROTOCOLS
    logging: bool = False
    tcp_reset_client: bool = False
    """Send a TCP reset to the client for blocked sessions."""


@dataclass(frozen=True, slots=True)
class DecryptionPolicy:
    """What not to decrypt, by domain and by category."""

    name: str
    description: str = ""
    domains: tuple[str, ...] = ()
    """Domains not to decrypt; `*.example.com` matches subdomains at any depth."""
    categories: tuple[str, ...] = ()
    """Categories (from the top-level `categories` map) not to decrypt."""
    category_overrides: tuple[str, ...] = ()
    """Domains inside those categories that are decrypted nevertheless."""


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The roots an upstream certificate must chain to."""

    name: str
    include_default_ca: bool = True
    """Include the default CA package (Mozilla's bundle, `pki.default_ca_bundle`)."""
    ca_certificates: tuple[str, ...] = ()
    """Named CA certificates from the PKI store."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    name: str
    server_proxy: str
    source_exceptions: tuple[IPv4Network, ...] = ()
    """Client addresses that are never decrypted by this policy."""
    enabled: bool = True
    locked: bool = False


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    name: str
    client_proxy: str
    trust_store: str
    decryption_policy: str | None = None
    """`None` decrypts every domain."""
    enabled: bool = True
    """State: a disabled policy decrypts no new flows; sessions in flight continue."""
    locked: bool = False
    never_decrypt: tuple[IPv4Network, ...] = ()
    """Source addresses never decrypted (relayed untouched)."""
    always_decrypt: tuple[IPv4Network, ...] = ()
    """Source addresses always decrypted, even when a domain or category would exempt them."""


@dataclass(frozen=True, slots=True)
class InspectionProfile:
    name: str
    server_policies: tuple[ServerPolicy, ...] = ()
    client_policies: tuple[ClientPolicy, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A whole, validated configuration."""

    gateway: GatewaySection = GatewaySection()
    pki: PkiSection = PkiSection()
    server_proxies: tuple[ServerProxy, ...] = ()
    client_proxies: tuple[ClientProxy, ...] = ()
    decryption_policies: tuple[DecryptionPolicy, ...] = ()
    trust_stores: tuple[TrustStore, ...] = ()
    profiles: tuple[InspectionProfile, ...] = ()
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Local category database: category name -> domain patterns in it."""
    source: str = ""
    """The file this was loaded from, for messages."""

    def server_proxy(self, name: str) -> ServerProxy:
        return next(p for p in self.server_proxies if p.name == name)

    def client_proxy(self, name: str) -> ClientProxy:
        return next(p for p in self.client_proxies if p.name == name)

    def decryption_policy(self, name: str) -> DecryptionPolicy:
        return next(p for p in self.decryption_policies if p.name == name)

    def trust_store(self, name: str) -> TrustStore:
        return next(t for t in self.trust_stores if t.name == name)

    def profile(self, name: str) -> InspectionProfile:
        return next(p for p in self.profiles if p.name == name)

    def client_detection_ports(self, segment: Segment) -> tuple[PortRange, ...]:
        """Ports steered from the client side of a segment: those of its enabled client policies."""
        if not self.gateway.ssl_inspection.client:
            return ()
        profile = self.profile(segment.profile)
        ports: list[PortRange] = []
        for policy in profile.client_policies:
            if policy.enabled:
                ports.extend(self.client_proxy(policy.client_proxy).detection_ports)
        return tuple(sorted(set(ports)))
