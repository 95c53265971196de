"""OpenSSL's terse reasons turned, in one place, into sentences an operator can act on,
naming the peer (STYLE.md C, after mitmproxy's on_handshake_error)."""

from __future__ import annotations

# (substring of OpenSSL's reason, sentence template). Checked in order.
_CLIENT_SIDE: tuple[tuple[str, str], ...] = (
    ("unknown ca", "client {peer} does not trust {issuer} for {sni}"),
    ("bad certificate", "client {peer} rejected the certificate for {sni}"),
    ("certificate unknown", "client {peer} rejected the certificate for {sni}"),
    ("unsupported protocol", "client {peer} offered no protocol version enabled in the client proxy"),
    ("wrong version number", "client {peer} spoke a protocol version that is not enabled"),
    ("no shared cipher", "client {peer} offered no cipher suite enabled in the client proxy"),
    ("peer closed", "client {peer} closed the connection during the handshake for {sni}"),
)
_UPSTREAM_SIDE: tuple[tuple[str, str], ...] = (
    ("unsupported protocol", "upstream {peer} supports no protocol version enabled in the client proxy"),
    ("protocol version", "upstream {peer} supports no protocol version enabled in the client proxy"),
    ("handshake failure", "upstream {peer} refused the handshake (no common cipher or version)"),
    ("certificate required", "upstream {peer} requires a client certificate"),
    ("peer closed", "upstream {peer} closed the connection during the handshake"),
)


def explain_handshake_failure(side: str, detail: str, peer: str, sni: str | None,
                              issuer: str = "the signing CA") -> str:
    """`issuer`: who issued what the client was shown. A client refusing the untrusted CA
    (an invalid upstream shown on purpose) is not a client missing the signing CA, and
    the sentence must not send the operator to deploy it."""
    table = _CLIENT_SIDE if side == "client" else _UPSTREAM_SIDE
    lowered = detail.lower()
    for needle, template in table:
        if needle in lowered:
            return template.format(peer=peer, sni=sni or "(no SNI)", issuer=issuer)
    return f"{side} {peer}: TLS handshake failed: {detail}"
