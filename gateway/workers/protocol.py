"""The channel between the main process and one worker: a Unix stream socketpair, one JSON
object per line. Pure: bytes in, values out, and the other way.

    main -> worker   {"call": 7, "op": "prepare", "params": {"config": "<yaml>", "source": "/etc/tlsgw/tlsgw.yaml",
                                                      "keys": [{"name": "web", "key": "<PEM>"}]}}
    worker -> main   {"reply": 7, "ok": true, "result": {...}}  or  {"reply": 7, "ok": false, "error": "..."}
    worker -> main   {"report": "stats", "data": {...}}         every second, unasked

Operations (the reload is two-phase, so that a configuration one worker cannot use
changes nothing in any of them):

    prepare   build a Runtime from the configuration text the main process validated,
              with the private keys kept only in memory (`pki.persist_keys: false`;
              unencrypted PEM: the socketpair never leaves the host's memory, and a
              call's params are never logged), and bind the listeners it needs that
              are not open yet; nothing is swapped
    commit    put the prepared Runtime in service: new flows use it, new listeners
              serve, listeners of removed segments retire when their last session ends
    abort     forget the prepared Runtime and close the listeners it opened
    stats     counters and session counts now (the same data as the report)
    sessions  the live sessions, as rows of `tlsgw sessions`

The configuration travels as text, not as a path: a worker started or restarted later
parses exactly what the main process checked, even if the file was edited since.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A `tlsgw sessions` answer of 10,000 rows is a few MB on one line; the control socket
# allows 64 MiB for an answer (control.protocol.MAX_RESPONSE_BYTES), so does the channel.
MAX_LINE_BYTES = 64 * 1024 * 1024


class ChannelError(ValueError):
    """A line that is not a valid channel message."""


class Op(enum.Enum):
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"
    STATS = "stats"
    SESSIONS = "sessions"


class ReportKind(enum.Enum):
    STATS = "stats"


@dataclass(frozen=True, slots=True)
class Call:
    id: int
    op: Op
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    ok: bool
    result: Any = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    data: dict[str, Any]


Message = Call | Reply | Report


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What one worker has counted since it started."""

    counters: dict[str, int]
    active: int
    """Live sessions now."""
    opened: int
    """Connections accepted since the worker started."""
    decrypting: int
    """Sessions decrypting now (its share of `limits.max_concurrent`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"counters": self.counters, "active": self.active, "opened": self.opened,
                "decrypting": self.decrypting}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerStats:
        """Raises: ChannelError naming the field that is missing or not a count."""
        counters = data.get("counters")
        if not isinstance(counters, dict) or not all(
                isinstance(k, str) and _count(v) for k, v in counters.items()):
            raise ChannelError("stats: counters must map names to counts")
        values = []
        for name in ("active", "opened", "decrypting"):
            value = data.get(name)
            if not _count(value):
                raise ChannelError(f"stats: {name} must be a count, got {value!r}")
            values.append(value)
        return cls(dict(counters), *values)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def encode(message: Message) -> bytes:
    if isinstance(message, Call):
        body: dict[str, Any] = {"call": message.id, "op": message.op.value, "params": message.params}
    elif isinstance(message, Reply):
        body = {"reply": message.id, "ok": message.ok}
        if message.ok:
            body["result"] = message.result
        else:
            body["error"] = message.error
    else:
        body = {"report": message.kind.value, "data": message.data}
    return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes) -> Message:
    """Raises: ChannelError."""
    try:
        body = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError(f"not a JSON message: {exc}") from None
    if not isinstance(body, dict):
        raise ChannelError("a message must be a JSON object")
    if "call" in body:
        ident, op, params = body["call"], body.get("op"), body.get("params", {})
        if not _is_id(ident) or not isinstance(params, dict):
            raise ChannelError("call: needs an integer id and an object of params")
        try:
            return Call(ident, Op(op), params)
        except ValueError:
            raise ChannelError(f"call: unknown operation {op!r}") from None
    if "reply" in body:
        ident, ok = body["reply"], body.get("ok")
        if not _is_id(ident) or not isinstance(ok, bool):
            raise ChannelError("reply: needs an integer id and ok true or false")
        if ok:
            return Reply(ident, True, body.get("result"))
        return Reply(ident, False, error=str(body.get("error", "")))
    if "report" in body:
        kind, data = body["report"], body.get("data")
        if not isinstance(data, dict):
            raise ChannelError("report: data must be an object")
        try:
            return Report(ReportKind(kind), data)
        except ValueError:
            raise ChannelError(f"report: unknown kind {kind!r}") from None
    raise ChannelError("neither a call, a reply nor a report")


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
