"""The decrypting relay between two real TLS peers over local socket pairs (no network):
every byte arrives intact under back-pressure, through the renewal of the TLS buffers on
quiet legs, and across a one-way close (issue 8: the relay does its own socket I/O).

The peers are Python's `ssl` module (the system OpenSSL) in threads with blocking
sockets; tlsgw's two endpoints are pyOpenSSL in memory-BIO mode, handshaken the way the
flow handler does it and then handed to `Relay`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from OpenSSL import SSL

from gateway.proxy import relay as relay_module
from gateway.proxy.relay import Relay, TlsSide
from gateway.tls.endpoint import CHUNK, TlsEndpoint
from tests.support.pki_factory import TestPki

BULK = 8 * 1024 * 1024


class Peers:
    """A client peer and a server peer, with tlsgw's endpoints in between."""

    def __init__(self, tmp_path: Path) -> None:
        pki = TestPki.create()
        site = pki.leaf(["relay.test"])
        self.cert_file, self.key_file = site.write(tmp_path)
        self.client_peer, self.client_ours = socket.socketpair()
        self.server_ours, self.server_peer = socket.socketpair()
        for sock in (self.client_ours, self.server_ours):
            sock.setblocking(False)
        server_context = SSL.Context(SSL.TLS_METHOD)
        server_context.use_certificate_chain_file(str(self.cert_file))
        server_context.use_privatekey_file(str(self.key_file))
        server_context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        facing_client = SSL.Connection(server_context, None)
        facing_client.set_accept_state()
        client_context = SSL.Context(SSL.TLS_METHOD)
        client_context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        facing_server = SSL.Connection(client_context, None)
        facing_server.set_connect_state()
        self.toward_client = TlsEndpoint(facing_client)
        self.toward_server = TlsEndpoint(facing_server)

    def peer_client(self) -> ssl.SSLSocket:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(self.client_peer, server_hostname="relay.test")

    def peer_server(self) -> ssl.SSLSocket:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context.wrap_socket(self.server_peer, server_side=True)


async def handshake(endpoint: TlsEndpoint, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        done = endpoint.handshake()
        out = endpoint.data_to_send()
        if out:
            await loop.sock_sendall(sock, out)
        if done:
            return
        endpoint.feed(await loop.sock_recv(sock, CHUNK))


def run_in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def body() -> None:
        try:
            result["value"] = target()
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


async def relayed(peers: Peers, client_job: Callable[[ssl.SSLSocket], object],
                  server_job: Callable[[ssl.SSLSocket], object]) -> tuple[Relay, object, object]:
    """Handshake both legs, relay until both directions end, return what the peers did."""
    client_thread, client_result = run_in_thread(lambda: client_job(peers.peer_client()))
    server_thread, server_result = run_in_thread(lambda: server_job(peers.peer_server()))
    await asyncio.wait_for(handshake(peers.toward_server, peers.server_ours), 10)
    await asyncio.wait_for(handshake(peers.toward_client, peers.client_ours), 10)
    relay = Relay((TlsSide(peers.client_ours, peers.toward_client), TlsSide(peers.server_ours, peers.toward_server)),
                  (lambda data: None, lambda data: None), (30.0, 30.0))
    await asyncio.wait_for(relay.run(), 60)
    for thread in (client_thread, server_thread):
        await asyncio.to_thread(thread.join, 30)
    for outcome in (client_result, server_result):
        if "error" in outcome:
            raise AssertionError(f"peer failed: {outcome['error']!r}")
    return relay, client_result.get("value"), server_result.get("value")


def read_all(tls: ssl.SSLSocket, pause_every: int = 0) -> bytes:
    chunks = []
    received = 0
    while True:
        data = tls.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        received += len(data)
        if pause_every and received // pause_every != (received - len(data)) // pause_every:
            time.sleep(0.05)  # a slow reader: the relay must hold back, not buffer it all


def close_both_ways(tls: ssl.SSLSocket) -> None:
    tls.unwrap()  # close_notify, and wait for the peer's
    tls.close()


def test_bulk_through_a_slow_reader_arrives_intact(tmp_path: Path) -> None:
    payload = os.urandom(BULK)
    peers = Peers(tmp_path)

    def client(tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"GET /bulk\r\n")
        data = read_all(tls, pause_every=1024 * 1024)
        tls.close()
        return data

    def server(tls: ssl.SSLSocket) -> bytes:
        request = tls.recv(100)
        tls.sendall(payload)
        close_both_ways(tls)
        return request

    relay, got, request = asyncio.run(relayed(peers, client, server))
    assert request == b"GET /bulk\r\n"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()  # type: ignore[arg-type]
    assert relay.error is None and relay.timed_out is None


def test_buffers_renewed_on_quiet_legs_without_losing_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "TICK_SECONDS", 0.05)
    bursts = [os.urandom(300 * 1024) for _ in range(3)]
    peers = Peers(tmp_path)
    burst_counters: list[int] = []

    def client(tls: ssl.SSLSocket) -> list[bytes]:
        got = []
        for burst in bursts:
            tls.sendall(b"next\n")
            data = b""
            while len(data) < len(burst):
                data += tls.recv(65536)
            got.append(data)
            burst_counters.append(peers.toward_client._burst)
            time.sleep(0.3)  # quiet for several ticks: the relay renews both legs' BIOs
        close_both_ways(tls)
        return got

    def server(tls: ssl.SSLSocket) -> None:
        for burst in bursts:
            assert tls.recv(100) == b"next\n"
            tls.sendall(burst)
        close_both_ways(tls)

    relay, got, _ = asyncio.run(relayed(peers, client, server))
    assert got == bursts
    assert peers.toward_client._burst < 300 * 1024 <= max(burst_counters)  # renewed after the bursts
    assert relay.error is None


def test_one_way_close_keeps_the_other_direction(tmp_path: Path) -> None:
    """The server answers and closes first (close_notify); the relay passes that on to the
    client and keeps the client's direction open, so that the client's own close_notify
    still reaches the server, which waits for it."""
    peers = Peers(tmp_path)

    def client(tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"request")
        response = read_all(tls)  # ends at the server's close_notify
        tls.unwrap()  # ours, afterwards
        tls.close()
        return response

    def server(tls: ssl.SSLSocket) -> bytes:
        request = tls.recv(100)
        tls.sendall(b"response")
        tls.unwrap()  # close_notify, then wait for the client's through the half-open relay
        tls.close()
        return request

    relay, response, request = asyncio.run(relayed(peers, client, server))
    assert (request, response) == (b"request", b"response")
    assert relay.ended == [True, True] and relay.error is None
