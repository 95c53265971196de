"""Warnings for certificates that are about to expire, or have.

A server proxy's certificate that expires makes every client of that service fail its
handshake, and a signing CA that expires makes every forged certificate untrusted; the
operator has to hear about it early. The daemon logs these warnings at start and once a
day; this module only decides what to say, with the clock passed in, so it is testable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from gateway.config.model import GatewayConfig
from gateway.pki.store import StoredCert

# Thirty days leave time for a renewal that needs a purchase order or a human at a CA.
EXPIRY_WARNING_DAYS = 30


def _expiry_sentence(what: str, cert: StoredCert, now: dt.datetime) -> str | None:
    not_after = cert.certificate.not_valid_after_utc
    day = not_after.date().isoformat()
    if not_after <= now:
        return f"{what} expired on {day}"
    left = not_after - now
    if left > dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return None
    if left.days == 0:
        return f"{what} expires within a day ({not_after.strftime('%Y-%m-%d %H:%M')} UTC)"
    return f"{what} expires in {left.days} day{'s' if left.days != 1 else ''} ({day})"


def expiry_warnings(
    config: GatewayConfig,
    certs_by_proxy: Mapping[str, Sequence[StoredCert]],
    now: dt.datetime,
    signing_by_proxy: Mapping[str, StoredCert] | None = None,
) -> list[str]:
    """One sentence per certificate that expires within `EXPIRY_WARNING_DAYS` of `now` or
    has expired, naming the certificate and the proxy that uses it.

    `certs_by_proxy`: server proxy name -> its loaded certificates; `signing_by_proxy`:
    client proxy name -> its signing CA. Two maps because a server proxy and a client
    proxy may share a name. Proxies absent from a map are skipped. Order follows the
    configuration: server proxies, then client proxies. `now` must be timezone-aware.
    """
    warnings: list[str] = []
    for proxy in config.server_proxies:
        for cert in certs_by_proxy.get(proxy.name, ()):
            sentence = _expiry_sentence(f"certificate {cert.name!r} of server proxy {proxy.name!r}", cert, now)
            if sentence:
                warnings.append(sentence)
    for client in config.client_proxies:
        signing = (signing_by_proxy or {}).get(client.name)
        if signing is None:
            continue
        sentence = _expiry_sentence(
            f"signing certificate {signing.name!r} of client proxy {client.name!r}", signing, now
        )
        if sentence:
            warnings.append(sentence)
    return warnings
