"""The control socket's messages: one JSON object per line, one request and one response
per connection. Pure: bytes in, values out, and the other way.

    -> {"v": 1, "command": "bypass", "params": {"state": "on"}}
    <- {"v": 1, "ok": true, "result": {...}}
    <- {"v": 1, "ok": false, "code": "denied", "error": "bypass needs tlsgw-admin; you are ..."}

`code` tells the CLI which exit status to use without parsing sentences: `denied`
(the caller's groups do not allow the command), `invalid` (a bad request or parameter),
`config` (a reload found the configuration invalid; nothing changed), `failed` (the
gateway could not do it; nothing changed), `unknown` (no such command).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
# A request is a command and a few parameters, or (`import-keys`) PEM private keys: an
# RSA-4096 key is about 3.3 KB with its certificate beside it, and a PKCS#12 file may hold
# many (gateway.pki.memory_keys.MAX_KEYS_PER_IMPORT).
MAX_REQUEST_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # `tlsgw log --limit 10000` of long records


class Command(enum.Enum):
    STATUS = "status"
    STATS = "stats"
    SESSIONS = "sessions"
    LOG = "log"
    RELOAD = "reload"
    BYPASS = "bypass"
    IMPORT_KEYS = "import-keys"
    """Issue 4, `pki.persist_keys: false`: private keys to keep in memory only, from
    `tlsgw cert import` (params: {"keys": [{"name", "key", "certificate"}], "pki_dir"})."""


class ErrorCode(enum.Enum):
    DENIED = "denied"
    INVALID = "invalid"
    CONFIG = "config"
    FAILED = "failed"
    UNKNOWN = "unknown"


class ProtocolError(ValueError):
    """A message that is not a valid request or response."""


class ControlFailure(Exception):
    """Raised by a command handler: becomes an error response with this code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    command: Command
    params: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _line({"v": PROTOCOL_VERSION, "command": self.command.value, "params": self.params})

    @classmethod
    def decode(cls, data: bytes) -> Request:
        """Raises: ProtocolError (ErrorCode.UNKNOWN is told apart by `unknown_command`)."""
        message = _object(data)
        name = message.get("command")
        params = message.get("params", {})
        if not isinstance(name, str):
            raise ProtocolError("request has no command")
        if not isinstance(params, dict):
            raise ProtocolError("params must be an object")
        try:
            command = Command(name)
        except ValueError:
            raise UnknownCommand(name) from None
        return cls(command, params)


class UnknownCommand(ProtocolError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown command {name!r}; known: {', '.join(c.value for c in Command)}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Response:
    ok: bool
    result: Any = None
    code: ErrorCode | None = None
    error: str | None = None

    @classmethod
    def success(cls, result: Any) -> Response:
        return cls(True, result)

    @classmethod
    def failure(cls, code: ErrorCode, error: str) -> Response:
        return cls(False, None, code, error)

    def encode(self) -> bytes:
        if self.ok:
            return _line({"v": PROTOCOL_VERSION, "ok": True, "result": self.result})
        assert self.code is not None
        return _line({"v": PROTOCOL_VERSION, "ok": False, "code": self.code.value, "error": self.error or ""})

    @classmethod
    def decode(cls, data: bytes) -> Response:
        message = _object(data)
        if message.get("ok") is True:
            return cls(True, message.get("result"))
        try:
            code = ErrorCode(message.get("code"))
        except ValueError:
            raise ProtocolError(f"response has an unknown error code {message.get('code')!r}") from None
        return cls(False, None, code, str(message.get("error", "")))


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def _object(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r}; this tlsgw speaks {PROTOCOL_VERSION}")
    return message
