"""A sequential full-handshake TLS client for the benchmark: stdlib only, so it can run by
file path inside the lab's client namespace (`ip netns exec NS python handshake_client.py`).

Why not `openssl s_time -new`: it sends no SNI. With no SNI tlsgw checks the upstream
certificate against the server's IP address, finds the name mismatch, and (the lab's
`block_invalid_certificates: true`) blocks the flow, so s_time cannot measure the
decrypting path. This client does what a browser opening a new connection does: TCP
connect, full TLS handshake with SNI, chain and host name verification against the
client's bundle, one `GET /` with `Connection: close`, read to EOF, and it never offers a
session (no `session=`), so each handshake is a full one; `session_reused` is checked on
every connection anyway.

It times itself, from the start of the first connection to the end of the last, so the
interpreter's start-up is not counted, and prints one JSON object on stdout:
`{"connections": N, "seconds": S, "resumed": R}`. Any failed connection ends the run with
exit status 1 and the reason on stderr: a benchmark of a path that fails is no figure.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import time

CONNECT_TIMEOUT = 10.0  # a stalled handshake ends the run instead of hanging it
RECEIVE_BYTES = 65536


def one_connection(context: ssl.SSLContext, host: str, port: int, request: bytes) -> bool:
    """One full connection; returns whether the session was resumed.

    Raises:
        OSError, ssl.SSLError: connection, handshake or verification failed.
        ValueError: the response is not `200`.
    """
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(request)
            head = tls.recv(RECEIVE_BYTES)
            while tls.recv(RECEIVE_BYTES):
                pass
            if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                raise ValueError(f"unexpected response {head[:60]!r}")
            return tls.session_reused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("cafile")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--port", type=int, default=443)
    args = parser.parse_args(argv)

    context = ssl.create_default_context(cafile=args.cafile)
    request = f"GET / HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\n\r\n".encode()
    connections = resumed = 0
    start = time.monotonic()
    deadline = start + args.seconds
    end = start
    while end < deadline:
        try:
            resumed += one_connection(context, args.host, args.port, request)
        except (OSError, ssl.SSLError, ValueError) as e:
            print(f"connection {connections + 1} to {args.host}:{args.port} failed: {e}", file=sys.stderr)
            return 1
        connections += 1
        end = time.monotonic()
    print(json.dumps({"connections": connections, "seconds": end - start, "resumed": resumed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
