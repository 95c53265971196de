"""Control-socket messages (issue 6): one JSON line each way."""

from __future__ import annotations

import pytest

from gateway.control.protocol import (
    Command,
    ErrorCode,
    ProtocolError,
    Request,
    Response,
    UnknownCommand,
)


def test_request_round_trip() -> None:
    request = Request(Command.BYPASS, {"state": "on"})
    data = request.encode()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert Request.decode(data) == request


@pytest.mark.parametrize("response", [
    Response.success({"a": [1, 2]}),
    Response.failure(ErrorCode.DENIED, "needs tlsgw-admin"),
    Response.failure(ErrorCode.CONFIG, "gateway.bridge: bad\nsecond line"),
], ids=["ok", "denied", "multi-line-error"])
def test_response_round_trip(response: Response) -> None:
    assert Response.decode(response.encode()) == response


@pytest.mark.parametrize(("data", "fragment"), [
    (b"not json\n", "not a JSON message"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"v": 2, "command": "status"}\n', "protocol version 2"),
    (b'{"v": 1}\n', "no command"),
    (b'{"v": 1, "command": "status", "params": [1]}\n', "params must be an object"),
    (b'\xff\xfe\n', "not a JSON message"),
], ids=["garbage", "array", "version", "no-command", "params-list", "not-utf8"])
def test_bad_requests_are_protocol_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Request.decode(data)
    assert fragment in str(caught.value)


def test_unknown_command_is_told_apart_and_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCommand) as caught:
        Request.decode(b'{"v": 1, "command": "shutdown"}\n')
    assert caught.value.name == "shutdown"
    assert "bypass" in str(caught.value)


def test_response_with_unknown_error_code_is_refused() -> None:
    with pytest.raises(ProtocolError):
        Response.decode(b'{"v": 1, "ok": false, "code": "teapot", "error": "x"}')
