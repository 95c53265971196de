"""Hold many idle TLS connections open for the benchmark's memory figure: stdlib only, so
it runs by file path inside the lab's client namespace (`ip netns exec NS python ...`).

Each connection is what a browser leaves behind: TCP connect, full handshake with SNI and
verification, one `GET /` on a kept-alive connection, the whole response read, then
nothing. Once all of them are open it prints one JSON line on stdout,
`{"open": N, "seconds": S}`, and waits until its stdin is closed; then it closes them and
exits 0. The benchmark reads the gateway's memory in between.

Connections are opened `--concurrency` at a time: fast enough for a thousand, gentle
enough not to turn the measurement into a handshake benchmark. Any failure ends the run
with exit status 1 and the reason on stderr (a memory figure for fewer connections than
asked would be wrong by an unknown amount).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time

STEP_TIMEOUT = 20.0  # seconds for one connect + handshake + response on a loaded 2-core box
DEFAULT_CONCURRENCY = 16


async def open_idle(context: ssl.SSLContext, host: str, port: int, request: bytes,
                    gate: asyncio.Semaphore) -> asyncio.StreamWriter:
    """One connection that has served one request and stays open.

    Raises:
        OSError, ssl.SSLError, asyncio.TimeoutError: connection or handshake failed.
        ValueError: the response is not `200` with a Content-Length.
    """
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), STEP_TIMEOUT)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ValueError(f"unexpected response {head[:60]!r}")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise ValueError(f"no Content-Length in {head[:200]!r}")
        await asyncio.wait_for(reader.readexactly(length), STEP_TIMEOUT)
        return writer


async def run(host: str, cafile: str, count: int, port: int, concurrency: int) -> int:
    context = ssl.create_default_context(cafile=cafile)
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    results = await asyncio.gather(*(open_idle(context, host, port, request, gate) for _ in range(count)),
                                   return_exceptions=True)
    writers = [r for r in results if isinstance(r, asyncio.StreamWriter)]
    failures = [r for r in results if isinstance(r, BaseException)]
    try:
        if failures:
            print(f"{len(failures)} of {count} connections to {host}:{port} failed, first: {failures[0]!r}",
                  file=sys.stderr)
            return 1
        print(json.dumps({"open": len(writers), "seconds": time.monotonic() - start}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        return 0
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("cafile")
    parser.add_argument("count", type=int)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.host, args.cafile, args.count, args.port, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
