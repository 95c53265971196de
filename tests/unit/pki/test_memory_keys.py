"""Keys kept only in the gateway's memory (issue 4, `pki.persist_keys: false`): the overlay,
its wire form, and how the store and `tlsgw cert list` see entries whose key lives there."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.errors import PkiError
from gateway.pki.keys import private_key_to_pem
from gateway.pki.listing import build_listing, render_details, render_listing
from gateway.pki.memory_keys import (
    MAX_KEYS_PER_IMPORT,
    MEMORY_KEY_STATE,
    MISSING_KEY_STATE,
    MemoryKeys,
    certificate_key_id,
    key_to_wire,
    keys_from_wire,
)
from gateway.pki.status import CertStatus
from gateway.pki.store import CertStore, EntryInfo, EntryKind, KeyState
from tests.support.pki_factory import Issued, TestPki, ec_key


@pytest.fixture
def web(pki: TestPki) -> Issued:
    return pki.leaf(["web.example.test"], key=ec_key())


@pytest.fixture
def mail(pki: TestPki) -> Issued:
    return pki.leaf(["mail.example.test"], key=ec_key())


def _key_body(issued: Issued) -> str:
    """A stretch of the key's base64 past the PKCS#8 header (which all P-256 keys share):
    the private value, which must never show up anywhere."""
    return "".join(issued.key_pem.decode().splitlines()[1:-1])[48:90]


def _memory_store(tmp_path: Path, pki: TestPki, *entries: tuple[str, Issued],
                  keys: MemoryKeys | None = None) -> CertStore:
    store = CertStore(tmp_path / "pki", memory_keys=keys)
    for name, issued in entries:
        store.save(name, issued.cert, None, [pki.intermediate.cert],
                   info=EntryInfo(EntryKind.CERTIFICATE, origin="imported", memory_key=True))
    return store


# --- the overlay ----------------------------------------------------------------------------------


def test_key_is_found_by_the_public_key_of_any_certificate_name(pki: TestPki, web: Issued) -> None:
    keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    renamed_copy = pki.leaf(["other.example.test"], key=web.key)  # same key pair, other certificate
    assert keys.key_for(web.cert) is web.key
    assert keys.key_for(renamed_copy.cert) is web.key
    assert keys.key_for(pki.leaf(["x.example.test"], key=ec_key()).cert) is None


def test_adding_keys_makes_a_new_overlay_and_leaves_the_old_one(web: Issued, mail: Issued) -> None:
    first = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    second = first.with_keys([("mail", mail.key), ("web-renamed", web.key)])  # type: ignore[list-item]
    assert len(first) == 1 and first.key_for(mail.cert) is None
    assert len(second) == 2 and second.names() == ["mail", "web-renamed"]


def test_repr_and_held_never_show_key_material(web: Issued) -> None:
    keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    shown = repr(keys) + str(keys) + repr(next(iter(keys.by_key_id.values()))) + json.dumps(keys.held())
    assert "web" in shown and _key_body(web) not in shown and "PRIVATE KEY" not in shown
    assert keys.held() == [{"name": "web", "key_id": certificate_key_id(web.cert)}]


def test_wire_form_round_trips_every_key(web: Issued, mail: Issued) -> None:
    keys = MemoryKeys().with_keys([("web", web.key), ("mail", mail.key)])  # type: ignore[list-item]
    again = MemoryKeys.from_wire(json.loads(json.dumps(keys.to_wire())))
    assert again.names() == ["mail", "web"]
    assert again.key_for(web.cert) is not None and again.key_for(mail.cert) is not None
    assert again.held() == keys.held()


def test_key_with_its_certificate_is_checked_against_it(web: Issued) -> None:
    [(name, key)] = keys_from_wire([key_to_wire("web", web.key, web.cert)], require_certificate=True)  # type: ignore[arg-type]
    assert name == "web" and certificate_key_id(web.cert) == MemoryKeys().with_keys([(name, key)]).held()[0]["key_id"]


def _wire(issued: Issued, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = key_to_wire("web", issued.key, issued.cert)  # type: ignore[arg-type]
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(("items", "fragment"), [
    ("not a list", "expected a list"),
    (["just a string"], "keys[0]: expected an object"),
    ([{"key": "-----BEGIN PRIVATE KEY-----"}], "keys[0]: name must be"),
    ("NO-KEY", "key must be a PEM private key"),
    ("GARBAGE-KEY", "not a readable private key"),
    ("OTHER-KEY", "not the key of the certificate"),
    ("NO-CERT", "the certificate must come with its key"),
    ("BAD-CERT", "the certificate is not readable PEM"),
    ("TOO-MANY", f"at most {MAX_KEYS_PER_IMPORT}"),
], ids=["not-a-list", "not-an-object", "no-name", "no-key", "garbage-key", "other-key", "no-certificate",
        "bad-certificate", "too-many"])
def test_bad_wire_items_are_refused_by_position_without_quoting_the_key(web: Issued, mail: Issued, items: Any,
                                                                        fragment: str) -> None:
    built = {
        "NO-KEY": [_wire(web, key=None)],
        "GARBAGE-KEY": [_wire(web, key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")],
        "OTHER-KEY": [_wire(web, key=private_key_to_pem(mail.key).decode())],  # type: ignore[arg-type]
        "NO-CERT": [_wire(web, certificate=None)],
        "BAD-CERT": [_wire(web, certificate="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")],
        "TOO-MANY": [_wire(web)] * (MAX_KEYS_PER_IMPORT + 1),
    }
    items = built.get(items, items) if isinstance(items, str) else items
    with pytest.raises(PkiError) as caught:
        keys_from_wire(items, require_certificate=True)
    assert fragment in str(caught.value)
    assert _key_body(web) not in str(caught.value) and _key_body(mail) not in str(caught.value)


# --- the store ------------------------------------------------------------------------------------


def test_memory_entry_has_no_key_file_and_says_so_in_its_info(tmp_path: Path, pki: TestPki, web: Issued) -> None:
    store = _memory_store(tmp_path, pki, ("web", web))
    assert not store.key_path("web").exists()
    assert store.load_info("web").memory_key
    assert json.loads(store.info_path("web").read_bytes())["memory_key"] is True
    assert "memory_key" not in json.loads(EntryInfo().to_json())  # older readers see nothing new


def test_store_loads_a_memory_entry_with_the_key_from_its_overlay(tmp_path: Path, pki: TestPki, web: Issued) -> None:
    _memory_store(tmp_path, pki, ("web", web))
    with_keys = CertStore(tmp_path / "pki", memory_keys=MemoryKeys().with_keys([("web", web.key)]))  # type: ignore[list-item]
    assert with_keys.load("web").key is not None
    assert with_keys.key_state("web", web.cert) == (KeyState.MEMORY, "")
    without = CertStore(tmp_path / "pki")
    assert without.load("web").key is None
    assert without.key_state("web", web.cert) == (KeyState.MEMORY_MISSING, "")


def test_overlay_does_not_give_a_key_to_an_entry_not_marked_memory_only(tmp_path: Path, pki: TestPki,
                                                                       web: Issued) -> None:
    keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    store = CertStore(tmp_path / "pki", memory_keys=keys)
    store.save("ca-like", web.cert, None, info=EntryInfo(EntryKind.CERTIFICATE))
    assert store.load("ca-like").key is None
    assert store.key_state("ca-like", web.cert)[0] is KeyState.NONE


# --- what `tlsgw cert list` and `show` say ---------------------------------------------------------


NOW = dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize(("gateway_holds", "state", "status", "fragment"), [
    (True, MEMORY_KEY_STATE, CertStatus.NO_TRUST_ANCHOR, None),
    (False, MISSING_KEY_STATE, CertStatus.BROKEN_KEY, "the running gateway does not hold it"),
    (None, MISSING_KEY_STATE, CertStatus.BROKEN_KEY, "no running gateway reported holding it"),
], ids=["gateway-holds-it", "gateway-restarted", "no-gateway"])
def test_listing_shows_where_the_key_lives(tmp_path: Path, pki: TestPki, web: Issued, gateway_holds: bool | None,
                                           state: str, status: CertStatus, fragment: str | None) -> None:
    store = _memory_store(tmp_path, pki, ("web", web))
    held = None if gateway_holds is None else (
        frozenset({certificate_key_id(web.cert)}) if gateway_holds else frozenset({"0" * 64}))
    listing = build_listing(store, str(tmp_path / "no-bundle.pem"), NOW, held)
    [row] = listing.rows
    assert row.key_state.value == state and row.status is status
    text = render_listing(listing, store.directory)
    assert state in text
    details = render_details(store, "web", str(tmp_path / "no-bundle.pem"), NOW, gateway_keys=held)
    assert state in details
    if fragment is None:
        assert not row.key_problem
    else:
        assert fragment in row.key_problem and "tlsgw cert import web" in row.key_problem
        assert f"web: no key: {row.key_problem}" in text


def test_listing_never_shows_the_key_of_an_entry(tmp_path: Path, pki: TestPki, web: Issued) -> None:
    keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    store = _memory_store(tmp_path, pki, ("web", web), keys=keys)
    listing = build_listing(store, str(tmp_path / "no-bundle.pem"), NOW, frozenset())
    text = render_listing(listing, store.directory) + render_details(store, "web", "x", NOW)
    assert _key_body(web) not in text and "PRIVATE KEY" not in text
    assert web.cert.public_bytes(serialization.Encoding.PEM) not in text.encode()
