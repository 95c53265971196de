"""The systemd notification protocol (sd_notify), without libsystemd.

Under `Type=notify` systemd starts tlsgw with `$NOTIFY_SOCKET` naming a datagram socket
and waits for `READY=1` before it calls the service started; the daemon sends it only
after the steering rules are applied and the listeners accept, so units ordered after
tlsgw start when traffic is really inspected. With `WatchdogSec=`, systemd also sets
`$WATCHDOG_USEC` (and `$WATCHDOG_PID`) and kills the service unless `WATCHDOG=1` arrives
within that period; the keep-alives are sent from the event loop, so a hung loop - not
only a dead process - gets tlsgw restarted. `STOPPING=1` says the stop is deliberate.

Each message is one datagram of newline-separated `KEY=VALUE` assignments. An address
starting with `@` is in the abstract namespace. Outside systemd (no `$NOTIFY_SOCKET`)
every call does nothing, so the daemon never needs to know how it was started.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """`{"READY": 1, "STATUS": "serving"}` -> b"READY=1\\nSTATUS=serving" (pure).

    Raises:
        ValueError: a key or value would break the line format.
    """
    lines = []
    for key, value in fields.items():
        text = str(value)
        if not key or "=" in key or "\n" in key or "\n" in text:
            raise ValueError(f"sd_notify field {key!r}={text!r} cannot be sent")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def socket_address(value: str) -> str | bytes:
    """`$NOTIFY_SOCKET` as an AF_UNIX address: `@name` is abstract (`\\0name`)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between keep-alives (half the watchdog period, as sd_watchdog_enabled(3)
    advises), or None when systemd expects none from this process."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.isdigit() and int(owner) != pid:
        return None
    try:
        period = int(usec) / 1_000_000
    except ValueError:
        return None
    return period / 2 if period > 0 else None


class Notifier:
    """Sends notifications to `$NOTIFY_SOCKET`; a no-op when it is unset."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message; False (logged once per failure) when it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(format_message(fields), socket_address(self.address))
        except OSError as exc:
            logger.warning("sd_notify to %s failed: %s", self.address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def reloading(self, status: str = "reloading configuration") -> bool:
        return self.send(RELOADING=1, STATUS=status)

    def reloaded(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
