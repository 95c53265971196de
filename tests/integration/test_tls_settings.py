"""TLS settings and security parity end to end (issue 5): a client behind tlsgw is never
less safe than on a direct connection.

Real servers present each certificate defect a browser rejects (nginx, one virtual host
per defect), or are restricted to one TLS version or to a non-forward-secret suite
(nginx), or ask for a client certificate (`openssl s_server -Verify 1`). The client is
curl or `openssl s_client`, and each test asserts what the client experienced (exit
code, its own verification result, the version and cipher it negotiated, as s_client
prints them) and the flow's line in the inspection log.

One gateway serves the whole module: port 443 goes to the client proxy "outbound"
(block invalid and expired certificates, pinning after 2 refusals), port 5443 to
"lenient" (both block settings off), 4431-4435 to "outbound" as well, 4436 to "rsa-kx"
(static-RSA key exchange enabled). Tests use distinct host names, so what the gateway
learns about one site (client certificate, pinning) cannot touch another test.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from gateway.lab.origin import NginxOrigin, OriginOptions, OriginSite, listening_ports
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import DEFAULT_HOSTS, SERVER1_INTERFACE, SERVER2_INTERFACE, Lab
from gateway.pki.ca import UNTRUSTED_CA_NAME
from gateway.pki.store import CertStore
from tests.support.defective_certs import DefectiveCerts, ServedCert
from tests.support.operations import tlsgw
from tests.support.pki_factory import rsa_key

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

STRICT = 443  # client proxy "outbound": invalid and expired upstreams blocked
LENIENT = 5443  # client proxy "lenient": invalid and expired upstreams shown under the untrusted CA
TLS12_ONLY, TLS13_ONLY, RSA_KX_ONLY, CLIENT_CERT_12, CLIENT_CERT_13 = 4431, 4432, 4433, 4434, 4435
RSA_KX_ENABLED = 4436  # client proxy "rsa-kx": the defaults plus static-RSA key exchange; same server as 4433
PINNING_FAILURES = 2
PARITY_ROOT = "parity-root"

# The defects, served by server 1 on both STRICT and LENIENT. (host, the verification
# result's label in the log, a phrase of the log's explanation)
DEFECTS: tuple[tuple[str, str, str], ...] = (
    ("untrusted.example", "untrusted", "CN=unknown intermediate CA"),
    ("nointermediate.example", "untrusted", "nor among the certificates the server sent"),
    ("expired.example", "expired", "expired on"),
    ("notyet.example", "not_yet_valid", "is not valid before"),
    ("wronghost.example", "hostname_mismatch", "elsewhere.example"),
    ("cnonly.example", "other", "no subjectAltName"),
    ("notca.example", "other", "basicConstraints.cA"),
    ("nokeycertsign.example", "other", "keyCertSign"),
    ("clientauth.example", "other", "EKU"),
    ("nameconstraint.example", "other", "name constraints"),
    ("sha1.example", "other", "'CN=sha1.example' is signed with SHA-1"),
    ("rsa1024.example", "weak_key", "1024 bits, below the minimum key length 2048"),
    ("revoked.example", "revoked", "was revoked on"),
)
DATE_DEFECTS = {"expired", "not_yet_valid"}
GOOD_ON_SERVER1 = ("valid.example", "pinned.example")
SERVER2_HOSTS = ("v12.example", "v13.example", "rsakx.example", "cc12.example", "cc13.example")
HOSTS = {
    **DEFAULT_HOSTS,
    **{host: SERVER1_INTERFACE.ip for host, _, _ in DEFECTS},
    **{host: SERVER1_INTERFACE.ip for host in GOOD_ON_SERVER1},
    **{host: SERVER2_INTERFACE.ip for host in SERVER2_HOSTS},
}


@dataclass
class Env:
    lab: InterceptionLab
    certs: DefectiveCerts
    strict: NginxOrigin
    lenient: NginxOrigin
    trust_all: str
    """Client trust bundle: the lab's (public root + signing CA) plus the parity root, so a
    client can verify a relayed-untouched server too."""


def _origin(lab: InterceptionLab, namespace: str, name: str, sites: Sequence[ServedCert],
            options: OriginOptions) -> NginxOrigin:
    origin = NginxOrigin(namespace, [OriginSite(s.host, s.cert_file, s.key_file, f"hello from {s.host}\n")
                                     for s in sites], options, workdir=lab.workdir / f"nginx-{name}")
    lab.origins.append(origin)  # stopped by lab.stop() whatever happens next
    origin.start()
    return origin


def _s_server(lab: InterceptionLab, served: ServedCert, certs: DefectiveCerts, port: int, version: str) -> None:
    """`openssl s_server` requiring a client certificate (`-Verify 1`): the lab's nginx
    options have no setting for it. It names the parity root as acceptable issuer."""
    lab.lab.spawn(lab.lab.server2_ns, [
        "openssl", "s_server", "-accept", str(port), "-cert", str(served.cert_file), "-key", str(served.key_file),
        "-cert_chain", str(certs.intermediate_file), "-CAfile", str(certs.root_file), "-Verify", "1",
        f"-{version}", "-www"], log_path=lab.workdir / f"s_server-{port}.log")
    deadline = time.monotonic() + 10
    while port not in listening_ports(lab.lab.server2_ns):
        assert time.monotonic() < deadline, f"s_server on {port} not listening"
        time.sleep(0.02)


def gateway_config(lab: InterceptionLab, certs: DefectiveCerts) -> dict[str, Any]:
    config = copy.deepcopy(lab.config)
    outbound = config["client_proxies"][0]
    outbound.update(detection_ports=[str(STRICT), f"{TLS12_ONLY}-{CLIENT_CERT_13}"],
                    pinning_failures=PINNING_FAILURES)
    config["client_proxies"].append({**outbound, "name": "lenient", "detection_ports": [str(LENIENT)],
                                     "block_invalid_certificates": False, "block_expired_certificates": False})
    config["client_proxies"].append({**outbound, "name": "rsa-kx", "detection_ports": [str(RSA_KX_ENABLED)],
                                     "cipher_suites": {"key_exchange": ["ecdhe-rsa", "ecdhe-ecdsa", "rsa"]}})
    store = config["trust_stores"][0]
    store["ca_certificates"].append(PARITY_ROOT)
    store["crl_files"] = [str(certs.crl_file)]
    for proxy in ("lenient", "rsa-kx"):
        config["profiles"][0]["client_policies"].append({
            "name": proxy, "client_proxy": proxy, "decryption_policy": "default", "trust_store": "lab"})
    return config


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    lab = InterceptionLab(lab=Lab(hosts=HOSTS))
    try:
        lab.start(with_gateway=False)
        assert lab.pki is not None
        certs = DefectiveCerts(lab.workdir / "parity")
        defects = certs.all_defects()
        good = [certs.good(host) for host in GOOD_ON_SERVER1]
        CertStore(lab.pki.store_dir).save(PARITY_ROOT, certs.root)
        trust_all = lab.workdir / "client-trust-all.pem"
        trust_all.write_bytes(lab.client_bundle.read_bytes() + certs.root_file.read_bytes())

        lab.origins.pop(0).stop()  # server 1 now serves the parity hosts instead of shop.example
        # Security level 0 on these servers only, so that OpenSSL lets nginx load the SHA-1
        # and RSA-1024 certificates: the point is to see tlsgw refuse them.
        sites = [*good, *(defects[host] for host, _, _ in DEFECTS)]
        strict = _origin(lab, lab.lab.server1_ns, "strict", sites,
                         OriginOptions(https_port=STRICT, ciphers="DEFAULT:@SECLEVEL=0"))
        lenient = _origin(lab, lab.lab.server1_ns, "lenient", sites,
                          OriginOptions(https_port=LENIENT, ciphers="DEFAULT:@SECLEVEL=0"))
        server2 = lab.lab.server2_ns
        _origin(lab, server2, "tls12", [certs.good("v12.example")],
                OriginOptions(https_port=TLS12_ONLY, protocols=("TLSv1.2",)))
        _origin(lab, server2, "tls13", [certs.good("v13.example")],
                OriginOptions(https_port=TLS13_ONLY, protocols=("TLSv1.3",)))
        rsakx = certs.good("rsakx.example", key=rsa_key(2048))
        for port in (RSA_KX_ONLY, RSA_KX_ENABLED):
            _origin(lab, server2, f"rsakx-{port}", [rsakx],
                    OriginOptions(https_port=port, protocols=("TLSv1.2",), ciphers="AES128-GCM-SHA256"))
        _s_server(lab, certs.good("cc12.example"), certs, CLIENT_CERT_12, "tls1_2")
        _s_server(lab, certs.good("cc13.example"), certs, CLIENT_CERT_13, "tls1_3")

        lab.start_gateway(gateway_config(lab, certs))
        yield Env(lab, certs, strict, lenient, str(trust_all))
    finally:
        lab.stop()


# -- the client's view ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """What `openssl s_client` reported."""

    exit_code: int
    output: str

    def _find(self, pattern: str) -> str | None:
        match = re.search(pattern, self.output, re.M)
        return match.group(1) if match else None

    @property
    def leaf(self) -> x509.Certificate | None:
        match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", self.output, re.S)
        return x509.load_pem_x509_certificate(match.group(0).encode()) if match else None

    @property
    def issuer(self) -> str | None:
        leaf = self.leaf
        return leaf.issuer.rfc4514_string() if leaf else None

    @property
    def verify_code(self) -> int | None:
        code = self._find(r"^\s*Verify return code: (\d+)")
        return int(code) if code is not None else None

    @property
    def session(self) -> str | None:
        """"New" or "Reused"."""
        return self._find(r"^(New|Reused), ")

    @property
    def protocol(self) -> str | None:
        return self._find(r"^(?:New|Reused), (\S+), Cipher is")

    @property
    def cipher(self) -> str | None:
        return self._find(r"^(?:New|Reused), \S+, Cipher is (\S+)")

    @property
    def body(self) -> str:
        """The HTTP response body s_client printed (text mode: CRLF read as LF)."""
        match = re.search(r"^HTTP/1\.\d \d{3}[^\n]*\n(?:[^\n]+\n)*\n(.*?)(?=^---$|^closed$|^read R BLOCK$|\Z)",
                          self.output, re.M | re.S)
        return match.group(1) if match else ""


def s_client(env: Env, host: str, port: int, *extra: str, request: bool = True, cafile: str | None = None) -> Handshake:
    """`request`: send a GET and wait for the server's answer (a client that uses the
    connection); otherwise complete the handshake and close, sending nothing."""
    lab = env.lab.lab
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", host,
            "-CAfile", cafile or str(env.lab.client_bundle), "-verify_hostname", host, *extra]
    text = ""
    if request:
        argv.append("-ign_eof")
        text = f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n"
    proc = lab.run(lab.client_ns, argv, check=False, input=text, timeout=20)
    return Handshake(proc.returncode, proc.stdout + proc.stderr)


def curl(env: Env, host: str, port: int) -> int:
    return env.lab.curl(f"{host}:{port}", timeout=10).returncode


# -- what the gateway and the servers saw -------------------------------------------------------


def flows(env: Env, host: str, port: int, count: int = 1) -> list[dict[str, Any]]:
    """The flows to host:port so far, waiting until there are `count`."""
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in env.lab.flow_records(sni=host) if r["server_port"] == port]
        if len(records) >= count or time.monotonic() > deadline:
            assert len(records) >= count, f"{len(records)} flows to {host}:{port}, expected {count}"
            return records
        time.sleep(0.05)


def counters(env: Env) -> dict[str, int]:
    answer = tlsgw(env.lab, "stats", "--json")
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)["counters"]  # type: ignore[no-any-return]


def delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def requests_for(origin: NginxOrigin, host: str) -> list[Any]:
    return [e for e in origin.access_log() if e.server_name == host]


def untrusted_ca(env: Env) -> str:
    assert env.lab.pki is not None
    store = CertStore(env.lab.pki.store_dir)
    return store.load(UNTRUSTED_CA_NAME, with_key=False).certificate.subject.rfc4514_string()


def gateway_log(env: Env) -> str:
    return (env.lab.workdir / "gateway.log").read_text(errors="replace")


# -- upstream certificates a browser rejects ----------------------------------------------------


@pytest.mark.parametrize(("host", "label", "why"), DEFECTS, ids=[d[0].split(".")[0] for d in DEFECTS])
def test_defective_upstream_is_blocked_with_block_settings_on(env: Env, host: str, label: str, why: str) -> None:
    assert curl(env, host, STRICT) not in (0, 60)  # no TLS at all, not a certificate the client judged
    seen = s_client(env, host, STRICT)
    assert seen.exit_code != 0 and seen.leaf is None  # no certificate reached the client
    records = flows(env, host, STRICT, count=2)
    for record in records:
        assert record["outcome"] == "blocked"
        assert record["upstream_certificate"]["verification"].startswith(f"{label}: ")
        setting = "block_expired_certificates" if label in DATE_DEFECTS else "block_invalid_certificates"
        assert why in record["reason"] and f"({setting} is on)" in record["reason"]
    assert requests_for(env.strict, host) == []  # nothing of the client's reached the server


@pytest.mark.parametrize(("host", "label", "why"), DEFECTS, ids=[d[0].split(".")[0] for d in DEFECTS])
def test_defective_upstream_is_shown_untrusted_with_block_settings_off(env: Env, host: str, label: str,
                                                                      why: str) -> None:
    assert curl(env, host, LENIENT) == 60  # curl: peer certificate cannot be authenticated
    seen = s_client(env, host, LENIENT, request=False)
    assert seen.issuer == untrusted_ca(env)
    assert seen.verify_code not in (None, 0)
    refused, shown = flows(env, host, LENIENT, count=2)[-2:]
    # curl refused the certificate, which is the point: not the signing CA's fault.
    assert refused["outcome"] == "blocked" and "does not trust the untrusted CA" in refused["reason"]
    assert "(shown to the client as untrusted)" in refused["reason"]
    # s_client completed the handshake (and sent nothing).
    assert shown["outcome"] == "decrypted" and shown["forged_issuer"] == untrusted_ca(env)
    assert shown["upstream_certificate"]["verification"].startswith(f"{label}: ")
    assert why in shown["reason"] and "(shown to the client as untrusted)" in shown["reason"]
    assert requests_for(env.lenient, host) == []


def test_valid_upstream_is_decrypted_under_the_signing_ca(env: Env) -> None:
    """The control case of the two tables above: same servers, same settings."""
    seen = s_client(env, "valid.example", LENIENT)
    assert seen.exit_code == 0 and seen.verify_code == 0
    assert seen.issuer is not None and "tlsgw Demo Signing CA" in seen.issuer
    assert seen.body == "hello from valid.example\n"
    record = flows(env, "valid.example", LENIENT)[0]
    assert record["outcome"] == "decrypted" and record["upstream_certificate"]["verification"] == "ok"


# -- versions and suites: never weaker toward the client than upstream --------------------------


@pytest.mark.parametrize(("host", "port", "client", "upstream_version", "client_versions"), [
    ("v12.example", TLS12_ONLY, (), "TLSv1.2", {"TLSv1.3"}),  # at least 1.2, and 1.3 preferred
    ("v12.example", TLS12_ONLY, ("-tls1_2",), "TLSv1.2", {"TLSv1.2"}),
    ("v13.example", TLS13_ONLY, (), "TLSv1.3", {"TLSv1.3"}),
    # Upstream, tlsgw offers no more than the client did: a TLS 1.2 client is carried
    # over TLS 1.2 to a server that has TLS 1.3 too.
    ("valid.example", STRICT, ("-tls1_2",), "TLSv1.2", {"TLSv1.2"}),
], ids=["tls12-server", "tls12-server-tls12-client", "tls13-server", "any-server-tls12-client"])
def test_client_side_is_never_weaker_than_upstream(env: Env, host: str, port: int, client: tuple[str, ...],
                                                   upstream_version: str, client_versions: set[str]) -> None:
    before = len([r for r in env.lab.flow_records(sni=host) if r["server_port"] == port])
    seen = s_client(env, host, port, *client)
    assert seen.exit_code == 0 and seen.verify_code == 0, seen.output
    assert seen.body == f"hello from {host}\n"
    assert seen.protocol in client_versions
    record = flows(env, host, port, count=before + 1)[-1]
    assert record["outcome"] == "decrypted"
    assert record["upstream_tls"]["version"] == upstream_version
    assert record["client_tls"]["version"] == seen.protocol
    if seen.protocol == "TLSv1.2":  # upstream was ECDHE with AES-GCM: so is the client side
        assert seen.cipher is not None and seen.cipher.startswith("ECDHE-") and "GCM" in seen.cipher


@pytest.mark.parametrize(("host", "port", "client", "counter"), [
    ("v13.example", TLS13_ONLY, ("-tls1_2",), "protocol.serverHandshakeFailure.protocolVersion"),
    ("v12.example", TLS12_ONLY, ("-tls1_3",), "protocol.serverHandshakeFailure.protocolVersion"),
    ("rsakx.example", RSA_KX_ONLY, (), "protocol.serverHandshakeFailure.noSharedCipher"),
], ids=["tls12-client-tls13-server", "tls13-client-tls12-server", "rsa-kx-only-server"])
def test_upstream_that_cannot_be_met_without_weakening_fails_and_is_counted(env: Env, host: str, port: int,
                                                                           client: tuple[str, ...],
                                                                           counter: str) -> None:
    """A TLS 1.2-only client is not carried over TLS 1.3 (nor the reverse): the flow fails
    as the direct connection would. A server with only static-RSA key exchange, which the
    default criteria do not enable, is not reached with it: the flow fails, where a direct
    connection would have settled on a suite without forward secrecy. Nothing is
    decrypted with a weaker client side."""
    before = counters(env)
    seen = s_client(env, host, port, *client)
    assert seen.exit_code != 0 and seen.leaf is None
    after = counters(env)
    assert delta(before, after, counter) == 1
    record = [r for r in env.lab.flow_records(sni=host) if r["server_port"] == port][-1]
    assert record["outcome"] == "blocked" and record["reason"].startswith("upstream ")
    assert record["client_tls"]["version"] is None


@pytest.mark.parametrize(("client", "client_version"), [((), "TLSv1.3"), (("-tls1_2",), "TLSv1.2")],
                         ids=["any-client", "tls12-client"])
def test_enabled_rsa_key_exchange_upstream_does_not_weaken_the_client_side(env: Env, client: tuple[str, ...],
                                                                           client_version: str) -> None:
    """With static RSA enabled, tlsgw reaches the RSA-only server; toward the client it
    still prefers TLS 1.3, and in TLS 1.2 it uses a forward-secret suite (the floor
    allows at least what upstream gave, never less)."""
    host = "rsakx.example"
    before = len([r for r in env.lab.flow_records(sni=host) if r["server_port"] == RSA_KX_ENABLED])
    seen = s_client(env, host, RSA_KX_ENABLED, *client)
    assert seen.exit_code == 0 and seen.verify_code == 0 and seen.body == f"hello from {host}\n"
    assert seen.protocol == client_version
    assert seen.cipher is not None and (seen.cipher.startswith(("TLS_", "ECDHE-"))) and "GCM" in seen.cipher
    record = flows(env, host, RSA_KX_ENABLED, count=before + 1)[-1]
    assert record["outcome"] == "decrypted"
    assert (record["upstream_tls"]["version"], record["upstream_tls"]["cipher"]) == ("TLSv1.2", "AES128-GCM-SHA256")
    assert record["client_tls"]["cipher"] == seen.cipher


def test_client_offering_only_a_disabled_suite_is_bypassed_and_counted(env: Env) -> None:
    """clientCipherOther: the client offers only static-RSA AES128-GCM-SHA256, which the
    default criteria do not enable. tlsgw does not decrypt with it: the flow is relayed
    untouched and the client gets exactly what the server gives it directly."""
    host = "rsakx.example"
    before = counters(env)
    seen = s_client(env, host, RSA_KX_ONLY, "-tls1_2", "-cipher", "AES128-GCM-SHA256", cafile=env.trust_all)
    assert seen.exit_code == 0 and seen.verify_code == 0
    assert seen.issuer == "CN=tlsgw parity intermediate CA"  # the real server's own certificate
    assert (seen.protocol, seen.cipher) == ("TLSv1.2", "AES128-GCM-SHA256")
    assert seen.body == f"hello from {host}\n"
    after = counters(env)
    assert delta(before, after, "protocol.clientCipherOther") == 1
    # `tlsgw stats` without --json shows the same protocol counters, in words.
    shown = tlsgw(env.lab, "stats")
    assert shown.returncode == 0, shown.stderr
    assert f"\n  client cipher other       {after['protocol.clientCipherOther']}  (" in shown.stdout, shown.stdout
    refused = sum(v for k, v in after.items() if k.startswith("protocol.refused."))
    assert re.search(rf"\n  refused to decrypt +{refused}  \(.*\bno enabled cipher suite "
                     rf"{after['protocol.refused.clientCipherOther']}\b", shown.stdout), shown.stdout
    record = [r for r in env.lab.flow_records(sni=host) if r["server_port"] == RSA_KX_ONLY][-1]
    assert record["outcome"] == "bypassed" and "cipher suite" in record["reason"]


def test_client_side_negotiates_tls13_and_resumes_the_session(env: Env) -> None:
    host = "valid.example"
    ticket = env.lab.workdir / "valid.session"
    first = s_client(env, host, STRICT, "-sess_out", str(ticket))
    assert first.exit_code == 0 and first.verify_code == 0
    assert (first.session, first.protocol) == ("New", "TLSv1.3")
    again = s_client(env, host, STRICT, "-sess_in", str(ticket))
    assert again.exit_code == 0 and again.body == f"hello from {host}\n"
    assert (again.session, again.protocol) == ("Reused", "TLSv1.3")
    records = flows(env, host, STRICT, count=2)[-2:]
    assert [r["outcome"] for r in records] == ["decrypted", "decrypted"]
    assert [r["client_tls"]["version"] for r in records] == ["TLSv1.3", "TLSv1.3"]
    assert [r["upstream_certificate"]["verification"] for r in records] == ["ok", "ok"]  # validated again
    # Upstream, tlsgw resumed its own session with the server as well.
    upstream = requests_for(env.strict, host)[-2:]
    assert [(e.ssl_protocol, e.ssl_session_reused) for e in upstream] == [("TLSv1.3", False), ("TLSv1.3", True)]


# -- sites that cannot be intercepted ------------------------------------------------------------


@pytest.mark.parametrize(("host", "port", "refusal"), [
    ("cc12.example", CLIENT_CERT_12, "alert handshake failure"),
    ("cc13.example", CLIENT_CERT_13, "alert certificate required"),
], ids=["tls12", "tls13"])
def test_server_requesting_client_certificate_is_bypassed_then_from_first_packet(env: Env, host: str, port: int,
                                                                                refusal: str) -> None:
    """The server's CertificateRequest comes in TLS 1.2's clear handshake but inside TLS
    1.3's encrypted flight (where tlsgw's own handshake completes before the server
    refuses): both are detected before a byte of the client's is sent upstream."""
    requested = "protocol.serverHandshakeFailure.clientCertificate"
    before = counters(env)
    first = s_client(env, host, port, cafile=env.trust_all)
    # The client talked to the real server: its certificate, its request for one, and its
    # refusal of a client that has none, as on a direct connection.
    assert first.issuer == "CN=tlsgw parity intermediate CA" and first.verify_code == 0
    assert "Acceptable client certificate CA names\nCN = tlsgw parity root CA" in first.output
    assert first.exit_code == 1 and refusal in first.output
    middle = counters(env)
    record = flows(env, host, port)[0]
    assert record["outcome"] == "bypassed" and record["reason"] == "client certificate requested"
    assert delta(before, middle, requested) == 1  # tlsgw tried upstream TLS once, then relayed

    assert f"site {SERVER2_INTERFACE.ip}:{port} (SNI {host}) requests a client certificate" in gateway_log(env)

    second = s_client(env, host, port, cafile=env.trust_all)
    assert second.issuer == "CN=tlsgw parity intermediate CA" and second.verify_code == 0
    assert second.exit_code == 1 and refusal in second.output
    after = counters(env)
    record = flows(env, host, port, count=2)[1]
    assert record["outcome"] == "bypassed" and record["reason"].startswith("client certificate requested")
    assert "first packet" in record["reason"]
    assert delta(middle, after, requested) == 0  # no upstream TLS attempt this time
    assert record["upstream_tls"]["version"] is None and record["forged_issuer"] is None


def test_client_refusing_forged_certificate_repeatedly_gets_site_bypassed_as_pinned(env: Env) -> None:
    host = "pinned.example"
    # Refusal 1: the client aborts the handshake (it does not accept the signing CA here).
    refused = s_client(env, host, STRICT, "-verify_return_error", request=False, cafile=str(env.certs.root_file))
    assert refused.exit_code != 0
    # Refusal 2: the client completes the handshake, then closes without a byte (an app
    # checking its pin after the handshake).
    checked = s_client(env, host, STRICT, request=False)
    assert checked.issuer is not None and "tlsgw Demo Signing CA" in checked.issuer
    records = flows(env, host, STRICT, count=PINNING_FAILURES)
    assert [r["outcome"] for r in records] == ["blocked", "decrypted"]
    assert "does not trust the signing CA" in records[0]["reason"]
    assert (f"site {SERVER1_INTERFACE.ip}:{STRICT} (SNI {host}) refuses the forged certificate repeatedly (pinned)"
            in gateway_log(env))

    direct = s_client(env, host, STRICT, cafile=env.trust_all)
    assert direct.exit_code == 0 and direct.verify_code == 0
    assert direct.issuer == "CN=tlsgw parity intermediate CA"  # the real certificate: relayed untouched
    assert direct.body == f"hello from {host}\n"
    record = flows(env, host, STRICT, count=PINNING_FAILURES + 1)[-1]
    assert record["outcome"] == "bypassed" and record["reason"].startswith("pinned")
