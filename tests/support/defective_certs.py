"""Server certificates with each defect a browser rejects, written as files a real server
(nginx, `openssl s_server`) can present: the issue 5 parity cases.

One trusted hierarchy (`root` -> `intermediate` -> leaves) whose root the gateway's
trust store holds; every defect is one change from a good leaf, so a test failing for
a defect fails for that defect alone. SHA-1 is signed by the `openssl` command, because
`cryptography` refuses to sign with SHA-1 (DESIGN.md section 3). The revoked leaf is
listed in a CRL signed by the intermediate (`crl_file`).

Everything is made at test time into a temporary directory: nothing can expire in the
repository.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.pki_factory import Issued, TestKey, TestPki, ec_key, rsa_key, utcnow

CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)
SIGN_ONLY_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                crl_sign=True, encipher_only=False, decipher_only=False)
LEAF_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)


@dataclass(frozen=True, slots=True)
class ServedCert:
    """What a server presents for one host name."""

    host: str
    cert_file: Path
    """PEM: the leaf, then whatever chain the server sends."""
    key_file: Path
    serial: int


def build(
    key: TestKey,
    subject: str | None,
    issuer: Issued,
    *,
    names: Sequence[str] = (),
    ca: bool = False,
    usage: x509.KeyUsage | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    extra: Sequence[x509.ExtensionType] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """One certificate under `issuer`, each extension chosen explicitly (SHA-256)."""
    now = utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if subject else x509.Name([])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage or (CA_USAGE if ca else LEAF_USAGE), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=not subject)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for extension in extra:
        builder = builder.add_extension(extension, critical=True)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)  # type: ignore[arg-type]


class DefectiveCerts:
    """The hierarchy and one file pair per host, under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.pki = TestPki.create(name="tlsgw parity")
        self.root_file = directory / "parity-root.pem"
        self.root_file.write_bytes(self.pki.root.cert_pem)
        self.intermediate_file = directory / "parity-intermediate.pem"
        self.intermediate_file.write_bytes(self.pki.intermediate.cert_pem)
        self.served: dict[str, ServedCert] = {}
        self.crl_file = directory / "parity-intermediate.crl"

    @property
    def root(self) -> x509.Certificate:
        return self.pki.root.cert

    def write(self, host: str, leaf: Issued, chain: Sequence[Issued] = ()) -> ServedCert:
        cert_file, key_file = leaf.write(self.directory / host, chain=chain)
        served = self.served[host] = ServedCert(host, cert_file, key_file, leaf.cert.serial_number)
        return served

    def good(self, host: str, key: TestKey | None = None) -> ServedCert:
        """A valid leaf for `host`, sent with its intermediate."""
        leaf = build(key or ec_key(), host, self.pki.intermediate, names=[host])
        return self.write(host, leaf, [self.pki.intermediate])

    def all_defects(self) -> dict[str, ServedCert]:
        """Every defect, by the host name it is served under."""
        pki, inter = self.pki, self.pki.intermediate
        now = utcnow()
        stranger = TestPki.create(name="unknown")
        self.write("untrusted.example", build(ec_key(), "untrusted.example", stranger.intermediate,
                                               names=["untrusted.example"]), [stranger.intermediate])
        self.write("nointermediate.example", build(ec_key(), "nointermediate.example", inter,
                                                    names=["nointermediate.example"]))
        self.write("expired.example", build(ec_key(), "expired.example", inter, names=["expired.example"],
                                             not_before=now - dt.timedelta(days=200),
                                             not_after=now - dt.timedelta(days=110)), [inter])
        self.write("notyet.example", build(ec_key(), "notyet.example", inter, names=["notyet.example"],
                                            not_before=now + dt.timedelta(days=10),
                                            not_after=now + dt.timedelta(days=100)), [inter])
        self.write("wronghost.example", build(ec_key(), "elsewhere.example", inter,
                                               names=["elsewhere.example"]), [inter])
        self.write("cnonly.example", build(ec_key(), "cnonly.example", inter), [inter])
        not_ca = build(ec_key(), "tlsgw parity CA:FALSE intermediate", pki.root, ca=False, usage=CA_USAGE,
                       eku=None)
        self.write("notca.example", build(ec_key(), "notca.example", not_ca, names=["notca.example"]), [not_ca])
        no_sign = build(ec_key(), "tlsgw parity no-keyCertSign intermediate", pki.root, ca=True,
                        usage=SIGN_ONLY_USAGE, eku=None)
        self.write("nokeycertsign.example", build(ec_key(), "nokeycertsign.example", no_sign,
                                                   names=["nokeycertsign.example"]), [no_sign])
        self.write("clientauth.example", build(ec_key(), "clientauth.example", inter, names=["clientauth.example"],
                                                eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)), [inter])
        constrained = build(ec_key(), "tlsgw parity constrained intermediate", pki.root, ca=True, eku=None,
                            extra=[x509.NameConstraints(permitted_subtrees=[x509.DNSName("permitted.example")],
                                                        excluded_subtrees=None)])
        self.write("nameconstraint.example", build(ec_key(), "nameconstraint.example", constrained,
                                                    names=["nameconstraint.example"]), [constrained])
        self.write("rsa1024.example", build(rsa_key(1024), "rsa1024.example", inter, names=["rsa1024.example"]),
                   [inter])
        revoked = self.good("revoked.example")
        self._write_crl(revoked.serial)
        self._sha1_leaf("sha1.example")
        return dict(self.served)

    def _write_crl(self, serial: int) -> None:
        now = utcnow()
        inter = self.pki.intermediate
        entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                 .revocation_date(now - dt.timedelta(hours=1)).build())
        crl = (x509.CertificateRevocationListBuilder().issuer_name(inter.cert.subject)
               .last_update(now - dt.timedelta(hours=1)).next_update(now + dt.timedelta(days=7))
               .add_revoked_certificate(entry).sign(inter.key, hashes.SHA256()))  # type: ignore[arg-type]
        self.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def _sha1_leaf(self, host: str) -> ServedCert:
        """A leaf the intermediate signs with SHA-1, by the `openssl` command."""
        inter = self.pki.intermediate
        work = self.directory / host
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        inter_cert, inter_key = inter.write(self.directory / "intermediate")
        key = ec_key()
        key_file = work / "key.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        csr = work / "request.csr"
        ext = work / "ext.cnf"
        ext.write_text(f"subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                       "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
        leaf_file = work / "leaf.pem"
        subprocess.run(["openssl", "req", "-new", "-key", str(key_file), "-subj", f"/CN={host}", "-out", str(csr)],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(inter_cert), "-CAkey", str(inter_key),
                        "-sha1", "-days", "30", "-set_serial", f"0x{x509.random_serial_number():x}",
                        "-extfile", str(ext), "-out", str(leaf_file)], check=True, capture_output=True)
        leaf = x509.load_pem_x509_certificate(leaf_file.read_bytes())
        assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha1"
        cert_file = work / "cert.pem"
        cert_file.write_bytes(leaf_file.read_bytes() + inter.cert_pem)
        served = self.served[host] = ServedCert(host, cert_file, key_file, leaf.serial_number)
        return served
