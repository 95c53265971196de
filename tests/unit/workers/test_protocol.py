from __future__ import annotations

import pytest

from gateway.workers.protocol import (
    Call,
    ChannelError,
    Op,
    Reply,
    Report,
    ReportKind,
    WorkerStats,
    decode,
    encode,
)


@pytest.mark.parametrize("message", [
    Call(1, Op.PREPARE, {"config": "gateway:\n  workers: 2\n", "source": "/etc/tlsgw/tlsgw.yaml"}),
    Call(2, Op.COMMIT),
    Reply(1, True, {"pid": 4242, "ports": [8443]}),
    Reply(2, False, error="port 8443: Address already in use"),
    Report(ReportKind.STATS, WorkerStats({"connections": 3}, 1, 3, 0).to_dict()),
], ids=["prepare", "commit", "reply-ok", "reply-error", "report"])
def test_messages_survive_the_channel(message: Call | Reply | Report) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the YAML holds
    assert decode(line) == message


@pytest.mark.parametrize("line", [
    b"not json\n",
    b"[1, 2]\n",
    b'{"call": "1", "op": "stats"}\n',
    b'{"call": 1, "op": "explode"}\n',
    b'{"call": true, "op": "stats"}\n',
    b'{"reply": 1}\n',
    b'{"report": "gossip", "data": {}}\n',
    b'{"report": "stats", "data": []}\n',
    b'{"hello": 1}\n',
    b"\xff\xfe\n",
], ids=["not-json", "not-object", "text-id", "unknown-op", "boolean-id", "reply-without-ok", "unknown-report",
        "report-without-object", "no-kind", "not-utf8"])
def test_invalid_lines_raise_channel_error(line: bytes) -> None:
    with pytest.raises(ChannelError):
        decode(line)


@pytest.mark.parametrize("data", [
    {"active": 0, "opened": 0, "decrypting": 0},
    {"counters": {"connections": -1}, "active": 0, "opened": 0, "decrypting": 0},
    {"counters": {"connections": 1}, "active": True, "opened": 0, "decrypting": 0},
    {"counters": {}, "active": 0, "opened": 0},
], ids=["no-counters", "negative-counter", "boolean-count", "missing-decrypting"])
def test_stats_that_are_not_counts_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ChannelError):
        WorkerStats.from_dict(data)


def test_prepare_carries_memory_keys_on_one_line() -> None:
    """Issue 4: keys kept only in memory reach a worker with its configuration."""
    from gateway.pki.memory_keys import MemoryKeys
    from tests.support.pki_factory import TestPki, ec_key

    pki = TestPki.create()
    web = pki.leaf(["web.example.test"], key=ec_key())
    keys = MemoryKeys().with_keys([("web", web.key)])  # type: ignore[list-item]
    line = encode(Call(3, Op.PREPARE, {"config": "x", "source": "s", "keys": keys.to_wire()}))
    assert line.count(b"\n") == 1
    message = decode(line)
    assert isinstance(message, Call)
    assert MemoryKeys.from_wire(message.params["keys"]).key_for(web.cert) is not None
