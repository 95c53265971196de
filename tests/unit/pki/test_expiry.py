from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Network

import pytest

from gateway.config.model import ClientProxy, GatewayConfig, PortRange, ServerProxy
from gateway.pki.expiry import EXPIRY_WARNING_DAYS, expiry_warnings
from gateway.pki.store import StoredCert
from tests.support.pki_factory import EPOCH, TestPki, issue

NOW = EPOCH  # 2030-06-01 12:00 UTC


def _server_proxy(name: str, *certificates: str) -> ServerProxy:
    return ServerProxy(name=name, destinations=(IPv4Network("192.0.2.10/32"),),
                       detection_ports=(PortRange(443, 443),), certificates=certificates)


def _client_proxy(name: str, signing: str) -> ClientProxy:
    return ClientProxy(name=name, signing_certificate=signing, detection_ports=(PortRange(443, 443),))


def _stored(pki: TestPki, name: str, not_after: dt.datetime) -> StoredCert:
    cert = issue(f"{name}.example.test", key=pki.leaf_key, names=(f"{name}.example.test",),
                 not_before=NOW - dt.timedelta(days=400), not_after=not_after, now=NOW).cert
    return StoredCert(name, cert, (), pki.leaf_key)


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create(now=NOW)


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (dt.timedelta(days=365), None),
        (dt.timedelta(days=EXPIRY_WARNING_DAYS, seconds=1), None),
        (dt.timedelta(days=EXPIRY_WARNING_DAYS), "certificate 'web1' of server proxy 'web' expires in 30 days (2030-07-01)"),
        (dt.timedelta(days=12, hours=3), "certificate 'web1' of server proxy 'web' expires in 12 days (2030-06-13)"),
        (dt.timedelta(days=1), "certificate 'web1' of server proxy 'web' expires in 1 day (2030-06-02)"),
        (dt.timedelta(hours=5), "certificate 'web1' of server proxy 'web' expires within a day (2030-06-01 17:00 UTC)"),
        (dt.timedelta(0), "certificate 'web1' of server proxy 'web' expired on 2030-06-01"),
        (dt.timedelta(days=-3), "certificate 'web1' of server proxy 'web' expired on 2030-05-29"),
    ],
    ids=["far", "just-outside-window", "window-edge", "days", "one-day", "hours", "expires-now", "expired"],
)
def test_server_certificate_warning_by_time_left(pki: TestPki, left: dt.timedelta, expected: str | None) -> None:
    config = GatewayConfig(server_proxies=(_server_proxy("web", "web1"),))
    cert = _stored(pki, "web1", NOW + left)
    assert expiry_warnings(config, {"web": [cert]}, NOW) == ([expected] if expected else [])


def test_every_expiring_certificate_is_named_with_its_proxy(pki: TestPki) -> None:
    soon = _stored(pki, "soon", NOW + dt.timedelta(days=3))
    fine = _stored(pki, "fine", NOW + dt.timedelta(days=300))
    gone = _stored(pki, "gone", NOW - dt.timedelta(days=1))
    ca = _stored(pki, "corp-ca", NOW + dt.timedelta(days=20))
    config = GatewayConfig(
        server_proxies=(_server_proxy("https", "soon", "fine", "gone"), _server_proxy("pop3s", "soon")),
        client_proxies=(_client_proxy("out", "corp-ca"), _client_proxy("https", "corp-ca")),
    )
    warnings = expiry_warnings(
        config,
        {"https": [soon, fine, gone], "pop3s": [soon]},
        NOW,
        {"out": ca, "https": ca},
    )
    assert warnings == [
        "certificate 'soon' of server proxy 'https' expires in 3 days (2030-06-04)",
        "certificate 'gone' of server proxy 'https' expired on 2030-05-31",
        "certificate 'soon' of server proxy 'pop3s' expires in 3 days (2030-06-04)",
        "signing certificate 'corp-ca' of client proxy 'out' expires in 20 days (2030-06-21)",
        "signing certificate 'corp-ca' of client proxy 'https' expires in 20 days (2030-06-21)",
    ]


def test_proxies_without_loaded_certificates_are_skipped(pki: TestPki) -> None:
    config = GatewayConfig(server_proxies=(_server_proxy("web", "web1"),),
                           client_proxies=(_client_proxy("out", "corp-ca"),))
    assert expiry_warnings(config, {}, NOW) == []
    stale = _stored(pki, "web1", NOW - dt.timedelta(days=1))
    assert expiry_warnings(config, {"other": [stale]}, NOW, {"other": stale}) == []
