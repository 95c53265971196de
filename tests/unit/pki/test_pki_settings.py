"""The `pki` settings of issue 4 as the loader reads them and the daemon uses them: sealed
keys opened with the key secret on every load, `default_ca_bundle: store`, and the
untrusted CA under every key policy."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.config.model import GatewayConfig, PkiSection, PortRange, ServerProxy, TrustStore
from gateway.errors import ConfigError
from gateway.pki.ca import UNTRUSTED_CA_NAME, ensure_untrusted_ca
from gateway.pki.keyseal import KeyProtection, create_key_secret, load_key_secret
from gateway.pki.store import CertStore, KeyState, open_store
from gateway.runtime import build_runtime
from tests.support.pki_factory import TestPki


def test_loader_reads_the_new_pki_settings() -> None:
    config = parse_config("pki: {dir: /srv/pki, key_secret_file: /etc/tlsgw/s, encrypt_keys: false, "
                          "persist_keys: false, default_ca_bundle: store}")
    assert config.pki == PkiSection(dir="/srv/pki", key_secret_file="/etc/tlsgw/s", encrypt_keys=False,
                                    persist_keys=False, default_ca_bundle="store")
    assert config.pki.default_ca_bundle_path == "/srv/pki/default-ca-package.pem"


def test_defaults_seal_keys_and_keep_them() -> None:
    pki = parse_config("{}").pki
    assert pki.encrypt_keys and pki.persist_keys and pki.key_secret_file == "/etc/tlsgw/key-secret"
    assert pki.default_ca_bundle_path == pki.default_ca_bundle


@pytest.mark.parametrize(("text", "path"), [
    ("pki: {default_ca_bundle: bundle.pem}", "pki.default_ca_bundle"),
    ("pki: {key_secret_file: secret}", "pki.key_secret_file"),
    ("pki: {encrypt_keys: maybe}", "pki.encrypt_keys"),
    ("pki: {persist_key: false}", "pki.persist_key"),
], ids=["relative-bundle", "relative-secret", "not-a-boolean", "misspelt"])
def test_bad_pki_settings_are_issues_at_their_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert [i.path for i in err.value.issues] == [path]


def _server_config(tmp_path: Path, **pki: object) -> GatewayConfig:
    proxy = ServerProxy(name="web", destinations=(IPv4Network("192.0.2.10/32"),),
                        detection_ports=(PortRange(443, 443),), certificates=("web",))
    section = PkiSection(dir=str(tmp_path / "pki"), **pki)  # type: ignore[arg-type]
    return GatewayConfig(pki=section, server_proxies=(proxy,), source="t.yaml")


def test_daemon_opens_sealed_keys_with_the_configured_secret(
    tmp_path: Path, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    create_key_secret(tmp_path / "secret")
    config = _server_config(tmp_path, key_secret_file=str(tmp_path / "secret"))
    leaf = pki.leaf(["www.example.test"])
    open_store(config.pki).save("web", leaf.cert, leaf.key)
    runtime = build_runtime(config)
    assert runtime.server_proxies["web"].certificates.certificates[0].key is not None
    # The same store without the secret: the reference is an issue naming the way to give it.
    other = _server_config(tmp_path, key_secret_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as err:
        build_runtime(other)
    assert err.value.issues[0].path == "server_proxies[0].certificates[0]"
    assert "key secret" in err.value.issues[0].message


def test_daemon_takes_the_secret_from_a_systemd_credential(
    tmp_path: Path, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    create_key_secret(creds / "tlsgw-key-secret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = _server_config(tmp_path, key_secret_file=str(tmp_path / "absent"))
    leaf = pki.leaf(["www.example.test"])
    open_store(config.pki).save("web", leaf.cert, leaf.key)
    assert CertStore(config.pki.dir).key_path("web").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    assert build_runtime(config).server_proxies["web"].certificates.certificates[0].key is not None


def test_trust_store_uses_the_store_package_when_configured(tmp_path: Path, pki: TestPki) -> None:
    config = GatewayConfig(pki=PkiSection(dir=str(tmp_path / "pki"), default_ca_bundle="store"),
                           trust_stores=(TrustStore("default", include_default_ca=True),), source="t.yaml")
    with pytest.raises(ConfigError) as err:
        build_runtime(config)
    assert "update-default-ca" in err.value.issues[0].message
    CertStore(tmp_path / "pki").write_default_ca_package(pki.root.cert_pem)
    assert build_runtime(config).trust_anchors["default"].certificates == (pki.root.cert,)


def test_untrusted_ca_is_written_under_every_key_policy(tmp_path: Path) -> None:
    """Its key signs only what clients must reject (gateway.pki.keyseal): never refused."""
    strict = CertStore(tmp_path / "a", KeyProtection(None, encrypt=True, persist=False))
    assert ensure_untrusted_ca(strict).key is not None
    create_key_secret(tmp_path / "secret")
    secret = load_key_secret(tmp_path / "secret")
    sealing = CertStore(tmp_path / "b", KeyProtection(secret, encrypt=True))
    ca = ensure_untrusted_ca(sealing)
    assert sealing.key_state(UNTRUSTED_CA_NAME, ca.certificate)[0] is KeyState.SEALED


def test_opting_out_of_key_encryption_is_warned_on_every_load(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.daemon import warn_weakenings

    with caplog.at_level("WARNING"):
        warn_weakenings(GatewayConfig(pki=PkiSection(encrypt_keys=False)))
        warn_weakenings(GatewayConfig())
    assert [r.getMessage() for r in caplog.records if "encrypt_keys" in r.getMessage()] == [
        "pki.encrypt_keys is false: private keys written to /var/lib/tlsgw/pki are not encrypted at rest"]
