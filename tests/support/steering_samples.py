"""Sample configurations for the steering plan, built from the model (not from YAML).

Shared by the golden tests (`tests/unit/netfilter/`) and the live `nft -c` check
(`tests/integration/test_nft_backend.py`), so every golden script is also proven to
parse in the real nft.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    NetfilterSettings,
    PortRange,
    Segment,
    ServerPolicy,
    ServerProxy,
    SslInspection,
)

BRIDGE_MAC = "02:00:00:00:00:01"


def net(text: str) -> IPv4Network:
    return IPv4Network(text)


def port(low: int, high: int | None = None) -> PortRange:
    return PortRange(low, low if high is None else high)


OUTBOUND = ClientProxy(name="outbound", signing_certificate="corp-signing", detection_ports=(port(443),))
MAIL = ClientProxy(name="mail", signing_certificate="corp-signing", detection_ports=(port(993), port(995)))
ALT_WEB = ClientProxy(
    name="alt-web", signing_certificate="corp-signing", detection_ports=(port(444), port(8443, 8444), port(8440, 8443))
)
WEB1 = ServerProxy(
    name="web1",
    destinations=(net("192.0.2.10/32"), net("198.51.100.0/28")),
    detection_ports=(port(443), port(8443)),
    certificates=("web1",),
)
WEB2 = ServerProxy(
    name="web2", destinations=(net("192.0.2.11/32"),), detection_ports=(port(443),), certificates=("web2",)
)


def _policy(name: str, proxy: str, enabled: bool = True) -> ClientPolicy:
    return ClientPolicy(name=name, client_proxy=proxy, trust_store="default", enabled=enabled)


DEFAULT_PROFILE = InspectionProfile(name="default", client_policies=(_policy("out", "outbound"),))


def one_segment() -> GatewayConfig:
    """The DESIGN.md section 3 recipe: one segment, port 443, listener 8443."""
    return GatewayConfig(
        gateway=GatewaySection(
            bridge="br0",
            segments=(Segment(name="lan-wan", client_port="eth1", server_port="eth2", profile="default"),),
        ),
        client_proxies=(OUTBOUND,),
        profiles=(DEFAULT_PROFILE,),
    )


def full() -> GatewayConfig:
    """Everything plan handles: filters, VLANs, port merging, server proxies, skipped segments."""
    mixed = InspectionProfile(
        name="mixed",
        client_policies=(
            _policy("out", "outbound"),
            _policy("alt", "alt-web"),  # 444 and 8440-8444 merge with 443 into 443-444, 8440-8444
            _policy("mail-off", "mail", enabled=False),  # disabled: its ports are not steered
        ),
        server_policies=(
            ServerPolicy(name="web1-in", server_proxy="web1"),
            ServerPolicy(name="web2-in", server_proxy="web2", enabled=False),
        ),
    )
    empty = InspectionProfile(name="empty")
    return GatewayConfig(
        gateway=GatewaySection(
            bridge="br-gw",
            listen_port=9000,
            netfilter=NetfilterSettings(table="tlsgw_test", mark=0x2, route_table=200),
            segments=(
                Segment(
                    name="lan-wan",
                    client_port="eth1",
                    server_port="eth2",
                    profile="mixed",
                    # adjacent /24s collapse into one /23
                    sources=(net("10.0.1.0/24"), net("10.0.0.0/24")),
                ),
                Segment(name="dmz", client_port="eth3", server_port="eth4", profile="empty"),
                Segment(
                    name="guest",
                    client_port="eth5",
                    server_port="eth6",
                    profile="default",
                    vlans=(10, 20),
                    destinations=(net("203.0.113.0/24"),),
                ),
            ),
        ),
        server_proxies=(WEB1, WEB2),
        client_proxies=(OUTBOUND, MAIL, ALT_WEB),
        profiles=(DEFAULT_PROFILE, mixed, empty),
    )


def no_inspection() -> GatewayConfig:
    """Client inspection switched off and no server policies: nothing is steered."""
    base = one_segment()
    return GatewayConfig(
        gateway=GatewaySection(
            bridge="br0", segments=base.gateway.segments, ssl_inspection=SslInspection(client=False, server=True)
        ),
        client_proxies=base.client_proxies,
        profiles=base.profiles,
    )


# The same configuration as `one_segment()`, as an operator would write it.
ONE_SEGMENT_YAML = """\
gateway:
  bridge: br0
  segments:
    - {name: lan-wan, client_port: eth1, server_port: eth2, profile: default}
client_proxies:
  - {name: outbound, signing_certificate: corp-signing, detection_ports: ["443"]}
trust_stores:
  - {name: default}
profiles:
  - name: default
    client_policies:
      - {name: out, client_proxy: outbound, trust_store: default}
"""


SAMPLES = {"one_segment": one_segment, "full": full, "no_inspection": no_inspection}
