"""A small, pure HTTP/1.x observer for decrypted flows: it notes request lines, Host headers
and response status codes for the inspection log, without buffering bodies.

It is deliberately an observer, not a parser the relay depends on: bytes flow on whatever
it makes of them, so a malformed or non-HTTP stream cannot break a session. It looks at
most at MAX_HEAD_BYTES of any one message head and records at most MAX_RECORDED messages.
"""

from __future__ import annotations

import re

MAX_RECORDED = 8  # enough to show a page load in the log without growing per-flow memory
MAX_HEAD_BYTES = 16 * 1024  # larger heads are not requests worth recording

_REQUEST_LINE = re.compile(rb"^([A-Z]{3,10}) (\S+) HTTP/1\.[01]\r?$")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
_HOST = re.compile(rb"^host:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


class HttpObserver:
    """Feed client→server bytes to `client_data` and server→client to `server_data`."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self._request_buf = b""
        self._response_buf = b""
        self._responses = 0

    def client_data(self, data: bytes) -> None:
        if len(self.messages) >= MAX_RECORDED:
            return
        self._request_buf = (self._request_buf + data)[-MAX_HEAD_BYTES:]
        while b"\r\n\r\n" in self._request_buf and len(self.messages) < MAX_RECORDED:
            head, _, rest = self._request_buf.partition(b"\r\n\r\n")
            self._request_buf = rest
            first = head.split(b"\n", 1)[0]
            match = _REQUEST_LINE.match(first)
            if match is None:
                continue
            host = _HOST.search(head)
            self.messages.append({
                "method": match.group(1).decode("ascii"),
                "path": match.group(2).decode("latin-1")[:256],
                "host": host.group(1).decode("latin-1").strip()[:256] if host else "",
            })

    def server_data(self, data: bytes) -> None:
        if self._responses >= len(self.messages):
            # Bodies are not tracked; only look for status lines of requests we recorded.
            self._response_buf = b""
            return
        self._response_buf = (self._response_buf + data)[-MAX_HEAD_BYTES:]
        match = _STATUS_LINE.search(self._response_buf)
        if match is not None:
            self.messages[self._responses]["status"] = match.group(1).decode("ascii")
            self._responses += 1
            self._response_buf = self._response_buf[match.end():]
