"""The key-exchange groups tlsgw offers a server: the client's own, in the client's order.

Why not OpenSSL's default list: a direct connection would have used one of the client's
groups, so offering exactly those keeps the upstream leg as strong as the client asked for
and no weaker (a post-quantum client gets X25519MLKEM768 upstream too). And it costs less:
OpenSSL's default also sends a post-quantum key share to every server, whose ML-KEM key is
generated for each connection and kept until the connection ends (about 9 KiB of memory
per idle connection when the server picked X25519, issue 8). Key shares go to the groups
the client sent shares for, so a server that the client would have reached without a
HelloRetryRequest is reached without one.

The list uses OpenSSL 3.5's syntax: `?` skips a group this OpenSSL does not know, `*`
marks a group to send a key share for.
"""

from __future__ import annotations

from collections.abc import Sequence

# IANA TLS Supported Groups registry code points -> OpenSSL group names.
OPENSSL_GROUPS: dict[int, str] = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "X25519",
    0x001E: "X448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}


def upstream_groups(offered: Sequence[int], key_shares: Sequence[int]) -> str | None:
    """The group list for the upstream leg, or None (OpenSSL's default) when the client
    named no group tlsgw knows: a TLS 1.2 client without supported_groups, say."""
    names: list[str] = []
    for code in offered:
        name = OPENSSL_GROUPS.get(code)
        if name is not None and name not in names:
            names.append(name)
    if not names:
        return None
    shared = {OPENSSL_GROUPS[code] for code in key_shares if code in OPENSSL_GROUPS}
    if not shared & set(names):
        shared = {names[0]}  # the client sent no usable share: one for its first choice
    return ":".join(("?*" if name in shared else "?") + name for name in names)
