"""Shared PKI material for the pki unit tests, generated once per session.

RSA keys are slow to generate, so only two exist (1024 for "weak", 2048 where RSA
behaviour matters); everything else uses EC keys.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind, PrivateKey
from gateway.pki.trust import TrustAnchors
from tests.support.pki_factory import Issued, TestPki, ec_key, rsa_key


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return TestPki.create()


@pytest.fixture(scope="session")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa_key(1024)


@pytest.fixture(scope="session")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa_key(2048)


@pytest.fixture(scope="session")
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec_key()


@pytest.fixture(scope="session")
def anchors(pki: TestPki) -> TrustAnchors:
    return TrustAnchors.from_certificates("test", [pki.root.cert])


@pytest.fixture(scope="session")
def site(pki: TestPki) -> Issued:
    """A valid server certificate for www.example.test (and a wildcard and an IP)."""
    return pki.leaf(["www.example.test", "*.img.example.test", "192.0.2.10"])


@pytest.fixture(scope="session")
def signing_ca(pki: TestPki) -> tuple[x509.Certificate, PrivateKey]:
    return create_ca("tlsgw test signing CA", key_kind=KeyKind.EC_P256, now=pki.now)


@pytest.fixture(scope="session")
def untrusted_ca(pki: TestPki) -> tuple[x509.Certificate, PrivateKey]:
    return create_ca("tlsgw test untrusted CA", key_kind=KeyKind.EC_P256, now=pki.now)
