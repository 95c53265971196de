from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509

from gateway.pki import forge
from gateway.pki.cache import ForgeCache, ForgeKey
from gateway.pki.forge import LeafKeys
from gateway.pki.keys import KeyKind, PrivateKey
from tests.support.pki_factory import Issued, TestPki

CA = tuple[x509.Certificate, PrivateKey]


@pytest.fixture(scope="module")
def leaf_keys() -> LeafKeys:
    return LeafKeys(KeyKind.EC_P256)


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> list[x509.Certificate]:
    """Every certificate forge_leaf signs during the test."""
    made: list[x509.Certificate] = []
    real: Callable[..., x509.Certificate] = forge.forge_leaf

    def counting(*args: object, **kwargs: object) -> x509.Certificate:
        cert = real(*args, **kwargs)
        made.append(cert)
        return cert

    monkeypatch.setattr(forge, "forge_leaf", counting)
    return made


def test_cache_hit_signs_nothing_new(pki: TestPki, site: Issued, signing_ca: CA, leaf_keys: LeafKeys,
                                     signatures: list[x509.Certificate]) -> None:
    cache = ForgeCache()
    first = cache.get_or_forge(site.cert, *signing_ca, leaf_keys, now=pki.now, sni="www.example.test")
    again = cache.get_or_forge(site.cert, *signing_ca, leaf_keys, now=pki.now, sni="other.example.test")
    assert again is first
    assert len(signatures) == 1
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_cache_key_separates_upstream_ca_and_leaf_kind(
    pki: TestPki, site: Issued, signing_ca: CA, untrusted_ca: CA, leaf_keys: LeafKeys,
    signatures: list[x509.Certificate],
) -> None:
    cache = ForgeCache()
    other_site = pki.leaf(["www.example.test"])  # same names, different certificate
    cache.get_or_forge(site.cert, *signing_ca, leaf_keys, now=pki.now)
    cache.get_or_forge(other_site.cert, *signing_ca, leaf_keys, now=pki.now)
    cache.get_or_forge(site.cert, *untrusted_ca, leaf_keys, now=pki.now)
    cache.get_or_forge(site.cert, *signing_ca, LeafKeys(KeyKind.EC_P384), now=pki.now)
    assert len(signatures) == 4
    assert (cache.hits, cache.misses) == (0, 4)


def test_least_recently_used_entry_is_evicted(pki: TestPki, site: Issued) -> None:
    cache = ForgeCache(max_entries=2)
    keys = [ForgeKey(b"ca", bytes([i]), KeyKind.EC_P256) for i in range(3)]
    cache.put(keys[0], site.cert, now=pki.now)
    cache.put(keys[1], site.cert, now=pki.now)
    assert cache.get(keys[0], now=pki.now) is site.cert  # 0 is now the most recent
    cache.put(keys[2], site.cert, now=pki.now)
    assert cache.get(keys[1], now=pki.now) is None
    assert cache.get(keys[0], now=pki.now) is site.cert
    assert cache.get(keys[2], now=pki.now) is site.cert
    assert len(cache) == 2


def test_entry_expires_when_forgery_expires(pki: TestPki, signing_ca: CA, leaf_keys: LeafKeys,
                                            signatures: list[x509.Certificate]) -> None:
    cache = ForgeCache()
    upstream = pki.leaf(["short.example.test"], not_after=pki.now + dt.timedelta(days=2))
    first = cache.get_or_forge(upstream.cert, *signing_ca, leaf_keys, now=pki.now)
    later = first.not_valid_after_utc + dt.timedelta(seconds=1)
    # The upstream itself has expired by then too; the cache must not serve the old forgery.
    assert cache.get(ForgeKey.of(signing_ca[0], upstream.cert, leaf_keys.kind), now=later) is None
    assert len(cache) == 0
    assert cache.misses == 2


def test_forgery_of_expired_upstream_stays_cached(pki: TestPki, untrusted_ca: CA, leaf_keys: LeafKeys,
                                                  signatures: list[x509.Certificate]) -> None:
    cache = ForgeCache()
    upstream = pki.expired_leaf(["old.example.test"])
    cache.get_or_forge(upstream.cert, *untrusted_ca, leaf_keys, now=pki.now)
    cache.get_or_forge(upstream.cert, *untrusted_ca, leaf_keys, now=pki.now + dt.timedelta(hours=5))
    assert len(signatures) == 1
    assert cache.hits == 1


def test_clear_empties_but_keeps_counters(pki: TestPki, site: Issued) -> None:
    cache = ForgeCache()
    key = ForgeKey(b"ca", b"up", KeyKind.EC_P256)
    cache.put(key, site.cert, now=pki.now)
    assert cache.get(key, now=pki.now) is site.cert
    cache.clear()
    assert len(cache) == 0 and cache.hits == 1


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ForgeCache(max_entries=0)
