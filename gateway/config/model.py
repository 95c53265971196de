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
import posixpath
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

DEFAULT_CONFIG_PATH = "/etc/tlsgw/tlsgw.yaml"
DEFAULT_PKI_DIR = "/var/lib/tlsgw/pki"
DEFAULT_INSPECTION_LOG = "/var/log/tlsgw/inspection.jsonl"
# Debian's ca-certificates package: Mozilla's bundle, as the product's "default CA package".
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# `pki.default_ca_bundle: store`: the package imported with `tlsgw cert update-default-ca`,
# kept in the PKI store as DEFAULT_CA_PACKAGE_FILE.
DEFAULT_CA_FROM_STORE = "store"
DEFAULT_CA_PACKAGE_FILE = "default-ca-package.pem"
# Apart from the store on purpose: a copy of /var/lib/tlsgw alone must not open its keys.
DEFAULT_KEY_SECRET_FILE = "/etc/tlsgw/key-secret"
# `gateway.workers: auto`: one worker process per usable CPU (gateway.workers.sizing).
WORKERS_AUTO = "auto"
# Far above the cores a TLS gateway box has; each worker holds its own copy of the TLS
# material and forge cache, so a typo like 600 must not start 600 processes.
MAX_WORKERS = 64


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


class KeyExchange(enum.Enum):
    """Cipher-suite criterion "key exchange", with the signature that authenticates it."""

    ECDHE_RSA = "ecdhe-rsa"
    ECDHE_ECDSA = "ecdhe-ecdsa"
    RSA = "rsa"
    """Static RSA key transport: no forward secrecy (recorded traffic can be decrypted
    later with the server's key), gone from TLS 1.3 and from current browsers."""


class BulkCipher(enum.Enum):
    """Cipher-suite criterion "bulk cipher"."""

    AES128_GCM = "aes128-gcm"
    AES256_GCM = "aes256-gcm"
    AES128_CBC = "aes128-cbc"
    AES256_CBC = "aes256-cbc"
    CHACHA20_POLY1305 = "chacha20-poly1305"
    TRIPLE_DES = "3des"
    """64-bit blocks: practical collision attacks after a few hundred GB (Sweet32)."""
    DES = "des"
    """56-bit key: brute-forced in hours; not in OpenSSL 1.1.0 and later."""

    @property
    def is_aead(self) -> bool:
        """Authenticated encryption: records are authenticated by the cipher, no separate MAC."""
        return self in (BulkCipher.AES128_GCM, BulkCipher.AES256_GCM, BulkCipher.CHACHA20_POLY1305)


class MacAlgorithm(enum.Enum):
    """Cipher-suite criterion "MAC": the HMAC of CBC suites. AEAD suites have no separate
    MAC and are chosen by their bulk cipher alone."""

    SHA384 = "sha384"
    SHA256 = "sha256"
    SHA1 = "sha1"
    """HMAC-SHA1 is not broken (HMAC does not rely on collision resistance); it is the
    only MAC of the CBC suites most pre-TLS 1.2 servers have."""


# Secure defaults (issue 5), and why each choice is in or out:
# - key exchange: ECDHE only. Static RSA has no forward secrecy, and a gateway that picks
#   it upstream would make a client less safe than its own browser, which no longer
#   offers it. ECDHE with RSA and with ECDSA signatures, because servers use both kinds
#   of keys (and forged certificates carry an ECDSA key).
# - bulk: the AEAD ciphers first, and AES-CBC for servers that have nothing better
#   (still common on appliances); 3DES (Sweet32) and DES (56-bit) off.
# - mac: all three; they only ever apply to the AES-CBC suites.
DEFAULT_KEY_EXCHANGES: tuple[KeyExchange, ...] = (KeyExchange.ECDHE_RSA, KeyExchange.ECDHE_ECDSA)
DEFAULT_BULK_CIPHERS: tuple[BulkCipher, ...] = (
    BulkCipher.AES128_GCM,
    BulkCipher.AES256_GCM,
    BulkCipher.CHACHA20_POLY1305,
    BulkCipher.AES128_CBC,
    BulkCipher.AES256_CBC,
)
DEFAULT_MACS: tuple[MacAlgorithm, ...] = (MacAlgorithm.SHA384, MacAlgorithm.SHA256, MacAlgorithm.SHA1)


@dataclass(frozen=True, slots=True)
class CipherSuiteCriteria:
    """Cipher suites chosen by criteria, as in the product: a suite is enabled when its key
    exchange, bulk cipher and MAC are all chosen. The resulting list, in OpenSSL's names,
    is shown by `tlsgw check-config --explain` and given to OpenSSL exactly."""

    key_exchange: tuple[KeyExchange, ...] = DEFAULT_KEY_EXCHANGES
    """Any of ecdhe-rsa, ecdhe-ecdsa, rsa (TLS 1.3 always uses ECDHE)."""
    bulk: tuple[BulkCipher, ...] = DEFAULT_BULK_CIPHERS
    """Any of aes128-gcm, aes256-gcm, aes128-cbc, aes256-cbc, chacha20-poly1305, 3des, des;
    also selects the TLS 1.3 suites (AES-GCM and ChaCha20-Poly1305)."""
    mac: tuple[MacAlgorithm, ...] = DEFAULT_MACS
    """Any of sha384, sha256, sha1: the HMAC of the CBC suites."""


class OnExceed(enum.Enum):
    """What happens to new flows above `limits.max_concurrent`."""

    BYPASS = "bypass"
    BLOCK = "block"


class FailMode(enum.Enum):
    """What the bridge does with the flows tlsgw would inspect while tlsgw is not running."""

    OPEN = "open"
    """Forward them untouched (the default: the appliance never becomes the outage)."""
    CLOSED = "closed"
    """Drop them: no uninspected TLS on the steered ports while tlsgw is down."""


DEFAULT_CONTROL_SOCKET = "/run/tlsgw/control.sock"
DEFAULT_BYPASS_FILE = "/var/lib/tlsgw/bypass"
DEFAULT_METRICS_PORT = 9598
# Long enough for most page loads and short downloads to finish, short enough that a
# restart stays quick; systemd/tlsgw.service's TimeoutStopSec leaves room for it.
DEFAULT_DRAIN_TIMEOUT = 10.0
# An upper bound, so that a slip of the finger (36000 for 3600) cannot hold a stop for hours.
MAX_DRAIN_TIMEOUT = 3600.0


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
class ControlSettings:
    socket: str = DEFAULT_CONTROL_SOCKET
    """Unix socket through which `tlsgw status`, `stats`, `reload`, `bypass` ... reach the daemon."""
    group: str = "tlsgw"
    """Group that may connect to the socket (mode 0660); what each caller may do then
    depends on its membership of tlsgw-admin, tlsgw-operator or tlsgw-auditor."""
    bypass_file: str = DEFAULT_BYPASS_FILE
    """Where a manual fallback (`tlsgw bypass on`) is remembered across restarts."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: IPv4Address = IPv4Address("127.0.0.1")
    """Address of the Prometheus endpoint; loopback unless set otherwise."""
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """Inspection of TLS inside one layer of GRE or IP-in-IP (issue 7, `gateway.tunnel`)."""

    enabled: bool = False
    """Take tunneled flows that match a policy out of their GRE or IP-in-IP tunnel and
    inspect them like plain flows; everything else in tunnels crosses untouched."""
    outer_mtu: int = 1500
    """MTU of the path the tunnels' outer packets take; inner TCP MSS is clamped to fit it."""
    route_table: int = 110
    """First policy-routing table of the tunnel devices (segment N uses `route_table + N`)."""


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
    """Seconds without data in either direction before a relayed session is closed; the
    default of the two per-side timeouts below."""
    client_idle_timeout: float | None = None
    """Seconds the client-facing connection may stay idle (nothing received from or sent to
    the client); None: `idle_timeout`."""
    server_idle_timeout: float | None = None
    """Seconds the server-facing connection may stay idle; None: `idle_timeout`."""

    def idle_timeouts(self) -> tuple[float, float]:
        """(client side, server side)."""
        return (self.client_idle_timeout or self.idle_timeout, self.server_idle_timeout or self.idle_timeout)
    fail_mode: FailMode = FailMode.OPEN
    """`open` (default): while tlsgw is not running the bridge forwards everything
    untouched; `closed`: the flows it would inspect are dropped instead."""
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    """Seconds a stop (SIGTERM, SIGINT) waits for the sessions in flight to finish while
    new flows already bypass tlsgw, before the rules go and what is left is cut; 0: no
    wait (cut at once). A restart should not kill a running download when it can wait."""
    control: ControlSettings = ControlSettings()
    metrics: MetricsSettings | None = None
    """Prometheus endpoint (`listen: 127.0.0.1:9598`); disabled unless configured."""
    tunnels: TunnelSettings = TunnelSettings()
    workers: int | str = 1
    """Processes that serve connections (issue 8): `1` (default) serves in the main
    process; N (2..64) starts N worker processes sharing the TPROXY ports (SO_REUSEPORT)
    while the main process keeps the rules, the control socket and the counters; `auto`:
    one per CPU tlsgw may run on. A change takes effect at the next restart."""


@dataclass(frozen=True, slots=True)
class PkiSection:
    dir: str = DEFAULT_PKI_DIR
    """Certificate store: one directory per named certificate (see `gateway.pki.store`)."""
    default_ca_bundle: str = DEFAULT_CA_BUNDLE
    """PEM bundle used when a trust store includes the default CA package; `store` means the
    package last imported with `tlsgw cert update-default-ca` (kept in `dir`)."""
    key_secret_file: str = DEFAULT_KEY_SECRET_FILE
    """File whose first line is the secret that seals private keys at rest; the systemd
    credential `tlsgw-key-secret` takes precedence when the service is given one."""
    encrypt_keys: bool = True
    """Store private keys only sealed with the key secret; `false` opts out (keys 0600 in clear)."""
    persist_keys: bool = True
    """Keep private keys in the store; `false` keeps none on disk (the product's "Persist
    Private Keys" off; keys then live only in the running gateway's memory)."""

    @property
    def default_ca_bundle_path(self) -> str:
        """The file `default_ca_bundle` designates."""
        if self.default_ca_bundle == DEFAULT_CA_FROM_STORE:
            return posixpath.join(self.dir, DEFAULT_CA_PACKAGE_FILE)
        return self.default_ca_bundle


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
    encrypt_then_mac: bool = False
    """Negotiate encrypt-then-MAC (RFC 7366) for CBC suites; off by default, as in the product."""
    cipher_suites: CipherSuiteCriteria = CipherSuiteCriteria()


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
    encrypt_then_mac: bool = False
    """Negotiate encrypt-then-MAC (RFC 7366) for CBC suites; off by default, as in the product."""
    cipher_suites: CipherSuiteCriteria = CipherSuiteCriteria()
    client_certificate_bypass_seconds: float = 3600.0
    """After a server asked for a client certificate (which tlsgw cannot present), flows to
    that site (address, port, SNI) are relayed untouched for this long."""
    pinning_failures: int = 3
    """Clients refusing the forged certificate this many times within
    `pinning_window_seconds` mark the site as pinned."""
    pinning_window_seconds: float = 600.0
    pinning_bypass_seconds: float = 3600.0
    """How long a pinned site is relayed untouched."""


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
    crl_files: tuple[str, ...] = ()
    """Certificate revocation lists (PEM or DER files): an upstream certificate they list as
    revoked is invalid."""


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
