"""OpenSSL reasons as operator sentences (gateway.tls.alerts)."""

from __future__ import annotations

import pytest

from gateway.tls.alerts import explain_handshake_failure


@pytest.mark.parametrize(("issuer", "expected"), [
    (None, "client 192.0.2.10:5 does not trust the signing CA for shop.example"),
    ("the untrusted CA", "client 192.0.2.10:5 does not trust the untrusted CA for shop.example"),
], ids=["signing-ca", "untrusted-ca"])
def test_unknown_ca_names_the_issuer_the_client_was_shown(issuer: str | None, expected: str) -> None:
    extra = {} if issuer is None else {"issuer": issuer}
    assert explain_handshake_failure("client", "tlsv1 alert unknown ca", "192.0.2.10:5", "shop.example",
                                     **extra) == expected


@pytest.mark.parametrize(("side", "detail", "expected"), [
    ("upstream", "tlsv13 alert certificate required", "upstream 192.0.2.20:443 requires a client certificate"),
    ("upstream", "sslv3 alert handshake failure",
     "upstream 192.0.2.20:443 refused the handshake (no common cipher or version)"),
    ("upstream", "something new", "upstream 192.0.2.20:443: TLS handshake failed: something new"),
], ids=["certificate-required", "handshake-failure", "unknown-reason"])
def test_upstream_reasons_become_sentences(side: str, detail: str, expected: str) -> None:
    assert explain_handshake_failure(side, detail, "192.0.2.20:443", None) == expected
