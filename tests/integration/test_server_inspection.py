"""SSL server inspection end to end (issue 3): tlsgw holds the organisation's own
certificates and keys and decrypts traffic to its servers.

Real peers: nginx with several virtual hosts, a POP3S server on 995 of the same address,
curl (with --resolve) and openssl s_client with and without SNI.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.lab.origin import OriginSite
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import DEFAULT_HOSTS, SERVER1_INTERFACE, Lab
from gateway.pki.store import CertStore

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

SERVER = str(SERVER1_INTERFACE.ip)
HOSTS = {**DEFAULT_HOSTS, "api.shop.example": SERVER1_INTERFACE.ip, "mail.example": SERVER1_INTERFACE.ip}
HTTP_REQUEST = "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def env() -> Iterator[InterceptionLab]:
    lab = InterceptionLab(lab=Lab(hosts=HOSTS))
    try:
        lab.start(with_gateway=False)
        pki = lab.pki
        assert pki is not None
        shop = pki.servers["shop.example"]
        wild = pki.issue_server("*.shop.example", file_stem="wild.shop.example")
        mail = pki.issue_server("mail.example")
        # Server 1 serves shop.example and, with a wildcard certificate, api.shop.example.
        lab.origins[0].stop()
        lab.origins[0] = lab.start_origin(lab.lab.server1_ns, [
            OriginSite("shop.example", shop.cert_file, shop.key_file, "hello from shop.example\n"),
            OriginSite("api.shop.example", wild.cert_file, wild.key_file, "hello from api.shop.example\n"),
        ])
        lab.origins.pop()
        pop_log = lab.workdir / "pop3s.log"
        pop_log.write_text("")
        lab.lab.spawn(lab.lab.server1_ns, [sys.executable, "-m", "tests.support.pop3s_server",
                                           str(mail.cert_file), str(mail.key_file), "995", str(pop_log)],
                      log_path=lab.workdir / "pop3s.out")
        # The gateway holds the same certificates and keys as the servers.
        store = CertStore(pki.store_dir)
        for name, cert in (("shop", shop), ("shop-wild", wild), ("mail", mail)):
            certificate = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
            key = serialization.load_pem_private_key(cert.key_file.read_bytes(), None)
            store.save(name, certificate, key)  # type: ignore[arg-type]
        config = lab.config
        config["server_proxies"] = [
            {"name": "web", "destinations": [f"{SERVER}/32"], "detection_ports": ["443"],
             "decrypted_service": "http", "certificates": ["shop", "shop-wild"]},
            {"name": "mail", "destinations": [f"{SERVER}/32"], "detection_ports": ["995"],
             "decrypted_service": "pop3", "certificates": ["mail"]},
        ]
        config["profiles"][0]["server_policies"] = [
            {"name": "web-in", "server_proxy": "web"},
            {"name": "mail-in", "server_proxy": "mail"},
        ]
        wait_for_port(lab, 995)
        yield lab
    finally:
        lab.stop()


def wait_for_port(lab: InterceptionLab, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f":{port} " in lab.lab.run(lab.lab.server1_ns, ["ss", "-ltnH"]).stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def run_gateway(env: InterceptionLab, **server_policy_changes: Any) -> None:
    config = copy.deepcopy(env.config)
    config["profiles"][0]["server_policies"][0].update(server_policy_changes)
    env.restart_gateway(config)


@pytest.fixture
def gateway(env: InterceptionLab) -> InterceptionLab:
    run_gateway(env)
    return env


def s_client(env: InterceptionLab, host: str, port: int = 443, sni: bool = True, send: str = "",
             extra: tuple[str, ...] = ()) -> tuple[x509.Certificate | None, str]:
    # -ign_eof waits for the server to close (after `Connection: close` or QUIT); without
    # input, s_client leaves as soon as the handshake is done.
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile", str(env.client_bundle),
            *(("-ign_eof",) if send else ()),
            *(("-servername", host) if sni else ("-noservername",)), *extra]
    proc = env.lab.run(env.lab.client_ns, argv, check=False, input=send, timeout=15)
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", proc.stdout, re.S)
    return (x509.load_pem_x509_certificate(match.group(0).encode()) if match else None), proc.stdout


def test_certificate_chosen_by_sni_and_page_arrives(gateway: InterceptionLab) -> None:
    proc = gateway.lab.run(gateway.lab.client_ns, [
        "curl", "-sS", "--max-time", "10", "--cacert", str(gateway.client_bundle),
        "--resolve", f"api.shop.example:443:{SERVER}", "https://api.shop.example/"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from api.shop.example\n"
    cert, out = s_client(gateway, "api.shop.example", send=HTTP_REQUEST.format(host="api.shop.example"))
    assert cert is not None and cert.subject.rfc4514_string() == "CN=*.shop.example"
    assert "Verify return code: 0 (ok)" in out
    records = gateway.flow_records(sni="api.shop.example", wait_for=2)
    assert records[0]["outcome"] == "decrypted" and records[0]["policy_kind"] == "server"
    assert records[0]["policy"] == "web-in" and records[0]["server_certificate"] == "shop-wild"
    assert records[0]["forged_issuer"] is None
    assert records[0]["http"][0]["host"] == "api.shop.example"
    entries = gateway.origins[0].wait_for_access_log(2)
    assert {e.remote_addr for e in entries} == {gateway.lab.client_address}


def test_exact_name_gets_its_own_certificate(gateway: InterceptionLab) -> None:
    cert, _ = s_client(gateway, "shop.example")
    assert cert is not None and cert.subject.rfc4514_string() == "CN=shop.example"
    assert gateway.flow_records(sni="shop.example", wait_for=1)[0]["server_certificate"] == "shop"


def test_no_sni_gets_the_first_certificate(gateway: InterceptionLab) -> None:
    cert, out = s_client(gateway, SERVER, sni=False, send=HTTP_REQUEST.format(host="shop.example"))
    assert cert is not None and cert.subject.rfc4514_string() == "CN=shop.example"
    assert "hello from shop.example" in out
    record = gateway.flow_records(wait_for=1)[0]
    assert record["sni"] is None and record["server_certificate"] == "shop"
    assert record["outcome"] == "decrypted"


def test_server_policy_takes_precedence_over_client_policy(gateway: InterceptionLab) -> None:
    # The profile also has a client policy on 443: without precedence, the client would
    # be shown a certificate forged by the signing CA.
    cert, _ = s_client(gateway, "shop.example")
    assert cert is not None and "Demo Public Root CA" in cert.issuer.rfc4514_string()
    record = gateway.flow_records(sni="shop.example", wait_for=1)[0]
    assert record["policy_kind"] == "server"
    assert "precedence over client policy 'out'" in record["reason"]


def test_decrypted_session_is_not_the_servers_session(gateway: InterceptionLab) -> None:
    _, out = s_client(gateway, "shop.example", send=HTTP_REQUEST.format(host="shop.example"), extra=("-tls1_2", "-no_ticket"))
    client_session = re.search(r"Session-ID: ([0-9A-F]+)", out)
    entries = gateway.origins[0].wait_for_access_log(1)
    # The server's session (empty when it issued a ticket instead) is not the client's.
    assert client_session is not None
    assert client_session.group(1).lower() != entries[0].ssl_session_id.lower()


def test_source_exception_is_relayed_untouched(env: InterceptionLab) -> None:
    run_gateway(env, source_exceptions=[f"{env.lab.client_address}/32"])
    _, out = s_client(env, "shop.example", send=HTTP_REQUEST.format(host="shop.example"), extra=("-tls1_2", "-no_ticket"))
    assert "hello from shop.example" in out
    client_session = re.search(r"Session-ID: ([0-9A-F]+)", out)
    entries = env.origins[0].wait_for_access_log(1)
    # The client's TLS session is the server's own: the bytes were relayed untouched.
    assert client_session is not None and client_session.group(1).lower() == entries[0].ssl_session_id.lower()
    assert entries[0].remote_addr == env.lab.client_address
    record = env.flow_records(sni="shop.example", wait_for=1)[0]
    assert record["outcome"] == "not decrypted" and "source exception" in record["reason"]


def test_plain_text_to_server_tuple_is_dropped_and_gateway_keeps_serving(gateway: InterceptionLab) -> None:
    proc = gateway.lab.run(gateway.lab.client_ns, ["curl", "-sS", "--max-time", "5", "http://shop.example:443/"],
                           check=False)
    assert proc.returncode != 0
    record = gateway.flow_records(wait_for=1)[0]
    assert record["outcome"] == "blocked" and "not a TLS ClientHello" in record["reason"]
    assert gateway.origins[0].access_log() == []
    cert, out = s_client(gateway, "shop.example", send=HTTP_REQUEST.format(host="shop.example"))
    assert "hello from shop.example" in out


def test_connection_without_handshake_is_dropped_after_the_timeout(env: InterceptionLab) -> None:
    config = copy.deepcopy(env.config)
    config["gateway"]["handshake_timeout"] = 1
    env.restart_gateway(config)
    # A STARTTLS-style client waits for the server to speak first; no ClientHello comes.
    env.lab.run(env.lab.client_ns, ["bash", "-c", f"exec 3<>/dev/tcp/{SERVER}/995; sleep 2"], check=False)
    record = env.flow_records(wait_for=1)[0]
    assert record["outcome"] == "blocked" and "no ClientHello" in record["reason"]


def test_pop3s_on_another_port_through_its_own_server_proxy(gateway: InterceptionLab) -> None:
    pop_log = gateway.workdir / "pop3s.log"
    pop_log.write_text("")
    cert, out = s_client(gateway, "mail.example", port=995, send="CAPA\r\nQUIT\r\n")
    assert "+OK tlsgw lab POP3 server ready" in out and "UIDL" in out and "+OK bye" in out
    assert cert is not None and cert.subject.rfc4514_string() == "CN=mail.example"
    record = gateway.flow_records(sni="mail.example", wait_for=1)[0]
    assert record["outcome"] == "decrypted" and record["policy"] == "mail-in"
    assert record["server_certificate"] == "mail" and record["server_port"] == 995
    assert pop_log.read_text().split()[0] == str(gateway.lab.client_address)
