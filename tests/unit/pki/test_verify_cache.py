"""A remembered verification is only ever one that a fresh verification would repeat."""

from __future__ import annotations

import datetime as dt

from gateway.pki.trust import TrustAnchors
from gateway.pki.verify import VerifyFailure
from gateway.pki.verify_cache import VerifyCache
from tests.support.pki_factory import Issued, TestPki

HOST = "www.example.test"
MINUTE = dt.timedelta(minutes=1)


def _chain(site: Issued, pki: TestPki) -> list:
    return [site.cert, pki.intermediate.cert]


def test_same_chain_and_host_is_answered_from_memory(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    cache = VerifyCache()
    first = cache.verify(_chain(site, pki), HOST, anchors, now=pki.now, min_key_length=2048)
    second = cache.verify(_chain(site, pki), HOST, anchors, now=pki.now + MINUTE, min_key_length=2048)
    assert first.ok and second == first and cache.hits == 1


def test_another_host_key_length_or_anchor_set_is_verified_afresh(pki: TestPki, anchors: TrustAnchors,
                                                                   site: Issued) -> None:
    cache = VerifyCache()
    assert cache.verify(_chain(site, pki), HOST, anchors, now=pki.now, min_key_length=2048).ok
    wrong_host = cache.verify(_chain(site, pki), "other.example.test", anchors, now=pki.now, min_key_length=2048)
    assert wrong_host.reason is VerifyFailure.HOSTNAME_MISMATCH
    cache.verify(_chain(site, pki), HOST, anchors, now=pki.now, min_key_length=4096)  # verified again: no hit
    empty = TrustAnchors.from_certificates("empty", [])
    assert cache.verify(_chain(site, pki), HOST, empty, now=pki.now, min_key_length=2048).reason is VerifyFailure.UNTRUSTED
    assert cache.hits == 0


def test_entries_expire_after_the_ttl(pki: TestPki, anchors: TrustAnchors, site: Issued) -> None:
    cache = VerifyCache(ttl=60)
    cache.verify(_chain(site, pki), HOST, anchors, now=pki.now, min_key_length=2048)
    cache.verify(_chain(site, pki), HOST, anchors, now=pki.now + 2 * MINUTE, min_key_length=2048)
    assert cache.hits == 0


def test_certificate_expiring_within_the_ttl_is_not_remembered(pki: TestPki, anchors: TrustAnchors) -> None:
    short = pki.leaf([HOST], not_after=pki.now + dt.timedelta(seconds=90))
    cache = VerifyCache(ttl=300)
    assert cache.verify(_chain(short, pki), HOST, anchors, now=pki.now, min_key_length=2048).ok
    later = cache.verify(_chain(short, pki), HOST, anchors, now=pki.now + 2 * MINUTE, min_key_length=2048)
    assert later.reason is VerifyFailure.EXPIRED and cache.hits == 0


def test_failures_are_not_remembered(pki: TestPki, anchors: TrustAnchors) -> None:
    future = pki.leaf([HOST], not_before=pki.now + MINUTE)
    cache = VerifyCache()
    assert cache.verify(_chain(future, pki), HOST, anchors, now=pki.now, min_key_length=2048).reason \
        is VerifyFailure.NOT_YET_VALID
    assert cache.verify(_chain(future, pki), HOST, anchors, now=pki.now + 2 * MINUTE, min_key_length=2048).ok


def test_size_is_bounded(pki: TestPki, anchors: TrustAnchors) -> None:
    cache = VerifyCache(max_entries=2)
    for n in range(3):
        cache.verify(_chain(pki.leaf([f"h{n}.example.test"]), pki), f"h{n}.example.test", anchors, now=pki.now,
                     min_key_length=2048)
    assert len(cache._entries) == 2
