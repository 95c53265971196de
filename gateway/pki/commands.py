"""`tlsgw cert ...`: every certificate operation of the product, from the command line.

Certificates (with keys): create-signing, create-request / export-request /
import-signed, import, replace, export, delete, list, show. CA certificates (trust
stores): import-ca, update-default-ca. Keys at rest: create-key-secret, seal-keys.

Settings come from the configuration (`--config`, default /etc/tlsgw/tlsgw.yaml; built-in
defaults when that default file does not exist): `pki.dir`, the key secret, and the key
policies; `--pki-dir` and `--key-secret-file` override them. `delete` reads the same file
to refuse removing a certificate it names.

Every change is checked completely before anything is written, and written atomically
under the store's lock (`CertStore.locked`): a failed import leaves the store unchanged.
Private keys are never printed: `export` writes a key only to a file, only if the
certificate was marked exportable.

With `pki.persist_keys: false` no key is written to disk: `import`, `import-signed` and
`replace` write the certificate (marked as having a memory-only key) and hand the key to
the running gateway over its control socket (`--socket`, default from the configuration);
with no gateway running they refuse, and nothing is written. The key is handed over
before the certificate is written, so a failure leaves the store unchanged (a key the
gateway got for a certificate that was then not written serves nothing and is gone at
its next restart). `import` then asks the gateway to reload; importing the same files
again after a restart gives the gateway the key again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.model import DEFAULT_CA_FROM_STORE, DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET, PkiSection
from gateway.config.names import CERTIFICATE
from gateway.errors import PkiError
from gateway.pki.ca import DEFAULT_CA_DAYS, create_ca, is_ca
from gateway.pki.csr import AltNames, SubjectFields, build_request, check_alt_names, check_subject, request_alt_names
from gateway.pki.importing import (
    FileFormat,
    KeyedCertificate,
    ParsedFile,
    build_chain,
    entry_names,
    find_certificate_for_key,
    pair_keys,
    parse_certificate_file,
    parse_key_file,
)
from gateway.pki.keys import (
    EncryptedKeyError,
    KeyKind,
    PrivateKey,
    WrongPasswordError,
    describe_key,
    generate_key,
    private_key_to_pem,
)
from gateway.pki.keyseal import PERSIST_KEYS_OFF, create_key_secret
from gateway.pki.listing import build_listing, render_details, render_listing, render_listing_json, render_request
from gateway.pki.references import load_references
from gateway.pki.store import (
    CertStore,
    EntryInfo,
    EntryKind,
    KeyState,
    NewEntry,
    PendingRequest,
    describe_certificate,
    now_iso,
    open_store,
    sha256_fingerprint,
)
from gateway.pki.trust import parse_ca_bundle

KEY_CHOICES = {"rsa2048": KeyKind.RSA_2048, "rsa3072": KeyKind.RSA_3072, "rsa4096": KeyKind.RSA_4096,
               "p256": KeyKind.EC_P256, "p384": KeyKind.EC_P384}
REPLACED_SUFFIX = "_REPLACED"
FORMAT_CHOICES = ("auto", "pem", "der", "pkcs12")

T = TypeVar("T")


# --- the parser --------------------------------------------------------------------------------


def _store_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The group's options, accepted before or after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", metavar="FILE", default=default,
                        help=f"configuration to take pki settings and references from (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--pki-dir", metavar="DIR", default=default, help="certificate store (default: pki.dir)")
    parser.add_argument("--key-secret-file", metavar="FILE", default=default,
                        help="key-encryption secret (default: systemd credential, then pki.key_secret_file)")
    parser.add_argument("--socket", metavar="PATH", default=default,
                        help="the running gateway's control socket, to hand it keys kept only in memory "
                             "(pki.persist_keys false; default: gateway.control.socket, else "
                             f"{DEFAULT_CONTROL_SOCKET})")


def _subject_options(parser: argparse.ArgumentParser, *, cn_help: str) -> None:
    parser.add_argument("--common-name", "--cn", dest="common_name", required=True, metavar="CN", help=cn_help)
    parser.add_argument("--key", choices=list(KEY_CHOICES), default="rsa2048",
                        help="key type and size (default rsa2048; at least 2048 bits recommended)")
    parser.add_argument("--exportable", action="store_true",
                        help="allow the private key to be exported from tlsgw later (default: never)")
    parser.add_argument("--email", help="e-mail address (subject emailAddress)")
    parser.add_argument("--organizational-unit", "--ou", dest="organizational_unit", metavar="OU",
                        help="organizational unit, e.g. 'Research and Development'")
    parser.add_argument("--organization", "-O", metavar="O", help="legal name of the organization")
    parser.add_argument("--locality", "-L", metavar="L", help="city, not abbreviated")
    parser.add_argument("--state", "--st", metavar="ST", help="state or province, not abbreviated")
    parser.add_argument("--country", "-C", metavar="C", help="two-letter ISO country code, e.g. US")
    parser.add_argument("--dns", action="append", default=[], metavar="NAME",
                        help="additional DNS name (repeatable); a wildcard only as the leftmost label: *.example.com")
    parser.add_argument("--rfc822", action="append", default=[], metavar="EMAIL",
                        help="RFC822 (e-mail) name (repeatable)")


def _input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="auto",
                        help="file format (default: PEM by its armour, PKCS#12 for .p12/.pfx or when not DER)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password", help="password of an encrypted key or PKCS#12 file (visible to other "
                                           "local users in the process list: prefer --password-file)")
    secret.add_argument("--password-file", metavar="FILE", help="file whose first line is the password")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `tlsgw cert ...` on the main parser."""
    cert = sub.add_parser("cert", help="manage certificates, signing requests, CA certificates and keys",
                          description=__doc__.split("\n\n")[1] if __doc__ else None)
    _store_options(cert, suppress=False)
    cert.set_defaults(handler=run)
    csub = cert.add_subparsers(dest="cert_command", required=True, metavar="CERT_COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = csub.add_parser(name, help=help_text, description=help_text)
        _store_options(parser, suppress=True)
        return parser

    p = command("create-signing", "create a self-signed signing certificate (a CA) for client inspection")
    p.add_argument("name", help="certificate name: letters, digits, hyphens, underscores, spaces; not 'ca'")
    _subject_options(p, cn_help="common name of the signing certificate, e.g. 'Example Corp Inspection CA'")
    p.add_argument("--days", type=int, default=DEFAULT_CA_DAYS, help=f"days valid (default {DEFAULT_CA_DAYS})")

    p = command("create-request", "create a certificate signing request (its key stays in the store)")
    p.add_argument("name", help="request name; the signed certificate will be imported under it")
    _subject_options(p, cn_help="common name: the CA's name for --signing, else the server's host name "
                                "(www.example.com or *.example.com)")
    p.add_argument("--signing", action="store_true",
                   help="request a signing certificate (CA basic constraints and keyCertSign) for client inspection; "
                        "without it, a server endpoint certificate for server inspection")

    p = command("export-request", "write a signing request (never its key) for the CA, PEM")
    p.add_argument("name")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")

    p = command("import-signed", "import the certificate a CA returned for a signing request, with the request's key")
    p.add_argument("name", help="the signing request's name")
    p.add_argument("file", help="the certificate (PEM or DER; a PEM file may carry the chain after it)")
    p.add_argument("--as", dest="as_name", metavar="CERTNAME", help="certificate name (default: the request's)")
    p.add_argument("--format", choices=("auto", "pem", "der"), default="auto")

    p = command("import", "import a certificate with its private key (PEM/DER + key file, or PKCS#12)")
    p.add_argument("name", help="certificate name; for several certificates in one PKCS#12 file, the base name "
                                "to which each one's alias is appended")
    p.add_argument("file", help="certificate file: PEM/DER (the chain may follow in PEM) or PKCS#12")
    p.add_argument("--key", dest="key_file", metavar="KEYFILE",
                   help="private key file for PEM/DER (PEM or DER, optionally encrypted); not needed if the "
                        "certificate file holds the key or the certificate answers a signing request from this store")
    _input_options(p)
    p.add_argument("--exportable", action="store_true", help="allow the private key to be exported later")

    p = command("import-ca", "import CA certificates for trust stores (PEM/DER/PKCS#12; keys are ignored)")
    p.add_argument("name", help="name: letters, digits, hyphens, underscores, spaces; not 'ca'. Several "
                                "certificates in one file get the name plus _alias (PKCS#12) or _1, _2, ...")
    p.add_argument("file")
    _input_options(p)

    p = command("list", "list certificates with status, subject, issuer, names and expiry, and pending requests")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("show", "show one certificate (or signing request) in detail; never the key")
    p.add_argument("name")

    p = command("export", "write a certificate, and its key only if it was marked exportable")
    p.add_argument("name")
    p.add_argument("--out", metavar="FILE", help="certificate file (default: standard output)")
    p.add_argument("--der", action="store_true", help="DER instead of PEM (certificate only, no chain)")
    p.add_argument("--chain", action="store_true", help="append the chain to the PEM output")
    p.add_argument("--key-out", metavar="FILE",
                   help="also write the private key to FILE (created 0600; refused unless exportable)")
    p.add_argument("--key-password-file", metavar="FILE",
                   help="encrypt the exported key with the first line of FILE (PKCS#8, AES-256)")

    p = command("delete", "delete a certificate; refused while the configuration references it")
    p.add_argument("name")

    p = command("delete-request", "delete a pending signing request and its key")
    p.add_argument("name")

    p = command("replace", "replace a certificate; the new one keeps the name and every reference, the old one "
                           "is kept as NAME_REPLACED; a running gateway uses the new one after a reload (SIGHUP)")
    p.add_argument("name")
    p.add_argument("file", help="the new certificate: PEM/DER (with --key) or PKCS#12")
    p.add_argument("--key", dest="key_file", metavar="KEYFILE", help="private key file for a PEM/DER certificate")
    _input_options(p)
    p.add_argument("--exportable", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the new key may be exported (default: as the certificate it replaces)")
    p.add_argument("--discard-previous", action="store_true",
                   help="delete an existing NAME_REPLACED left by an earlier replacement")

    p = command("update-default-ca", "update the default CA package (e.g. Mozilla's bundle) from a PEM file; "
                                     "used when pki.default_ca_bundle is 'store'")
    p.add_argument("file")

    p = command("create-key-secret", "create the random secret that seals private keys at rest")
    p.add_argument("path", nargs="?", help="where (default: pki.key_secret_file)")

    command("seal-keys", "encrypt, with the key secret, every private key of the store still stored in clear")


# --- context --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    config_path: Path
    config_found: bool
    pki: PkiSection
    store: CertStore
    socket: str = DEFAULT_CONTROL_SOCKET
    """The running gateway's control socket (keys kept only in memory)."""

    @property
    def keys_in_memory(self) -> bool:
        """`pki.persist_keys: false`: keys go to the running gateway, not to disk."""
        return not self.pki.persist_keys


def _context(args: argparse.Namespace) -> _Context:
    from gateway.config.load import load_config  # the loader pulls in YAML; only when needed

    explicit = args.config is not None
    path = Path(args.config or DEFAULT_CONFIG_PATH)
    found = path.is_file()
    if found:
        pki = load_config(str(path)).pki
    elif explicit:
        raise PkiError(f"{path}: no such configuration file")
    else:
        pki = PkiSection()
    if args.pki_dir:
        pki = replace(pki, dir=os.path.abspath(args.pki_dir))
    hint = (f"pass --key-secret-file FILE, or put it in {pki.key_secret_file} (pki.key_secret_file)")
    store = open_store(pki, key_secret_file=args.key_secret_file, secret_hint=hint)
    socket = getattr(args, "socket", None)
    if not socket:
        from gateway.control.commands import control_socket_of

        socket = control_socket_of(str(path)) if found else DEFAULT_CONTROL_SOCKET
    return _Context(path, found, pki, store, socket)


# --- keys kept only in the gateway's memory (pki.persist_keys: false) -------------------------------


def _memory_entry(entry: NewEntry) -> NewEntry:
    """What the store gets: the certificate, marked, without its key."""
    info = entry.info or EntryInfo(EntryKind.CERTIFICATE)
    return replace(entry, key=None, info=replace(info, memory_key=True))


def _same_memory_entry(store: CertStore, entry: NewEntry) -> bool:
    """The store already has this very certificate under this name, with its key kept only
    in memory: importing it again (after a restart) gives the gateway the key again."""
    if not store.exists(entry.name):
        return False
    try:
        stored = store.load(entry.name, with_key=False)
    except PkiError:
        return False
    return stored.info.memory_key and stored.certificate == entry.certificate


def _hand_over(ctx: _Context, entries: Sequence[NewEntry]) -> None:
    """Give the running gateway the entries' keys. Raises PkiError (nothing was kept)."""
    from gateway.control.handover import hand_keys

    keys = [(e.name, e.key, e.certificate) for e in entries if e.key is not None]
    if keys:
        hand_keys(ctx.socket, str(ctx.store.directory), keys)


def _memory_note(names: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    return (f"the private key of {listed} lives only in the memory of the running gateway "
            "(pki.persist_keys is false): it is not on disk, and must be imported again after every "
            "restart of the gateway, with the same command")


def _reload_after_handover(ctx: _Context) -> int:
    from gateway.control.handover import reload_gateway

    done, message = reload_gateway(ctx.socket)
    if done:
        print(f"gateway: {message}")
        return 0
    print(f"the gateway holds the key but did not reload: {message}; fix that, then run `tlsgw reload` so the "
          "certificate comes into service", file=sys.stderr)
    return 1


def _gateway_keys(ctx: _Context) -> tuple[frozenset[str] | None, str | None]:
    """Which memory-only keys the running gateway holds, when the store has such entries;
    (None, why) when no gateway said."""
    memory = False
    for name in ctx.store.names():
        try:
            memory = memory or ctx.store.load_info(name).memory_key
        except PkiError:
            continue
    if not memory:
        return frozenset(), None
    from gateway.control.handover import gateway_key_ids

    held, why = gateway_key_ids(ctx.socket)
    return held, (f"keys kept only in memory are shown as missing: {why}" if held is None else None)


def _new_name(name: str) -> str:
    problem = CERTIFICATE.problem(name)
    if problem is not None:
        raise PkiError(problem)
    return name


def _require_free(store: CertStore, name: str) -> None:
    if store.exists(name):
        raise PkiError(f"a certificate named {name!r} already exists in {store.directory}; names must be unique "
                       f"(use `tlsgw cert replace {name!r} ...` to renew it)")


def _read_file(path: str, what: str = "file") -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def _first_line(path: str) -> bytes:
    return _read_file(path, "password file").split(b"\n", 1)[0].rstrip(b"\r")


def _password(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "password", None) is not None:
        return str(args.password).encode()
    if getattr(args, "password_file", None):
        return _first_line(args.password_file)
    return None


def _with_password(args: argparse.Namespace, parse: Callable[[bytes | None], T]) -> T:
    """Run `parse` with the password given; if none was given and one is needed, ask on a
    terminal (once), else fail with the error that says a password is needed."""
    password = _password(args)
    try:
        return parse(password)
    except (EncryptedKeyError, WrongPasswordError):
        if password is not None or not sys.stdin.isatty():
            raise
    return parse(getpass.getpass("password: ").encode())


def _format(args: argparse.Namespace) -> FileFormat | None:
    return None if args.format == "auto" else FileFormat(args.format)


def _key_note(store: CertStore) -> str:
    protection = store.protection
    if protection.secret is not None:
        return f"private key sealed with the key secret ({protection.secret.source})"
    return "private key stored unencrypted, mode 0600 (pki.encrypt_keys is false)"


def _info(kind: EntryKind, origin: str, exportable: bool = False) -> EntryInfo:
    return EntryInfo(kind=kind, exportable=exportable, origin=origin, created=now_iso())


def _write_out(path: str | None, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    if path is None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise PkiError(f"{path} already exists; choose another file (a key file is never overwritten)") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot write it ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)


def _subject(args: argparse.Namespace) -> tuple[SubjectFields, AltNames]:
    """Check every subject field and name; one PkiError listing all problems."""
    problems: list[str] = []
    subject: SubjectFields | None = None
    alt: AltNames | None = None
    try:
        subject = check_subject(SubjectFields(
            common_name=args.common_name, email=args.email, organizational_unit=args.organizational_unit,
            organization=args.organization, locality=args.locality, state=args.state, country=args.country))
    except PkiError as exc:
        problems.append(str(exc))
    try:
        alt = check_alt_names(args.dns, args.rfc822)
    except PkiError as exc:
        problems.append(str(exc))
    if problems or subject is None or alt is None:
        raise PkiError("; ".join(problems))
    return subject, alt


# --- commands -------------------------------------------------------------------------------------


def cmd_create_signing(ctx: _Context, args: argparse.Namespace) -> int:
    name = _new_name(args.name)
    subject, alt = _subject(args)
    store = ctx.store
    store.protection.check_can_write(f"certificate {name!r}")
    with store.locked():
        _require_free(store, name)
        cert, key = create_ca(subject.common_name, key_kind=KEY_CHOICES[args.key], days=args.days,
                              subject=subject.to_name(), alt_names=alt.to_extension())
        store.save(name, cert, key, replace=False, info=_info(EntryKind.CERTIFICATE, "created", args.exportable))
    print(f"created signing certificate {name!r}: {describe_certificate(cert)}, key {describe_key(key)}, "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"{_key_note(store)}; {'exportable' if args.exportable else 'not exportable'}")
    print(f"deploy it to the clients' trust stores: tlsgw cert export {name!r} --out {_file_stem(name)}.pem")
    return 0


def _file_stem(name: str) -> str:
    return name.replace(" ", "_")


def cmd_create_request(ctx: _Context, args: argparse.Namespace) -> int:
    name = _new_name(args.name)
    subject, alt = _subject(args)
    store = ctx.store
    store.protection.check_can_write(f"signing request {name!r}")
    with store.locked():
        if store.request_exists(name):
            raise PkiError(f"a signing request named {name!r} already exists; names must be unique")
        _require_free(store, name)
        key = generate_key(KEY_CHOICES[args.key])
        csr = build_request(key, subject, alt, signing=args.signing)
        store.save_request(PendingRequest(name, csr, key, signing=args.signing, exportable=args.exportable,
                                          created=now_iso()))
    kind = "signing certificate (CA)" if args.signing else "server endpoint certificate"
    names = request_alt_names(csr)
    print(f"created signing request {name!r} for a {kind}: {csr.subject.rfc4514_string()}, key {describe_key(key)}")
    if names.dns or names.rfc822:
        print(f"names: {', '.join((*names.dns, *names.rfc822))}")
    print(_key_note(store))
    print(f"next: tlsgw cert export-request {name!r} --out {_file_stem(name)}.csr, have a CA sign it, then "
          f"tlsgw cert import-signed {name!r} CERTFILE")
    return 0


def cmd_export_request(ctx: _Context, args: argparse.Namespace) -> int:
    csr = ctx.store.load_request_csr(args.name)
    _write_out(args.out, csr.public_bytes(serialization.Encoding.PEM))
    if args.out:
        print(f"wrote signing request {args.name!r} (without its key) to {args.out}")
    return 0


def _matching_request(store: CertStore, certs: Sequence[x509.Certificate]
                      ) -> tuple[PendingRequest, x509.Certificate] | None:
    """A pending request whose key belongs to one of `certs` (the product retrieves the
    request's key automatically when the signed certificate is imported)."""
    for name in store.request_names():
        request = store.load_request(name)
        cert = find_certificate_for_key(certs, request.key)
        if cert is not None:
            return request, cert
    return None


def _signed_entry(name: str, request: PendingRequest, cert: x509.Certificate, parsed: ParsedFile,
                  notes: list[str]) -> NewEntry:
    if request.signing and not is_ca(cert):
        notes.append(f"warning: request {request.name!r} asked for a signing certificate, but the CA issued one "
                     "without CA:TRUE and keyCertSign: it cannot be a client proxy's signing certificate")
    others = [c for c in parsed.certificates if c != cert]
    return NewEntry(name, cert, request.key, build_chain(cert, others),
                    _info(EntryKind.CERTIFICATE, "signed request", request.exportable))


def cmd_import_signed(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    name = _new_name(args.as_name or args.name)
    parsed = parse_certificate_file(_read_file(args.file, "certificate"), source=args.file, fmt=_format(args))
    if not ctx.keys_in_memory:
        store.protection.check_can_write(f"certificate {name!r}")
    notes: list[str] = []
    with store.locked():
        request = store.load_request(args.name)
        cert = find_certificate_for_key(parsed.certificates, request.key)
        if cert is None:
            raise PkiError(f"{args.file}: no certificate in it matches the key of signing request {args.name!r} "
                           "(was it issued for another request?)")
        _require_free(store, name)
        entry = _signed_entry(name, request, cert, parsed, notes)
        if ctx.keys_in_memory:
            _hand_over(ctx, [entry])
            entry = _memory_entry(entry)
        store.save(entry.name, entry.certificate, entry.key, entry.chain, replace=False, info=entry.info)
        store.delete_request(args.name)
    print(f"imported certificate {name!r} for signing request {args.name!r}: {describe_certificate(cert)}")
    if ctx.keys_in_memory:
        print(f"{_memory_note([name])}; the request and its key are removed from disk")
    else:
        print(f"{_key_note(store)} (the request's key); the request is removed")
    for note in notes:
        print(note)
    return _reload_after_handover(ctx) if ctx.keys_in_memory else 0


def _keyed_entries(store: CertStore, base: str, parsed: ParsedFile, key: PrivateKey | None, source: str,
                   exportable: bool, notes: list[str], key_source: str | None = None
                   ) -> tuple[list[NewEntry], PendingRequest | None]:
    """The entries an `import` writes, and the pending request whose key it uses (if any)."""
    if key is not None:
        cert = find_certificate_for_key(parsed.certificates, key)
        if cert is None:
            raise PkiError(f"{key_source}: the private key does not match the certificate"
                           f"{'s' if len(parsed.certificates) > 1 else ''} in {source} (their public keys differ)")
        pairs = [KeyedCertificate(cert, key, build_chain(cert, [c for c in parsed.certificates if c != cert]))]
    elif parsed.keys:
        pairs = pair_keys(parsed, source=source)
    else:
        match = _matching_request(store, parsed.certificates)
        if match is None:
            raise PkiError(f"{source}: holds no private key, and the certificate answers no signing request of this "
                           "store: give the key with --key KEYFILE, or import a CA certificate with import-ca")
        request, cert = match
        return [_signed_entry(base, request, cert, parsed, notes)], request
    origin = "pkcs12" if parsed.format is FileFormat.PKCS12 else "imported"
    names = entry_names(base, [p.alias for p in pairs])
    return [NewEntry(n, p.certificate, p.key, p.chain, _info(EntryKind.CERTIFICATE, origin, exportable))
            for n, p in zip(names, pairs)], None


def cmd_import(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    base = _new_name(args.name)
    data = _read_file(args.file, "certificate")
    parsed = _with_password(args, lambda pw: parse_certificate_file(data, source=args.file, password=pw,
                                                                    fmt=_format(args)))
    key = None
    if args.key_file:
        key_data = _read_file(args.key_file, "key")
        key = _with_password(args, lambda pw: parse_key_file(key_data, source=args.key_file, password=pw))
    if not ctx.keys_in_memory:
        store.protection.check_can_write(f"certificate {base!r}")
    notes: list[str] = []
    again: set[str] = set()
    with store.locked():
        entries, request = _keyed_entries(store, base, parsed, key, args.file, args.exportable, notes,
                                          args.key_file)
        for entry in entries:
            _new_name(entry.name)
            if _same_memory_entry(store, entry):
                # After a restart: only the key goes to the gateway again; or, now that keys
                # are persisted, the key joins its certificate in the store.
                again.add(entry.name)
                continue
            _require_free(store, entry.name)
        written = [e for e in entries if e.name not in again]
        if ctx.keys_in_memory:
            _hand_over(ctx, entries)  # first: with no gateway, nothing is written
            written = [_memory_entry(e) for e in written]
        if written:
            store.save_all(written)
        if not ctx.keys_in_memory:
            for entry in (e for e in entries if e.name in again):
                stored = store.load(entry.name, with_key=False)
                store.save(entry.name, entry.certificate, entry.key, entry.chain, replace=True,
                           info=replace(stored.info, memory_key=False))
        if request is not None:
            store.delete_request(request.name)
            notes.append(f"the key of signing request {request.name!r} was used; the request is removed")
    for entry in entries:
        chain = f", chain of {len(entry.chain)}" if entry.chain else ""
        if entry.name in again:
            done = ("its private key was handed to the gateway again" if ctx.keys_in_memory else
                    "its private key, until now kept only in the gateway's memory, is now stored with it; a "
                    "running gateway uses it after a reload")
            print(f"certificate {entry.name!r} is already in the store ({describe_certificate(entry.certificate)}): "
                  f"{done}")
        else:
            print(f"imported certificate {entry.name!r}: {describe_certificate(entry.certificate)}{chain}")
    exportable = 'exportable' if entries[0].info and entries[0].info.exportable else 'not exportable'
    if ctx.keys_in_memory:
        print(f"{_memory_note([e.name for e in entries])}; {exportable}")
    else:
        print(f"{_key_note(store)}; {exportable}")
    for note in notes:
        print(note)
    return _reload_after_handover(ctx) if ctx.keys_in_memory else 0


def cmd_import_ca(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    base = _new_name(args.name)
    data = _read_file(args.file, "certificate")
    parsed = _with_password(args, lambda pw: parse_certificate_file(data, source=args.file, password=pw,
                                                                    fmt=_format(args)))
    not_ca = [c for c in parsed.certificates if not is_ca(c)]
    if not_ca:
        raise PkiError(f"{args.file}: {describe_certificate(not_ca[0])} is not a CA certificate "
                       "(basicConstraints CA:TRUE); nothing was imported")
    names = entry_names(base, [parsed.alias_of(c) for c in parsed.certificates])
    entries = [NewEntry(n, c, None, (), _info(EntryKind.CA, "imported")) for n, c in zip(names, parsed.certificates)]
    with store.locked():
        known = {sha256_fingerprint(store.load(n, with_key=False).certificate): n for n in _readable(store)}
        for entry in entries:
            _new_name(entry.name)
            _require_free(store, entry.name)
        store.save_all(entries)
    for entry in entries:
        print(f"imported CA certificate {entry.name!r}: {describe_certificate(entry.certificate)}")
        same = known.get(sha256_fingerprint(entry.certificate))
        if same:
            print(f"note: the same certificate is already stored as {same!r}")
    if parsed.keys:
        print(f"{len(parsed.keys)} private key(s) in {args.file} ignored: CA certificates are kept without keys")
    return 0


def _readable(store: CertStore) -> list[str]:
    names = []
    for name in store.names():
        try:
            store.load(name, with_key=False)
            names.append(name)
        except PkiError:
            continue
    return names


def cmd_list(ctx: _Context, args: argparse.Namespace) -> int:
    gateway_keys, why = _gateway_keys(ctx)
    listing = build_listing(ctx.store, ctx.pki.default_ca_bundle_path, dt.datetime.now(dt.timezone.utc),
                            gateway_keys)
    if args.json:
        print(render_listing_json(listing, persist_keys=ctx.pki.persist_keys))
        return 0
    if not ctx.pki.persist_keys:
        print(f"note: {PERSIST_KEYS_OFF}")
    if why:
        print(f"note: {why}")
    print(render_listing(listing, ctx.store.directory), end="")
    return 0


def cmd_show(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    if not store.exists(args.name) and store.request_exists(args.name):
        print(render_request(args.name, store.load_request_csr(args.name)), end="")
        return 0
    references = None
    if ctx.config_found:
        try:
            refs = load_references(ctx.config_path, args.name)
            references = "; ".join(map(str, refs)) or f"nothing in {ctx.config_path}"
        except PkiError as exc:
            references = f"unknown: {exc}"
    gateway_keys, why = _gateway_keys(ctx) if store.load_info(args.name).memory_key else (frozenset(), None)
    print(render_details(store, args.name, ctx.pki.default_ca_bundle_path, dt.datetime.now(dt.timezone.utc),
                         references, gateway_keys), end="")
    if why:
        print(f"note: {why}")
    return 0


def cmd_export(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    entry = store.load(args.name, with_key=False)
    key_pem = None
    if args.key_out is not None:
        if not entry.info.exportable:
            raise PkiError(f"certificate {args.name!r}: its private key is not exportable (it was created or "
                           "imported without --exportable); nothing was written")
        entry = store.load(args.name)
        if entry.key is None and entry.info.memory_key:
            raise PkiError(f"certificate {args.name!r}: its private key lives only in the running gateway's memory "
                           "(pki.persist_keys: false) and never leaves it; nothing was written")
        if entry.key is None:
            raise PkiError(f"certificate {args.name!r} has no private key in the store; nothing was written")
        password = _first_line(args.key_password_file) if args.key_password_file else None
        key_pem = private_key_to_pem(entry.key, password)
    if args.der:
        data = entry.certificate.public_bytes(serialization.Encoding.DER)
    else:
        certs = (entry.certificate, *(entry.chain if args.chain else ()))
        data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    if key_pem is not None:
        _write_out(args.key_out, key_pem, mode=0o600, exclusive=True)
    if args.der and args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_out(args.out, data)
    if key_pem is not None:
        state = "encrypted" if args.key_password_file else "unencrypted"
        print(f"wrote the private key of {args.name!r} to {args.key_out} ({state}, mode 0600)", file=sys.stderr)
    return 0


def cmd_delete(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    if not store.exists(args.name):
        hint = " (a signing request has that name: use delete-request)" if store.request_exists(args.name) else ""
        raise PkiError(f"certificate {args.name!r} does not exist in {store.directory}{hint}")
    if ctx.config_found:
        refs = load_references(ctx.config_path, args.name)
        if refs:
            listed = "\n".join(f"  {r}" for r in refs)
            raise PkiError(f"certificate {args.name!r} is referenced by {ctx.config_path} and was not deleted; "
                           f"remove these references first:\n{listed}")
    else:
        print(f"note: no configuration at {ctx.config_path}, so no references were checked")
    with store.locked():
        store.delete(args.name)
    print(f"deleted certificate {args.name!r}")
    return 0


def cmd_delete_request(ctx: _Context, args: argparse.Namespace) -> int:
    with ctx.store.locked():
        ctx.store.delete_request(args.name)
    print(f"deleted signing request {args.name!r} and its key")
    return 0


def cmd_replace(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    old = store.load(args.name, with_key=False)
    kept_name = f"{args.name}{REPLACED_SUFFIX}"
    problem = CERTIFICATE.problem(kept_name)
    if problem is not None:
        raise PkiError(f"certificate {args.name!r} cannot be replaced: the old one would be kept as "
                       f"{kept_name!r}, and {problem}")
    data = _read_file(args.file, "certificate")
    parsed = _with_password(args, lambda pw: parse_certificate_file(data, source=args.file, password=pw,
                                                                    fmt=_format(args)))
    notes: list[str] = []
    request = None
    if old.info.kind is EntryKind.CA:
        if len(parsed.certificates) != 1:
            raise PkiError(f"{args.file}: holds {len(parsed.certificates)} certificates; a CA certificate is "
                           "replaced by exactly one")
        if not is_ca(parsed.certificates[0]):
            raise PkiError(f"{args.file}: {describe_certificate(parsed.certificates[0])} is not a CA certificate, "
                           f"and {args.name!r} is one")
        new = NewEntry(args.name, parsed.certificates[0], None, (), _info(EntryKind.CA, "replacement"))
    else:
        key = None
        if args.key_file:
            key_data = _read_file(args.key_file, "key")
            key = _with_password(args, lambda pw: parse_key_file(key_data, source=args.key_file, password=pw))
        if not ctx.keys_in_memory:
            store.protection.check_can_write(f"certificate {args.name!r}")
        entries, request = _keyed_entries(store, args.name, parsed, key, args.file, False, notes, args.key_file)
        if len(entries) != 1:
            raise PkiError(f"{args.file}: holds {len(entries)} certificates with keys; a certificate is replaced "
                           "by exactly one")
        exportable = old.info.exportable if args.exportable is None else args.exportable
        if request is not None and args.exportable is None:
            exportable = request.exportable
        new = replace(entries[0], name=args.name, info=_info(EntryKind.CERTIFICATE, "replacement", exportable))
    if new.certificate == old.certificate:
        raise PkiError(f"{args.file}: this is the certificate {args.name!r} already has; nothing to replace")
    if old.info.kind is EntryKind.CERTIFICATE and is_ca(old.certificate) and not is_ca(new.certificate):
        notes.append(f"warning: {args.name!r} was a signing certificate (a CA) and the new certificate is not one")
    with store.locked():
        if ctx.keys_in_memory and new.key is not None:
            store.check_replaceable(args.name, kept_name, discard_previous=args.discard_previous)
            _hand_over(ctx, [new])  # first: with no gateway, nothing is written
            new = _memory_entry(new)
        store.replace_keeping_old(new, kept_name, discard_previous=args.discard_previous)
        if request is not None:
            store.delete_request(request.name)
            notes.append(f"the key of signing request {request.name!r} was used; the request is removed")
    print(f"replaced certificate {args.name!r}: now {describe_certificate(new.certificate)}, valid until "
          f"{new.certificate.not_valid_after_utc:%Y-%m-%d}")
    print(f"the previous certificate is kept as {kept_name!r}")
    if new.info is not None and new.info.memory_key:
        print(_memory_note([args.name]))
    elif new.key is not None:
        print(_key_note(store))
    print("every reference to the name now means the new certificate; a running gateway uses it after a "
          "reload (systemctl reload tlsgw, or kill -HUP its PID); sessions in flight keep the old one")
    for note in notes:
        print(note)
    return 0


def cmd_update_default_ca(ctx: _Context, args: argparse.Namespace) -> int:
    data = _read_file(args.file, "CA package")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise PkiError(f"{args.file}: not a PEM CA package (no BEGIN CERTIFICATE block)")
    certs = parse_ca_bundle(data, args.file)
    if not certs:
        raise PkiError(f"{args.file}: no readable certificate in it")
    with ctx.store.locked():
        path = ctx.store.write_default_ca_package(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    print(f"default CA package updated: {len(certs)} certificates in {path}")
    if ctx.pki.default_ca_bundle == DEFAULT_CA_FROM_STORE:
        print("trust stores with include_default_ca use it after the next reload of the gateway")
    else:
        print(f"to use it, set `pki: {{default_ca_bundle: {DEFAULT_CA_FROM_STORE}}}` in the configuration (now "
              f"{ctx.pki.default_ca_bundle}), then reload the gateway")
    return 0


def cmd_create_key_secret(ctx: _Context, args: argparse.Namespace) -> int:
    path = args.path or args.key_secret_file or ctx.pki.key_secret_file
    create_key_secret(path)
    print(f"created the key secret {path} (mode 0600)")
    print("keep a copy somewhere safe: without it, sealed private keys cannot be opened")
    if path != ctx.pki.key_secret_file:
        print(f"set pki.key_secret_file: {path} in the configuration so the gateway and `tlsgw cert` find it")
    print(f"under systemd, the unit can pass it as a credential: LoadCredential=tlsgw-key-secret:{path}")
    return 0


def cmd_seal_keys(ctx: _Context, args: argparse.Namespace) -> int:
    store = ctx.store
    if store.protection.secret is None:
        store.protection.check_can_write("seal-keys")
        raise PkiError("seal-keys: tlsgw has no key secret to seal keys with")
    sealed = 0
    with store.locked():
        for name in store.names():
            try:
                entry = store.load(name, with_key=False)
            except PkiError:
                continue
            state, _ = store.key_state(name, entry.certificate)
            if state is not KeyState.UNENCRYPTED:
                continue
            full = store.load(name)
            info = full.info if store.info_path(name).exists() else None
            store.save(name, full.certificate, full.key, full.chain, info=info)
            sealed += 1
            print(f"sealed the private key of {name!r}")
    print(f"{sealed} key(s) sealed with the key secret ({store.protection.secret.source})")
    return 0


COMMANDS: dict[str, Callable[[_Context, argparse.Namespace], int]] = {
    "create-signing": cmd_create_signing,
    "create-request": cmd_create_request,
    "export-request": cmd_export_request,
    "import-signed": cmd_import_signed,
    "import": cmd_import,
    "import-ca": cmd_import_ca,
    "list": cmd_list,
    "show": cmd_show,
    "export": cmd_export,
    "delete": cmd_delete,
    "delete-request": cmd_delete_request,
    "replace": cmd_replace,
    "update-default-ca": cmd_update_default_ca,
    "create-key-secret": cmd_create_key_secret,
    "seal-keys": cmd_seal_keys,
}


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.cert_command](_context(args), args)
