"""The demo's certificates: a stand-in for a public CA that the origin servers' certificates
chain to, those server certificates, and tlsgw's own signing CA in a private store.

The stand-in public root is what a real deployment gets from Mozilla's bundle; in the
lab it is a named CA in the gateway's trust store (and the client's), so that nothing
depends on real public certificates. Every run makes new keys: nothing here is shared
between installations or kept after the demo.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.ca import create_ca, new_serial_number
from gateway.pki.keys import KeyKind, PrivateKey
from gateway.pki.store import CertStore

PUBLIC_ROOT_NAME = "demo-public-root"
SIGNING_CA_NAME = "demo-signing-ca"


@dataclass(frozen=True, slots=True)
class ServerCert:
    host: str
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class DemoPki:
    workdir: Path
    store_dir: Path
    public_root_file: Path
    """The stand-in public root, PEM: trusted by the client and the gateway."""
    signing_ca_file: Path
    """tlsgw's signing CA certificate, PEM: what an organisation deploys to its clients."""
    servers: dict[str, ServerCert]
    public_root_cert: x509.Certificate
    public_root_key: PrivateKey
    """Kept in memory only, so tests can issue more (e.g. expired) server certificates."""

    def issue_server(self, host: str, now: dt.datetime | None = None, days: int = 90,
                     file_stem: str | None = None,
                     ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()) -> ServerCert:
        """A server certificate for `host` from the stand-in public root, written as PEM files."""
        now = now or dt.datetime.now(dt.timezone.utc)
        cert, key = issue_server_certificate(host, self.public_root_cert, self.public_root_key, now, days,
                                             ip_addresses=ip_addresses)
        stem = file_stem or host
        cert_file, key_file = self.workdir / f"{stem}.crt", self.workdir / f"{stem}.key"
        pem = serialization.Encoding.PEM
        _write(cert_file, cert.public_bytes(pem), 0o644)
        _write(key_file, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
        return ServerCert(host, cert_file, key_file)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def issue_server_certificate(
    host: str, ca_cert: x509.Certificate, ca_key: PrivateKey, now: dt.datetime, days: int = 90,
    ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf for `host`. `ip_addresses` are added to the subjectAltName so that clients
    that send no SNI (`openssl s_time`), and tlsgw checking such a flow's upstream against
    the destination address, find the server's address among its names."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names += [x509.IPAddress(address) for address in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(new_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert, key


def build_demo_pki(workdir: Path, hosts: tuple[str, ...]) -> DemoPki:
    now = dt.datetime.now(dt.timezone.utc)
    pem = serialization.Encoding.PEM
    workdir.mkdir(parents=True, exist_ok=True)
    store_dir = workdir / "pki"
    store = CertStore(store_dir)

    # Like a real public root, it has existed for years (so tests can issue certificates
    # that expired long ago and still chain to it).
    root_cert, root_key = create_ca("Demo Public Root CA", key_kind=KeyKind.EC_P256, organization="tlsgw demo",
                                    now=now - dt.timedelta(days=3 * 365), days=10 * 365)
    store.save(PUBLIC_ROOT_NAME, root_cert)
    public_root_file = workdir / "public-root.pem"
    _write(public_root_file, root_cert.public_bytes(pem), 0o644)

    signing_cert, signing_key = create_ca("tlsgw Demo Signing CA", key_kind=KeyKind.EC_P256,
                                          organization="tlsgw demo")
    store.save(SIGNING_CA_NAME, signing_cert, signing_key)
    signing_ca_file = workdir / "signing-ca.pem"
    _write(signing_ca_file, signing_cert.public_bytes(pem), 0o644)

    pki = DemoPki(workdir, store_dir, public_root_file, signing_ca_file, {}, root_cert, root_key)
    for host in hosts:
        pki.servers[host] = pki.issue_server(host, now)
    return pki
