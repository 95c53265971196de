"""Pure parts of the lab: nginx config rendering, access log parsing, names."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from gateway.lab.netns import NetnsError, check_ifname, render_hosts
from gateway.lab.origin import (
    ACCESS_LOG_FIELDS,
    OriginError,
    OriginOptions,
    OriginPaths,
    OriginSite,
    parse_access_log_line,
    render_nginx_conf,
)
from gateway.lab.topology import Lab, bridge_mac_for

PATHS = OriginPaths(Path("/tmp/origin"))
SHOP = OriginSite("shop.example", Path("/pki/shop.pem"), Path("/pki/shop.key"), "shop\n")
BANK = OriginSite("www.bank.example", Path("/pki/bank.pem"), Path("/pki/bank.key"), "bank\n")


def _line(**overrides: str) -> str:
    raw = {name: "" for name in ACCESS_LOG_FIELDS}
    raw.update(
        remote_addr="192.0.2.10", remote_port="40000", server_addr="192.0.2.20", server_port="443",
        server_name="shop.example", host="shop.example", ssl_server_name="shop.example",
        ssl_protocol="TLSv1.3", ssl_cipher="TLS_AES_128_GCM_SHA256", ssl_session_reused=".",
        request="GET / HTTP/1.1", status="200", body_bytes_sent="5", connection="7", connection_requests="1",
    )
    raw.update(overrides)
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("resumption", "expected"),
    [
        (True, ["ssl_session_cache shared:tlsgw_lab:1m;", "ssl_session_tickets on;"]),
        (False, ["ssl_session_cache off;", "ssl_session_tickets off;"]),
    ],
    ids=["resumption-on", "resumption-off"],
)
def test_session_resumption_option_sets_cache_and_tickets(resumption: bool, expected: list[str]) -> None:
    conf = render_nginx_conf([SHOP], OriginOptions(session_resumption=resumption), PATHS)

    assert all(line in conf for line in expected)


def test_first_site_is_the_only_default_server() -> None:
    conf = render_nginx_conf([SHOP, BANK], OriginOptions(http_port=80), PATHS)

    assert conf.count("default_server") == 2  # its HTTPS and its HTTP listen
    assert conf.index("default_server") < conf.index('server_name "www.bank.example"')


@pytest.mark.parametrize(
    "sites",
    [[], [SHOP, SHOP], [OriginSite("bad;name", SHOP.cert_file, SHOP.key_file, "")]],
    ids=["no-sites", "duplicate-name", "semicolon-in-name"],
)
def test_render_refuses_invalid_sites(sites: list[OriginSite]) -> None:
    with pytest.raises(OriginError):
        render_nginx_conf(sites, OriginOptions(), PATHS)


@pytest.mark.parametrize(("flag", "reused"), [("r", True), (".", False)], ids=["reused", "full-handshake"])
def test_access_log_line_parses_session_reuse(flag: str, reused: bool) -> None:
    entry = parse_access_log_line(_line(ssl_session_reused=flag))

    assert entry.ssl_session_reused is reused
    assert entry.remote_addr == IPv4Address("192.0.2.10")
    assert (entry.status, entry.connection) == (200, 7)


@pytest.mark.parametrize("line", ["not json", _line(status="-"), "{}"], ids=["garbage", "bad-status", "missing-fields"])
def test_access_log_line_rejects_malformed(line: str) -> None:
    with pytest.raises(OriginError):
        parse_access_log_line(line)


def test_hosts_file_keeps_localhost_and_lists_each_name() -> None:
    text = render_hosts({"shop.example": "192.0.2.20"})

    assert text.splitlines()[0] == "127.0.0.1\tlocalhost"
    assert "192.0.2.20\tshop.example" in text.splitlines()


def test_bridge_mac_is_locally_administered_unicast_and_stable() -> None:
    mac = bridge_mac_for("abc123")

    assert mac == bridge_mac_for("abc123") != bridge_mac_for("abc124")
    assert int(mac.split(":")[0], 16) & 0b11 == 0b10


@pytest.mark.parametrize("run_id", ["", "toolong123", "UPPER", "a-b"], ids=["empty", "too-long", "uppercase", "dash"])
def test_lab_rejects_run_id_that_would_break_names(run_id: str) -> None:
    with pytest.raises(NetnsError):
        Lab(run_id=run_id)


@pytest.mark.parametrize("name", ["", "sixteen-chars-xx", "a/b", "a b"], ids=["empty", "too-long", "slash", "space"])
def test_interface_name_rules(name: str) -> None:
    with pytest.raises(NetnsError):
        check_ifname(name)
