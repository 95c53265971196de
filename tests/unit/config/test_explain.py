from __future__ import annotations

from pathlib import Path

from gateway.config.explain import explain
from gateway.config.load import load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tlsgw.yaml"


def test_explain_follows_segment_to_profile_to_policies() -> None:
    text = explain(load_config(str(EXAMPLE)))
    lines = text.splitlines()
    segment = next(i for i, line in enumerate(lines) if line.startswith("Segment lan-wan"))
    profile = next(i for i, line in enumerate(lines) if "Profile default" in line)
    server = next(i for i, line in enumerate(lines) if "Server policy web1-in" in line)
    client = next(i for i, line in enumerate(lines) if "Client policy out " in line)
    assert segment < profile < server < client
    assert "*.bank.example" in text and "8443-8445" in text and "10.0.5.7/32" in text
    assert "listener port 8443" in lines[segment]


def test_explain_names_unused_profiles_and_empty_gateway() -> None:
    text = explain(parse_config("profiles:\n  - name: spare\n"))
    assert "No segments" in text
    assert "Profiles not used by any segment: spare" in text


_TLS_CONFIG = """
gateway:
  segments: [{name: lan-wan, client_port: eth1, server_port: eth2, profile: default}]
server_proxies:
  - {name: web1, destinations: [192.0.2.10], detection_ports: ["443"], certificates: [web1],
     protocols: [TLSv1.2], cipher_suites: {key_exchange: [ecdhe-rsa], bulk: [aes256-gcm]}}
client_proxies:
  - {name: outbound, signing_certificate: corp, detection_ports: ["443"], encrypt_then_mac: true,
     protocols: [TLSv1.1, TLSv1.2, TLSv1.3], pinning_failures: 5}
trust_stores: [{name: default}]
profiles:
  - name: default
    server_policies: [{name: web1-in, server_proxy: web1}]
    client_policies: [{name: out, client_proxy: outbound, trust_store: default}]
"""


def test_explain_shows_each_proxys_exact_suite_lists() -> None:
    lines = [line.strip() for line in explain(parse_config(_TLS_CONFIG)).splitlines()]
    server = lines[lines.index("Server policy web1-in (enabled): server proxy web1"):
                   next(i for i, line in enumerate(lines) if line.startswith("Client policy out"))]
    assert "TLS 1.2 and below suites: ECDHE-RSA-AES256-GCM-SHA384" in server
    assert not any(line.startswith("TLS 1.3 suites") for line in server)  # TLS 1.3 not enabled there
    client_suites = next(line for line in lines if line.startswith("TLS 1.2 and below suites: ECDHE-ECDSA"))
    # TLS 1.1 enabled: the SHA-1 CBC suites are in, and OpenSSL is told the security level.
    assert "ECDHE-RSA-AES128-SHA:" in client_suites and client_suites.endswith(":@SECLEVEL=0")
    assert "TLS 1.3 suites: TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256" in lines
    assert any("encrypt-then-MAC on" in line for line in lines)
    assert any("(5 refusals within 600s)" in line for line in lines)
