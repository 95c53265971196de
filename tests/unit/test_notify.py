"""The sd_notify message format and environment (issue 6); the datagrams themselves are
checked against a fake NOTIFY_SOCKET in tests/integration/test_notify_socket.py."""

from __future__ import annotations

import pytest

from gateway.notify import Notifier, format_message, socket_address, watchdog_interval


def test_message_is_newline_separated_assignments() -> None:
    assert format_message({"READY": 1, "STATUS": "serving 2 segment(s)"}) == b"READY=1\nSTATUS=serving 2 segment(s)"


@pytest.mark.parametrize("fields", [{"STATUS": "a\nb"}, {"A=B": 1}, {"": 1}], ids=["newline", "equals", "empty"])
def test_fields_that_would_break_the_format_are_refused(fields: dict[str, str | int]) -> None:
    with pytest.raises(ValueError):
        format_message(fields)


def test_abstract_addresses() -> None:
    assert socket_address("@tlsgw/notify") == b"\0tlsgw/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "42"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "43"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
], ids=["unset", "half-period", "for-us", "for-another-pid", "zero", "garbage"])
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=42) == expected


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog() is False
