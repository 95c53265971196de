"""The upstream leg offers the client's own key-exchange groups (issue 8: no post-quantum
key share generated and kept for a client that did not ask for one)."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from gateway.config.model import TlsVersion
from gateway.tls.clienthello import parse_client_hello
from gateway.tls.contexts import build_upstream_context, new_upstream_connection
from gateway.tls.groups import upstream_groups

X25519, SECP256R1, SECP384R1, X25519MLKEM768, GREASE = 0x001D, 0x0017, 0x0018, 0x11EC, 0x0A0A


def test_client_order_kept_unknown_and_grease_dropped() -> None:
    assert upstream_groups((GREASE, X25519, 0x7777, SECP256R1), (GREASE, X25519)) == "?*X25519:?secp256r1"


def test_every_client_share_becomes_an_upstream_share() -> None:
    assert (upstream_groups((X25519MLKEM768, X25519, SECP256R1), (X25519MLKEM768, X25519))
            == "?*X25519MLKEM768:?*X25519:?secp256r1")


def test_without_a_usable_share_the_first_group_gets_one() -> None:
    assert upstream_groups((SECP384R1, X25519), ()) == "?*secp384r1:?X25519"
    assert upstream_groups((SECP384R1, X25519), (GREASE,)) == "?*secp384r1:?X25519"


@pytest.mark.parametrize("offered", [(), (GREASE, 0x7777)])
def test_no_known_group_keeps_the_default(offered: tuple[int, ...]) -> None:
    assert upstream_groups(offered, ()) is None


def _clienthello_with(groups: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What a real OpenSSL upstream connection puts on the wire."""
    connection = new_upstream_connection(build_upstream_context((TlsVersion.TLS1_2, TlsVersion.TLS1_3)), "site.example", (), groups=groups)
    with pytest.raises(SSL.WantReadError):
        connection.do_handshake()
    hello = parse_client_hello(connection.bio_read(65536))
    return hello.supported_groups, hello.key_share_groups


def test_openssl_offers_exactly_the_client_groups_and_shares() -> None:
    assert _clienthello_with(upstream_groups((X25519, SECP256R1), (X25519,))) == ((X25519, SECP256R1), (X25519,))
    offered, shares = _clienthello_with(upstream_groups((X25519MLKEM768, X25519), (X25519MLKEM768, X25519)))
    assert (offered, shares) == ((X25519MLKEM768, X25519), (X25519MLKEM768, X25519))


def test_default_offer_is_openssls_own() -> None:
    offered, shares = _clienthello_with(None)
    assert X25519MLKEM768 in offered and shares  # this OpenSSL's default: post-quantum first
