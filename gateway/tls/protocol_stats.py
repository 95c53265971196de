"""Counter names for TLS protocol statistics, in the spirit of the product's
`npSslInspProtocolStats`, and the pure classification of handshake failures into them.

Names (string keys for `gateway.observability.counters.Counters.add`):

    protocol.clientCipherOther                    the client offered no cipher suite the
                                                  proxy enables (the product's counter; an
                                                  operator's first hint at a cipher mismatch)
    protocol.serverHandshakeFailure.<reason>      the upstream handshake failed, by reason:
        noSharedCipher       the server accepts none of the suites offered
        protocolVersion      the server speaks none of the versions offered
        clientCertificate    the server asked for a client certificate
        closed               the server closed or reset during the handshake
        timeout              the server did not finish in gateway.handshake_timeout
        other                anything else (the flow log has OpenSSL's words)
    protocol.refused.<reason>                     flows tlsgw refused to decrypt, by reason:
        protocolVersion      the client offers no enabled version
        clientCipherOther    the client offers no enabled cipher suite
        parity               the client cannot meet what the server gave (a version or
                             cipher at least as strong), so it is refused, not downgraded
        certificateRejected  the client refused the forged certificate (untrusted CA,
                             or pinning)
        clientHandshake      the client broke off the handshake otherwise
        timeout              the client did not finish in gateway.handshake_timeout

Pure: strings in, strings out.
"""

from __future__ import annotations

import enum

PREFIX = "protocol."
CLIENT_CIPHER_OTHER = PREFIX + "clientCipherOther"


class ServerFailure(enum.Enum):
    NO_SHARED_CIPHER = "noSharedCipher"
    PROTOCOL_VERSION = "protocolVersion"
    CLIENT_CERTIFICATE = "clientCertificate"
    CLOSED = "closed"
    TIMEOUT = "timeout"
    OTHER = "other"

    @property
    def counter(self) -> str:
        return f"{PREFIX}serverHandshakeFailure.{self.value}"


class Refusal(enum.Enum):
    PROTOCOL_VERSION = "protocolVersion"
    CLIENT_CIPHER_OTHER = "clientCipherOther"
    PARITY = "parity"
    CERTIFICATE_REJECTED = "certificateRejected"
    CLIENT_HANDSHAKE = "clientHandshake"
    TIMEOUT = "timeout"

    @property
    def counter(self) -> str:
        return f"{PREFIX}refused.{self.value}"


# (substring of OpenSSL's reason, classification), first match wins. OpenSSL phrases its
# reasons from its own side: "tlsv1 alert ..." is an alert the peer sent.
_SERVER_REASONS: tuple[tuple[str, ServerFailure], ...] = (
    ("certificate required", ServerFailure.CLIENT_CERTIFICATE),
    ("unsupported protocol", ServerFailure.PROTOCOL_VERSION),
    ("protocol version", ServerFailure.PROTOCOL_VERSION),
    ("wrong version number", ServerFailure.PROTOCOL_VERSION),
    ("no shared cipher", ServerFailure.NO_SHARED_CIPHER),
    ("handshake failure", ServerFailure.NO_SHARED_CIPHER),
    ("insufficient security", ServerFailure.NO_SHARED_CIPHER),
    ("wrong cipher returned", ServerFailure.NO_SHARED_CIPHER),
    ("peer closed", ServerFailure.CLOSED),
    ("unexpected eof", ServerFailure.CLOSED),
    ("connection reset", ServerFailure.CLOSED),
    ("timed out", ServerFailure.TIMEOUT),
)

_CLIENT_REASONS: tuple[tuple[str, Refusal], ...] = (
    ("unknown ca", Refusal.CERTIFICATE_REJECTED),
    ("bad certificate", Refusal.CERTIFICATE_REJECTED),
    ("certificate unknown", Refusal.CERTIFICATE_REJECTED),
    ("unsupported certificate", Refusal.CERTIFICATE_REJECTED),
    ("no shared cipher", Refusal.CLIENT_CIPHER_OTHER),
    ("unsupported protocol", Refusal.PROTOCOL_VERSION),
    ("wrong version number", Refusal.PROTOCOL_VERSION),
    ("protocol version", Refusal.PROTOCOL_VERSION),
    ("timed out", Refusal.TIMEOUT),
)


def classify_server_failure(detail: str, client_certificate_requested: bool = False) -> ServerFailure:
    """Why the upstream handshake failed. `client_certificate_requested` (from
    `gateway.tls.contexts.server_requested_client_certificate`) wins: a TLS 1.2 server
    refusing a missing certificate only says "handshake failure"."""
    if client_certificate_requested:
        return ServerFailure.CLIENT_CERTIFICATE
    lowered = detail.lower()
    return next((kind for needle, kind in _SERVER_REASONS if needle in lowered), ServerFailure.OTHER)


def classify_client_failure(detail: str) -> Refusal:
    """Why the client-facing handshake failed, from OpenSSL's reason on tlsgw's side."""
    lowered = detail.lower()
    return next((kind for needle, kind in _CLIENT_REASONS if needle in lowered), Refusal.CLIENT_HANDSHAKE)
