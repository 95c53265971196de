"""Cipher suites by criteria: the product's "key exchange / bulk cipher / MAC" checkboxes
turned into the exact suite lists handed to OpenSSL.

Theory of operation. OpenSSL's cipher strings ("ECDHE+AESGCM:!SHA1") are a small
language whose result depends on the OpenSSL build, so the same text can mean different
suites on two hosts, and nobody can tell from the configuration what is offered. Here
the known suites are a table (IANA code, IANA name, OpenSSL name, and what each is made
of); the criteria pick rows; the chosen OpenSSL names are joined with ":" and nothing
else, so what `tlsgw check-config --explain` prints is literally what OpenSSL gets. A
row the running OpenSSL does not have is an error at load (`unsupported_suites`), never a
silent gap.

Rules, stated once:
- A TLS 1.2-and-below suite is enabled when its key exchange, its bulk cipher and (for
  CBC suites) its MAC are all chosen, and it can be used in at least one enabled version
  (AES-GCM, ChaCha20 and the SHA-256/384 MACs exist from TLS 1.2 on; ECDHE from TLS 1.0;
  SSL 3.0 has only the static-RSA CBC suites).
- AEAD suites (GCM, ChaCha20-Poly1305) have no separate MAC: the hash in their IANA name
  is the handshake PRF. They are chosen by bulk cipher alone, in TLS 1.2 as in TLS 1.3.
- TLS 1.3 suites always use (EC)DHE and certificate signatures of any kind, so only the
  bulk criterion selects among them.

Pure: no OpenSSL calls here. `gateway.tls.contexts` probes the running OpenSSL and
passes what it found to `unsupported_suites`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from gateway.config.model import BulkCipher, CipherSuiteCriteria, KeyExchange, MacAlgorithm, TlsVersion


class Signature(enum.Enum):
    """The key type of the certificate that authenticates a suite's key exchange."""

    RSA = "rsa"
    ECDSA = "ecdsa"


@dataclass(frozen=True, slots=True)
class Suite:
    code: int
    """IANA code point, as in a ClientHello's cipher_suites."""
    iana: str
    openssl: str
    """OpenSSL's name: what `set_cipher_list` and `get_cipher_name` use."""
    bulk: BulkCipher
    key_exchange: KeyExchange | None
    """None for TLS 1.3 suites (key exchange and signature are negotiated separately)."""
    mac: MacAlgorithm | None
    """None for AEAD suites."""
    min_version: TlsVersion

    def __hash__(self) -> int:
        # The code point identifies the row. The generated hash would hash every field,
        # enums included (a Python-level call each), and suites are hashed inside every
        # upstream offer, a dictionary key looked up several times per connection.
        return hash(self.code)

    @property
    def is_tls13(self) -> bool:
        return self.key_exchange is None

    @property
    def forward_secret(self) -> bool:
        return self.key_exchange is not KeyExchange.RSA

    @property
    def aead(self) -> bool:
        return self.bulk.is_aead

    @property
    def signature(self) -> Signature | None:
        """The certificate key type this suite needs; None when any will do (TLS 1.3)."""
        if self.key_exchange is KeyExchange.ECDHE_ECDSA:
            return Signature.ECDSA
        if self.key_exchange is None:
            return None
        return Signature.RSA


_K, _B, _M, _V = KeyExchange, BulkCipher, MacAlgorithm, TlsVersion


def _s(code: int, iana: str, openssl: str, kx: KeyExchange | None, bulk: BulkCipher,
       mac: MacAlgorithm | None, since: TlsVersion) -> Suite:
    return Suite(code, iana, openssl, bulk, kx, mac, since)


# TLS 1.2 and below, in tlsgw's order of preference (the client-facing side uses it with
# server preference): forward-secret AEAD first, in Mozilla's "intermediate" order; then
# forward-secret CBC; then static RSA; 3DES and DES last.
TLS12_SUITES: tuple[Suite, ...] = (
    _s(0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256",
       _K.ECDHE_ECDSA, _B.AES128_GCM, None, _V.TLS1_2),
    _s(0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
       _K.ECDHE_RSA, _B.AES128_GCM, None, _V.TLS1_2),
    _s(0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384",
       _K.ECDHE_ECDSA, _B.AES256_GCM, None, _V.TLS1_2),
    _s(0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
       _K.ECDHE_RSA, _B.AES256_GCM, None, _V.TLS1_2),
    _s(0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
       _K.ECDHE_ECDSA, _B.CHACHA20_POLY1305, None, _V.TLS1_2),
    _s(0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
       _K.ECDHE_RSA, _B.CHACHA20_POLY1305, None, _V.TLS1_2),
    _s(0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256",
       _K.ECDHE_ECDSA, _B.AES128_CBC, _M.SHA256, _V.TLS1_2),
    _s(0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256",
       _K.ECDHE_RSA, _B.AES128_CBC, _M.SHA256, _V.TLS1_2),
    _s(0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384",
       _K.ECDHE_ECDSA, _B.AES256_CBC, _M.SHA384, _V.TLS1_2),
    _s(0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384",
       _K.ECDHE_RSA, _B.AES256_CBC, _M.SHA384, _V.TLS1_2),
    _s(0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA",
       _K.ECDHE_ECDSA, _B.AES128_CBC, _M.SHA1, _V.TLS1_0),
    _s(0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA",
       _K.ECDHE_RSA, _B.AES128_CBC, _M.SHA1, _V.TLS1_0),
    _s(0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA",
       _K.ECDHE_ECDSA, _B.AES256_CBC, _M.SHA1, _V.TLS1_0),
    _s(0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA",
       _K.ECDHE_RSA, _B.AES256_CBC, _M.SHA1, _V.TLS1_0),
    _s(0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256",
       _K.RSA, _B.AES128_GCM, None, _V.TLS1_2),
    _s(0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384",
       _K.RSA, _B.AES256_GCM, None, _V.TLS1_2),
    _s(0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256",
       _K.RSA, _B.AES128_CBC, _M.SHA256, _V.TLS1_2),
    _s(0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256",
       _K.RSA, _B.AES256_CBC, _M.SHA256, _V.TLS1_2),
    _s(0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA",
       _K.RSA, _B.AES128_CBC, _M.SHA1, _V.SSL3),
    _s(0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA",
       _K.RSA, _B.AES256_CBC, _M.SHA1, _V.SSL3),
    _s(0xC008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-ECDSA-DES-CBC3-SHA",
       _K.ECDHE_ECDSA, _B.TRIPLE_DES, _M.SHA1, _V.TLS1_0),
    _s(0xC012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-RSA-DES-CBC3-SHA",
       _K.ECDHE_RSA, _B.TRIPLE_DES, _M.SHA1, _V.TLS1_0),
    _s(0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA",
       _K.RSA, _B.TRIPLE_DES, _M.SHA1, _V.SSL3),
    _s(0x0009, "TLS_RSA_WITH_DES_CBC_SHA", "DES-CBC-SHA",
       _K.RSA, _B.DES, _M.SHA1, _V.SSL3),
)

# TLS 1.3 (RFC 8446 B.4), in Mozilla's order. The CCM suites are left out: no browser
# offers them, and the product's criteria have no CCM choice.
TLS13_SUITES: tuple[Suite, ...] = (
    _s(0x1301, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", None, _B.AES128_GCM, None, _V.TLS1_3),
    _s(0x1302, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", None, _B.AES256_GCM, None, _V.TLS1_3),
    _s(0x1303, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
       None, _B.CHACHA20_POLY1305, None, _V.TLS1_3),
)

_BY_OPENSSL_NAME: dict[str, Suite] = {s.openssl: s for s in TLS12_SUITES + TLS13_SUITES}

# The bulk ciphers that make OpenSSL 3 refuse a suite at its default security level
# (fewer than 112 bits of security, or 64-bit blocks), so a context with them needs
# "@SECLEVEL=0"; the same holds for any version below TLS 1.2 (SHA-1/MD5 handshakes).
WEAK_BULK: frozenset[BulkCipher] = frozenset({BulkCipher.TRIPLE_DES, BulkCipher.DES})


@dataclass(frozen=True, slots=True)
class SuiteSelection:
    """The exact suites of one side of one proxy, in preference order."""

    tls12: tuple[Suite, ...]
    """TLS 1.2 and below: for `set_cipher_list`."""
    tls13: tuple[Suite, ...]
    """TLS 1.3: for `set_tls13_ciphersuites`."""

    def cipher_list(self) -> bytes:
        return ":".join(s.openssl for s in self.tls12).encode("ascii")

    def tls13_ciphersuites(self) -> bytes:
        return ":".join(s.openssl for s in self.tls13).encode("ascii")

    @property
    def suites(self) -> tuple[Suite, ...]:
        return self.tls13 + self.tls12


def suite_by_openssl_name(name: str | None) -> Suite | None:
    """The table row for a name from `Connection.get_cipher_name()`; None if unknown."""
    return _BY_OPENSSL_NAME.get(name or "")


def _matches(suite: Suite, criteria: CipherSuiteCriteria) -> bool:
    if suite.bulk not in criteria.bulk:
        return False
    if suite.is_tls13:
        return True
    if suite.key_exchange not in criteria.key_exchange:
        return False
    return suite.mac is None or suite.mac in criteria.mac


def select_suites(criteria: CipherSuiteCriteria, protocols: Collection[TlsVersion]) -> SuiteSelection:
    """The suites the criteria enable for these protocol versions (empty lists allowed;
    `selection_problems` says when that makes an enabled version unusable)."""
    below13 = [v for v in protocols if v < TlsVersion.TLS1_3]
    highest_below13 = max(below13, default=None)
    tls12 = tuple(
        s for s in TLS12_SUITES
        if highest_below13 is not None and s.min_version <= highest_below13 and _matches(s, criteria)
    )
    tls13 = tuple(s for s in TLS13_SUITES if TlsVersion.TLS1_3 in protocols and _matches(s, criteria))
    return SuiteSelection(tls12, tls13)


def usable_in(suites: Iterable[Suite], version: TlsVersion) -> tuple[Suite, ...]:
    """The suites that can be negotiated in `version`."""
    if version is TlsVersion.TLS1_3:
        return tuple(s for s in suites if s.is_tls13)
    return tuple(s for s in suites if not s.is_tls13 and s.min_version <= version)


def selection_problems(criteria: CipherSuiteCriteria, protocols: Collection[TlsVersion]) -> list[tuple[str, str]]:
    """(field under the proxy, message) for every enabled version no chosen suite can serve.

    Pure table knowledge; the loader reports these. Each message says which suites would
    serve the version, so the fix is visible.
    """
    problems: list[tuple[str, str]] = []
    selection = select_suites(criteria, protocols)
    if TlsVersion.TLS1_3 in protocols and not selection.tls13:
        problems.append((
            "cipher_suites.bulk",
            "TLSv1.3 is enabled but none of its suites uses a chosen bulk cipher; choose "
            "aes128-gcm, aes256-gcm or chacha20-poly1305, or disable TLSv1.3",
        ))
    starved = [v for v in sorted(protocols) if v < TlsVersion.TLS1_3 and not usable_in(selection.tls12, v)]
    if starved:
        labels = ", ".join(v.label for v in starved)
        candidates = ", ".join(s.openssl for s in usable_in(TLS12_SUITES, starved[0]) if s.bulk not in WEAK_BULK)
        problems.append((
            "cipher_suites",
            f"{labels} {'is' if len(starved) == 1 else 'are'} enabled but no chosen cipher suite can be "
            f"negotiated in {'it' if len(starved) == 1 else 'them'} (suites that can: {candidates}); "
            "choose their key exchange, bulk cipher and MAC, or disable "
            f"{'that version' if len(starved) == 1 else 'those versions'}",
        ))
    return problems


def needs_security_level_0(suites: Iterable[Suite], lowest_version: TlsVersion) -> bool:
    """True when OpenSSL's default security level would silently refuse part of what the
    configuration deliberately enables: versions below TLS 1.2, or 3DES/DES."""
    return lowest_version < TlsVersion.TLS1_2 or any(s.bulk in WEAK_BULK for s in suites)


@dataclass(frozen=True, slots=True)
class UnsupportedChoice:
    field: str
    """Under the proxy: `cipher_suites.bulk`, `cipher_suites.key_exchange` or `cipher_suites`."""
    message: str


def unsupported_suites(selection: SuiteSelection, criteria: CipherSuiteCriteria,
                       available: Collection[str], openssl_version: str) -> list[UnsupportedChoice]:
    """The chosen suites the running OpenSSL cannot do, named by the choice responsible.

    A bulk cipher (or key exchange) whose every selected suite is missing is named as such
    ("bulk cipher 3des is not available in OpenSSL 3.x on this host"); anything else
    missing is named suite by suite.
    """
    missing = [s for s in selection.suites if s.openssl not in available]
    if not missing:
        return []
    problems: list[UnsupportedChoice] = []
    explained: set[Suite] = set()
    for bulk in criteria.bulk:
        chosen = [s for s in selection.suites if s.bulk is bulk]
        if chosen and all(s in missing for s in chosen):
            problems.append(UnsupportedChoice(
                "cipher_suites.bulk",
                f"bulk cipher {bulk.value} is not available in {openssl_version} on this host "
                f"(its suites: {', '.join(s.openssl for s in chosen)}); remove it",
            ))
            explained.update(chosen)
    for kx in criteria.key_exchange:
        chosen = [s for s in selection.suites if s.key_exchange is kx and s not in explained]
        if chosen and all(s in missing for s in chosen):
            problems.append(UnsupportedChoice(
                "cipher_suites.key_exchange",
                f"key exchange {kx.value} is not available in {openssl_version} on this host "
                f"(its suites: {', '.join(s.openssl for s in chosen)}); remove it",
            ))
            explained.update(chosen)
    rest = [s for s in missing if s not in explained]
    if rest:
        problems.append(UnsupportedChoice(
            "cipher_suites",
            f"cipher suites {', '.join(s.openssl for s in rest)} are not available in {openssl_version} "
            "on this host; change the criteria so they are not chosen",
        ))
    return problems


def offered_by_client(suites: Iterable[Suite], client_codes: Collection[int]) -> tuple[Suite, ...]:
    """The suites (in tlsgw's order) that also appear in a ClientHello's cipher_suites."""
    return tuple(s for s in suites if s.code in client_codes)


def for_signature(suites: Iterable[Suite], signature: Signature) -> tuple[Suite, ...]:
    """The suites a certificate with this kind of key can serve (TLS 1.3 suites: all)."""
    return tuple(s for s in suites if s.signature is None or s.signature is signature)


def weakenings(protocols: Collection[TlsVersion], criteria: CipherSuiteCriteria) -> list[str]:
    """Deliberate weakenings in one proxy's TLS settings, as sentences for the WARNING
    that each load logs (STYLE.md D). Empty for the defaults."""
    found: list[str] = []
    selection = select_suites(criteria, protocols)
    lowest = min(protocols)
    if lowest < TlsVersion.TLS1_2:
        found.append(f"protocol {lowest.label} is enabled")
    if KeyExchange.RSA in criteria.key_exchange and any(not s.forward_secret for s in selection.tls12):
        found.append("key exchange rsa is enabled: sessions that use it have no forward secrecy")
    for bulk in (BulkCipher.TRIPLE_DES, BulkCipher.DES):
        if any(s.bulk is bulk for s in selection.tls12):
            found.append(f"bulk cipher {bulk.value} is enabled")
    if needs_security_level_0(selection.tls12, lowest):
        found.append("OpenSSL runs at security level 0 for this proxy, as these settings require")
    return found
