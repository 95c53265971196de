"""The status column of `tlsgw cert list` (issue 4): valid, expired, not yet valid, no
trust anchor, broken key, in that order of precedence."""

from __future__ import annotations

import pytest

from gateway.pki.status import Anchors, CertStatus, assess, has_trust_anchor
from gateway.pki.store import EntryKind, KeyState
from tests.support.pki_factory import TestPki


def _assess(pki: TestPki, cert_kind: str, *, kind: EntryKind = EntryKind.CERTIFICATE,
            key_state: KeyState = KeyState.SEALED, anchors: tuple[str, ...] = ("root",),
            chain: tuple[str, ...] = ("intermediate",)) -> CertStatus:
    material = {"root": pki.root.cert, "intermediate": pki.intermediate.cert}
    cert = {
        "valid": pki.leaf(["www.example.test"]).cert,
        "expired": pki.expired_leaf(["www.example.test"]).cert,
        "future": pki.future_leaf(["www.example.test"]).cert,
        "self-signed": pki.self_signed(["www.example.test"]).cert,
        "root": pki.root.cert,
    }[cert_kind]
    return assess(cert, [material[c] for c in chain], kind=kind, key_state=key_state,
                  anchors=Anchors(material[a] for a in anchors), now=pki.now)


CASES = {
    "valid-through-chain": ({"cert_kind": "valid"}, CertStatus.VALID),
    "expired": ({"cert_kind": "expired"}, CertStatus.EXPIRED),
    "not-yet-valid": ({"cert_kind": "future"}, CertStatus.NOT_YET_VALID),
    "no-anchor": ({"cert_kind": "valid", "anchors": ()}, CertStatus.NO_TRUST_ANCHOR),
    "root-only-in-chain-is-no-anchor": ({"cert_kind": "valid", "anchors": (), "chain": ("intermediate", "root")},
                                        CertStatus.NO_TRUST_ANCHOR),
    "intermediate-missing": ({"cert_kind": "valid", "chain": ()}, CertStatus.NO_TRUST_ANCHOR),
    "self-signed-is-its-own-anchor": ({"cert_kind": "self-signed", "anchors": (), "chain": ()}, CertStatus.VALID),
    "missing-key": ({"cert_kind": "valid", "key_state": KeyState.NONE}, CertStatus.BROKEN_KEY),
    "broken-key-beats-expired": ({"cert_kind": "expired", "key_state": KeyState.BROKEN}, CertStatus.BROKEN_KEY),
    "ca-entry-needs-no-key": ({"cert_kind": "root", "kind": EntryKind.CA, "key_state": KeyState.NONE, "chain": ()},
                              CertStatus.VALID),
    "sealed-but-unchecked-key-is-not-broken": ({"cert_kind": "valid", "key_state": KeyState.LOCKED},
                                                CertStatus.VALID),
}


@pytest.mark.parametrize(("kwargs", "status"), CASES.values(), ids=CASES.keys())
def test_status(pki: TestPki, kwargs: dict[str, object], status: CertStatus) -> None:
    assert _assess(pki, **kwargs) is status  # type: ignore[arg-type]


def test_intermediates_of_the_store_complete_a_path(pki: TestPki) -> None:
    leaf = pki.leaf(["www.example.test"]).cert
    assert has_trust_anchor(leaf, (), Anchors([pki.root.cert]), intermediates=[pki.intermediate.cert])


def test_a_look_alike_issuer_is_no_anchor(pki: TestPki) -> None:
    """Same subject name, different key: the signature decides, not the name."""
    impostor = TestPki.create()  # same "tlsgw test" names, other keys
    leaf = pki.leaf(["www.example.test"]).cert
    assert not has_trust_anchor(leaf, (impostor.intermediate.cert,), Anchors([impostor.root.cert]))
