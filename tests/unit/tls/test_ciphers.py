"""Cipher suites by criteria (issue 5): the table, the selection rules, and that the
table's names and codes are the running OpenSSL's own."""

from __future__ import annotations

import logging

import pytest
from OpenSSL import SSL

from gateway.config.model import (
    BulkCipher,
    CipherSuiteCriteria,
    ClientProxy,
    GatewayConfig,
    KeyExchange,
    MacAlgorithm,
    PortRange,
    TlsVersion,
)
from gateway.daemon import warn_weakenings
from gateway.tls.ciphers import (
    TLS12_SUITES,
    TLS13_SUITES,
    Signature,
    for_signature,
    needs_security_level_0,
    select_suites,
    selection_problems,
    suite_by_openssl_name,
    unsupported_suites,
    weakenings,
)
from gateway.tls.clienthello import parse_client_hello
from gateway.tls.contexts import openssl_capabilities

K, B, M, V = KeyExchange, BulkCipher, MacAlgorithm, TlsVersion
DEFAULT = CipherSuiteCriteria()
MODERN = (V.TLS1_2, V.TLS1_3)
ALL_VERSIONS = tuple(V)


def names(suites: object) -> list[str]:
    return [s.openssl for s in suites]  # type: ignore[attr-defined]


def test_default_selection_is_forward_secret_aes_and_chacha_without_3des() -> None:
    selection = select_suites(DEFAULT, MODERN)
    assert names(selection.tls13) == ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    assert len(selection.tls12) == 14
    assert all(s.forward_secret for s in selection.tls12)
    assert not {s.bulk for s in selection.tls12} & {B.TRIPLE_DES, B.DES}
    # AEAD first: the first six are the GCM and ChaCha20 suites, in Mozilla's order.
    assert names(selection.tls12[:2]) == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]
    assert all(s.aead for s in selection.tls12[:6]) and not any(s.aead for s in selection.tls12[6:])


SELECTIONS = [
    # (criteria, protocols, expected TLS 1.2-and-below names, expected TLS 1.3 names)
    (CipherSuiteCriteria((K.ECDHE_RSA,), (B.AES256_GCM,), (M.SHA384,)), MODERN,
     ["ECDHE-RSA-AES256-GCM-SHA384"], ["TLS_AES_256_GCM_SHA384"]),
    (CipherSuiteCriteria((K.RSA,), (B.AES128_CBC,), (M.SHA1,)), MODERN,
     ["AES128-SHA"], []),
    (CipherSuiteCriteria((K.ECDHE_ECDSA,), (B.AES128_CBC, B.AES256_CBC), (M.SHA256,)), MODERN,
     ["ECDHE-ECDSA-AES128-SHA256"], []),
    (CipherSuiteCriteria((K.ECDHE_RSA,), (B.CHACHA20_POLY1305,), (M.SHA1,)), (V.TLS1_3,),
     [], ["TLS_CHACHA20_POLY1305_SHA256"]),
    (CipherSuiteCriteria((K.ECDHE_RSA, K.RSA), (B.AES128_GCM, B.AES128_CBC), (M.SHA1, M.SHA256)), (V.TLS1_0, V.TLS1_1),
     ["ECDHE-RSA-AES128-SHA", "AES128-SHA"], []),
    (CipherSuiteCriteria((K.RSA,), (B.TRIPLE_DES, B.DES), (M.SHA1,)), (V.TLS1_2,),
     ["DES-CBC3-SHA", "DES-CBC-SHA"], []),
]


@pytest.mark.parametrize(("criteria", "protocols", "tls12", "tls13"), SELECTIONS, ids=[
    "one-aead-suite-per-version", "static-rsa-cbc-only", "mac-picks-cbc-hmac", "tls13-only-by-bulk",
    "old-versions-drop-tls12-only-suites", "3des-and-des",
])
def test_criteria_select_exactly_the_matching_suites(criteria: CipherSuiteCriteria, protocols: tuple[TlsVersion, ...],
                                                     tls12: list[str], tls13: list[str]) -> None:
    selection = select_suites(criteria, protocols)
    assert names(selection.tls12) == tls12
    assert names(selection.tls13) == tls13
    assert selection.cipher_list() == ":".join(tls12).encode()


def test_mac_criterion_never_removes_aead_suites() -> None:
    """AEAD suites have no separate MAC: mac [sha1] still leaves GCM and ChaCha20."""
    selection = select_suites(CipherSuiteCriteria(mac=(M.SHA1,)), MODERN)
    assert {s.bulk for s in selection.tls12 if s.aead} == {B.AES128_GCM, B.AES256_GCM, B.CHACHA20_POLY1305}
    assert {s.mac for s in selection.tls12 if not s.aead} == {M.SHA1}


PROBLEMS = [
    (CipherSuiteCriteria(bulk=(B.AES128_CBC,)), MODERN, ["cipher_suites.bulk"]),
    (CipherSuiteCriteria(key_exchange=(K.RSA,), bulk=(B.CHACHA20_POLY1305,)), MODERN, ["cipher_suites"]),
    (CipherSuiteCriteria(mac=(M.SHA256,)), (V.TLS1_0, V.TLS1_1, V.TLS1_2), ["cipher_suites"]),
    (DEFAULT, ALL_VERSIONS, ["cipher_suites"]),
    (DEFAULT, MODERN, []),
    (CipherSuiteCriteria(key_exchange=(K.ECDHE_RSA, K.RSA)), ALL_VERSIONS, []),
    (CipherSuiteCriteria(bulk=(B.AES128_GCM,)), (V.TLS1_3,), []),
]


@pytest.mark.parametrize(("criteria", "protocols", "fields"), PROBLEMS, ids=[
    "tls13-without-aead-bulk", "no-rsa-chacha-suite-exists", "tls10-needs-sha1-cbc", "ssl3-needs-rsa",
    "defaults-fine", "ssl3-with-rsa-fine", "tls13-only-gcm-fine",
])
def test_enabled_versions_without_a_suite_are_named(criteria: CipherSuiteCriteria, protocols: tuple[TlsVersion, ...],
                                                     fields: list[str]) -> None:
    assert [field for field, _ in selection_problems(criteria, protocols)] == fields


def test_starved_versions_are_named_with_suites_that_would_serve() -> None:
    ((_, message),) = selection_problems(CipherSuiteCriteria(mac=(M.SHA256,)), (V.TLS1_0, V.TLS1_1, V.TLS1_2))
    assert "TLSv1.0, TLSv1.1 are enabled" in message and "ECDHE-RSA-AES128-SHA" in message


def test_every_table_name_maps_to_its_code_in_a_real_clienthello() -> None:
    """Guards the hand-written table: OpenSSL puts each suite it knows into its
    ClientHello under the IANA code the table gives (suites this build lacks are skipped)."""
    available = openssl_capabilities().suites
    checked = 0
    for suite in TLS12_SUITES:
        if suite.openssl not in available:
            continue
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(suite.openssl.encode() + b":@SECLEVEL=0")
        hello = _client_hello(context)
        assert suite.code in hello.cipher_suites, suite.openssl
        assert len([c for c in hello.cipher_suites if c != 0x00FF]) == 1, suite.openssl  # 0x00FF: reneg SCSV
        checked += 1
    assert checked >= 20  # everything but 3DES/DES exists in every OpenSSL 3
    context = SSL.Context(SSL.TLS_METHOD)
    for suite in TLS13_SUITES:
        assert suite.openssl in available
    context.set_tls13_ciphersuites(b":".join(s.openssl.encode() for s in TLS13_SUITES))
    codes = _client_hello(context).cipher_suites
    assert [c for c in codes if c in {s.code for s in TLS13_SUITES}] == [s.code for s in TLS13_SUITES]


def _client_hello(context: SSL.Context):  # type: ignore[no-untyped-def]
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    with pytest.raises(SSL.WantReadError):
        connection.do_handshake()
    return parse_client_hello(connection.bio_read(65536))


def test_suite_lookup_by_openssl_name() -> None:
    suite = suite_by_openssl_name("ECDHE-RSA-AES256-SHA")
    assert suite is not None and suite.code == 0xC014 and suite.min_version is V.TLS1_0
    assert suite_by_openssl_name("TLS_AES_256_GCM_SHA384") is not None
    assert suite_by_openssl_name("NULL-MD5") is None and suite_by_openssl_name(None) is None


def test_suites_for_a_key_type() -> None:
    selection = select_suites(DEFAULT, MODERN)
    ecdsa = for_signature(selection.suites, Signature.ECDSA)
    assert {s.key_exchange for s in ecdsa} == {K.ECDHE_ECDSA, None}
    assert all(s.signature is not Signature.ECDSA for s in for_signature(selection.suites, Signature.RSA))


@pytest.mark.parametrize(("criteria", "lowest", "expected"), [
    (DEFAULT, V.TLS1_2, False),
    (DEFAULT, V.TLS1_1, True),
    (CipherSuiteCriteria(bulk=(B.AES128_GCM, B.TRIPLE_DES)), V.TLS1_2, True),
], ids=["defaults", "tls11-enabled", "3des-enabled"])
def test_security_level_0_only_when_deliberately_weakened(criteria: CipherSuiteCriteria, lowest: TlsVersion,
                                                          expected: bool) -> None:
    protocols = tuple(v for v in V if v >= lowest)
    assert needs_security_level_0(select_suites(criteria, protocols).tls12, lowest) is expected


def test_unsupported_bulk_cipher_is_named_by_its_criterion() -> None:
    criteria = CipherSuiteCriteria(bulk=(B.AES128_GCM, B.TRIPLE_DES))
    selection = select_suites(criteria, MODERN)
    available = {s.openssl for s in selection.suites if s.bulk is not B.TRIPLE_DES}
    (problem,) = unsupported_suites(selection, criteria, available, "OpenSSL 9.9")
    assert problem.field == "cipher_suites.bulk"
    assert "3des" in problem.message and "OpenSSL 9.9" in problem.message and "ECDHE-RSA-DES-CBC3-SHA" in problem.message


def test_unsupported_single_suite_is_named_by_suite() -> None:
    selection = select_suites(DEFAULT, MODERN)
    available = {s.openssl for s in selection.suites} - {"ECDHE-RSA-AES256-SHA"}
    (problem,) = unsupported_suites(selection, DEFAULT, available, "OpenSSL 9.9")
    assert problem.field == "cipher_suites" and "ECDHE-RSA-AES256-SHA" in problem.message


def test_default_selection_is_available_in_the_running_openssl() -> None:
    capabilities = openssl_capabilities()
    assert unsupported_suites(select_suites(DEFAULT, MODERN), DEFAULT, capabilities.suites, capabilities.version) == []
    assert {V.TLS1_2, V.TLS1_3} <= capabilities.protocols


@pytest.mark.parametrize(("protocols", "criteria", "expected"), [
    (MODERN, DEFAULT, []),
    ((V.TLS1_1, V.TLS1_2), DEFAULT, ["protocol TLSv1.1 is enabled", "security level 0"]),
    (MODERN, CipherSuiteCriteria(key_exchange=(K.ECDHE_RSA, K.RSA)), ["key exchange rsa"]),
    (MODERN, CipherSuiteCriteria(bulk=(B.AES128_GCM, B.TRIPLE_DES)), ["bulk cipher 3des", "security level 0"]),
], ids=["defaults", "tls11", "rsa", "3des"])
def test_weakenings_are_listed(protocols: tuple[TlsVersion, ...], criteria: CipherSuiteCriteria,
                               expected: list[str]) -> None:
    found = weakenings(protocols, criteria)
    assert len(found) == len(expected)
    for sentence, needle in zip(found, expected, strict=True):
        assert needle in sentence


def test_daemon_warns_about_tls_weakenings_on_load(caplog: pytest.LogCaptureFixture) -> None:
    proxy = ClientProxy("out", "corp", (PortRange(443, 443),), protocols=(V.TLS1_0, V.TLS1_1, V.TLS1_2),
                        cipher_suites=CipherSuiteCriteria(key_exchange=(K.ECDHE_RSA, K.RSA)))
    with caplog.at_level(logging.WARNING, logger="gateway.daemon"):
        warn_weakenings(GatewayConfig(client_proxies=(proxy,)))
    text = caplog.text
    assert "protocol TLSv1.0 is enabled" in text and "key exchange rsa" in text and "security level 0" in text
