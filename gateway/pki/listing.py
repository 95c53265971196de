"""What `tlsgw cert list` and `tlsgw cert show` print: every entry with its status, and one
entry in detail. Reads the store; never loads or prints a private key (key files are only
checked, by `CertStore.key_state`).

Keys kept only in the gateway's memory (`pki.persist_keys: false`) are not in the store:
whether the running gateway holds one is what its `tlsgw status` says (`gateway_keys`,
the public key ids it holds; None when no gateway answered).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.errors import PkiError
from gateway.pki.ca import is_ca
from gateway.pki.csr import request_alt_names
from gateway.pki.keys import public_key_bits
from gateway.pki.memory_keys import certificate_key_id, reimport_hint
from gateway.pki.status import Anchors, CertStatus, assess
from gateway.pki.store import CertStore, EntryKind, KeyState, StoredCert, sha256_fingerprint
from gateway.pki.trust import load_ca_bundle

NO_ANCHOR_HINT = "hint: import the issuing CA certificates (intermediate and root) with `tlsgw cert import-ca`"


@dataclass(frozen=True, slots=True)
class Row:
    entry: StoredCert
    status: CertStatus
    key_state: KeyState
    key_problem: str

    def as_json(self) -> dict[str, Any]:
        cert = self.entry.certificate
        return {
            "name": self.entry.name, "kind": kind_word(self.entry), "status": self.status.value,
            "key": self.key_state.value, "key_problem": self.key_problem or None,
            "exportable": self.entry.info.exportable, "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(), "names": certificate_names(cert),
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat(),
            "sha256": sha256_fingerprint(cert), "chain": len(self.entry.chain),
        }


@dataclass(frozen=True, slots=True)
class Listing:
    rows: tuple[Row, ...]
    unreadable: tuple[tuple[str, str], ...]
    """(name, problem) of entries whose certificate cannot be read at all."""
    requests: tuple[tuple[str, str], ...]
    """(name, subject or problem) of pending signing requests."""
    note: str | None = None


def kind_word(entry: StoredCert) -> str:
    if entry.info.kind is EntryKind.CA:
        return "CA certificate"
    return "signing certificate" if is_ca(entry.certificate) else "certificate"


def certificate_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    values: list[str] = [*san.get_values_for_type(x509.DNSName), *san.get_values_for_type(x509.RFC822Name)]
    values += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return values


def anchors_for(entries: Sequence[StoredCert], bundle_path: str) -> tuple[Anchors, list[x509.Certificate], str | None]:
    """Trust anchors for the status: the store's self-signed CA entries and the default CA
    package; the other CA entries are intermediates. The note says why the package is missing."""
    ca_entries = [e.certificate for e in entries if e.info.kind is EntryKind.CA]
    roots = [c for c in ca_entries if c.issuer == c.subject]
    intermediates = [c for c in ca_entries if c.issuer != c.subject]
    note = None
    try:
        roots.extend(load_ca_bundle(bundle_path))
    except PkiError as exc:
        note = f"default CA package not used for the status: {exc}"
    return Anchors(roots), intermediates, note


def memory_key_problem(name: str, gateway_answered: bool) -> str:
    why = ("the running gateway does not hold it (it was restarted since the import)" if gateway_answered
           else "no running gateway reported holding it")
    return (f"its private key was kept only in the gateway's memory (pki.persist_keys: false) and {why}; "
            f"{reimport_hint(name)}")


def _row(store: CertStore, entry: StoredCert, anchors: Anchors, intermediates: Sequence[x509.Certificate],
         now: dt.datetime, gateway_keys: frozenset[str] | None = None) -> Row:
    state, problem = store.key_state(entry.name, entry.certificate)
    if state is KeyState.MEMORY_MISSING:
        if gateway_keys is not None and certificate_key_id(entry.certificate) in gateway_keys:
            state = KeyState.MEMORY
        else:
            problem = memory_key_problem(entry.name, gateway_keys is not None)
    if entry.info.kind is EntryKind.CERTIFICATE and state is KeyState.NONE:
        problem = "no private key in the store"
    status = assess(entry.certificate, entry.chain, kind=entry.info.kind, key_state=state, anchors=anchors,
                    now=now, intermediates=intermediates)
    return Row(entry, status, state, problem)


def _entries(store: CertStore) -> tuple[list[StoredCert], list[tuple[str, str]]]:
    entries: list[StoredCert] = []
    unreadable: list[tuple[str, str]] = []
    for name in store.names():
        try:
            entries.append(store.load(name, with_key=False))
        except PkiError as exc:
            unreadable.append((name, str(exc)))
    return entries, unreadable


def build_listing(store: CertStore, bundle_path: str, now: dt.datetime,
                  gateway_keys: frozenset[str] | None = None) -> Listing:
    entries, unreadable = _entries(store)
    anchors, intermediates, note = anchors_for(entries, bundle_path)
    requests: list[tuple[str, str]] = []
    for name in store.request_names():
        try:
            requests.append((name, store.load_request_csr(name).subject.rfc4514_string()))
        except PkiError as exc:
            requests.append((name, f"unreadable: {exc}"))
    rows = tuple(_row(store, e, anchors, intermediates, now, gateway_keys) for e in entries)
    return Listing(rows, tuple(unreadable), tuple(requests), note)


def render_listing_json(listing: Listing, *, persist_keys: bool) -> str:
    return json.dumps({
        "certificates": [r.as_json() for r in listing.rows],
        "unreadable": [{"name": n, "problem": p} for n, p in listing.unreadable],
        "requests": [{"name": n, "subject": s} for n, s in listing.requests],
        "persist_keys": persist_keys,
    }, indent=1)


def render_listing(listing: Listing, directory: Path) -> str:
    if not listing.rows and not listing.unreadable and not listing.requests:
        return f"no certificates in {directory}\n"
    lines: list[str] = []
    table = [("NAME", "KIND", "STATUS", "KEY", "EXPIRES", "SUBJECT", "ISSUER", "NAMES")]
    for row in listing.rows:
        cert = row.entry.certificate
        key = row.key_state.value + (", exportable" if row.entry.info.exportable else "")
        issuer = "self-signed" if cert.issuer == cert.subject else cert.issuer.rfc4514_string()
        table.append((row.entry.name, kind_word(row.entry), row.status.value, key,
                      f"{cert.not_valid_after_utc:%Y-%m-%d}", cert.subject.rfc4514_string(), issuer,
                      ", ".join(certificate_names(cert)) or "-"))
    if listing.rows:
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in table]
    lines += [f"{name}: unreadable: {problem}" for name, problem in listing.unreadable]
    lines += [f"{r.entry.name}: {'no key' if r.key_state is KeyState.MEMORY_MISSING else 'broken key'}: "
              f"{r.key_problem}" for r in listing.rows if r.key_problem]
    if listing.requests:
        lines += ["", "signing requests:", *(f"  {name}: {subject}" for name, subject in listing.requests)]
    if listing.note:
        lines += ["", f"note: {listing.note}"]
    return "\n".join(lines) + "\n"


def _public_key_words(cert: x509.Certificate) -> str:
    kind = type(cert.public_key()).__name__.removeprefix("_").replace("PublicKey", "")
    try:
        return f"{kind} {public_key_bits(cert)} bits"
    except PkiError:
        return "unsupported"


def render_details(store: CertStore, name: str, bundle_path: str, now: dt.datetime,
                   references: str | None = None, gateway_keys: frozenset[str] | None = None) -> str:
    """One entry in detail; `references` is what the configuration says about it, if read."""
    entry = store.load(name, with_key=False)
    others, _ = _entries(store)
    anchors, intermediates, note = anchors_for([entry, *(o for o in others if o.name != name)], bundle_path)
    row = _row(store, entry, anchors, intermediates, now, gateway_keys)
    cert = entry.certificate
    fields = [
        ("name", entry.name), ("kind", kind_word(entry)), ("status", row.status.value),
        ("subject", cert.subject.rfc4514_string()), ("issuer", cert.issuer.rfc4514_string()),
        ("names", ", ".join(certificate_names(cert)) or "-"), ("serial", f"{cert.serial_number:x}"),
        ("not before", f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("not after", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("public key", _public_key_words(cert)), ("sha256", sha256_fingerprint(cert)),
        ("key", row.key_state.value + (f" ({row.key_problem})" if row.key_problem else "")),
        ("exportable", "yes" if entry.info.exportable else "no"),
        ("origin", " ".join(filter(None, (entry.info.origin, entry.info.created))) or "-"),
    ]
    fields += [(f"chain[{i}]", c.subject.rfc4514_string()) for i, c in enumerate(entry.chain)]
    if references is not None:
        fields.append(("referenced by", references))
    width = max(len(k) for k, _ in fields)
    lines = [f"{key.ljust(width)}  {value}" for key, value in fields]
    if row.status is CertStatus.NO_TRUST_ANCHOR:
        lines.append(NO_ANCHOR_HINT)
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def render_request(name: str, csr: x509.CertificateSigningRequest) -> str:
    names = request_alt_names(csr)
    try:
        signing = csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        signing = False
    return (f"signing request  {name}\n"
            f"kind             {'signing certificate (CA)' if signing else 'server endpoint'}\n"
            f"subject          {csr.subject.rfc4514_string()}\n"
            f"names            {', '.join((*names.dns, *names.rfc822)) or '-'}\n")
