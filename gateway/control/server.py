"""The control socket: a Unix stream socket under /run/tlsgw/, one request per connection.

The socket file is created mode 0660 and given to `gateway.control.group`, so only that
group's members and root can connect; each connection's peer credentials (SO_PEERCRED
for uid and gid, SO_PEERGROUPS for the supplementary groups, both recorded by the kernel
at connect time) decide the caller's role (see `permissions.py`). Requests that the
role does not allow are answered `denied` without reaching the daemon.

A stale socket file left by a killed gateway is replaced; a socket on which another
gateway still answers is not: starting a second daemon on the same control socket is an
error, as two daemons would fight over the same rules.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.control.permissions import ROLE_GROUPS, Peer, Role, denial, role_of
from gateway.control.protocol import (
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    ControlFailure,
    ErrorCode,
    ProtocolError,
    Request,
    Response,
    UnknownCommand,
)
from gateway.errors import TlsgwError

logger = logging.getLogger(__name__)

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # asm-generic/socket.h, Linux 4.13
NGROUPS_MAX = 65536
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its one line
SOCKET_MODE = 0o660

Handler = Callable[[Request, Peer, Role], Awaitable[Any]]


class ControlSocketError(TlsgwError):
    pass


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    groups: tuple[int, ...] = ()
    size = 64 * 4
    while size <= NGROUPS_MAX * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == 34:  # ERANGE: the buffer is too small
                size *= 4
                continue
            break  # an old kernel: primary group only
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
        break
    return Peer(pid, uid, gid, groups)


def role_group_ids() -> dict[str, int | None]:
    """Looked up per request, so groups created after start-up take effect."""
    found: dict[str, int | None] = {}
    for name in ROLE_GROUPS.values():
        try:
            found[name] = grp.getgrnam(name).gr_gid
        except KeyError:
            found[name] = None
    return found


class ControlServer:
    def __init__(self, path: str, group: str, handler: Handler) -> None:
        self.path = path
        self.group = group
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Raises: ControlSocketError naming the path (another gateway answers there, or
        the directory cannot be made)."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(f"control socket {self.path}: cannot create {directory}: {exc.strerror}") from exc
        await self._remove_stale()
        old_umask = os.umask(0o117)  # the file is born 0660: no window in which anyone may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise ControlSocketError(f"control socket {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(self.path, SOCKET_MODE)
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            logger.info("control socket %s: group %r does not exist; only root can use it", self.path, self.group)
        else:
            os.chown(self.path, 0 if os.geteuid() == 0 else -1, gid)
            logger.info("control socket %s (group %s)", self.path, self.group)

    async def _remove_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"control socket {self.path}: exists and is not a socket")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (OSError, TimeoutError):
            os.unlink(self.path)  # nobody answers: left by a gateway that was killed
            return
        writer.close()
        raise ControlSocketError(f"control socket {self.path}: another tlsgw is answering there")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await self._answer(reader, writer)
            writer.write(response.encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug in a handler must not take the control socket down
            logger.exception("control request failed")
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Response:
        sock = writer.get_extra_info("socket")
        peer = peer_of(sock)
        role = role_of(peer, role_group_ids())
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
            request = Request.decode(line)
        except asyncio.LimitOverrunError:
            return Response.failure(ErrorCode.INVALID, f"request longer than {MAX_REQUEST_BYTES} bytes")
        except (asyncio.IncompleteReadError, TimeoutError):
            return Response.failure(ErrorCode.INVALID, "no complete request line")
        except UnknownCommand as exc:
            return Response.failure(ErrorCode.UNKNOWN, str(exc))
        except ProtocolError as exc:
            return Response.failure(ErrorCode.INVALID, str(exc))
        refused = denial(role, request.command)
        if refused is not None:
            logger.warning("control: %s refused to uid %d (pid %d): %s", request.command.value, peer.uid, peer.pid,
                           refused)
            return Response.failure(ErrorCode.DENIED, refused)
        try:
            return Response.success(await self.handler(request, peer, role))
        except ControlFailure as exc:
            return Response.failure(exc.code, exc.message)


async def request(path: str, message: Request, timeout: float = 60.0) -> Response:
    """The client side: send `message`, return the gateway's response.

    Raises:
        ControlSocketError: the gateway cannot be reached (with the reason in words).
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=2**16), 5.0)
    except FileNotFoundError:
        raise ControlSocketError(f"{path} does not exist: is tlsgw running?") from None
    except PermissionError:
        raise ControlSocketError(f"{path}: permission denied (needs membership of the control group)") from None
    except ConnectionRefusedError:
        raise ControlSocketError(f"{path}: nobody answers: tlsgw is not running") from None
    except (OSError, TimeoutError) as exc:
        raise ControlSocketError(f"{path}: {exc}") from None
    try:
        writer.write(message.encode())
        await writer.drain()
        data = await asyncio.wait_for(_read_all(reader), timeout)
    finally:
        writer.close()
    try:
        return Response.decode(data)
    except ProtocolError as exc:
        raise ControlSocketError(f"{path}: unexpected answer: {exc}") from None


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks, size = [], 0
    while chunk := await reader.read(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ControlSocketError("answer too large")
    return b"".join(chunks)
