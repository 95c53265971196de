from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from gateway.config.model import GatewayConfig, PkiSection, PortRange, ServerProxy
from gateway.errors import ConfigError
from gateway.pki.store import CertStore
from gateway.runtime import build_runtime, check_certificates
from gateway.tls.contexts import new_server_proxy_connection
from tests.support.pki_factory import Issued, TestPki, ec_key, rsa_key


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create()


@pytest.fixture(scope="module")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa_key(1024)


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "pki")


def _server_proxy(name: str, *certificates: str) -> ServerProxy:
    return ServerProxy(name=name, destinations=(IPv4Network("192.0.2.10/32"),),
                       detection_ports=(PortRange(443, 443),), certificates=certificates)


def _config(store: CertStore, *proxies: ServerProxy) -> GatewayConfig:
    return GatewayConfig(pki=PkiSection(dir=str(store.directory)), server_proxies=proxies, source="test.yaml")


def _save(store: CertStore, pki: TestPki, name: str, *names: str) -> Issued:
    leaf = pki.leaf(list(names) or [f"{name}.example.test"])
    store.save(name, leaf.cert, leaf.key, chain=[pki.intermediate.cert])
    return leaf


# Each breaks entry "bad" of the store in one way; the config names it second.
def _missing(store: CertStore, pki: TestPki) -> None:
    pass


def _without_key(store: CertStore, pki: TestPki) -> None:
    store.save("bad", pki.leaf(["bad.example.test"]).cert)


def _mismatched_key(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "bad")
    other = ec_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    store.key_path("bad").write_bytes(other)


def _key_readable_by_others(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "bad")
    os.chmod(store.key_path("bad"), 0o644)


def _encrypted_key(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "bad")
    encrypted = pki.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"secret"))
    store.key_path("bad").write_bytes(encrypted)


def _garbage_key(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "bad")
    store.key_path("bad").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")


BREAKAGES: dict[str, Callable[[CertStore, TestPki], None]] = {
    "missing": _missing,
    "without-key": _without_key,
    "mismatched-key": _mismatched_key,
    "key-readable-by-others": _key_readable_by_others,
    "encrypted-key": _encrypted_key,
    "garbage-key": _garbage_key,
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_unusable_server_certificate_is_an_issue_at_its_path(
    store: CertStore, pki: TestPki, breakage: Callable[[CertStore, TestPki], None]
) -> None:
    _save(store, pki, "good")
    breakage(store, pki)
    config = _config(store, _server_proxy("web", "good", "bad"))
    for attempt in (lambda: build_runtime(config), lambda: check_certificates(config)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert [issue.path for issue in caught.value.issues] == ["server_proxies[0].certificates[1]"]
        assert "'bad'" in caught.value.issues[0].message


def test_shared_broken_certificate_is_reported_for_every_proxy(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "good")
    _without_key(store, pki)
    config = _config(store, _server_proxy("https", "good", "bad"), _server_proxy("pop3s", "bad"))
    with pytest.raises(ConfigError) as caught:
        check_certificates(config)
    assert [i.path for i in caught.value.issues] == ["server_proxies[0].certificates[1]",
                                                     "server_proxies[1].certificates[0]"]


def test_key_refused_by_openssl_is_an_issue(store: CertStore, pki: TestPki, rsa1024: rsa.RSAPrivateKey) -> None:
    _save(store, pki, "good")
    weak = pki.leaf(["weak.example.test"], key=rsa1024)
    store.save("weak", weak.cert, weak.key)
    config = _config(store, _server_proxy("web", "good", "weak"))
    with pytest.raises(ConfigError) as caught:
        check_certificates(config)
    assert [i.path for i in caught.value.issues] == ["server_proxies[0].certificates[1]"]
    assert "'weak'" in caught.value.issues[0].message


def test_server_proxies_build_materials_picking_by_sni(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "www", "www.example.test")
    _save(store, pki, "wild", "*.example.test")
    _save(store, pki, "mail", "mail.example.test")
    config = _config(store, _server_proxy("https", "www", "wild"), _server_proxy("pop3s", "mail", "www"))
    check_certificates(config)
    runtime = build_runtime(config)

    assert runtime.untrusted_ca is None  # no client proxy, so no untrusted CA was made
    assert runtime.client_proxies == {}
    assert sorted(runtime.server_proxies) == ["https", "pop3s"]
    https = runtime.server_proxies["https"]
    assert https.proxy is config.server_proxies[0]
    assert [c.name for c in https.certificates.certificates] == ["www", "wild"]
    assert sorted(https.client_contexts) == ["wild", "www"]
    cert, context = https.client_context("shop.example.test")
    assert (cert.name, context) == ("wild", https.client_contexts["wild"])
    assert https.client_context(None)[0].name == "www"
    assert runtime.server_proxies["pop3s"].client_context("nowhere.test")[0].name == "mail"


def test_runtime_expiry_warnings_cover_server_certificates(store: CertStore, pki: TestPki) -> None:
    _save(store, pki, "www", "www.example.test")
    runtime = build_runtime(_config(store, _server_proxy("https", "www")))
    not_after = runtime.server_proxies["https"].certificates.first.certificate.not_valid_after_utc
    assert runtime.expiry_warnings(not_after - dt.timedelta(days=365)) == []
    assert runtime.expiry_warnings(not_after + dt.timedelta(days=1)) == [
        f"certificate 'www' of server proxy 'https' expired on {not_after.date().isoformat()}"
    ]


def _handshake(context: SSL.Context, sni: str | None, root_pem: str) -> bytes:
    """A real TLS handshake over memory BIOs: stdlib client (verifying chain and name)
    against a server-proxy connection. Returns the DER leaf the client was shown."""
    client_context = ssl.create_default_context(cadata=root_pem)
    if sni is None:
        client_context.check_hostname = False
    to_client, to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=sni)
    server = new_server_proxy_connection(context, None)
    for _ in range(20):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        server.bio_write(to_server.read())
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            to_client.write(server.bio_read(65536))
        except SSL.WantReadError:
            pass
    else:
        raise AssertionError("handshake did not finish")
    leaf = client.getpeercert(binary_form=True)
    assert leaf is not None
    return leaf


@pytest.mark.parametrize(
    ("sni", "expected"),
    [("www.example.test", "www"), ("shop.example.test", "wild"), (None, "www")],
    ids=["exact", "wildcard", "no-sni-first"],
)
def test_client_context_presents_the_picked_certificate_with_its_chain(
    store: CertStore, pki: TestPki, sni: str | None, expected: str
) -> None:
    leaves = {"www": _save(store, pki, "www", "www.example.test"), "wild": _save(store, pki, "wild", "*.example.test")}
    material = build_runtime(_config(store, _server_proxy("https", "www", "wild"))).server_proxies["https"]
    _, context = material.client_context(sni)
    shown = _handshake(context, sni, pki.root.cert_pem.decode())
    assert shown == leaves[expected].cert.public_bytes(serialization.Encoding.DER)
