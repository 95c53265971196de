"""Issue 5 at load: what the running OpenSSL or the certificates cannot do is a
ConfigIssue at the proxy's field, and a valid runtime carries the parity variants."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gateway.config.model import (
    BulkCipher,
    CipherSuiteCriteria,
    ClientProxy,
    GatewayConfig,
    KeyExchange,
    PkiSection,
    PortRange,
    ServerProxy,
    TlsVersion,
)
from gateway.errors import ConfigError
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind
from gateway.pki.store import CertStore
from gateway.runtime import build_runtime, check_certificates
from gateway.tls.contexts import openssl_capabilities
from gateway.tls.versions import ParityFloor
from tests.support.pki_factory import TestPki

V = TlsVersion


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create()


@pytest.fixture
def store(tmp_path: Path, pki: TestPki) -> CertStore:
    store = CertStore(tmp_path / "pki")
    leaf = pki.leaf(["web1.example.test"])  # EC key
    store.save("web1", leaf.cert, leaf.key, chain=[pki.intermediate.cert])
    ca, ca_key = create_ca("Runtime TLS Test CA", key_kind=KeyKind.EC_P256)
    store.save("corp", ca, ca_key)
    return store


def _config(store: CertStore, server: dict[str, object] | None = None,
            client: dict[str, object] | None = None) -> GatewayConfig:
    servers = (ServerProxy("web1", (IPv4Network("192.0.2.10/32"),), (PortRange(443, 443),), ("web1",),
                           **(server or {})),)  # type: ignore[arg-type]
    clients = (ClientProxy("out", "corp", (PortRange(443, 443),), **(client or {})),)  # type: ignore[arg-type]
    return GatewayConfig(pki=PkiSection(dir=str(store.directory)), server_proxies=servers,
                         client_proxies=clients, source="test.yaml")


def _paths(config: GatewayConfig) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        check_certificates(config)
    return [issue.path for issue in caught.value.issues]


def test_rsa_only_suites_for_an_ecdsa_certificate_are_an_issue(store: CertStore) -> None:
    config = _config(store, server={"cipher_suites": CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA,))})
    assert _paths(config) == ["server_proxies[0].cipher_suites.key_exchange"]


def test_forged_certificates_need_an_ecdsa_suite(store: CertStore) -> None:
    config = _config(store, client={"cipher_suites": CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA,))})
    assert _paths(config) == ["client_proxies[0].cipher_suites.key_exchange"]


def test_protocol_this_openssl_lacks_is_an_issue(store: CertStore) -> None:
    missing = [v for v in V if v not in openssl_capabilities().protocols]
    if not missing:
        pytest.skip("the OpenSSL pyOpenSSL uses here still has every version, SSLv3 included")
    rsa = CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA, KeyExchange.ECDHE_ECDSA, KeyExchange.RSA))
    config = _config(store, client={"protocols": tuple(v for v in V if v >= missing[0]), "cipher_suites": rsa})
    assert "client_proxies[0].protocols" in _paths(config)


def test_bulk_cipher_this_openssl_lacks_is_an_issue(store: CertStore) -> None:
    if "ECDHE-ECDSA-DES-CBC3-SHA" in openssl_capabilities().suites:
        pytest.skip("the OpenSSL pyOpenSSL uses here still has 3DES")
    criteria = CipherSuiteCriteria(bulk=(BulkCipher.AES128_GCM, BulkCipher.TRIPLE_DES))
    assert _paths(_config(store, server={"cipher_suites": criteria})) == ["server_proxies[0].cipher_suites.bulk"]


def test_runtime_carries_parity_variants_and_upstream_contexts(store: CertStore) -> None:
    runtime = build_runtime(_config(store))
    material = runtime.client_proxies["out"]
    assert material.trusted_context is material.trusted_contexts.base
    assert material.upstream_context is material.upstream_contexts.base
    tls13_only = material.trusted_contexts.for_upstream("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert tls13_only is material.trusted_contexts.for_floor(ParityFloor(V.TLS1_3, True, True))
    assert material.untrusted_contexts.base is not material.trusted_contexts.base
    server = runtime.server_proxies["web1"]
    certificate, contexts = server.client_contexts_for("web1.example.test")
    assert certificate.name == "web1" and server.client_contexts["web1"] is contexts.base


def test_site_bypasses_survive_a_reload(store: CertStore) -> None:
    first = build_runtime(_config(store))
    reloaded = build_runtime(_config(store), first.process)
    assert reloaded.process.site_bypass is first.process.site_bypass
