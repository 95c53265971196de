"""`tlsgw cert` against other tools (issue 4): requests signed by `openssl x509 -req`,
PKCS#12 files from `openssl pkcs12 -export` (modern and `-legacy`) and from Java's keytool
(several keys), keys encrypted by openssl, and sealed keys that openssl can open with the
key secret. No root, no network: subprocesses in a temporary directory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.config.model import PkiSection
from gateway.pki.keys import key_matches_certificate
from gateway.pki.keyseal import create_key_secret
from gateway.pki.store import CertStore, open_store

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Tool:
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp, capsys
        self.secret = tmp / "key-secret"
        create_key_secret(self.secret)
        self.config = tmp / "tlsgw.yaml"
        self.config.write_text(f"pki: {{dir: {tmp / 'pki'}, key_secret_file: {self.secret}}}\n")

    def __call__(self, *argv: str) -> str:
        code = main(["cert", "--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        return out

    def store(self) -> CertStore:
        return open_store(PkiSection(dir=str(self.tmp / "pki"), key_secret_file=str(self.secret)), environ={})


@pytest.fixture
def tool(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Tool:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return Tool(tmp_path, capsys)


@pytest.fixture
def openssl_ca(tmp_path: Path) -> tuple[Path, Path]:
    """A CA made entirely by openssl: ca.pem, ca.key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-subj", "/CN=openssl test CA", "-days", "30", cwd=tmp_path)
    return tmp_path / "ca.pem", tmp_path / "ca.key"


def _leaf(tmp: Path, stem: str, cn: str) -> tuple[Path, Path]:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{stem}.key",
            "-out", f"{stem}.csr", "-subj", f"/CN={cn}", cwd=tmp)
    openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "10", "-out", f"{stem}.pem", cwd=tmp)
    return tmp / f"{stem}.pem", tmp / f"{stem}.key"


@pytest.mark.parametrize("signing", [False, True], ids=["endpoint", "signing"])
def test_request_signed_by_openssl_is_imported_with_its_key(tool: Tool, openssl_ca: tuple[Path, Path],
                                                            signing: bool) -> None:
    tmp = tool.tmp
    tool("create-request", "web", "--cn", "www.example.com", "--dns", "*.example.com", "--key", "rsa2048",
         "-O", "Example Corp", "-C", "DE", *(["--signing"] if signing else []))
    tool("export-request", "web", "--out", str(tmp / "web.csr"))
    assert "verify OK" in subprocess.run(["openssl", "req", "-in", "web.csr", "-verify", "-noout"], cwd=tmp,
                                         capture_output=True, text=True).stderr
    openssl("x509", "-req", "-in", "web.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "10",
            "-copy_extensions", "copy", "-out", "web.pem", cwd=tmp)
    tool("import-signed", "web", str(tmp / "web.pem"))
    stored = tool.store().load("web")
    assert stored.certificate == x509.load_pem_x509_certificate((tmp / "web.pem").read_bytes())
    assert stored.key is not None and key_matches_certificate(stored.key, stored.certificate)
    constraints = stored.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is signing
    san = stored.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # An endpoint's host-name CN is added to its names (browsers match only those); a CA's is not.
    expected = ["*.example.com"] if signing else ["www.example.com", "*.example.com"]
    assert san.get_values_for_type(x509.DNSName) == expected
    tool("import-ca", "openssl-ca", str(tmp / "ca.pem"))
    listing = json.loads(tool("list", "--json"))
    assert {c["name"]: c["status"] for c in listing["certificates"]} == {"web": "valid", "openssl-ca": "valid"}


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
def test_pkcs12_from_openssl_is_imported_with_chain(tool: Tool, openssl_ca: tuple[Path, Path], legacy: bool) -> None:
    tmp = tool.tmp
    cert, key = _leaf(tmp, "shop", "shop.example")
    openssl("pkcs12", "-export", *(["-legacy"] if legacy else []), "-in", str(cert), "-inkey", str(key),
            "-certfile", "ca.pem", "-name", "shop", "-out", "shop.p12", "-passout", "pass:p12-password", cwd=tmp)
    info = subprocess.run(["openssl", "pkcs12", "-in", "shop.p12", "-info", "-noout", "-passin", "pass:p12-password",
                           *(["-legacy"] if legacy else [])], cwd=tmp, capture_output=True, text=True).stderr
    assert ("RC2" in info or "3DES" in info or "pbeWithSHA1" in info) if legacy else "AES-256" in info
    (tmp / "pw").write_text("p12-password\n")
    tool("import", "shop", str(tmp / "shop.p12"), "--password-file", str(tmp / "pw"))
    stored = tool.store().load("shop")
    assert stored.certificate == x509.load_pem_x509_certificate(cert.read_bytes())
    assert stored.chain == (x509.load_pem_x509_certificate((tmp / "ca.pem").read_bytes()),)
    assert stored.key is not None


@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs Java's keytool")
def test_keytool_keystore_with_two_keys_gets_base_name_plus_alias(tool: Tool, openssl_ca: tuple[Path, Path]) -> None:
    tmp = tool.tmp
    for stem in ("alpha", "beta"):
        cert, key = _leaf(tmp, stem, f"{stem}.example")
        openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", stem, "-out", f"{stem}.p12",
                "-passout", "pass:storepass", cwd=tmp)
        subprocess.run(["keytool", "-importkeystore", "-srckeystore", f"{stem}.p12", "-srcstoretype", "pkcs12",
                        "-srcstorepass", "storepass", "-destkeystore", "both.p12", "-deststoretype", "pkcs12",
                        "-deststorepass", "storepass", "-noprompt"], cwd=tmp, capture_output=True, check=True,
                       timeout=120)
    tool("import", "site", str(tmp / "both.p12"), "--password", "storepass")
    store = tool.store()
    assert store.names() == ("site_alpha", "site_beta")
    for stem in ("alpha", "beta"):
        entry = store.load(f"site_{stem}")
        assert entry.certificate.subject.rfc4514_string() == f"CN={stem}.example"
        assert entry.key is not None


@pytest.mark.parametrize("encrypt", [["pkcs8", "-topk8", "-v2", "aes256"], ["ec", "-aes256"]],
                         ids=["pkcs8-aes256", "traditional-ec-aes256"])
def test_key_encrypted_by_openssl_is_imported_with_its_password(tool: Tool, openssl_ca: tuple[Path, Path],
                                                                encrypt: list[str]) -> None:
    tmp = tool.tmp
    cert, key = _leaf(tmp, "mail", "mail.example")
    openssl(*encrypt, "-in", str(key), "-out", "mail.enc.key", "-passout", "pass:key-password", cwd=tmp)
    tool("import", "mail", str(cert), "--key", str(tmp / "mail.enc.key"), "--password", "key-password")
    assert tool.store().load("mail").key is not None


def test_sealed_and_exported_keys_open_with_openssl(tool: Tool, tmp_path: Path) -> None:
    tool("create-signing", "corp", "--cn", "Corp CA", "--key", "p256", "--exportable")
    sealed = tool.store().key_path("corp")
    assert sealed.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # Recovery without tlsgw: the key secret is the PKCS#8 password.
    recovered = openssl("pkey", "-in", str(sealed), "-passin", f"file:{tool.secret}", cwd=tmp_path)
    key = serialization.load_pem_private_key(recovered.encode(), None)
    cert = tool.store().load("corp").certificate
    assert key_matches_certificate(key, cert)  # type: ignore[arg-type]
    (tmp_path / "export-pw").write_text("export-password\n")
    tool("export", "corp", "--out", str(tmp_path / "corp.pem"), "--key-out", str(tmp_path / "corp.key"),
         "--key-password-file", str(tmp_path / "export-pw"))
    modulus = openssl("pkey", "-in", "corp.key", "-passin", "pass:export-password", "-pubout", cwd=tmp_path)
    assert modulus == openssl("x509", "-in", "corp.pem", "-noout", "-pubkey", cwd=tmp_path)
