"""The daemon's side of keys kept only in memory (issue 4): `import-keys` over the control
socket (checked, kept, never echoed), the status it reports, and the rules that follow."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import (
    GatewayConfig,
    GatewaySection,
    InspectionProfile,
    PkiSection,
    PortRange,
    Segment,
    ServerPolicy,
    ServerProxy,
)
from gateway.control.commands import format_status
from gateway.control.permissions import Peer
from gateway.control.protocol import ControlFailure, ErrorCode
from gateway.daemon import Daemon, steering_inputs
from gateway.pki.keys import private_key_to_pem
from gateway.pki.memory_keys import certificate_key_id, key_to_wire
from gateway.pki.store import CertStore, EntryInfo, EntryKind
from gateway.runtime import build_runtime
from tests.support.pki_factory import Issued, TestPki, ec_key

ADMIN = Peer(pid=4242, uid=0, gid=0)


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create()


@pytest.fixture
def web(pki: TestPki) -> Issued:
    return pki.leaf(["web.example.test"], key=ec_key())


@pytest.fixture
def config(tmp_path: Path, web: Issued) -> GatewayConfig:
    store = CertStore(tmp_path / "pki")
    store.save("web", web.cert, None, info=EntryInfo(EntryKind.CERTIFICATE, origin="imported", memory_key=True))
    segment = Segment(name="lan", client_port="eth1", server_port="eth2", profile="default")
    proxy = ServerProxy(name="web", destinations=(IPv4Network("192.0.2.10/32"),),
                        detection_ports=(PortRange(443, 443),), certificates=("web",))
    profile = InspectionProfile(name="default", server_policies=(ServerPolicy(name="web-in", server_proxy="web"),))
    return GatewayConfig(gateway=GatewaySection(segments=(segment,)),
                         pki=PkiSection(dir=str(store.directory), persist_keys=False),
                         server_proxies=(proxy,), profiles=(profile,), source="test.yaml")


@pytest.fixture
def daemon(config: GatewayConfig) -> Daemon:
    daemon = Daemon(config_path="test.yaml", apply_rules=False)
    daemon.runtime = build_runtime(config, daemon.process)
    return daemon


def _import(daemon: Daemon, params: dict[str, Any]) -> Any:
    return asyncio.run(daemon.import_keys(params, ADMIN))


def test_imported_key_is_kept_and_the_next_build_serves_with_it(daemon: Daemon, config: GatewayConfig,
                                                                 web: Issued, caplog: pytest.LogCaptureFixture) -> None:
    assert daemon.current().out_of_service  # as after a restart
    caplog.set_level(logging.DEBUG)
    answer = _import(daemon, {"pki_dir": config.pki.dir, "keys": [key_to_wire("web", web.key, web.cert)]})  # type: ignore[arg-type]
    assert answer["names"] == ["web"] and answer["held"] == 1
    assert daemon.process.memory_keys.key_for(web.cert) is not None
    rebuilt = build_runtime(config, daemon.process)  # what the reload the CLI asks for builds
    assert list(rebuilt.server_proxies) == ["web"] and not rebuilt.out_of_service
    key_pem = private_key_to_pem(web.key).decode()  # type: ignore[arg-type]
    body = "".join(key_pem.splitlines()[1:-1])[48:90]  # past the header all P-256 keys share
    assert "'web'" in caplog.text and body not in caplog.text and body not in repr(answer)


def test_rules_switch_when_a_key_puts_a_server_policy_back_in_service(daemon: Daemon, config: GatewayConfig,
                                                                      web: Issued) -> None:
    without = daemon.current().config
    _import(daemon, {"keys": [key_to_wire("web", web.key, web.cert)]})  # type: ignore[arg-type]
    with_key = build_runtime(config, daemon.process).config
    assert steering_inputs(without) != steering_inputs(with_key)  # the kernel steers its flows again
    assert steering_inputs(with_key) == steering_inputs(config)


@pytest.mark.parametrize(("params", "fragment"), [
    ({"keys": []}, "no key given"),
    ({"keys": "x"}, "expected a list"),
    ({"keys": "MISMATCH"}, "not the key of the certificate"),
    ({"keys": "NO-CERT"}, "must come with its key"),
    ({"pki_dir": "/elsewhere", "keys": "OK"}, "not /elsewhere"),
], ids=["empty", "not-a-list", "other-key", "no-certificate", "other-store"])
def test_bad_imports_are_refused_and_nothing_is_kept(daemon: Daemon, pki: TestPki, web: Issued,
                                                     params: dict[str, Any], fragment: str) -> None:
    other = ec_key()
    items = {"MISMATCH": [key_to_wire("web", other, web.cert)], "NO-CERT": [key_to_wire("web", web.key)],  # type: ignore[arg-type]
             "OK": [key_to_wire("web", web.key, web.cert)]}  # type: ignore[arg-type]
    params = {**params, "keys": items.get(params["keys"], params["keys"]) if isinstance(params["keys"], str)
              else params["keys"]}
    with pytest.raises(ControlFailure) as caught:
        _import(daemon, params)
    assert caught.value.code is ErrorCode.INVALID and fragment in caught.value.message
    assert len(daemon.process.memory_keys) == 0


def test_status_names_the_missing_key_and_the_keys_held(daemon: Daemon, config: GatewayConfig, web: Issued) -> None:
    async def status() -> dict[str, Any]:
        return daemon.status()

    before = asyncio.run(status())
    assert before["keys"]["persist"] is False and before["keys"]["in_memory"] == []
    assert [m["path"] for m in before["keys"]["missing"]] == ["server_proxies[0].certificates[0]"]
    assert before["keys"]["out_of_service"] == [{"profile": "default", "kind": "server", "name": "web-in"}]
    assert before["policies"][0]["out_of_service"] is True
    text = format_status(before)
    assert "OUT OF SERVICE: key missing" in text and "NO KEY:     server_proxies[0].certificates[0]" in text
    assert "import it again" in text

    _import(daemon, {"keys": [key_to_wire("web", web.key, web.cert)]})  # type: ignore[arg-type]
    daemon.runtime = build_runtime(config, daemon.process)
    after = asyncio.run(status())
    assert after["keys"]["in_memory"] == [{"name": "web", "key_id": certificate_key_id(web.cert)}]
    assert after["keys"]["missing"] == [] and after["policies"][0]["out_of_service"] is False
    text = format_status(after)
    assert "1 private key(s) in memory only" in text and "NO KEY" not in text and "OUT OF SERVICE" not in text


def test_status_of_a_gateway_without_memory_keys_is_unchanged(daemon: Daemon, config: GatewayConfig) -> None:
    persisted = dataclasses.replace(config, pki=dataclasses.replace(config.pki, persist_keys=True),
                                    server_proxies=(), profiles=())
    daemon.runtime = build_runtime(persisted, daemon.process)

    async def status() -> dict[str, Any]:
        return daemon.status()

    assert "keys:" not in format_status(asyncio.run(status()))
