"""Forging the certificate a client is shown in place of the upstream's.

What a forged certificate says, and why:
- Names: exactly the upstream's DNS and IP subjectAltNames (the CN when it has no SAN),
  and its subject CN. The SNI the client sent is *not* added: the forged certificate is
  never valid for a name the real one was not valid for, so a client asking for
  `a.example` and served a certificate for `b.example` still sees the mismatch.
- Validity: never longer than the upstream's. notBefore is at most an hour back (clock
  skew), notAfter at most 397 days ahead (the CA/B Forum limit clients enforce). An
  upstream that is already expired keeps its own dates, so that the client - shown the
  forgery under the untrusted CA - also sees "expired".
- Extensions: CA:FALSE, keyUsage digitalSignature (+keyEncipherment for RSA keys, which
  TLS 1.2 RSA key exchange needs), EKU serverAuth, SKI, AKI of the signing CA; SHA-256.
- Serial: 128 random bits, so two forgeries never share one.

Leaf key pair policy: one key per gateway process and key kind, generated on first use
(`LeafKeys`) and held in memory only, never written to disk; a restart makes a new one.
Generating a key per forged certificate would cost an RSA generation (tens of ms) per new
site; sharing one key is what mitmproxy and sslsplit do. The cost is that every forged
certificate of one process shares a key, which adds nothing an attacker with that
process's memory does not already have: the signing CA's key lives there too. ECDSA P-256
is the default (cheap handshakes, accepted by every current client); RSA-2048 is the
choice for clients that only speak RSA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.ca import new_serial_number, signature_hash
from gateway.pki.keys import KeyKind, PrivateKey, describe_key, generate_key

# How far notBefore may be backdated: clients whose clock is a little slow must not see
# a certificate that is "not yet valid".
MAX_BACKDATE = dt.timedelta(hours=1)
# CA/B Forum Baseline Requirements 6.3.2 and Apple/Chrome policy: 398 days at most; one day
# of margin covers the backdating above.
MAX_LEAF_LIFETIME = dt.timedelta(days=397)


class LeafKeys:
    """The process-wide key forged certificates carry (see "Leaf key pair policy" above)."""

    __slots__ = ("_kind", "_key")

    def __init__(self, kind: KeyKind = KeyKind.EC_P256) -> None:
        self._kind = kind
        self._key: PrivateKey | None = None

    @property
    def kind(self) -> KeyKind:
        return self._kind

    def get(self) -> PrivateKey:
        """The key, generated on the first call and the same object ever after."""
        if self._key is None:
            self._key = generate_key(self._kind)
        return self._key

    def __repr__(self) -> str:
        state = describe_key(self._key) if self._key is not None else "not generated yet"
        return f"LeafKeys({self._kind.value}, {state})"


def mirrored_names(upstream: x509.Certificate) -> list[x509.GeneralName]:
    """The upstream's DNS and IP subjectAltNames; its CN when it has no SAN at all."""
    try:
        san = upstream.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [name for cn in _common_names(upstream) if (name := _cn_as_general_name(cn)) is not None]
    return [n for n in san if isinstance(n, (x509.DNSName, x509.IPAddress))]


def _common_names(cert: x509.Certificate) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)]


def _cn_as_general_name(cn: str) -> x509.GeneralName | None:
    try:
        return x509.IPAddress(ipaddress.ip_address(cn))
    except ValueError:
        pass
    if not cn.isascii():
        return None  # an IDN in U-label form cannot be a dNSName; there is nothing safe to copy
    return x509.DNSName(cn)


def forged_validity(upstream: x509.Certificate, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) of the forgery; see the module docstring for the rules."""
    up_start, up_end = upstream.not_valid_before_utc, upstream.not_valid_after_utc
    if up_end <= now:
        return up_start, up_end  # expired: keep the upstream's dates so the client sees it too
    start = max(up_start, now - MAX_BACKDATE)
    # For a not-yet-valid upstream the cap counts from its own notBefore, keeping start < end.
    end = min(up_end, max(start, now) + MAX_LEAF_LIFETIME)
    return start, end


def forge_leaf(
    upstream: x509.Certificate,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    leaf_key: PrivateKey,
    *,
    now: dt.datetime,
    sni: str | None = None,
) -> x509.Certificate:
    """A certificate for `leaf_key`, issued by `ca_cert`, that mirrors `upstream`.

    `sni` is accepted for the caller's convenience and deliberately unused: the SNI is
    never added to the names (module docstring). `now` is an aware UTC datetime.
    """
    del sni
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    names = mirrored_names(upstream)
    common_names = upstream.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = x509.Name(common_names[:1])
    not_before, not_after = forged_validity(upstream, now)
    leaf_public = leaf_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(leaf_public)
        .serial_number(new_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(leaf_key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_public), critical=False)
        .add_extension(_authority_key_identifier(ca_cert, ca_key), critical=False)
    )
    if names:
        # RFC 5280 4.2.1.6: with an empty subject the SAN must be critical.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not common_names)
    return builder.sign(ca_key, signature_hash(ca_key))


def _authority_key_identifier(ca_cert: x509.Certificate, ca_key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    """Copy the CA's SKI when it has one: an imported CA may use a non-SHA-1 key identifier."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
