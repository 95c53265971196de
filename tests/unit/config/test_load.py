from __future__ import annotations

import copy
import re
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.load import load_config, parse_config
from gateway.config.model import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_KEY_EXCHANGES,
    DEFAULT_MACS,
    BulkCipher,
    CipherSuiteCriteria,
    DecryptedService,
    GatewayConfig,
    KeyExchange,
    MacAlgorithm,
    NetfilterBackendName,
    OnExceed,
    PortRange,
    TlsVersion,
)
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tlsgw.yaml"

_BASE: dict[str, Any] = {
    "gateway": {
        "segments": [{"name": "lan-wan", "client_port": "eth1", "server_port": "eth2", "profile": "default"}],
    },
    "server_proxies": [
        {"name": "web1", "destinations": ["192.0.2.10"], "detection_ports": ["443"], "certificates": ["web1"]},
    ],
    "client_proxies": [
        {"name": "outbound", "signing_certificate": "corp-signing", "detection_ports": ["443"]},
        {"name": "mail", "signing_certificate": "corp-signing", "detection_ports": ["993-995"]},
    ],
    "decryption_policies": [{"name": "default", "domains": ["*.bank.example"], "categories": ["finance"]}],
    "trust_stores": [{"name": "default"}],
    "profiles": [
        {
            "name": "default",
            "server_policies": [{"name": "web1-in", "server_proxy": "web1"}],
            "client_policies": [
                {"name": "out", "client_proxy": "outbound", "decryption_policy": "default", "trust_store": "default"},
                {"name": "mail", "client_proxy": "mail", "trust_store": "default"},
            ],
        }
    ],
    "categories": {"finance": ["*.bank.example"]},
}

DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _set(tree: Any, path: str, value: object) -> None:
    """Set `a.b[1].c` in a nested dict/list tree; an index one past the end appends."""
    steps: list[str | int] = [k if k else int(i) for k, i in _STEP.findall(path)]
    node = tree
    for step in steps[:-1]:
        node = node[step]
    last = steps[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def config_with(*edits: tuple[str, object]) -> str:
    tree = copy.deepcopy(_BASE)
    for path, value in edits:
        _set(tree, path, value)
    return yaml.safe_dump(tree, sort_keys=False)


def issue_paths(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [issue.path for issue in caught.value.issues]


def test_base_config_loads() -> None:
    # The table below is only meaningful if the unedited base is valid.
    config = parse_config(config_with())
    assert config.profiles[0].client_policies[1].decryption_policy is None


def test_example_file_loads_every_section() -> None:
    config = load_config(str(EXAMPLE))
    assert config.source == str(EXAMPLE)
    assert config.gateway.segments[0].profile == "default"
    assert config.server_proxies and config.client_proxies and config.decryption_policies
    assert config.trust_stores and config.profiles and config.categories
    assert config.profiles[0].server_policies and config.profiles[0].client_policies


BAD_CONFIGS: list[tuple[list[tuple[str, object]], list[str]]] = [
    # references
    ([("profiles[0].client_policies[1].client_proxy", "outbund")], ["profiles[0].client_policies[1].client_proxy"]),
    (
        [("profiles[0].client_policies[0].decryption_policy", "nope")],
        ["profiles[0].client_policies[0].decryption_policy"],
    ),
    ([("profiles[0].client_policies[0].trust_store", "nope")], ["profiles[0].client_policies[0].trust_store"]),
    ([("profiles[0].server_policies[0].server_proxy", "web2")], ["profiles[0].server_policies[0].server_proxy"]),
    ([("gateway.segments[0].profile", "defualt")], ["gateway.segments[0].profile"]),
    ([("decryption_policies[0].categories", ["finance", "gambling"])], ["decryption_policies[0].categories[1]"]),
    # keys and types
    ([("gateway.listen_prot", 8443)], ["gateway.listen_prot"]),
    ([("client_proxies[0].tcp_reset", True)], ["client_proxies[0].tcp_reset"]),
    ([("colours", "blue")], ["colours"]),
    ([("gateway.listen_port", "8443")], ["gateway.listen_port"]),
    ([("profiles[0].client_policies[0].enabled", "yes")], ["profiles[0].client_policies[0].enabled"]),
    ([("server_proxies", {"name": "web1"})], ["server_proxies", "profiles[0].server_policies[0].server_proxy"]),
    ([("profiles[0].client_policies[0].trust_store", DELETE)], ["profiles[0].client_policies[0].trust_store"]),
    ([("client_proxies[0].signing_certificate", DELETE)], ["client_proxies[0].signing_certificate"]),
    # names
    (
        [
            ("trust_stores[0].name", "de/fault"),
            ("profiles[0].client_policies[0].trust_store", "de/fault"),
            ("profiles[0].client_policies[1].trust_store", "de/fault"),
        ],
        ["trust_stores[0].name"],
    ),
    (
        [
            ("trust_stores[0].name", "t" * 65),
            ("profiles[0].client_policies[0].trust_store", "t" * 65),
            ("profiles[0].client_policies[1].trust_store", "t" * 65),
        ],
        ["trust_stores[0].name"],
    ),
    (
        [("client_proxies[1].name", "m" * 129), ("profiles[0].client_policies[1].client_proxy", "m" * 129)],
        ["client_proxies[1].name"],
    ),
    ([("profiles[0].name", " default"), ("gateway.segments[0].profile", " default")], ["profiles[0].name"]),
    ([("client_proxies[0].description", "d" * 513)], ["client_proxies[0].description"]),
    ([("trust_stores[1]", {"name": "default"})], ["trust_stores[1].name"]),
    (
        [
            (
                "gateway.segments[1]",
                {"name": "lan-wan", "client_port": "eth3", "server_port": "eth4", "profile": "default"},
            )
        ],
        ["gateway.segments[1].name"],
    ),
    ([("trust_stores[0].ca_certificates", ["partner", "CA"])], ["trust_stores[0].ca_certificates[1]"]),
    ([("client_proxies[0].signing_certificate", "ca")], ["client_proxies[0].signing_certificate"]),
    ([("server_proxies[0].certificates", ["web1", "we|b2"])], ["server_proxies[0].certificates[1]"]),
    # policies of a profile
    ([("client_proxies[1].detection_ports", ["400-500"])], ["profiles[0].client_policies[1].client_proxy"]),
    ([("profiles[0].client_policies[1].client_proxy", "outbound")], ["profiles[0].client_policies[1].client_proxy"]),
    ([("profiles[0].client_policies[1].name", "web1-in")], ["profiles[0].client_policies[1].name"]),
    ([("profiles[0].client_policies[1].name", "out")], ["profiles[0].client_policies[1].name"]),
    # ports
    ([("client_proxies[1].detection_ports", ["995-993"])], ["client_proxies[1].detection_ports[0]"]),
    ([("client_proxies[1].detection_ports", ["0"])], ["client_proxies[1].detection_ports[0]"]),
    ([("client_proxies[1].detection_ports", [65536])], ["client_proxies[1].detection_ports[0]"]),
    ([("client_proxies[1].detection_ports", ["99x"])], ["client_proxies[1].detection_ports[0]"]),
    ([("client_proxies[1].detection_ports", [])], ["client_proxies[1].detection_ports"]),
    ([("gateway.listen_port", 65536)], ["gateway.listen_port"]),
    # addresses
    ([("server_proxies[0].destinations", ["192.0.2.10/24"])], ["server_proxies[0].destinations[0]"]),
    ([("server_proxies[0].destinations", ["2001:db8::1"])], ["server_proxies[0].destinations[0]"]),
    ([("server_proxies[0].destinations", ["192.0.2.300"])], ["server_proxies[0].destinations[0]"]),
    ([("server_proxies[0].destinations", [])], ["server_proxies[0].destinations"]),
    (
        [("profiles[0].client_policies[0].never_decrypt", ["10.0.9.1/24"])],
        ["profiles[0].client_policies[0].never_decrypt[0]"],
    ),
    # protocols
    ([("client_proxies[0].protocols", ["TLSv1.0", "TLSv1.2"])], ["client_proxies[0].protocols"]),
    ([("server_proxies[0].protocols", ["SSLv3", "TLSv1.3"])], ["server_proxies[0].protocols"]),
    ([("server_proxies[0].protocols", ["TLSv1.2", "TLS1.3"])], ["server_proxies[0].protocols[1]"]),
    ([("server_proxies[0].protocols", [])], ["server_proxies[0].protocols"]),
    # other values
    ([("client_proxies[0].decrypted_service", "https")], ["client_proxies[0].decrypted_service"]),
    ([("client_proxies[0].min_key_length", 1000)], ["client_proxies[0].min_key_length"]),
    ([("client_proxies[0].min_key_length", 2000)], ["client_proxies[0].min_key_length"]),
    (
        [("gateway.limits", {"max_concurrent": 0, "on_exceed": "drop"})],
        ["gateway.limits.max_concurrent", "gateway.limits.on_exceed"],
    ),
    (
        [("gateway.netfilter", {"backend": "nft", "route_table": 254})],
        ["gateway.netfilter.backend", "gateway.netfilter.route_table"],
    ),
    (
        [("gateway.handshake_timeout", 0), ("gateway.idle_timeout", -1)],
        ["gateway.handshake_timeout", "gateway.idle_timeout"],
    ),
    ([("gateway.drain_timeout", -1)], ["gateway.drain_timeout"]),
    ([("gateway.drain_timeout", 3601)], ["gateway.drain_timeout"]),
    ([("gateway.drain_timeout", "10s")], ["gateway.drain_timeout"]),
    ([("gateway.drain_timeout", True)], ["gateway.drain_timeout"]),
    ([("gateway.drain_timeout", float("nan"))], ["gateway.drain_timeout"]),
    ([("gateway.inspection_log", "inspection.jsonl")], ["gateway.inspection_log"]),
    ([("server_proxies[0].certificates", [])], ["server_proxies[0].certificates"]),
    ([("server_proxies[0].certificates", [f"c{i}" for i in range(1001)])], ["server_proxies[0].certificates"]),
    # domains
    ([("decryption_policies[0].domains", ["mail.*.example"])], ["decryption_policies[0].domains[0]"]),
    ([("decryption_policies[0].domains", ["*bank.example"])], ["decryption_policies[0].domains[0]"]),
    ([("decryption_policies[0].domains", ["-bank.example"])], ["decryption_policies[0].domains[0]"]),
    ([("categories.finance", ["bank..example"])], ["categories.finance[0]"]),
    # segments
    ([("gateway.segments[0].server_port", "eth1")], ["gateway.segments[0].server_port"]),
    ([("gateway.segments[0].client_port", "br0")], ["gateway.segments[0].client_port"]),
    ([("gateway.segments[0].client_port", "a-very-long-ifname")], ["gateway.segments[0].client_port"]),
    (
        [
            (
                "gateway.segments[1]",
                {"name": "second", "client_port": "eth3", "server_port": "eth2", "profile": "default"},
            )
        ],
        ["gateway.segments[1].server_port"],
    ),
    ([("gateway.segments[0].vlans", [0])], ["gateway.segments[0].vlans", "gateway.segments[0].vlans[0]"]),
    ([("gateway.segments[0].vlans", [10])], ["gateway.segments[0].vlans"]),
]


@pytest.mark.parametrize(
    ("edits", "expected"),
    BAD_CONFIGS,
    ids=[f"{'+'.join(p for p, _ in edits)}={str(edits[0][1])[:20]}" for edits, _ in BAD_CONFIGS],
)
def test_bad_config_is_rejected_at_its_path(edits: list[tuple[str, object]], expected: list[str]) -> None:
    assert sorted(issue_paths(config_with(*edits))) == sorted(expected)


def test_every_problem_is_reported_at_once() -> None:
    text = config_with(
        ("profiles[0].client_policies[1].client_proxy", "outbund"),
        ("gateway.listen_prot", 1),
        ("server_proxies[0].destinations", ["192.0.2.10/24"]),
        ("client_proxies[0].protocols", ["TLSv1.0", "TLSv1.3"]),
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="multi.yaml")
    error = caught.value
    assert len(error.issues) >= 3
    assert {i.path for i in error.issues} == {
        "profiles[0].client_policies[1].client_proxy",
        "gateway.listen_prot",
        "server_proxies[0].destinations[0]",
        "client_proxies[0].protocols",
    }
    assert error.source == "multi.yaml"
    assert str(error).startswith("multi.yaml: 4 problem(s):")


def test_unknown_reference_message_reads_like_the_docs() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("profiles[0].client_policies[1].client_proxy", "outbund")))
    assert str(caught.value.issues[0]) == (
        "profiles[0].client_policies[1].client_proxy: no client proxy named 'outbund'; did you mean 'outbound'?"
    )


def test_unknown_key_suggests_the_closest_known_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("gateway.listen_prot", 1)))
    assert "did you mean 'listen_port'" in caught.value.issues[0].message


def test_non_contiguous_protocols_name_the_missing_version() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("client_proxies[0].protocols", ["TLSv1.1", "TLSv1.3"])))
    assert caught.value.issues[0].message.startswith("TLSv1.2 must also be enabled")


def test_overlapping_ports_message_names_both_policies() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("client_proxies[1].detection_ports", ["400-500"])))
    message = caught.value.issues[0].message
    assert "'mail'" in message and "'out'" in message and "443" in message


def test_duplicate_yaml_key_is_reported() -> None:
    text = config_with() + "trust_stores: []\n"
    assert "trust_stores" in issue_paths(text)


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "gateway: [\n", "- a list\n", "gateway:\n\tbridge: br0\n"],
    ids=["empty", "comment-only", "unclosed-bracket", "top-level-list", "tab-indent"],
)
def test_unusable_document_is_one_issue(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert len(caught.value.issues) == 1 and caught.value.issues[0].path == ""


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))
    assert caught.value.source == str(missing)
    assert str(missing) in str(caught.value)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tlsgw.yaml"
    path.write_text(config_with())
    assert load_config(str(path)).source == str(path)


def test_values_are_converted_to_the_model() -> None:
    config = parse_config(
        config_with(
            ("profiles[0].client_policies[0].always_decrypt", ["10.0.5.7", "10.1.0.0/16"]),
            ("server_proxies[0].detection_ports", [443, "8443-8445", " 9000 - 9001 "]),
            ("server_proxies[0].certificates", ["web1", "web1-alt", "web1"]),
            ("server_proxies[0].protocols", ["TLSv1.3", "SSLv3", "TLSv1.1", "TLSv1.0", "TLSv1.2"]),
            # SSLv3 has only static-RSA suites, so enabling it needs the rsa key exchange.
            ("server_proxies[0].cipher_suites", {"key_exchange": ["ecdhe-rsa", "rsa"]}),
            ("server_proxies[0].decrypted_service", "pop3"),
            ("decryption_policies[0].domains", ["*.Bank.Example", "Update.Vendor.Example.", "*.bank.example"]),
            ("gateway.limits", {"max_concurrent": 5, "on_exceed": "block"}),
            ("gateway.netfilter", {"backend": "iptables"}),
            ("gateway.handshake_timeout", 2.5),
        ),
        source="x.yaml",
    )
    assert config.profiles[0].client_policies[0].always_decrypt == (
        IPv4Network("10.0.5.7/32"),
        IPv4Network("10.1.0.0/16"),
    )
    proxy = config.server_proxies[0]
    assert proxy.detection_ports == (PortRange(443, 443), PortRange(8443, 8445), PortRange(9000, 9001))
    assert proxy.certificates == ("web1", "web1-alt")  # duplicates dropped silently
    assert proxy.protocols == tuple(TlsVersion)
    assert proxy.decrypted_service is DecryptedService.POP3
    assert config.decryption_policies[0].domains == ("*.bank.example", "update.vendor.example")
    assert config.gateway.limits.on_exceed is OnExceed.BLOCK and config.gateway.limits.max_concurrent == 5
    assert config.gateway.netfilter.backend is NetfilterBackendName.IPTABLES
    assert config.gateway.handshake_timeout == 2.5
    assert config.source == "x.yaml"


def test_omitted_values_take_the_model_defaults() -> None:
    config = parse_config(config_with())
    default = GatewayConfig()
    assert config.gateway.listen_port == default.gateway.listen_port
    assert config.gateway.netfilter == default.gateway.netfilter
    assert config.pki == default.pki
    assert config.client_proxies[0].protocols == (TlsVersion.TLS1_2, TlsVersion.TLS1_3)
    assert config.client_proxies[0].min_key_length == 2048
    assert config.trust_stores[0].include_default_ca is True


def test_names_at_the_length_limit_are_accepted() -> None:
    store, proxy = "t" * 64, "with spaces_and-dashes " + "m" * 105
    config = parse_config(
        config_with(
            ("trust_stores[0].name", store),
            ("profiles[0].client_policies[0].trust_store", store),
            ("profiles[0].client_policies[1].trust_store", store),
            ("client_proxies[1].name", proxy),
            ("profiles[0].client_policies[1].client_proxy", proxy),
        )
    )
    assert len(config.client_proxies[1].name) == 128
    assert config.trust_store(store).name == store


def test_same_ports_in_different_profiles_are_allowed() -> None:
    config = parse_config(
        config_with(
            (
                "profiles[1]",
                {
                    "name": "other",
                    "client_policies": [{"name": "out", "client_proxy": "outbound", "trust_store": "default"}],
                },
            ),
        )
    )
    assert [p.name for p in config.profiles] == ["default", "other"]


# -- issue 5: TLS settings per proxy --------------------------------------------------

TLS_BAD_CONFIGS: list[tuple[list[tuple[str, object]], list[str]]] = [
    ([("client_proxies[0].cipher_suites", {"key_exchange": []})], ["client_proxies[0].cipher_suites.key_exchange"]),
    ([("client_proxies[0].cipher_suites", {"bulk": None})], ["client_proxies[0].cipher_suites.bulk"]),
    ([("server_proxies[0].cipher_suites", {"mac": []})], ["server_proxies[0].cipher_suites.mac"]),
    ([("client_proxies[0].cipher_suites", {"bulk": ["aes128-gcm", "aes-128-gcm"]})],
     ["client_proxies[0].cipher_suites.bulk[1]"]),
    ([("client_proxies[0].cipher_suites", {"kex": ["rsa"]})], ["client_proxies[0].cipher_suites.kex"]),
    ([("client_proxies[0].cipher_suites", ["rsa"])], ["client_proxies[0].cipher_suites"]),
    ([("client_proxies[0].cipher_suites", {"bulk": ["aes128-cbc"]})], ["client_proxies[0].cipher_suites.bulk"]),
    ([("server_proxies[0].protocols", ["TLSv1.0", "TLSv1.1", "TLSv1.2"]),
      ("server_proxies[0].cipher_suites", {"mac": ["sha256"]})], ["server_proxies[0].cipher_suites"]),
    ([("client_proxies[0].protocols", ["SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2"])], ["client_proxies[0].cipher_suites"]),
    ([("client_proxies[0].encrypt_then_mac", "yes")], ["client_proxies[0].encrypt_then_mac"]),
    ([("server_proxies[0].encrypt_then_mac", 1)], ["server_proxies[0].encrypt_then_mac"]),
    ([("client_proxies[0].pinning_failures", 0)], ["client_proxies[0].pinning_failures"]),
    ([("client_proxies[0].client_certificate_bypass_seconds", -1)],
     ["client_proxies[0].client_certificate_bypass_seconds"]),
    ([("client_proxies[0].pinning_window_seconds", "10m")], ["client_proxies[0].pinning_window_seconds"]),
    ([("client_proxies[0].pinning_bypass_seconds", 0)], ["client_proxies[0].pinning_bypass_seconds"]),
    # One mistake, one issue: a bad version list is not also reported as starving suites.
    ([("client_proxies[0].protocols", ["TLSv1.0", "TLSv1.3"]),
      ("client_proxies[0].cipher_suites", {"mac": ["sha256"]})], ["client_proxies[0].protocols"]),
]


@pytest.mark.parametrize(("edits", "paths"), TLS_BAD_CONFIGS, ids=[
    "no-key-exchange", "null-bulk", "no-mac-server-proxy", "unknown-bulk-word", "unknown-criterion",
    "criteria-not-a-mapping", "tls13-without-aead", "tls10-without-sha1-cbc", "ssl3-without-rsa",
    "etm-not-boolean", "etm-not-boolean-server", "pinning-failures-zero", "negative-bypass-seconds",
    "window-not-a-number", "zero-pinning-bypass", "bad-protocols-no-cascade",
])
def test_tls_settings_problems_name_the_field(edits: list[tuple[str, object]], paths: list[str]) -> None:
    assert issue_paths(config_with(*edits)) == paths


def test_empty_criterion_message_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("client_proxies[0].cipher_suites", {"key_exchange": []})))
    message = caught.value.issues[0].message
    assert "at least one key exchange" in message and "ecdhe-ecdsa" in message


def test_tls_settings_are_converted_to_the_model() -> None:
    config = parse_config(config_with(
        ("client_proxies[0].cipher_suites", {"key_exchange": ["rsa", "ecdhe-rsa", "rsa"], "bulk": ["aes256-gcm"]}),
        ("client_proxies[0].encrypt_then_mac", True),
        ("client_proxies[0].client_certificate_bypass_seconds", 60),
        ("client_proxies[0].pinning_failures", 5),
        ("client_proxies[0].pinning_window_seconds", 30.5),
        ("client_proxies[0].pinning_bypass_seconds", 7200),
        ("server_proxies[0].cipher_suites", {"mac": ["sha384"]}),
    ))
    proxy = config.client_proxies[0]
    assert proxy.cipher_suites == CipherSuiteCriteria(
        key_exchange=(KeyExchange.RSA, KeyExchange.ECDHE_RSA), bulk=(BulkCipher.AES256_GCM,), mac=DEFAULT_MACS)
    assert proxy.encrypt_then_mac is True
    assert (proxy.client_certificate_bypass_seconds, proxy.pinning_failures, proxy.pinning_window_seconds,
            proxy.pinning_bypass_seconds) == (60.0, 5, 30.5, 7200.0)
    assert config.server_proxies[0].cipher_suites.mac == (MacAlgorithm.SHA384,)
    assert config.server_proxies[0].cipher_suites.key_exchange == DEFAULT_KEY_EXCHANGES


def test_tls_settings_default_to_forward_secret_suites_without_3des() -> None:
    config = parse_config(config_with())
    for proxy in (config.client_proxies[0], config.server_proxies[0]):
        assert proxy.encrypt_then_mac is False
        assert proxy.cipher_suites == CipherSuiteCriteria()
        assert KeyExchange.RSA not in proxy.cipher_suites.key_exchange
        assert not {BulkCipher.TRIPLE_DES, BulkCipher.DES} & set(proxy.cipher_suites.bulk)
    client = config.client_proxies[0]
    assert (client.client_certificate_bypass_seconds, client.pinning_failures) == (3600.0, 3)


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT_DRAIN_TIMEOUT), (0, 0.0), (2.5, 2.5), (3600, 3600.0)])
def test_drain_timeout_takes_seconds_and_zero(value: object, expected: float) -> None:
    """0 is valid here, unlike the other timeouts: it means no drain (cut at once)."""
    edits = [] if value is None else [("gateway.drain_timeout", value)]
    assert parse_config(config_with(*edits)).gateway.drain_timeout == expected


def test_bad_drain_timeout_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(("gateway.drain_timeout", -5)), source="x.yaml")
    assert str(caught.value.issues[0]) == (
        "gateway.drain_timeout: must be between 0 (no drain) and 3600 seconds, got -5")
