"""sd_notify datagrams against a fake NOTIFY_SOCKET (issue 6). No root needed."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from gateway.notify import Notifier


def test_messages_arrive_as_systemd_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fake:
        fake.bind(str(path))
        fake.settimeout(5)
        notifier = Notifier(str(path))
        assert notifier.ready("serving 1 segment(s)")
        assert fake.recv(4096) == f"READY=1\nSTATUS=serving 1 segment(s)\nMAINPID={os.getpid()}".encode()
        assert notifier.watchdog()
        assert fake.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert fake.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"tlsgw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fake:
        fake.bind("\0" + name)
        fake.settimeout(5)
        notifier = Notifier("@" + name)
        assert notifier.status("reloading")
        assert fake.recv(4096) == b"STATUS=reloading"
        notifier.close()


def test_a_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody"))
    assert notifier.watchdog() is False
    notifier.close()
