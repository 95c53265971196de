"""The lab's stand-in public certificates (gateway/lab/demo_pki.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509

from gateway.lab.demo_pki import issue_server_certificate
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _names(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_server_certificate_names_only_its_host_by_default() -> None:
    root, root_key = create_ca("Root", key_kind=KeyKind.EC_P256, now=NOW)
    cert, _ = issue_server_certificate("shop.example", root, root_key, NOW)
    assert _names(cert) == [x509.DNSName("shop.example")]


def test_server_certificate_also_names_its_addresses_for_clients_without_sni() -> None:
    root, root_key = create_ca("Root", key_kind=KeyKind.EC_P256, now=NOW)
    address = ipaddress.IPv4Address("192.0.2.20")
    cert, _ = issue_server_certificate("shop.example", root, root_key, NOW, ip_addresses=[address])
    assert _names(cert) == [x509.DNSName("shop.example"), x509.IPAddress(address)]
