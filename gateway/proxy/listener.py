"""The accept loop of one segment's TPROXY listener.

One task per connection, owned by the listener's TaskGroup so that shutdown cancels every
session it started. `FlowHandler.handle` never raises except on cancellation, which is
why one broken flow cannot cancel its siblings through the group. Running out of file
descriptors or memory in accept() is survivable overload: back off and try again (trio's
ACCEPT_CAPACITY_ERRNOS); any other accept error is a real fault and propagates.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from gateway.proxy.flow import FlowHandler

logger = logging.getLogger(__name__)

ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Long enough for some sessions to end and free descriptors, short enough that the
# backlog does not overflow on a busy link.
ACCEPT_BACKOFF_SECONDS = 0.1
# Connections accepted straight from the backlog before the loop runs other work.
ACCEPT_BATCH = 16


async def serve(sock: socket.socket, handler: FlowHandler) -> None:
    loop = asyncio.get_running_loop()
    direct = 0
    async with asyncio.TaskGroup() as group:
        while True:
            try:
                try:
                    # Connections often arrive in bursts: take what is queued without a
                    # trip through the event loop, which under uvloop registers and drops
                    # the listening socket with epoll for every accept (issue 8); but let
                    # the flows already accepted run between batches.
                    if direct == ACCEPT_BATCH:
                        direct = 0
                        await asyncio.sleep(0)
                    conn, _ = sock.accept()
                    direct += 1
                except (BlockingIOError, InterruptedError):
                    direct = 0
                    conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    logger.warning("accept on %s: %s; backing off", sock.getsockname(), exc.strerror)
                    handler.counters.add("refused.capacity")
                    await asyncio.sleep(ACCEPT_BACKOFF_SECONDS)
                    continue
                raise
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            group.create_task(handler.handle(conn))
