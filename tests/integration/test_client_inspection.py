"""SSL client inspection end to end (issue 2): a real tlsgw process on a namespace bridge,
nginx origins, and curl / openssl s_client as the client.

Each test asserts what the client saw (certificate issuer, its own verification result,
the body) and what the server saw (the peer address of the request, or no request).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.lab.origin import OriginSite
from gateway.lab.scenario import InterceptionLab, environment_ready
from gateway.lab.topology import DEFAULT_HOSTS, SERVER1_INTERFACE, SERVER2_INTERFACE, Lab
from gateway.pki.ca import UNTRUSTED_CA_NAME
from gateway.pki.store import CertStore

pytestmark = [pytest.mark.netns, pytest.mark.skipif(environment_ready() is not None,
                                                    reason=environment_ready() or "")]

HOSTS = {
    **DEFAULT_HOSTS,
    "wrong.example": SERVER1_INTERFACE.ip,  # served by shop.example's nginx: its certificate names another host
    "expired.example": SERVER2_INTERFACE.ip,
}


@pytest.fixture(scope="module")
def env() -> Iterator[InterceptionLab]:
    lab = InterceptionLab(lab=Lab(hosts=HOSTS))
    try:
        lab.start(with_gateway=False)
        assert lab.pki is not None
        # Server 2 also serves expired.example with a certificate that expired 110 days ago.
        then = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)
        expired = lab.pki.issue_server("expired.example", then, days=90)
        bank = lab.pki.servers["www.bank.example"]
        lab.origins[1].stop()
        lab.origins[1] = lab.start_origin(lab.lab.server2_ns, [
            OriginSite("www.bank.example", bank.cert_file, bank.key_file, "hello from www.bank.example\n"),
            OriginSite("expired.example", expired.cert_file, expired.key_file, "hello from expired.example\n"),
        ])
        lab.origins.pop()  # start_origin appended it; it now lives at index 1
        yield lab
    finally:
        lab.stop()


def run_gateway(env: InterceptionLab, **changes: Any) -> None:
    """(Re)start tlsgw with the base config changed by `changes` (dotted keys, see below)."""
    config = copy.deepcopy(env.config)
    proxy = config["client_proxies"][0]
    policy = config["profiles"][0]["client_policies"][0]
    for key, value in changes.items():
        target = proxy if key in proxy or key.startswith("block_") or key == "logging" else policy
        target[key] = value
    env.restart_gateway(config)


def requests_seen(env: InterceptionLab, index: int) -> list[Any]:
    return env.origins[index].access_log()


@pytest.fixture
def gateway(env: InterceptionLab) -> InterceptionLab:
    run_gateway(env)
    return env


def test_decrypted_flow_shows_forged_certificate_and_server_sees_client(gateway: InterceptionLab) -> None:
    fetch = gateway.fetch("shop.example")
    assert fetch.ok, fetch.curl_error
    assert fetch.body == "hello from shop.example\n"
    assert fetch.verify_ok
    assert fetch.issuer is not None and "tlsgw Demo Signing CA" in fetch.issuer
    assert fetch.subject == "CN=shop.example"
    record = gateway.flow_records(sni="shop.example", wait_for=1)[0]
    assert record["outcome"] == "decrypted"
    assert record["upstream_certificate"]["verification"] == "ok"
    assert record["client_tls"]["version"] == "TLSv1.3" and record["upstream_tls"]["version"] == "TLSv1.3"
    assert record["http"][0] == {"method": "GET", "path": "/", "host": "shop.example", "status": "200"}
    assert record["bytes_down"] > len(fetch.body)
    entries = gateway.origin_for("shop.example").wait_for_access_log(1)
    assert {e.remote_addr for e in entries} == {gateway.lab.client_address}


def test_repeated_site_reuses_forged_certificate(gateway: InterceptionLab) -> None:
    first = gateway.peek_certificate("shop.example")[0]
    second = gateway.peek_certificate("shop.example")[0]
    assert first is not None and second is not None
    assert first.serial_number == second.serial_number


def test_exempt_domain_is_relayed_untouched(gateway: InterceptionLab) -> None:
    fetch = gateway.fetch("www.bank.example")
    assert fetch.ok and fetch.verify_ok
    assert fetch.body == "hello from www.bank.example\n"
    assert fetch.issuer is not None and "Demo Public Root CA" in fetch.issuer
    record = gateway.flow_records(sni="www.bank.example", wait_for=1)[0]
    assert record["outcome"] == "not decrypted"
    assert "*.bank.example" in record["reason"]
    entries = gateway.origin_for("www.bank.example").wait_for_access_log(1)
    assert {e.remote_addr for e in entries} == {gateway.lab.client_address}


def test_never_decrypt_source_is_relayed_untouched(env: InterceptionLab) -> None:
    run_gateway(env, never_decrypt=[f"{env.lab.client_address}/32"])
    fetch = env.fetch("shop.example")
    assert fetch.ok and fetch.verify_ok and fetch.body == "hello from shop.example\n"
    assert fetch.issuer is not None and "Demo Public Root CA" in fetch.issuer
    record = env.flow_records(sni="shop.example", wait_for=1)[0]
    assert record["outcome"] == "not decrypted" and "never decrypted" in record["reason"]
    assert {e.remote_addr for e in env.origin_for("shop.example").wait_for_access_log(1)} == {env.lab.client_address}


def test_always_decrypt_source_overrides_domain_exemption(env: InterceptionLab) -> None:
    run_gateway(env, always_decrypt=[str(env.lab.client_address)])
    fetch = env.fetch("www.bank.example")
    assert fetch.ok and fetch.verify_ok and fetch.body == "hello from www.bank.example\n"
    assert fetch.issuer is not None and "tlsgw Demo Signing CA" in fetch.issuer
    record = env.flow_records(sni="www.bank.example", wait_for=1)[0]
    assert record["outcome"] == "decrypted" and "always decrypted" in record["reason"]
    assert {e.remote_addr for e in env.origin_for("www.bank.example").wait_for_access_log(1)} == {env.lab.client_address}


def test_invalid_upstream_is_blocked_when_configured(gateway: InterceptionLab) -> None:
    fetch = gateway.fetch("wrong.example")
    assert not fetch.ok and fetch.body == ""
    assert fetch.issuer is None  # no certificate at all reached the client
    record = gateway.flow_records(sni="wrong.example", wait_for=1)[0]
    assert record["outcome"] == "blocked"
    assert "hostname" in record["reason"].lower() and "block_invalid_certificates" in record["reason"]
    assert requests_seen(gateway, 0) == []  # nothing of the client's request reached the server


def test_invalid_upstream_is_shown_untrusted_when_not_blocking(env: InterceptionLab) -> None:
    run_gateway(env, block_invalid_certificates=False)
    fetch = env.fetch("wrong.example")
    assert fetch.exit_code == 60, fetch.curl_error  # curl: peer certificate cannot be authenticated
    assert not fetch.verify_ok
    assert fetch.issuer == untrusted_ca_subject(env)
    assert fetch.subject == "CN=shop.example"  # the upstream's own names, not the requested host
    records = env.flow_records(sni="wrong.example", wait_for=1)
    assert "hostname" in records[0]["reason"].lower()
    assert requests_seen(env, 0) == []


def test_expired_upstream_is_blocked_when_configured(gateway: InterceptionLab) -> None:
    fetch = gateway.fetch("expired.example")
    assert not fetch.ok and fetch.issuer is None
    record = gateway.flow_records(sni="expired.example", wait_for=1)[0]
    assert record["outcome"] == "blocked" and "expired" in record["reason"]
    assert "block_expired_certificates" in record["reason"]
    assert requests_seen(gateway, 1) == []


def test_expired_upstream_is_shown_expired_and_untrusted_when_not_blocking(env: InterceptionLab) -> None:
    run_gateway(env, block_expired_certificates=False)
    fetch = env.fetch("expired.example")
    assert fetch.exit_code == 60 and not fetch.verify_ok
    assert fetch.issuer == untrusted_ca_subject(env)
    cert, _ = env.peek_certificate("expired.example")
    assert cert is not None and cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    assert requests_seen(env, 1) == []


def test_non_tls_first_flight_is_closed_and_logged_and_gateway_keeps_serving(gateway: InterceptionLab) -> None:
    proc = gateway.lab.run(gateway.lab.client_ns, ["curl", "-sS", "--max-time", "5", "http://shop.example:443/"],
                           check=False)
    assert proc.returncode != 0
    records = gateway.flow_records(wait_for=1)
    assert records[0]["outcome"] == "blocked" and "not a TLS ClientHello" in records[0]["reason"]
    assert requests_seen(gateway, 0) == []
    fetch = gateway.fetch("shop.example")
    assert fetch.ok and fetch.body == "hello from shop.example\n"


def test_stopping_removes_own_rules_and_keeps_foreign_ones(env: InterceptionLab) -> None:
    ns = env.lab.gateway_ns
    env.stop_gateway()
    env.lab.run(ns, ["nft", "add table inet foreign; add chain inet foreign c { type filter hook input priority 0; }"])
    try:
        run_gateway(env)
        running = env.lab.run(ns, ["nft", "list", "tables"]).stdout
        assert "bridge tlsgw" in running and "ip tlsgw" in running and "inet foreign" in running
        assert "fwmark" in env.lab.run(ns, ["ip", "rule", "list"]).stdout
        env.stop_gateway()
        stopped = env.lab.run(ns, ["nft", "list", "tables"]).stdout
        assert "tlsgw" not in stopped and "inet foreign" in stopped
        assert "fwmark" not in env.lab.run(ns, ["ip", "rule", "list"]).stdout
        assert env.lab.run(ns, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]).stdout.strip() == "1"
        # With tlsgw gone the bridge forwards untouched: the client sees the real server.
        fetch = env.fetch("shop.example")
        assert fetch.ok and fetch.issuer is not None and "Demo Public Root CA" in fetch.issuer
    finally:
        env.lab.run(ns, ["nft", "delete table inet foreign"], check=False)


def untrusted_ca_subject(env: InterceptionLab) -> str:
    assert env.pki is not None
    return CertStore(env.pki.store_dir).load(UNTRUSTED_CA_NAME, with_key=False).certificate.subject.rfc4514_string()



def test_proxy_logging_switch_adds_the_troubleshooting_steps(env: InterceptionLab) -> None:
    """Issue 3/2: a proxy's `logging: true` logs each step of its flows; off, none."""
    run_gateway(env)
    assert env.fetch("shop.example").ok
    quiet = env.stop_gateway()
    assert "tlsgw.troubleshoot" not in quiet
    run_gateway(env, logging=True)
    assert env.fetch("shop.example").ok
    detailed = env.stop_gateway()
    steps = [line for line in detailed.splitlines() if "tlsgw.troubleshoot" in line]
    assert any("decision decrypt-client" in line for line in steps)
    assert any("upstream TLS TLSv1.3" in line for line in steps)
    assert any("forged under" in line for line in steps)
    assert any("client TLS TLSv1.3" in line for line in steps)
    assert any("end: decrypted" in line for line in steps)
