"""`tlsgw cert ...`: the store operations a first deployment needs (create the signing CA,
import the CAs a trust store names, export the signing CA for clients, list).

Keys never leave through these commands: `export` prints certificates only.
"""

from __future__ import annotations

import argparse
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.model import DEFAULT_PKI_DIR
from gateway.config.names import CERTIFICATE
from gateway.errors import PkiError
from gateway.pki.ca import create_ca, is_ca
from gateway.pki.keys import KeyKind
from gateway.pki.store import CertStore, describe_certificate

KEY_CHOICES = {"rsa2048": KeyKind.RSA_2048, "rsa3072": KeyKind.RSA_3072, "rsa4096": KeyKind.RSA_4096,
               "p256": KeyKind.EC_P256, "p384": KeyKind.EC_P384}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `tlsgw cert ...` on the main parser."""
    cert = sub.add_parser("cert", help="manage the certificate store")
    cert.add_argument("--pki-dir", default=DEFAULT_PKI_DIR, help=f"store directory (default {DEFAULT_PKI_DIR})")
    cert.set_defaults(handler=run)
    csub = cert.add_subparsers(dest="cert_command", required=True, metavar="CERT_COMMAND")
    signing = csub.add_parser("create-signing", help="create a self-signed signing CA for client inspection")
    signing.add_argument("name")
    signing.add_argument("--common-name", "--cn", required=True)
    signing.add_argument("--days", type=int, default=825)
    signing.add_argument("--key", choices=sorted(KEY_CHOICES), default="rsa2048")
    signing.add_argument("--organization", "-O")
    imp = csub.add_parser("import-ca", help="import a CA certificate (PEM) for trust stores")
    imp.add_argument("name")
    imp.add_argument("file")
    exp = csub.add_parser("export", help="print a certificate (never its key) as PEM, e.g. to deploy the signing CA")
    exp.add_argument("name")
    csub.add_parser("list", help="list certificates in the store")


def _checked_name(name: str) -> str:
    problem = CERTIFICATE.problem(name)
    if problem is not None:
        raise PkiError(f"certificate name {name!r}: {problem}")
    return name


def run(args: argparse.Namespace) -> int:
    store = CertStore(args.pki_dir)
    command = args.cert_command
    if command == "create-signing":
        name = _checked_name(args.name)
        if store.exists(name):
            raise PkiError(f"certificate {name!r} already exists in {store.directory}")
        cert, key = create_ca(args.common_name, key_kind=KEY_CHOICES[args.key], days=args.days,
                              organization=args.organization)
        store.save(name, cert, key, replace=False)
        print(f"created signing CA {name!r}: {describe_certificate(cert)}")
        print(f"deploy it to clients with: tlsgw cert --pki-dir {args.pki_dir} export {name!r}")
    elif command == "import-ca":
        name = _checked_name(args.name)
        try:
            with open(args.file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise PkiError(f"{args.file}: {exc.strerror}") from exc
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise PkiError(f"{args.file}: not a PEM certificate ({exc})") from exc
        if not is_ca(certs[0]):
            raise PkiError(f"{args.file}: {describe_certificate(certs[0])} is not a CA certificate")
        store.save(name, certs[0], None, certs[1:], replace=False)
        print(f"imported CA certificate {name!r}: {describe_certificate(certs[0])}")
    elif command == "export":
        stored = store.load(args.name, with_key=False)
        for cert in (stored.certificate, *stored.chain):
            print(cert.public_bytes(serialization.Encoding.PEM).decode(), end="")
    elif command == "list":
        now = dt.datetime.now(dt.timezone.utc)
        for name in store.names():
            try:
                stored = store.load(name)
            except PkiError as exc:
                print(f"{name}: BROKEN: {exc}")
                continue
            cert = stored.certificate
            status = "expired" if cert.not_valid_after_utc < now else (
                "not yet valid" if cert.not_valid_before_utc > now else "valid")
            kind = "CA" if is_ca(cert) else "leaf"
            key = "with key" if stored.key is not None else "no key"
            print(f"{name}: {status}, {kind}, {key}, {describe_certificate(cert)}, "
                  f"expires {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0
