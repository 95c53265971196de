"""`tlsgw cert ...` (issue 4): every operation and every refusal, through the real command
line parser, on a store in a temporary directory with the example configuration."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gateway.cli import build_parser, main
from gateway.control.protocol import Command, ErrorCode, Request, Response
from gateway.control.server import ControlSocketError
from gateway.pki.memory_keys import keys_from_wire, public_key_id
from gateway.pki.ca import is_ca
from gateway.pki.keys import key_matches_certificate
from gateway.pki.keyseal import create_key_secret
from gateway.pki.store import CertStore, EntryKind, KeyState, open_store
from gateway.config.model import PkiSection
from tests.support.pkcs12_files import merge_pkcs12, pkcs12_file
from tests.support.pki_factory import Issued, TestPki, ec_key

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "import-password"


@dataclass
class Cli:
    tmp: Path
    config: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def pki_dir(self) -> Path:
        return self.tmp / "pki"

    def store(self) -> CertStore:
        return open_store(PkiSection(dir=str(self.pki_dir), key_secret_file=str(self.tmp / "secret")), environ={})

    def __call__(self, *argv: str, ok: bool = True) -> str:
        """Run `tlsgw cert --config CONFIG ARGV...`; return stdout (stderr on failure)."""
        code = main(["cert", "--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        if ok:
            assert code == 0, err
            return out
        assert code != 0, out
        return err

    def listing(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in json.loads(self("list", "--json"))["certificates"]}

    def write(self, name: str, data: bytes, mode: int = 0o600) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        os.chmod(path, mode)
        return str(path)

    def set_pki(self, **settings: object) -> None:
        doc = yaml.safe_load(self.config.read_text())
        doc["pki"].update(settings)
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, pki: TestPki) -> Cli:
    """The example configuration (it references corp-signing, web1, web1-alt, partner-root),
    a store under tmp_path, a key secret, and the test root as the default CA package."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    create_key_secret(tmp_path / "secret")
    doc = yaml.safe_load((REPO / "examples" / "tlsgw.yaml").read_text())
    doc["pki"] = {"dir": str(tmp_path / "pki"), "key_secret_file": str(tmp_path / "secret"),
                  "default_ca_bundle": str(pki.write_root(tmp_path / "bundle.pem"))}
    config = tmp_path / "tlsgw.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Cli(tmp_path, config, capsys)


@pytest.fixture
def web(pki: TestPki) -> Issued:
    return pki.leaf(["www.example.test"], key=ec_key())


def _cert(text: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(text.encode())


# --- help -----------------------------------------------------------------------------------------

CERT_COMMANDS = ["create-signing", "create-request", "export-request", "import-signed", "import", "import-ca",
                 "list", "show", "export", "delete", "delete-request", "replace", "update-default-ca",
                 "create-key-secret", "seal-keys"]


@pytest.mark.parametrize("command", CERT_COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["cert", command, "--help"])
    assert exit_.value.code == 0
    assert f"tlsgw cert {command}" in capsys.readouterr().out


# --- create-signing ---------------------------------------------------------------------------------


def test_create_signing_with_every_option(cli: Cli) -> None:
    out = cli("create-signing", "corp-signing", "--cn", "Example Inspection CA", "--key", "p384", "--days", "400",
              "--exportable", "--email", "pki@example.com", "--ou", "IT", "-O", "Example Corp", "-L", "Saint Louis",
              "--st", "Missouri", "-C", "us", "--dns", "login.example.com", "--dns", "*.corp.example.com",
              "--rfc822", "susan@example.com")
    assert "created signing certificate 'corp-signing'" in out and "sealed" in out
    stored = cli.store().load("corp-signing")
    cert = stored.certificate
    assert is_ca(cert) and stored.key is not None and stored.info.exportable
    assert stored.key.curve.name == "secp384r1"  # type: ignore[union-attr]
    assert {a.oid: a.value for a in cert.subject} == {
        NameOID.COMMON_NAME: "Example Inspection CA", NameOID.EMAIL_ADDRESS: "pki@example.com",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "IT", NameOID.ORGANIZATION_NAME: "Example Corp",
        NameOID.LOCALITY_NAME: "Saint Louis", NameOID.STATE_OR_PROVINCE_NAME: "Missouri", NameOID.COUNTRY_NAME: "US"}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["login.example.com", "*.corp.example.com"]
    assert san.get_values_for_type(x509.RFC822Name) == ["susan@example.com"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 401
    assert cli.listing()["corp-signing"]["status"] == "valid"


def test_create_signing_rsa_4096_is_offered(cli: Cli) -> None:
    assert "rsa4096" in build_parser().parse_args(["cert", "create-signing", "x", "--cn", "x", "--key", "rsa4096"]).key


BAD_NAMES = {"reserved-ca": "ca", "reserved-ca-upper": "CA", "slash": "a/b", "dot": "web.example",
             "empty": "", "too-long": "x" * 129, "leading-space": " web"}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused(cli: Cli, name: str) -> None:
    err = cli("create-signing", name, "--cn", "x", "--key", "p256", ok=False)
    assert "name" in err
    assert cli.store().names() == ()


def test_names_with_spaces_are_accepted(cli: Cli) -> None:
    cli("create-signing", "cert 34", "--cn", "x", "--key", "p256")
    assert cli.store().names() == ("cert 34",)


def test_duplicate_name_is_refused_and_the_first_is_kept(cli: Cli) -> None:
    cli("create-signing", "corp-signing", "--cn", "first", "--key", "p256")
    err = cli("create-signing", "corp-signing", "--cn", "second", "--key", "p256", ok=False)
    assert "already exists" in err and "unique" in err
    assert cli.store().load("corp-signing").certificate.subject.rfc4514_string() == "CN=first"


def test_bad_subject_fields_are_all_reported(cli: Cli) -> None:
    err = cli("create-signing", "x", "--cn", "x", "-C", "USA", "--email", "nope", "--dns", "www.*.example.com",
              "--key", "p256", ok=False)
    assert "two-letter" in err and "e-mail" in err and "leftmost" in err
    assert cli.store().names() == ()


def test_without_a_key_secret_keys_are_refused_naming_the_ways_out(cli: Cli) -> None:
    (cli.tmp / "secret").unlink()
    err = cli("create-signing", "x", "--cn", "x", "--key", "p256", ok=False)
    assert "create-key-secret" in err and "--key-secret-file" in err and "encrypt_keys: false" in err
    assert not cli.pki_dir.exists() or cli.store().names() == ()


def test_opting_out_of_encryption_stores_the_key_in_clear_0600(cli: Cli) -> None:
    (cli.tmp / "secret").unlink()
    cli.set_pki(encrypt_keys=False)
    assert "unencrypted" in cli("create-signing", "x", "--cn", "x", "--key", "p256")
    key_path = cli.pki_dir / "x" / "key.pem"
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.pki_dir.stat().st_mode) == 0o700


# --- pki.persist_keys: false: keys only in the running gateway's memory ------------------------------


class FakeGateway:
    """Stands in for the running gateway's control socket (`gateway.control.handover._ask`):
    records every request, answers as configured. `running=False`: nobody answers."""

    def __init__(self) -> None:
        self.running = True
        self.requests: list[Request] = []
        self.refuse: Response | None = None
        self.reload_answer = Response.success({"message": "configuration reloaded from tlsgw.yaml"})
        self.held: list[dict[str, str]] = []

    def __call__(self, socket_path: str, request: Request, timeout: float) -> Response:
        if not self.running:
            raise ControlSocketError(f"{socket_path} does not exist: is tlsgw running?")
        self.requests.append(request)
        if request.command is Command.IMPORT_KEYS:
            if self.refuse is not None:
                return self.refuse
            for name, key in keys_from_wire(request.params["keys"], require_certificate=True):
                self.held.append({"name": name, "key_id": public_key_id(key.public_key())})
            return Response.success({"names": [k["name"] for k in request.params["keys"]]})
        if request.command is Command.RELOAD:
            return self.reload_answer
        assert request.command is Command.STATUS
        return Response.success({"keys": {"persist": False, "in_memory": self.held, "missing": []}})

    def commands(self) -> list[Command]:
        return [r.command for r in self.requests]

    def restart(self) -> None:
        self.held = []


@pytest.fixture
def gateway(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()
    monkeypatch.setattr("gateway.control.handover._ask", fake)
    cli.set_pki(persist_keys=False)
    return fake


def _import_web(cli: Cli, web: Issued, *extra: str, ok: bool = True) -> str:
    return cli("import", "web1", cli.write("w.pem", web.cert_pem), "--key", cli.write("w.key", web.key_pem),
               "--socket", str(cli.tmp / "control.sock"), *extra, ok=ok)


def test_memory_import_hands_the_key_to_the_gateway_and_writes_only_the_certificate(
        cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    out = _import_web(cli, web)
    assert "imported certificate 'web1'" in out
    assert "lives only in the memory of the running gateway" in out and "imported again after every restart" in out
    assert "configuration reloaded" in out
    assert gateway.commands() == [Command.IMPORT_KEYS, Command.RELOAD]  # the key first, the reload last
    [item] = gateway.requests[0].params["keys"]
    assert item["name"] == "web1" and item["certificate"] == web.cert_pem.decode()
    assert gateway.requests[0].params["pki_dir"] == str(cli.pki_dir)
    assert not cli.store().key_path("web1").exists()
    assert cli.store().load_info("web1").memory_key
    assert "".join(web.key_pem.decode().splitlines()[1:-1])[48:90] not in out
    assert cli.listing()["web1"]["key"] == "key in gateway memory only (re-import after restart)"
    assert "key in gateway memory only (re-import after restart)" in cli("show", "web1")


def test_memory_import_without_a_running_gateway_is_refused_and_writes_nothing(
        cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    gateway.running = False
    err = _import_web(cli, web, ok=False)
    assert "persist_keys is false" in err and "running gateway" in err and "start tlsgw" in err
    assert "nothing was imported" in err
    assert cli.store().names() == ()


def test_memory_import_refused_by_the_gateway_writes_nothing(cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    gateway.refuse = Response.failure(ErrorCode.DENIED, "`tlsgw cert import` (handing keys to the gateway) needs "
                                                        "membership of tlsgw-admin; you have role operator")
    err = _import_web(cli, web, ok=False)
    assert "refused" in err and "tlsgw-admin" in err and "nothing was imported" in err
    assert cli.store().names() == ()


def test_after_a_restart_the_listing_says_import_again_and_the_same_import_does_it(
        cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    _import_web(cli, web)
    gateway.restart()
    text = cli("list")
    assert "no key: import it again" in text and "broken key" in text
    assert "web1: no key:" in text and "tlsgw cert import web1" in text
    gateway.running = False
    assert "no running gateway reported holding it" in cli("list")
    gateway.running = True

    before = cli.store().info_path("web1").read_bytes()
    out = _import_web(cli, web)
    assert "is already in the store" in out and "handed to the gateway again" in out
    assert cli.store().info_path("web1").read_bytes() == before  # the store is unchanged
    assert cli.listing()["web1"]["key"] == "key in gateway memory only (re-import after restart)"


def test_importing_a_memory_only_certificate_once_keys_are_persisted_stores_its_key(
        cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    _import_web(cli, web)
    cli.set_pki(persist_keys=True)
    out = _import_web(cli, web)
    assert "is now stored with it" in out
    stored = cli.store().load("web1")
    assert stored.key is not None and not stored.info.memory_key
    assert cli.listing()["web1"]["key"] == "sealed"


def test_memory_import_under_a_taken_name_with_another_certificate_is_refused(
        cli: Cli, web: Issued, pki: TestPki, gateway: FakeGateway) -> None:
    _import_web(cli, web)
    other = pki.leaf(["other.example.test"], key=ec_key())
    err = cli("import", "web1", cli.write("o.pem", other.cert_pem), "--key", cli.write("o.key", other.key_pem),
              ok=False)
    assert "already exists" in err
    assert gateway.commands() == [Command.IMPORT_KEYS, Command.RELOAD]  # nothing handed over the second time


def test_memory_import_whose_reload_fails_says_so_and_keeps_the_import(
        cli: Cli, web: Issued, gateway: FakeGateway) -> None:
    gateway.reload_answer = Response.failure(ErrorCode.CONFIG, "tlsgw.yaml: gateway.bridge: bad")
    code = main(["cert", "--config", str(cli.config), "import", "web1", cli.write("w.pem", web.cert_pem),
                 "--key", cli.write("w.key", web.key_pem)])
    _, err = cli.capsys.readouterr()
    assert code == 1 and "did not reload" in err and "gateway.bridge: bad" in err and "tlsgw reload" in err
    assert cli.store().names() == ("web1",)


def test_memory_replace_hands_the_new_key_and_keeps_the_old_entry(
        cli: Cli, web: Issued, pki: TestPki, gateway: FakeGateway) -> None:
    _import_web(cli, web)
    new = pki.leaf(["www.example.test"], key=ec_key())
    out = cli("replace", "web1", cli.write("n.pem", new.cert_pem), "--key", cli.write("n.key", new.key_pem))
    assert "lives only in the memory of the running gateway" in out and "after a reload" in out
    assert gateway.commands() == [Command.IMPORT_KEYS, Command.RELOAD, Command.IMPORT_KEYS]
    store = cli.store()
    assert store.load("web1", with_key=False).certificate == new.cert
    assert store.load("web1_REPLACED", with_key=False).certificate == web.cert
    assert not store.key_path("web1").exists() and store.load_info("web1").memory_key
    listing = cli.listing()
    assert listing["web1"]["key"] == listing["web1_REPLACED"]["key"] == "key in gateway memory only (re-import after restart)"


def test_memory_replace_refused_by_name_hands_nothing_over(
        cli: Cli, web: Issued, pki: TestPki, gateway: FakeGateway) -> None:
    _import_web(cli, web)
    cli.store().save("web1_REPLACED", web.cert)
    new = pki.leaf(["www.example.test"], key=ec_key())
    err = cli("replace", "web1", cli.write("n.pem", new.cert_pem), "--key", cli.write("n.key", new.key_pem), ok=False)
    assert "--discard-previous" in err
    assert gateway.commands() == [Command.IMPORT_KEYS, Command.RELOAD]


def test_memory_import_signed_hands_the_requests_key_over(cli: Cli, pki: TestPki, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cli("create-request", "web1", "--cn", "www.example.com", "--key", "p256")  # made while keys were persisted
    fake = FakeGateway()
    monkeypatch.setattr("gateway.control.handover._ask", fake)
    cli.set_pki(persist_keys=False)
    csr = x509.load_pem_x509_csr(cli("export-request", "web1").encode())
    signed = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(pki.intermediate.cert.subject)
              .public_key(csr.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(pki.now - dt.timedelta(days=1)).not_valid_after(pki.now + dt.timedelta(days=90))
              .sign(pki.intermediate.key, hashes.SHA256()))
    out = cli("import-signed", "web1", cli.write("signed.pem", signed.public_bytes(serialization.Encoding.PEM)))
    assert "lives only in the memory of the running gateway" in out and "removed from disk" in out
    assert fake.commands() == [Command.IMPORT_KEYS, Command.RELOAD]
    assert cli.store().request_names() == () and not cli.store().key_path("web1").exists()


def test_persist_keys_off_refuses_keys_tlsgw_would_create(cli: Cli) -> None:
    cli.set_pki(persist_keys=False)
    for argv in (("create-signing", "x", "--cn", "x", "--key", "p256"),
                 ("create-request", "y", "--cn", "y.example.com", "--key", "p256")):
        err = cli(*argv, ok=False)
        assert "persist_keys is false" in err and "memory" in err and "restart" in err
        assert "lost for good" in err
    assert cli.store().names() == () and cli.store().request_names() == ()
    assert "persist_keys is false" in cli("list")


# --- requests -------------------------------------------------------------------------------------------


def test_server_request_round_trip_through_a_ca(cli: Cli, pki: TestPki) -> None:
    out = cli("create-request", "web1", "--cn", "www.example.com", "--dns", "*.example.com", "--key", "p256",
              "--exportable", "-O", "Example Corp", "-C", "DE")
    assert "server endpoint" in out
    csr_text = cli("export-request", "web1")
    assert "PRIVATE" not in csr_text
    csr = x509.load_pem_x509_csr(csr_text.encode())
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com", "*.example.com"]
    # The CA (the test intermediate) signs it.
    signed = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(pki.intermediate.cert.subject)
              .public_key(csr.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(pki.now - dt.timedelta(days=1)).not_valid_after(pki.now + dt.timedelta(days=90))
              .add_extension(san, critical=False).sign(pki.intermediate.key, hashes.SHA256()))
    answer = cli.write("signed.pem", signed.public_bytes(serialization.Encoding.PEM) + pki.intermediate.cert_pem)
    out = cli("import-signed", "web1", answer)
    assert "the request is removed" in out
    stored = cli.store().load("web1")
    assert stored.certificate == signed and stored.key is not None and stored.info.exportable
    assert stored.chain == (pki.intermediate.cert,)
    assert cli.store().request_names() == ()
    assert cli.listing()["web1"]["status"] == "valid"  # root in the default CA package, intermediate in the chain


def test_import_signed_refuses_a_certificate_for_another_key(cli: Cli, web: Issued) -> None:
    cli("create-request", "web1", "--cn", "www.example.com", "--key", "p256")
    err = cli("import-signed", "web1", cli.write("other.pem", web.cert_pem), ok=False)
    assert "matches the key of signing request 'web1'" in err
    assert cli.store().request_names() == ("web1",) and cli.store().names() == ()


@pytest.mark.parametrize("cn", ["www.*.example.com", "*example.com", "w*.example.com"],
                         ids=["middle", "no-dot", "partial"])
def test_request_with_wildcard_in_the_wrong_place_is_refused(cli: Cli, cn: str) -> None:
    err = cli("create-request", "web1", "--cn", "www.example.com", "--dns", cn, "--key", "p256", ok=False)
    assert "wildcard" in err
    err = cli("create-request", "web1", "--cn", cn, "--key", "p256", ok=False)
    assert "wildcard" in err
    assert cli.store().request_names() == ()


def test_signing_request_and_name_clashes(cli: Cli) -> None:
    cli("create-request", "sub-ca", "--cn", "Example Sub CA", "--signing", "--key", "p256")
    csr = x509.load_pem_x509_csr(cli("export-request", "sub-ca").encode())
    assert csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "already exists" in cli("create-request", "sub-ca", "--cn", "x", "--key", "p256", ok=False)
    cli("create-signing", "corp-signing", "--cn", "x", "--key", "p256")
    assert "already exists" in cli("create-request", "corp-signing", "--cn", "x", "--key", "p256", ok=False)
    assert "signing request" in cli("show", "sub-ca")
    cli("delete-request", "sub-ca")
    assert cli.store().request_names() == ()


def test_import_without_key_uses_the_matching_request(cli: Cli, pki: TestPki) -> None:
    cli("create-request", "web1", "--cn", "www.example.com", "--key", "p256")
    request = cli.store().load_request("web1")
    signed = pki.leaf(["www.example.com"], key=request.key).cert  # type: ignore[union-attr,arg-type]
    out = cli("import", "web1-alt", cli.write("signed.pem", signed.public_bytes(serialization.Encoding.PEM)))
    assert "signing request 'web1'" in out
    assert cli.store().load("web1-alt").key is not None and cli.store().request_names() == ()


# --- import -------------------------------------------------------------------------------------------


def test_import_pem_with_separate_encrypted_key(cli: Cli, web: Issued, pki: TestPki) -> None:
    key = web.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(PASSWORD.encode()))
    cert_file = cli.write("w.pem", web.cert_pem + pki.intermediate.cert_pem)
    err = cli("import", "web1", cert_file, "--key", cli.write("w.key", key), "--password", "wrong", ok=False)
    assert "does not decrypt" in err
    err = cli("import", "web1", cert_file, "--key", str(cli.tmp / "w.key"), ok=False)
    assert "encrypted" in err
    cli("import", "web1", cert_file, "--key", str(cli.tmp / "w.key"),
        "--password-file", cli.write("pw", PASSWORD.encode() + b"\n"))
    stored = cli.store().load("web1")
    assert stored.certificate == web.cert and stored.chain == (pki.intermediate.cert,)
    assert stored.key is not None and not stored.info.exportable
    assert cli.store().key_path("web1").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_import_der_certificate_with_der_key(cli: Cli, web: Issued) -> None:
    cert = cli.write("w.der", web.cert.public_bytes(serialization.Encoding.DER))
    key = cli.write("w.key.der", web.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    cli("import", "web1", cert, "--key", key)
    assert cli.store().load("web1").certificate == web.cert


def test_import_refuses_a_key_that_does_not_match(cli: Cli, web: Issued, pki: TestPki) -> None:
    other = pki.leaf(["other.example.test"], key=ec_key())
    err = cli("import", "web1", cli.write("w.pem", web.cert_pem), "--key", cli.write("o.key", other.key_pem), ok=False)
    assert "does not match" in err and "o.key" in err
    assert "PRIVATE" not in err and other.key_pem.decode().splitlines()[1] not in err
    assert cli.store().names() == ()


def test_import_refuses_bad_pem(cli: Cli) -> None:
    err = cli("import", "web1", cli.write("bad.pem", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
              ok=False)
    assert "bad.pem" in err
    assert cli.store().names() == ()


def test_import_refuses_a_certificate_without_key(cli: Cli, web: Issued) -> None:
    err = cli("import", "web1", cli.write("w.pem", web.cert_pem), ok=False)
    assert "--key" in err and "import-ca" in err


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
def test_import_pkcs12_with_chain(cli: Cli, web: Issued, pki: TestPki, legacy: bool) -> None:
    data = pkcs12_file(web.key, web.cert, [pki.intermediate.cert], alias=b"www", password=PASSWORD.encode(),
                       legacy=legacy)
    p12 = cli.write("w.p12", data)
    assert "does not open" in cli("import", "web1", p12, "--password", "wrong", ok=False)
    cli("import", "web1", p12, "--password", PASSWORD, "--exportable")
    stored = cli.store().load("web1")
    assert stored.certificate == web.cert and stored.chain == (pki.intermediate.cert,) and stored.info.exportable


def test_import_pkcs12_with_several_certificates_uses_base_name_and_aliases(cli: Cli, pki: TestPki) -> None:
    a, b = pki.leaf(["a.example.test"], key=ec_key()), pki.leaf(["b.example.test"], key=ec_key())
    data = merge_pkcs12([pkcs12_file(a.key, a.cert, alias=b"alpha"), pkcs12_file(b.key, b.cert, alias=b"beta")])
    out = cli("import", "shop", cli.write("both.p12", data), "--password", "secret")
    assert "'shop_alpha'" in out and "'shop_beta'" in out
    store = cli.store()
    assert store.load("shop_alpha").certificate == a.cert and store.load("shop_beta").certificate == b.cert


def test_pkcs12_import_is_all_or_nothing(cli: Cli, pki: TestPki) -> None:
    a, b = pki.leaf(["a.example.test"], key=ec_key()), pki.leaf(["b.example.test"], key=ec_key())
    cli("import-ca", "shop_beta", cli.write("root.pem", pki.root.cert_pem))
    data = merge_pkcs12([pkcs12_file(a.key, a.cert, alias=b"alpha"), pkcs12_file(b.key, b.cert, alias=b"beta")])
    err = cli("import", "shop", cli.write("both.p12", data), "--password", "secret", ok=False)
    assert "'shop_beta' already exists" in err
    assert cli.store().names() == ("shop_beta",)


# --- import-ca, default CA package -----------------------------------------------------------------


def test_import_ca_pem_der_and_refusals(cli: Cli, pki: TestPki, web: Issued) -> None:
    cli("import-ca", "partner-root", cli.write("root.der", pki.root.cert.public_bytes(serialization.Encoding.DER)))
    entry = cli.store().load("partner-root")
    assert entry.info.kind is EntryKind.CA and entry.key is None
    err = cli("import-ca", "leaf", cli.write("w.pem", web.cert_pem), ok=False)
    assert "not a CA certificate" in err
    err = cli("import-ca", "both", cli.write("mixed.pem", pki.intermediate.cert_pem + web.cert_pem), ok=False)
    assert "nothing was imported" in err
    assert cli.store().names() == ("partner-root",)
    assert "already exists" in cli("import-ca", "partner-root", str(cli.tmp / "root.der"), ok=False)


def test_import_ca_pkcs12_ignores_keys_and_names_each_certificate(cli: Cli, pki: TestPki) -> None:
    data = merge_pkcs12([pkcs12_file(pki.root.key, pki.root.cert, alias=b"Root CA"),
                         pkcs12_file(pki.intermediate.key, pki.intermediate.cert, alias=b"Issuing CA")])
    out = cli("import-ca", "partner", cli.write("cas.p12", data), "--password", "secret")
    assert "ignored" in out
    store = cli.store()
    assert store.names() == ("partner_Issuing CA", "partner_Root CA")
    assert not store.key_path("partner_Root CA").exists()
    listing = cli.listing()
    assert listing["partner_Root CA"]["status"] == listing["partner_Issuing CA"]["status"] == "valid"


def test_update_default_ca_package_and_point_the_config_at_it(cli: Cli, pki: TestPki) -> None:
    other = TestPki.create(name="fresh")
    out = cli("update-default-ca", cli.write("bundle.pem", other.root.cert_pem + pki.root.cert_pem, 0o644))
    assert "2 certificates" in out and "default_ca_bundle: store" in out
    assert cli.store().default_ca_package_path.read_bytes() == other.root.cert_pem + pki.root.cert_pem
    cli.set_pki(default_ca_bundle="store")
    assert "after the next reload" in cli("update-default-ca", str(cli.tmp / "bundle.pem"))
    assert "not a PEM CA package" in cli("update-default-ca", cli.write("x", b"junk"), ok=False)


# --- list, show, export ------------------------------------------------------------------------------


def test_list_shows_every_status(cli: Cli, pki: TestPki) -> None:
    store = cli.store()
    store.save("valid", *(lambda i: (i.cert, i.key))(pki.leaf(["v.example.test"])))
    store.save("expired", *(lambda i: (i.cert, i.key))(pki.expired_leaf(["e.example.test"])))
    store.save("future", *(lambda i: (i.cert, i.key))(pki.future_leaf(["f.example.test"])))
    stranger = TestPki.create(name="stranger").leaf(["s.example.test"])
    store.save("anchorless", stranger.cert, stranger.key)
    broken = pki.leaf(["b.example.test"])
    store.save("broken", broken.cert, broken.key)
    store.key_path("broken").write_bytes(store.protection.encode(ec_key(), what="x"))
    store.save("partner-root", pki.root.cert)
    store.save("issuing", pki.intermediate.cert)  # an intermediate: chains valid leaves to the root
    listing = cli.listing()
    assert {n: c["status"] for n, c in listing.items()} == {
        "valid": "valid", "expired": "expired", "future": "not yet valid", "anchorless": "no trust anchor",
        "broken": "broken key", "partner-root": "valid", "issuing": "valid"}
    assert listing["valid"]["names"] == ["v.example.test"] and listing["valid"]["key"] == "sealed"
    assert listing["broken"]["key_problem"]
    text = cli("list")
    assert "no trust anchor" in text and "broken key" in text and "EXPIRES" in text


def test_show_never_prints_key_material_and_names_references(cli: Cli) -> None:
    cli("create-signing", "corp-signing", "--cn", "Example CA", "--key", "p256", "--exportable")
    out = cli("show", "corp-signing")
    assert "PRIVATE" not in out and "-----BEGIN" not in out
    assert "client_proxies[0].signing_certificate" in out and "client_proxies[1].signing_certificate" in out
    assert re.search(r"^key\s+sealed$", out, re.M) and re.search(r"^exportable\s+yes$", out, re.M)


def test_export_key_only_when_exportable(cli: Cli, web: Issued) -> None:
    cli("import", "web1", cli.write("w.pem", web.cert_pem), "--key", cli.write("w.key", web.key_pem))
    key_out = cli.tmp / "out.key"
    err = cli("export", "web1", "--key-out", str(key_out), ok=False)
    assert "not exportable" in err and not key_out.exists()
    assert _cert(cli("export", "web1")) == web.cert
    cli("import", "web1-alt", str(cli.tmp / "w.pem"), "--key", str(cli.tmp / "w.key"), "--exportable")
    out = cli("export", "web1-alt", "--key-out", str(key_out), "--key-password-file", cli.write("pw", b"x" * 20))
    assert "PRIVATE" not in out and _cert(out) == web.cert
    assert stat.S_IMODE(key_out.stat().st_mode) == 0o600
    exported = serialization.load_pem_private_key(key_out.read_bytes(), b"x" * 20)
    assert key_matches_certificate(exported, web.cert)  # type: ignore[arg-type]
    assert "never overwritten" in cli("export", "web1-alt", "--key-out", str(key_out), ok=False)


def test_export_der_and_chain(cli: Cli, web: Issued, pki: TestPki) -> None:
    cli("import", "web1", cli.write("w.pem", web.cert_pem + pki.intermediate.cert_pem),
        "--key", cli.write("w.key", web.key_pem))
    out = cli("export", "web1", "--chain")
    assert x509.load_pem_x509_certificates(out.encode()) == [web.cert, pki.intermediate.cert]
    cli("export", "web1", "--der", "--out", str(cli.tmp / "w.der"))
    assert x509.load_der_x509_certificate((cli.tmp / "w.der").read_bytes()) == web.cert


# --- delete, replace -------------------------------------------------------------------------------------


def test_delete_of_a_referenced_certificate_is_refused_naming_references(cli: Cli) -> None:
    cli("create-signing", "corp-signing", "--cn", "Example CA", "--key", "p256")
    err = cli("delete", "corp-signing", ok=False)
    assert "client_proxies[0].signing_certificate" in err and "client_proxies[1].signing_certificate" in err
    assert cli.store().names() == ("corp-signing",)


def test_delete_of_an_unreferenced_certificate(cli: Cli) -> None:
    cli("create-signing", "spare", "--cn", "Spare CA", "--key", "p256")
    cli("delete", "spare")
    assert cli.store().names() == ()
    assert "does not exist" in cli("delete", "spare", ok=False)


def test_delete_with_an_unparsable_config_is_refused(cli: Cli) -> None:
    cli("create-signing", "spare", "--cn", "Spare CA", "--key", "p256")
    other = cli.tmp / "other.yaml"
    other.write_text("pki: {dir: %s\n" % cli.pki_dir)
    assert main(["cert", "--config", str(other), "delete", "spare"]) != 0
    cli.capsys.readouterr()
    assert cli.store().names() == ("spare",)


def test_replace_keeps_name_and_old_as_replaced(cli: Cli, web: Issued, pki: TestPki) -> None:
    cli("import", "web1", cli.write("w.pem", web.cert_pem), "--key", cli.write("w.key", web.key_pem), "--exportable")
    new = pki.leaf(["www.example.test"], key=ec_key())
    p12 = cli.write("new.p12", pkcs12_file(new.key, new.cert, password=PASSWORD.encode()))
    out = cli("replace", "web1", p12, "--password", PASSWORD)
    assert "'web1_REPLACED'" in out and "reload" in out
    store = cli.store()
    replaced, kept = store.load("web1"), store.load("web1_REPLACED")
    assert replaced.certificate == new.cert and replaced.info.exportable  # inherited
    assert kept.certificate == web.cert and kept.key is not None
    newer = pki.leaf(["www.example.test"], key=ec_key())
    args = ("replace", "web1", cli.write("newer.pem", newer.cert_pem), "--key", cli.write("newer.key", newer.key_pem))
    assert "discard-previous" in cli(*args, ok=False)
    assert store.load("web1").certificate == new.cert
    cli(*args, "--discard-previous", "--no-exportable")
    assert store.load("web1").certificate == newer.cert and not store.load("web1").info.exportable
    assert store.load("web1_REPLACED").certificate == new.cert


def test_replace_refusals_leave_the_certificate_alone(cli: Cli, web: Issued, pki: TestPki) -> None:
    cli("import", "web1", cli.write("w.pem", web.cert_pem), "--key", cli.write("w.key", web.key_pem))
    assert "already has" in cli("replace", "web1", str(cli.tmp / "w.pem"), "--key", str(cli.tmp / "w.key"), ok=False)
    other = pki.leaf(["www.example.test"], key=ec_key())
    assert "does not match" in cli("replace", "web1", cli.write("o.pem", other.cert_pem),
                                   "--key", str(cli.tmp / "w.key"), ok=False)
    assert "does not exist" in cli("replace", "nothing", str(cli.tmp / "o.pem"), ok=False)
    cli("import-ca", "partner-root", cli.write("root.pem", pki.root.cert_pem))
    assert "not a CA certificate" in cli("replace", "partner-root", str(cli.tmp / "o.pem"), ok=False)
    assert cli.store().load("web1").certificate == web.cert
    assert cli.store().names() == ("partner-root", "web1")


def test_replace_a_ca_certificate(cli: Cli, pki: TestPki) -> None:
    cli("import-ca", "partner-root", cli.write("root.pem", pki.root.cert_pem))
    cli("replace", "partner-root", cli.write("new.pem", TestPki.create(name="new").root.cert_pem))
    assert cli.store().load("partner-root_REPLACED").certificate == pki.root.cert


# --- keys at rest ------------------------------------------------------------------------------------------


def test_seal_keys_encrypts_keys_stored_in_clear(cli: Cli, web: Issued) -> None:
    CertStore(cli.pki_dir).save("web1", web.cert, web.key)  # as an older tlsgw or the lab wrote it
    assert cli.listing()["web1"]["key"] == "unencrypted"
    assert "1 key(s) sealed" in cli("seal-keys")
    store = cli.store()
    assert store.key_state("web1", web.cert)[0] is KeyState.SEALED
    assert store.load("web1").key is not None


def test_key_secret_option_overrides_the_config(cli: Cli, web: Issued) -> None:
    elsewhere = cli.tmp / "elsewhere"
    cli("create-key-secret", str(elsewhere))
    cli("--key-secret-file", str(elsewhere), "import", "web1", cli.write("w.pem", web.cert_pem),
        "--key", cli.write("w.key", web.key_pem))
    assert cli.listing()["web1"]["key"] == "broken"  # the configured secret is another one
    assert "another secret" in cli.listing()["web1"]["key_problem"]
    listing = json.loads(cli("list", "--json", "--key-secret-file", str(elsewhere)))
    assert listing["certificates"][0]["key"] == "sealed"
