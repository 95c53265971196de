"""The privileged socket work of a transparent proxy, kept in one place.

IP_TRANSPARENT on the listener lets it accept connections TPROXY steers to it although the
destination address is not local; `getsockname()` of an accepted socket is then the
original destination. IP_TRANSPARENT on the upstream socket lets it bind to the *client's*
address, so the server sees the client and not the gateway (DESIGN.md section 3 step 5).
Both need CAP_NET_ADMIN.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)  # linux/in.h


def transparent_listener(port: int, backlog: int = 1024, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except PermissionError as exc:
            raise PermissionError(exc.errno, "setsockopt(IP_TRANSPARENT) needs CAP_NET_ADMIN") from exc
        sock.bind(("0.0.0.0", port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_as(client_ip: str, destination: tuple[str, int], timeout: float) -> socket.socket:
    """Connect to `destination` from `client_ip` (any port), spoofing the client."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((client_ip, 0))
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await _connect(loop, sock, destination)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, destination: tuple[str, int]) -> None:
    """A non-blocking connect to an address literal. `loop.sock_connect` would do the
    same, but uvloop's first resolves the address through getaddrinfo on its thread pool,
    a round trip that showed in the handshake profile (issue 8)."""
    error = sock.connect_ex(destination)
    if error == 0:
        return
    if error not in (errno.EINPROGRESS, errno.EAGAIN):
        raise OSError(error, os.strerror(error))
    done: asyncio.Future[None] = loop.create_future()

    def writable() -> None:
        if not done.done():
            done.set_result(None)

    fd = sock.fileno()
    loop.add_writer(fd, writable)
    try:
        await done
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


def reset_on_close(sock: socket.socket) -> None:
    """Make the next close send a TCP reset (SO_LINGER 0) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
