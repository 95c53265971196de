"""The Prometheus endpoint: `GET /metrics` over plain HTTP/1.0, nothing else.

Off unless `gateway.metrics` is configured, and on loopback unless told otherwise: the
numbers reveal traffic volumes, so exposing them is a decision. One request per
connection, bounded in size and time, so a scraper (or anyone else) cannot hold
resources the proxy needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.errors import TlsgwError
from gateway.observability.metrics import CONTENT_TYPE

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
REQUEST_TIMEOUT = 5.0


class MetricsServer:
    def __init__(self, address: str, port: int, render: Callable[[], str]) -> None:
        self.address = address
        self.port = port
        self.render = render
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.address, self.port, limit=MAX_HEADER_BYTES,
                                                      reuse_address=True)
        except OSError as exc:
            raise TlsgwError(f"gateway.metrics.listen {self.address}:{self.port}: {exc.strerror}") from exc
        logger.info("metrics on http://%s:%d/metrics", self.address, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = rest.split(" ", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif target.split("?", 1)[0] != "/metrics":
                status, body, ctype = "404 Not Found", "see /metrics\n", "text/plain"
            else:
                status, body, ctype = "200 OK", self.render(), CONTENT_TYPE
            data = body.encode()
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                         "Connection: close\r\n\r\n".encode())
            if method != "HEAD":
                writer.write(data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, OSError):
            pass
        except Exception:
            logger.exception("metrics request failed")
        finally:
            writer.close()
