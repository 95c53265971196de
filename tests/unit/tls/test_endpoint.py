"""TlsEndpoint and the client-facing context against a real OpenSSL peer (Python's ssl
over memory BIOs): handshakes, ALPN mirroring and data, with no sockets."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.config.model import TlsVersion
from gateway.lab.demo_pki import issue_server_certificate
from gateway.pki.ca import create_ca
from gateway.pki.keys import KeyKind
from gateway.tls.contexts import build_client_context, new_client_connection
from gateway.tls.endpoint import TlsClosed, TlsEndpoint, TlsFailure

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ca, ca_key = create_ca("Endpoint Test CA", key_kind=KeyKind.EC_P256)
    leaf, leaf_key = issue_server_certificate("site.example", ca, ca_key, NOW)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return {"ca": ca, "leaf": leaf, "key": leaf_key, "ca_file": str(ca_file)}


class Peer:
    """A stdlib ssl client over memory BIOs."""

    def __init__(self, ca_file: str, alpn: list[str] | None = None, maximum: ssl.TLSVersion | None = None) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        if alpn:
            context.set_alpn_protocols(alpn)
        if maximum is not None:
            context.maximum_version = maximum
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="site.example")


def handshake(peer: Peer, endpoint: TlsEndpoint) -> None:
    for _ in range(10):
        try:
            peer.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        endpoint.feed(peer.outgoing.read())
        endpoint.handshake()
        peer.incoming.write(endpoint.data_to_send())
        if done and endpoint.handshake_done:
            return
    raise AssertionError("handshake did not complete")


def endpoint_for(pki: dict[str, object], upstream_alpn: str | None = None,
                 protocols: tuple[TlsVersion, ...] = (TlsVersion.TLS1_2, TlsVersion.TLS1_3)) -> TlsEndpoint:
    context = build_client_context(protocols, (pki["ca"],), b"test")  # type: ignore[arg-type]
    return TlsEndpoint(new_client_connection(context, pki["leaf"], pki["key"], upstream_alpn))  # type: ignore[arg-type]


def test_client_verifies_forged_chain_and_data_flows_both_ways(pki: dict[str, object]) -> None:
    peer, endpoint = Peer(pki["ca_file"]), endpoint_for(pki)  # type: ignore[arg-type]
    handshake(peer, endpoint)
    assert endpoint.version == "TLSv1.3"
    peer.obj.write(b"GET / HTTP/1.1\r\n\r\n")
    endpoint.feed(peer.outgoing.read())
    assert endpoint.read_plaintext() == b"GET / HTTP/1.1\r\n\r\n"
    endpoint.write_plaintext(b"x" * 100_000)
    peer.incoming.write(endpoint.data_to_send())
    received = b""
    while len(received) < 100_000:
        received += peer.obj.read(65536)
    assert received == b"x" * 100_000


def test_alpn_mirrors_what_upstream_selected(pki: dict[str, object]) -> None:
    peer, endpoint = Peer(pki["ca_file"], alpn=["h2", "http/1.1"]), endpoint_for(pki, upstream_alpn="http/1.1")  # type: ignore[arg-type]
    handshake(peer, endpoint)
    assert peer.obj.selected_alpn_protocol() == "http/1.1"


def test_alpn_none_when_upstream_selected_none(pki: dict[str, object]) -> None:
    peer, endpoint = Peer(pki["ca_file"], alpn=["h2"]), endpoint_for(pki, upstream_alpn=None)  # type: ignore[arg-type]
    handshake(peer, endpoint)
    assert peer.obj.selected_alpn_protocol() is None


def test_request_arriving_with_finished_is_readable_without_more_input(pki: dict[str, object]) -> None:
    """Regression (issue 2 demo): curl sends its request in the same flight as Finished."""
    peer, endpoint = Peer(pki["ca_file"]), endpoint_for(pki)  # type: ignore[arg-type]
    try:
        peer.obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    endpoint.feed(peer.outgoing.read())
    endpoint.handshake()
    peer.incoming.write(endpoint.data_to_send())
    peer.obj.do_handshake()  # client done: Finished is now in its outgoing BIO
    peer.obj.write(b"early request")
    endpoint.feed(peer.outgoing.read())  # Finished + request in one feed
    assert endpoint.handshake()
    assert endpoint.read_plaintext() == b"early request"


def test_version_below_minimum_fails_with_reason(pki: dict[str, object]) -> None:
    peer = Peer(pki["ca_file"], maximum=ssl.TLSVersion.TLSv1_2)  # type: ignore[arg-type]
    endpoint = endpoint_for(pki, protocols=(TlsVersion.TLS1_3,))
    with pytest.raises(TlsFailure) as info:
        handshake(peer, endpoint)
    assert "version" in info.value.detail.lower() or "protocol" in info.value.detail.lower()


def test_close_notify_raises_tls_closed(pki: dict[str, object]) -> None:
    peer, endpoint = Peer(pki["ca_file"]), endpoint_for(pki)  # type: ignore[arg-type]
    handshake(peer, endpoint)
    try:
        peer.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    endpoint.feed(peer.outgoing.read())
    with pytest.raises(TlsClosed):
        endpoint.read_plaintext()


def test_data_and_close_notify_in_one_feed_returns_data_and_marks_closed(pki: dict[str, object]) -> None:
    """Regression (issue 3, POP3S): a server's last line and its close_notify arrived
    together; the relay must see the close or the session hangs."""
    peer, endpoint = Peer(pki["ca_file"]), endpoint_for(pki)  # type: ignore[arg-type]
    handshake(peer, endpoint)
    peer.obj.write(b"+OK bye\r\n")
    try:
        peer.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    endpoint.feed(peer.outgoing.read())
    assert endpoint.read_plaintext() == b"+OK bye\r\n"
    assert endpoint.closed
