"""Runtime with keys kept only in memory (issue 4, `pki.persist_keys: false`): a certificate
whose key this process was not given takes its proxy out of service, by config path,
instead of stopping the gateway; with the key, the proxy serves."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gateway.config.model import (
    ClientPolicy,
    ClientProxy,
    GatewayConfig,
    InspectionProfile,
    PkiSection,
    PortRange,
    ServerPolicy,
    ServerProxy,
    TrustStore,
)
from gateway.errors import ConfigError
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind
from gateway.pki.memory_keys import MemoryKeys
from gateway.pki.store import CertStore, EntryInfo, EntryKind
from gateway.runtime import ProcessMaterial, build_runtime, check_certificates
from tests.support.pki_factory import Issued, TestPki, ec_key

MEMORY = EntryInfo(EntryKind.CERTIFICATE, origin="imported", memory_key=True)


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create()


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "pki")


def _leaf(pki: TestPki, name: str) -> Issued:
    return pki.leaf([f"{name}.example.test"], key=ec_key())


def _config(store: CertStore, certificates: tuple[str, ...], *, client: bool = False) -> GatewayConfig:
    server = ServerProxy(name="web", destinations=(IPv4Network("192.0.2.10/32"),),
                         detection_ports=(PortRange(443, 443),), certificates=certificates)
    client_proxies: tuple[ClientProxy, ...] = ()
    client_policies: tuple[ClientPolicy, ...] = ()
    trust_stores: tuple[TrustStore, ...] = ()
    if client:
        client_proxies = (ClientProxy(name="out", signing_certificate="signing",
                                      detection_ports=(PortRange(443, 443),)),)
        trust_stores = (TrustStore(name="ts", include_default_ca=False),)
        client_policies = (ClientPolicy(name="out-policy", client_proxy="out", trust_store="ts"),)
    profile = InspectionProfile(name="default", server_policies=(ServerPolicy(name="web-in", server_proxy="web"),),
                                client_policies=client_policies)
    return GatewayConfig(pki=PkiSection(dir=str(store.directory)), server_proxies=(server,),
                         client_proxies=client_proxies, trust_stores=trust_stores, profiles=(profile,),
                         source="test.yaml")


def test_missing_memory_key_takes_the_proxy_out_of_service_instead_of_failing(store: CertStore,
                                                                              pki: TestPki) -> None:
    good, web = _leaf(pki, "good"), _leaf(pki, "web")
    store.save("good", good.cert, good.key)
    store.save("web", web.cert, None, info=MEMORY)
    config = _config(store, ("good", "web"))

    runtime = build_runtime(config)

    assert runtime.server_proxies == {}
    assert [i.path for i in runtime.missing_keys] == ["server_proxies[0].certificates[1]"]
    message = runtime.missing_keys[0].message
    assert "'web'" in message and "only in the gateway's memory" in message and "since it started" in message
    assert "server policy 'web-in' of profile 'default'" in message and "tlsgw cert import web" in message
    assert runtime.out_of_service == frozenset({("default", "server", "web-in")})
    assert runtime.config.profiles[0].server_policies[0].enabled is False  # the kernel stops steering it
    assert config.profiles[0].server_policies[0].enabled is True  # the configuration itself is untouched


def test_memory_key_given_to_the_process_puts_the_proxy_in_service(store: CertStore, pki: TestPki) -> None:
    web = _leaf(pki, "web")
    store.save("web", web.cert, None, info=MEMORY)
    process = ProcessMaterial()
    process.memory_keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]

    runtime = build_runtime(_config(store, ("web",)), process)

    assert list(runtime.server_proxies) == ["web"] and runtime.missing_keys == ()
    assert runtime.out_of_service == frozenset()
    assert runtime.server_proxies["web"].client_context("web.example.test")[0].key is not None
    assert runtime.config.profiles[0].server_policies[0].enabled is True


def test_keys_passed_for_one_build_override_the_process_keys(store: CertStore, pki: TestPki) -> None:
    web = _leaf(pki, "web")
    store.save("web", web.cert, None, info=MEMORY)
    candidate = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    process = ProcessMaterial()
    assert list(build_runtime(_config(store, ("web",)), process, candidate).server_proxies) == ["web"]
    assert build_runtime(_config(store, ("web",)), process).missing_keys != ()


def test_memory_signing_key_missing_takes_its_client_policies_out_of_service(store: CertStore, pki: TestPki) -> None:
    cert, key = create_ca("memory signing CA", key_kind=KeyKind.EC_P256, now=pki.now)
    store.save("signing", cert, None, info=MEMORY)
    web = _leaf(pki, "web")
    store.save("web", web.cert, web.key)
    runtime = build_runtime(_config(store, ("web",), client=True))
    assert runtime.client_proxies == {} and list(runtime.server_proxies) == ["web"]
    assert [i.path for i in runtime.missing_keys] == ["client_proxies[0].signing_certificate"]
    assert runtime.out_of_service == frozenset({("default", "client", "out-policy")})

    process = ProcessMaterial()
    process.memory_keys = MemoryKeys().with_keys([("signing", key)])
    assert list(build_runtime(_config(store, ("web",), client=True), process).client_proxies) == ["out"]


def test_check_config_warns_by_path_and_does_not_fail(store: CertStore, pki: TestPki) -> None:
    web = _leaf(pki, "web")
    store.save("web", web.cert, None, info=MEMORY)
    [warning] = check_certificates(_config(store, ("web",)))
    assert warning.path == "server_proxies[0].certificates[0]"
    assert "a gateway starting now would not have it" in warning.message
    assert "tlsgw cert import web" in warning.message


def test_missing_key_not_marked_memory_only_is_still_an_error(store: CertStore, pki: TestPki) -> None:
    web = _leaf(pki, "web")
    store.save("web", web.cert, None)
    for attempt in (lambda: build_runtime(_config(store, ("web",))), lambda: check_certificates(_config(store, ("web",)))):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert [i.path for i in caught.value.issues] == ["server_proxies[0].certificates[0]"]
