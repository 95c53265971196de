"""`tlsgw check-config`: the exit status and messages a user scripts against (issue 2)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.lab.demo_pki import issue_server_certificate
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind
from gateway.pki.store import CertStore

REPO = Path(__file__).resolve().parents[3]


def tlsgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


def config(tmp_path: Path, **overrides: object) -> dict[str, object]:
    doc = yaml.safe_load((REPO / "examples" / "tlsgw.yaml").read_text())
    doc["pki"]["dir"] = str(tmp_path / "pki")
    doc.update(overrides)
    return doc


def write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "tlsgw.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_bad_reference_exits_2_naming_the_field_path(tmp_path: Path) -> None:
    doc = config(tmp_path)
    doc["profiles"][0]["client_policies"][0]["client_proxy"] = "outbund"  # type: ignore[index]
    doc["client_proxies"][0]["name"] = "x" * 200  # type: ignore[index]
    result = tlsgw("check-config", "--syntax-only", str(write(tmp_path, doc)))
    assert result.returncode == 2
    assert "profiles[0].client_policies[0].client_proxy: no client proxy named 'outbund'" in result.stderr
    assert "client_proxies[0].name" in result.stderr


def test_valid_syntax_but_missing_signing_certificate_exits_2(tmp_path: Path) -> None:
    doc = config(tmp_path)
    result = tlsgw("check-config", str(write(tmp_path, doc)))
    assert result.returncode == 2
    assert "client_proxies[0].signing_certificate" in result.stderr


def test_complete_configuration_is_valid_and_explained(tmp_path: Path) -> None:
    doc = config(tmp_path)
    store = CertStore(tmp_path / "pki")
    names = {doc["client_proxies"][0]["signing_certificate"]}  # type: ignore[index]
    for name in names:
        cert, key = create_ca("Test Signing", key_kind=KeyKind.EC_P256)
        store.save(name, cert, key)
    root, root_key = create_ca("Server Root", key_kind=KeyKind.EC_P256)
    for server_proxy in doc.get("server_proxies", []):  # type: ignore[attr-defined]
        for name in server_proxy["certificates"]:
            if not store.exists(name):
                leaf, leaf_key = issue_server_certificate(f"{name}.example", root, root_key, dt.datetime.now(dt.timezone.utc))
                store.save(name, leaf, leaf_key)
    for trust_store in doc["trust_stores"]:  # type: ignore[attr-defined]
        for name in trust_store.get("ca_certificates", []):
            store.save(name, create_ca(name, key_kind=KeyKind.EC_P256)[0])
    doc["client_proxies"] = doc["client_proxies"][:1]  # type: ignore[index]
    doc["profiles"][0]["client_policies"] = doc["profiles"][0]["client_policies"][:1]  # type: ignore[index]
    result = tlsgw("check-config", "--explain", str(write(tmp_path, doc)))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_signing_certificate_that_is_not_a_ca_is_rejected(tmp_path: Path) -> None:
    doc = config(tmp_path)
    ca, ca_key = create_ca("Root", key_kind=KeyKind.EC_P256)
    leaf, leaf_key = issue_server_certificate("leaf.example", ca, ca_key, dt.datetime.now(dt.timezone.utc))
    CertStore(tmp_path / "pki").save(doc["client_proxies"][0]["signing_certificate"], leaf, leaf_key)  # type: ignore[index]
    result = tlsgw("check-config", str(write(tmp_path, doc)))
    assert result.returncode == 2
    assert "client_proxies[0].signing_certificate: certificate" in result.stderr
    assert "is not a CA certificate" in result.stderr


def test_help_lists_every_command() -> None:
    result = tlsgw("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "rules", "cert", "demo"):
        assert command in result.stdout
