"""Handshake failures sorted into the protocol counters (issue 5)."""

from __future__ import annotations

import pytest

from gateway.tls.protocol_stats import (
    CLIENT_CIPHER_OTHER,
    Refusal,
    ServerFailure,
    classify_client_failure,
    classify_server_failure,
)
from gateway.tls.versions import OfferRefusal


@pytest.mark.parametrize(("detail", "requested", "expected"), [
    ("sslv3 alert handshake failure", False, ServerFailure.NO_SHARED_CIPHER),
    ("sslv3 alert handshake failure", True, ServerFailure.CLIENT_CERTIFICATE),
    ("tlsv13 alert certificate required", False, ServerFailure.CLIENT_CERTIFICATE),
    ("tlsv1 alert protocol version", False, ServerFailure.PROTOCOL_VERSION),
    ("unsupported protocol", False, ServerFailure.PROTOCOL_VERSION),
    ("peer closed the connection during the handshake", False, ServerFailure.CLOSED),
    ("unexpected eof while reading", False, ServerFailure.CLOSED),
    ("timed out", False, ServerFailure.TIMEOUT),
    ("tlsv1 alert internal error", False, ServerFailure.OTHER),
], ids=["handshake-failure", "handshake-failure-after-certificate-request", "tls13-certificate-required",
        "protocol-version-alert", "no-common-version", "closed", "eof", "timeout", "other"])
def test_server_failures_are_classified(detail: str, requested: bool, expected: ServerFailure) -> None:
    assert classify_server_failure(detail, requested) is expected


@pytest.mark.parametrize(("detail", "expected"), [
    ("tlsv1 alert unknown ca", Refusal.CERTIFICATE_REJECTED),
    ("sslv3 alert bad certificate", Refusal.CERTIFICATE_REJECTED),
    ("sslv3 alert certificate unknown", Refusal.CERTIFICATE_REJECTED),
    ("no shared cipher", Refusal.CLIENT_CIPHER_OTHER),
    ("unsupported protocol", Refusal.PROTOCOL_VERSION),
    ("wrong version number", Refusal.PROTOCOL_VERSION),
    ("timed out", Refusal.TIMEOUT),
    ("peer closed the connection during the handshake", Refusal.CLIENT_HANDSHAKE),
], ids=["unknown-ca", "bad-certificate", "certificate-unknown", "no-shared-cipher", "unsupported-protocol",
        "wrong-version", "timeout", "closed"])
def test_client_failures_are_classified(detail: str, expected: Refusal) -> None:
    assert classify_client_failure(detail) is expected


def test_counter_names_are_stable() -> None:
    """Operators and dashboards key on these strings; the product's name is kept verbatim."""
    assert CLIENT_CIPHER_OTHER == "protocol.clientCipherOther"
    assert ServerFailure.CLIENT_CERTIFICATE.counter == "protocol.serverHandshakeFailure.clientCertificate"
    assert Refusal.PARITY.counter == "protocol.refused.parity"
    # An offer refusal's value names the refusal counter it belongs to.
    assert {r.value for r in OfferRefusal} <= {r.value for r in Refusal}
