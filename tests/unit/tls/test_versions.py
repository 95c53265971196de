"""The parity rule of issue 5, as tables: what tlsgw offers the server for a given client,
and the least it accepts from the client given what the server gave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.model import BulkCipher, CipherSuiteCriteria, KeyExchange, TlsVersion
from gateway.tls.ciphers import Signature, SuiteSelection, select_suites
from gateway.tls.clienthello import EXT_SUPPORTED_VERSIONS, ClientHello
from gateway.tls.versions import (
    OfferRefusal,
    ParityFloor,
    UpstreamOffer,
    client_meets_floor,
    client_side_bounds,
    client_side_suites,
    client_versions,
    parity_floor,
    upstream_offer,
    version_from_openssl,
)

V = TlsVersion
MODERN = (V.TLS1_2, V.TLS1_3)
WIDE = (V.TLS1_0, V.TLS1_1, V.TLS1_2, V.TLS1_3)
WITH_RSA = CipherSuiteCriteria(key_exchange=(KeyExchange.ECDHE_RSA, KeyExchange.ECDHE_ECDSA, KeyExchange.RSA))

# IANA codes used below.
TLS13 = (0x1301, 0x1302, 0x1303)
ECDHE_ECDSA_GCM = 0xC02B
ECDHE_RSA_GCM = 0xC02F
ECDHE_RSA_CBC_SHA = 0xC013
ECDHE_ECDSA_CBC_SHA = 0xC009
RSA_GCM = 0x009C
RSA_CBC_SHA = 0x002F
GREASE = 0x0A0A


def hello(versions: tuple[int, ...] | None, suites: tuple[int, ...], legacy: int = 0x0303) -> ClientHello:
    """A ClientHello; `versions` None means no supported_versions extension (pre-1.3 client)."""
    extensions = (EXT_SUPPORTED_VERSIONS,) if versions is not None else ()
    return ClientHello(
        record_version=0x0301, legacy_version=legacy, random=b"\0" * 32, session_id=b"", cipher_suites=suites,
        compression_methods=(0,), extensions=extensions, sni="site.example", alpn=(),
        supported_versions=versions if versions is not None else (legacy,), supported_groups=(),
        signature_algorithms=(), has_session_ticket=False, raw=b"",
    )


BROWSER = hello((GREASE, 0x0304, 0x0303), (GREASE, *TLS13, ECDHE_ECDSA_GCM, ECDHE_RSA_GCM, ECDHE_RSA_CBC_SHA, RSA_GCM))


@pytest.mark.parametrize(("client", "expected"), [
    (hello((GREASE, 0x0304, 0x0303), ()), {V.TLS1_2, V.TLS1_3}),
    (hello((0x0304,), ()), {V.TLS1_3}),
    (hello(None, (), legacy=0x0303), {V.SSL3, V.TLS1_0, V.TLS1_1, V.TLS1_2}),
    (hello(None, (), legacy=0x0301), {V.SSL3, V.TLS1_0}),
    (hello(None, (), legacy=0x0304), {V.SSL3, V.TLS1_0, V.TLS1_1, V.TLS1_2}),
    (hello(None, (), legacy=0x0200), set()),
], ids=["supported-versions-exact", "tls13-only", "pre13-client-up-to-1.2", "pre13-client-up-to-1.0",
        "legacy-1.3-without-extension-is-1.2", "sslv2"])
def test_client_versions(client: ClientHello, expected: set[TlsVersion]) -> None:
    assert client_versions(client) == expected


def _offer(client: ClientHello, protocols: tuple[TlsVersion, ...] = MODERN,
           criteria: CipherSuiteCriteria = CipherSuiteCriteria(),
           facing: Signature | None = Signature.ECDSA) -> UpstreamOffer | OfferRefusal:
    return upstream_offer(client, protocols, select_suites(criteria, protocols), facing)


OFFERS = [
    # (client, protocols, criteria, client-facing key, expected (min, max, tls12 codes, tls13 count) or refusal)
    (BROWSER, MODERN, CipherSuiteCriteria(), Signature.ECDSA,
     (V.TLS1_2, V.TLS1_3, [ECDHE_ECDSA_GCM, ECDHE_RSA_GCM, ECDHE_RSA_CBC_SHA], 3)),
    (hello((0x0304,), TLS13), MODERN, CipherSuiteCriteria(), Signature.ECDSA, (V.TLS1_3, V.TLS1_3, [], 3)),
    (hello((0x0303,), (ECDHE_ECDSA_GCM, *TLS13)), MODERN, CipherSuiteCriteria(), Signature.ECDSA,
     (V.TLS1_2, V.TLS1_2, [ECDHE_ECDSA_GCM], 0)),
    (hello((0x0304, 0x0303), (0x1302, ECDHE_RSA_GCM)), MODERN, CipherSuiteCriteria(), Signature.ECDSA,
     (V.TLS1_3, V.TLS1_3, [], 1)),
    (hello((0x0304, 0x0303), (0x1302, ECDHE_RSA_GCM)), MODERN, CipherSuiteCriteria(), None,
     (V.TLS1_2, V.TLS1_3, [ECDHE_RSA_GCM], 1)),
    (hello(None, (ECDHE_RSA_CBC_SHA, ECDHE_ECDSA_CBC_SHA, RSA_CBC_SHA), legacy=0x0302), WIDE, WITH_RSA,
     Signature.ECDSA, (V.TLS1_0, V.TLS1_1, [ECDHE_ECDSA_CBC_SHA, ECDHE_RSA_CBC_SHA, RSA_CBC_SHA], 0)),
    (hello((0x0303, 0x0302, 0x0301), (ECDHE_ECDSA_GCM,)), WIDE, CipherSuiteCriteria(), Signature.ECDSA,
     (V.TLS1_2, V.TLS1_2, [ECDHE_ECDSA_GCM], 0)),
    (hello((0x0303,), (RSA_GCM,)), MODERN, CipherSuiteCriteria(), Signature.ECDSA, OfferRefusal.NO_COMMON_CIPHER),
    (hello((0x0303,), (RSA_GCM, ECDHE_RSA_GCM)), MODERN, WITH_RSA, Signature.RSA,
     (V.TLS1_2, V.TLS1_2, [ECDHE_RSA_GCM, RSA_GCM], 0)),
    (hello(None, (ECDHE_ECDSA_CBC_SHA,), legacy=0x0301), MODERN, CipherSuiteCriteria(), Signature.ECDSA,
     OfferRefusal.NO_COMMON_VERSION),
    (hello((0x0304,), (0x1301,)), MODERN, CipherSuiteCriteria(bulk=(BulkCipher.AES256_GCM,)), Signature.ECDSA,
     OfferRefusal.NO_COMMON_CIPHER),
]


@pytest.mark.parametrize(("client", "protocols", "criteria", "facing", "expected"), OFFERS, ids=[
    "browser-gets-its-own-intersection", "tls13-only-client-never-carried-over-tls12",
    "tls12-only-client-capped-at-tls12", "tls12-dropped-when-forged-key-cannot-serve-client-suites",
    "no-facing-key-check-keeps-tls12", "old-client-mirrored-below-tls12",
    "lower-bound-raised-to-where-suites-exist", "non-forward-secret-client-refused-by-default",
    "rsa-key-exchange-mirrored-when-enabled", "version-refusal", "tls13-cipher-refusal",
])
def test_upstream_offers_no_more_than_the_client_offered(
        client: ClientHello, protocols: tuple[TlsVersion, ...], criteria: CipherSuiteCriteria,
        facing: Signature | None, expected: object) -> None:
    offer = _offer(client, protocols, criteria, facing)
    if isinstance(expected, OfferRefusal):
        assert offer is expected
        return
    assert isinstance(offer, UpstreamOffer)
    low, high, tls12, tls13_count = expected  # type: ignore[misc]
    assert (offer.min_version, offer.max_version) == (low, high)
    assert [s.code for s in offer.tls12] == tls12
    assert len(offer.tls13) == tls13_count


def test_offers_are_hashable_keys_equal_for_equal_clients() -> None:
    assert _offer(BROWSER) == _offer(BROWSER)
    assert hash(_offer(BROWSER)) == hash(_offer(BROWSER))


FLOORS = [
    # (upstream version, upstream cipher, protocols, expected floor)
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256", MODERN, ParityFloor(V.TLS1_3, True, True)),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", MODERN, ParityFloor(V.TLS1_2, True, True)),
    ("TLSv1.2", "ECDHE-RSA-AES128-SHA", MODERN, ParityFloor(V.TLS1_2, True, False)),
    ("TLSv1.2", "AES128-GCM-SHA256", MODERN, ParityFloor(V.TLS1_2, False, True)),
    ("TLSv1", "AES128-SHA", WIDE, ParityFloor(V.TLS1_0, False, False)),
    ("TLSv1.1", "ECDHE-RSA-AES256-SHA", (V.TLS1_2, V.TLS1_3), ParityFloor(V.TLS1_2, True, False)),
    ("TLSv1.2", "SOMETHING-NEW", MODERN, ParityFloor(V.TLS1_2, True, True)),
    ("TLSv1.2", None, MODERN, ParityFloor(V.TLS1_2, True, True)),
]


@pytest.mark.parametrize(("version", "cipher", "protocols", "expected"), FLOORS, ids=[
    "tls13-upstream", "tls12-fs-aead", "tls12-fs-cbc", "tls12-static-rsa", "tls10-openssl-name",
    "never-below-proxy-minimum", "unknown-cipher-counts-as-strongest", "no-cipher-counts-as-strongest",
])
def test_parity_floor(version: str, cipher: str | None, protocols: tuple[TlsVersion, ...],
                      expected: ParityFloor) -> None:
    assert parity_floor(version, cipher, protocols) == expected


@pytest.mark.parametrize(("version", "protocols", "expected"), [
    ("TLSv1.3", MODERN, (V.TLS1_3, V.TLS1_3)),
    ("TLSv1.2", MODERN, (V.TLS1_2, V.TLS1_3)),
    ("TLSv1", WIDE, (V.TLS1_0, V.TLS1_3)),
    ("TLSv1.2", (V.TLS1_2,), (V.TLS1_2, V.TLS1_2)),
], ids=["tls13-upstream-tls13-only", "tls12-upstream-at-least-tls12", "tls10-upstream", "tls12-only-proxy"])
def test_client_side_bounds_never_below_upstream_and_prefer_the_highest(
        version: str, protocols: tuple[TlsVersion, ...], expected: tuple[TlsVersion, TlsVersion]) -> None:
    assert client_side_bounds(version, "ECDHE-RSA-AES128-GCM-SHA256", protocols) == expected


def test_client_side_bounds_refuse_an_upstream_above_the_proxy() -> None:
    with pytest.raises(ValueError):
        client_side_bounds("TLSv1.3", "TLS_AES_128_GCM_SHA256", (V.TLS1_2,))


def test_unknown_openssl_version_name_is_an_error() -> None:
    assert version_from_openssl("TLSv1") is V.TLS1_0
    with pytest.raises(ValueError):
        version_from_openssl("DTLSv1.2")


def _codes(selection: SuiteSelection) -> set[int]:
    return {s.code for s in selection.tls12}


def test_client_side_suites_keep_forward_secrecy_and_aead_of_the_upstream() -> None:
    selection = select_suites(WITH_RSA, WIDE)
    assert any(not s.forward_secret for s in selection.tls12)
    fs_aead = client_side_suites(selection, ParityFloor(V.TLS1_2, True, True))
    assert fs_aead.tls12 and all(s.forward_secret and s.aead for s in fs_aead.tls12)
    fs_only = client_side_suites(selection, ParityFloor(V.TLS1_2, True, False))
    assert _codes(fs_aead) < _codes(fs_only) and all(s.forward_secret for s in fs_only.tls12)
    anything = client_side_suites(selection, ParityFloor(V.TLS1_0, False, False))
    assert _codes(anything) == _codes(selection)
    tls13_only = client_side_suites(selection, ParityFloor(V.TLS1_3, True, True))
    assert tls13_only.tls12 == () and tls13_only.tls13 == selection.tls13


@pytest.mark.parametrize(("client", "floor", "expected"), [
    (BROWSER, ParityFloor(V.TLS1_3, True, True), True),
    (hello((0x0303,), (ECDHE_ECDSA_GCM,)), ParityFloor(V.TLS1_3, True, True), False),
    (hello((0x0303,), (ECDHE_ECDSA_GCM,)), ParityFloor(V.TLS1_2, True, True), True),
    (hello((0x0303,), (ECDHE_ECDSA_CBC_SHA,)), ParityFloor(V.TLS1_2, True, True), False),
    (hello((0x0303,), (ECDHE_RSA_GCM,)), ParityFloor(V.TLS1_2, True, True), False),
], ids=["browser-meets-tls13", "tls12-client-vs-tls13-upstream", "tls12-aead-client",
        "cbc-client-vs-aead-upstream", "client-suites-unusable-with-forged-key"])
def test_client_meets_floor(client: ClientHello, floor: ParityFloor, expected: bool) -> None:
    selection = select_suites(CipherSuiteCriteria(), MODERN)
    assert client_meets_floor(client, floor, selection, MODERN, Signature.ECDSA) is expected


_ALL_CODES = sorted({s.code for s in select_suites(WITH_RSA, WIDE).suites} | {GREASE, 0x00FF, 0x1304})


@given(
    versions=st.one_of(st.none(), st.lists(st.sampled_from([GREASE, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304]),
                                           max_size=6)),
    legacy=st.sampled_from([0x0300, 0x0301, 0x0302, 0x0303]),
    suites=st.lists(st.sampled_from(_ALL_CODES), max_size=12),
    protocols=st.sampled_from([MODERN, WIDE, (V.TLS1_2,), (V.TLS1_3,), (V.TLS1_0, V.TLS1_1)]),
    facing=st.sampled_from([Signature.ECDSA, Signature.RSA, None]),
)
def test_upstream_offer_never_exceeds_what_the_client_offered(
        versions: list[int] | None, legacy: int, suites: list[int], protocols: tuple[TlsVersion, ...],
        facing: Signature | None) -> None:
    client = hello(tuple(versions) if versions is not None else None, tuple(suites), legacy)
    offer = _offer(client, protocols, WITH_RSA, facing)
    if isinstance(offer, OfferRefusal):
        return
    allowed = client_versions(client) & set(protocols)
    assert offer.min_version in allowed and offer.max_version in allowed
    assert offer.min_version <= offer.max_version
    assert all(s.code in suites for s in offer.tls12 + offer.tls13)
    assert bool(offer.tls13) == (offer.max_version is V.TLS1_3)
    if offer.min_version < V.TLS1_3:
        assert any(s.min_version <= offer.min_version for s in offer.tls12)
        if facing is not None:
            assert any(s.signature is facing for s in offer.tls12)
