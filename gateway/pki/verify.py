"""Validating an upstream server's certificate chain, as a browser would.

The checking itself is `cryptography.x509.verification`, which implements the CA/B Forum
and webpki rules: a path to a trusted root, validity dates of every certificate on it,
subjectAltName match (CN is ignored), basicConstraints, key usages, name constraints,
signature algorithms, issuer RSA keys of at least 2048 bits. tlsgw adds the product's
`min_key_length` on the server's own key, which the library does not check (it only
checks keys that verify signatures).

What this module adds is the *reason*. The library reports one opaque error, but the
client proxy acts differently on dates ("block expired certificates") than on
everything else ("block invalid certificates"). So after a failure the chain is
re-verified with one thing changed at a time:

1. If some certificate on the chain is outside its validity at `now`, verify again at a
   moment when all of them are valid. If that passes, dates were the *only* problem:
   EXPIRED (or NOT_YET_VALID). Otherwise the remaining problem wins, checked at that
   moment so the dates do not mask it. (When the validity periods never overlap there is
   no such moment; the failure is then explained at `now` and usually ends as OTHER.)
2. If the issuers cannot even be linked by name to a root of the trust store:
   UNTRUSTED (unknown issuer, missing intermediate, self-signed).
3. A weak key (server key below `min_key_length`, issuer RSA key below 2048): WEAK_KEY.
4. If the chain verifies for a name the certificate does carry, the only problem is
   the name: HOSTNAME_MISMATCH.
5. A certificate below the root signed with SHA-1 or MD5: OTHER, naming the certificate
   and the hash (the library's message names only an algorithm identifier).
6. Anything else (CA:FALSE intermediate, missing subjectAltName, bad signature, name
   constraints...): OTHER, with the library's message in `detail`.

Pure: no I/O, the clock is a parameter. Re-verification happens only on failures.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.verification import PolicyBuilder, Subject, VerificationError

from gateway.pki.keys import is_rsa_certificate, public_key_bits
from gateway.pki.trust import TrustAnchors

# cryptography's webpki policy refuses RSA issuer keys below this; mirrored here only to
# name the reason when it happens.
LIBRARY_MIN_RSA_BITS = 2048
# Signature hashes refused below the root (CA/B Forum: SHA-1 since 2016, MD5 long before),
# by `hashes.HashAlgorithm.name`, with the name to log.
WEAK_SIGNATURE_HASHES = {"sha1": "SHA-1", "md5": "MD5"}
# Longest issuer path followed by name when explaining a failure (the library's own
# default maximum chain depth is 8).
MAX_NAME_PATH = 8


class VerifyFailure(enum.Enum):
    """Why an upstream certificate was not accepted; the value is the word used in logs."""

    NO_CERTIFICATE = "no_certificate"
    """The server sent no certificate."""
    UNTRUSTED = "untrusted"
    """No path to a root of the trust store: unknown issuer, missing intermediate, self-signed."""
    EXPIRED = "expired"
    """Valid in every other respect, but a certificate on the chain has expired."""
    NOT_YET_VALID = "not_yet_valid"
    """Valid in every other respect, but a certificate on the chain is not valid yet."""
    HOSTNAME_MISMATCH = "hostname_mismatch"
    """The chain is trusted but the certificate is not for the name (or IP) connected to."""
    REVOKED = "revoked"
    """A certificate on the verified chain is listed in a CRL of the trust store."""
    WEAK_KEY = "weak_key"
    """The server's RSA key is below `min_key_length`, or an issuer's is below 2048 bits."""
    OTHER = "other"
    """Any other webpki rule broken; `detail` has the library's explanation."""

    @property
    def is_validity_period(self) -> bool:
        """True for the reasons that "block expired certificates" governs."""
        return self in (VerifyFailure.EXPIRED, VerifyFailure.NOT_YET_VALID)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    reason: VerifyFailure | None
    """None exactly when `ok`."""
    detail: str
    """A sentence for the log: what is wrong, with the library's message when it has one."""
    chain: tuple[x509.Certificate, ...] = ()
    """When `ok`: the verified path, server certificate first, trust anchor last."""


def _fail(reason: VerifyFailure, detail: str) -> VerifyResult:
    return VerifyResult(False, reason, detail)


def verify_upstream(
    chain: Sequence[x509.Certificate],
    host: str | None,
    anchors: TrustAnchors,
    *,
    now: dt.datetime,
    min_key_length: int,
) -> VerifyResult:
    """Validate `chain` (server certificate first, as sent) for `host` at `now`.

    `host` is the SNI, or the destination IP address (as text) when the client sent no
    SNI. `None` skips the name check entirely and validates the chain alone: the caller
    takes responsibility for that. `now` is an aware datetime (naive is taken as UTC).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    if not chain:
        return _fail(VerifyFailure.NO_CERTIFICATE, "the server sent no certificate")
    leaf, intermediates = chain[0], list(chain[1:])
    if anchors.store is None:
        return _fail(VerifyFailure.UNTRUSTED, f"trust store {anchors.name!r} holds no certificates")
    if host is None:
        # Nothing to match: a name the certificate claims, or one that fails as "no SAN".
        subject = _probe_subject(leaf, anchors) or x509.DNSName("tlsgw.invalid")
    else:
        host_subject = _host_subject(host, anchors)
        if host_subject is None:
            return _fail(VerifyFailure.HOSTNAME_MISMATCH,
                         f"{host!r} is not a valid DNS name or IP address, so no certificate can be for it")
        subject = host_subject

    verified, error = _verify(anchors, leaf, intermediates, subject, now)
    if verified is not None:
        weak = _weak_server_key(leaf, min_key_length)
        if weak:
            return _fail(VerifyFailure.WEAK_KEY, weak)
        revoked = anchors.revocation.revoked(verified) if anchors.revocation else None
        if revoked is not None:
            return _fail(VerifyFailure.REVOKED, revoked)
        return VerifyResult(True, None, "", tuple(verified))
    return _explain_failure(leaf, intermediates, host, subject, anchors, now, min_key_length, error)


def _explain_failure(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    host: str | None,
    subject: Subject,
    anchors: TrustAnchors,
    now: dt.datetime,
    min_key_length: int,
    error: str,
) -> VerifyResult:
    """Find the reason for a failed verification (steps 1-6 of the module docstring)."""
    path, roots = _name_path(leaf, intermediates, anchors)

    # 1. Dates: are they the only problem?
    at = now
    if any(not _valid_at(c, now) for c in (*path, *roots)):
        remaining: tuple[dt.datetime, str] | None = None
        for when in _moments_all_valid(path, roots):
            verified_then, error_then = _verify(anchors, leaf, intermediates, subject, when)
            if verified_then is not None:
                weak = _weak_server_key(leaf, min_key_length)
                if weak:
                    return _fail(VerifyFailure.WEAK_KEY, weak)
                return _date_failure(verified_then, now, error)
            remaining = remaining or (when, error_then)
        if remaining is not None:
            at, error = remaining  # the problem left once dates are set aside

    # 2. Untrusted: no root even by name.
    if not roots:
        top = path[-1]
        if top.issuer == top.subject:
            why = f"{_name(top.subject)} is self-signed and not in trust store {anchors.name!r}"
        else:
            why = (f"issuer {_name(top.issuer)} of {_name(top.subject)} is neither in trust store "
                   f"{anchors.name!r} nor among the certificates the server sent")
        return _fail(VerifyFailure.UNTRUSTED, f"{why} ({error})")

    # 3. Weak keys.
    weak = _weak_server_key(leaf, min_key_length) or _weak_issuer_key(path[1:] + list(roots))
    if weak:
        return _fail(VerifyFailure.WEAK_KEY, f"{weak} ({error})")

    # 4. Host name: would the chain pass for a name the certificate carries?
    probe = _probe_subject(leaf, anchors) if host is not None else None
    if probe is not None:
        verified_probe, _ = _verify(anchors, leaf, intermediates, probe, at)
        if verified_probe is not None:
            return _fail(VerifyFailure.HOSTNAME_MISMATCH,
                         f"the certificate is for {', '.join(_san_names(leaf)) or 'no name'}, not {host!r}")

    # 5. Signature hashes browsers no longer accept below the root.
    weak_hash = _weak_signature_hash(path)
    if weak_hash:
        return _fail(VerifyFailure.OTHER, weak_hash)

    return _fail(VerifyFailure.OTHER, error)


def _verify(
    anchors: TrustAnchors,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    subject: Subject,
    at: dt.datetime,
) -> tuple[list[x509.Certificate] | None, str]:
    assert anchors.store is not None
    verifier = PolicyBuilder().store(anchors.store).time(at).build_server_verifier(subject)
    try:
        return verifier.verify(leaf, intermediates), ""
    except VerificationError as exc:
        return None, str(exc)


def _buildable(subject: Subject, anchors: TrustAnchors) -> bool:
    """Whether the library accepts `subject` as a server name (it refuses e.g. underscores)."""
    assert anchors.store is not None
    try:
        PolicyBuilder().store(anchors.store).build_server_verifier(subject)
    except ValueError:
        return False
    return True


def _host_subject(host: str, anchors: TrustAnchors) -> Subject | None:
    host = host.strip().rstrip(".").lower()
    try:
        subject: Subject = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        try:
            subject = x509.DNSName(host)
        except ValueError:
            return None
    return subject if _buildable(subject, anchors) else None


def _san(leaf: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _san_names(leaf: x509.Certificate) -> list[str]:
    return [str(n.value) for n in _san(leaf) if isinstance(n, (x509.DNSName, x509.IPAddress))]


def _probe_subject(leaf: x509.Certificate, anchors: TrustAnchors) -> Subject | None:
    """A name the leaf itself claims (wildcards filled in), to test the chain without the host."""
    for name in _san(leaf):
        subject: Subject
        if isinstance(name, x509.DNSName):
            try:
                subject = x509.DNSName(name.value.replace("*", "tlsgw-probe"))
            except ValueError:
                continue
        elif isinstance(name, x509.IPAddress) and not isinstance(name.value, (ipaddress.IPv4Network,
                                                                               ipaddress.IPv6Network)):
            subject = name
        else:
            continue
        if _buildable(subject, anchors):
            return subject
    return None


def _name_path(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], anchors: TrustAnchors
) -> tuple[list[x509.Certificate], tuple[x509.Certificate, ...]]:
    """Follow issuer names from the leaf through the sent certificates to the trust store.

    Returns the path followed (leaf first) and the roots whose subject matches its top
    issuer (empty when the path ends without reaching the trust store). Names only, no
    signatures: this explains a failure, it never accepts anything.
    """
    path = [leaf]
    current = leaf
    while len(path) <= MAX_NAME_PATH:
        roots = anchors.by_subject.get(current.issuer, ())
        if roots:
            return path, roots
        if current.issuer == current.subject:
            break
        issuer = next((c for c in intermediates if c.subject == current.issuer and c not in path), None)
        if issuer is None:
            break
        path.append(issuer)
        current = issuer
    return path, ()


def _valid_at(cert: x509.Certificate, when: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def _moments_all_valid(path: list[x509.Certificate], roots: tuple[x509.Certificate, ...]) -> list[dt.datetime]:
    """Moments at which every certificate of `path` (and one of `roots`) is valid."""
    moments: list[dt.datetime] = []
    for group in [[*path, root] for root in roots] + [path]:
        start = max(c.not_valid_before_utc for c in group)
        end = min(c.not_valid_after_utc for c in group)
        if start <= end:
            moment = start + (end - start) / 2
            if moment not in moments:
                moments.append(moment)
    return moments


def _date_failure(verified: list[x509.Certificate], now: dt.datetime, error: str) -> VerifyResult:
    for cert in verified:
        if cert.not_valid_after_utc < now:
            return _fail(VerifyFailure.EXPIRED,
                         f"{_name(cert.subject)} expired on {cert.not_valid_after_utc.isoformat()}")
    for cert in verified:
        if cert.not_valid_before_utc > now:
            return _fail(VerifyFailure.NOT_YET_VALID,
                         f"{_name(cert.subject)} is not valid before {cert.not_valid_before_utc.isoformat()}")
    return _fail(VerifyFailure.OTHER, error)  # not reached: something on the chain was out of dates


def _weak_server_key(leaf: x509.Certificate, min_key_length: int) -> str:
    if is_rsa_certificate(leaf) and (bits := public_key_bits(leaf)) < min_key_length:
        return f"the server's RSA key has {bits} bits, below the minimum key length {min_key_length}"
    return ""


def _weak_signature_hash(path: list[x509.Certificate]) -> str:
    """`path`: the certificates below the trust anchor (the anchor's own signature is
    never checked, by browsers or the library)."""
    for cert in path:
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            continue
        name = WEAK_SIGNATURE_HASHES.get(algorithm.name) if algorithm is not None else None
        if name is not None:
            return f"{_name(cert.subject)} is signed with {name}, which browsers reject below the root"
    return ""


def _weak_issuer_key(issuers: list[x509.Certificate]) -> str:
    for cert in issuers:
        if is_rsa_certificate(cert) and (bits := public_key_bits(cert)) < LIBRARY_MIN_RSA_BITS:
            return f"issuer {_name(cert.subject)} has a {bits}-bit RSA key, below {LIBRARY_MIN_RSA_BITS}"
    return ""


def _name(name: x509.Name) -> str:
    return repr(name.rfc4514_string() or "<empty subject>")
