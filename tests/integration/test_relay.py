"""The relay over real sockets (local socketpairs, no network): half-close and the idle
timeout of each side (issue 6)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.proxy.relay import PlainSide, Relay


async def relay_between(idle: tuple[float, float]) -> tuple[Relay, socket.socket, socket.socket, asyncio.Task[None]]:
    client_peer, client_ours = socket.socketpair()
    server_peer, server_ours = socket.socketpair()
    for s in (client_peer, server_peer, client_ours, server_ours):
        s.setblocking(False)
    counted = [0, 0]
    relay = Relay((PlainSide(client_ours), PlainSide(server_ours)),
                  (lambda data: counted.__setitem__(0, counted[0] + len(data)),
                   lambda data: counted.__setitem__(1, counted[1] + len(data))), idle)
    task = asyncio.ensure_future(relay.run())
    return relay, client_peer, server_peer, task


async def recv(sock: socket.socket, size: int = 65536) -> bytes:
    return await asyncio.get_running_loop().sock_recv(sock, size)


@pytest.mark.parametrize(("timeouts", "idle_leg"), [((0.2, 30.0), 0), ((30.0, 0.2), 1)], ids=["client", "server"])
def test_idle_leg_ends_the_relay_by_its_own_timeout(timeouts: tuple[float, float], idle_leg: int) -> None:
    async def scenario() -> None:
        relay, client, server, task = await relay_between(timeouts)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"ping")
        assert await recv(server) == b"ping"
        await asyncio.wait_for(task, 10)
        assert relay.timed_out == idle_leg
        client.close()
        server.close()

    asyncio.run(scenario())


def test_traffic_on_a_leg_keeps_it_alive() -> None:
    async def scenario() -> None:
        relay, client, server, task = await relay_between((0.5, 0.5))
        loop = asyncio.get_running_loop()
        for _ in range(6):  # 6 x 0.2 s of steady traffic outlasts the 0.5 s timeout
            await loop.sock_sendall(server, b"tick")
            assert await recv(client) == b"tick"
            await asyncio.sleep(0.2)
        assert not task.done()
        client.close()
        server.close()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_half_close_keeps_the_other_direction() -> None:
    async def scenario() -> None:
        relay, client, server, task = await relay_between((30.0, 30.0))
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"request")
        client.shutdown(socket.SHUT_WR)
        assert await recv(server) == b"request"
        assert await recv(server) == b""  # the server sees the client's FIN
        await loop.sock_sendall(server, b"response")
        server.shutdown(socket.SHUT_WR)
        assert await recv(client) == b"response"
        assert await recv(client) == b""
        await asyncio.wait_for(task, 10)
        assert relay.timed_out is None and relay.error is None and relay.ended == [True, True]
        client.close()
        server.close()

    asyncio.run(scenario())
