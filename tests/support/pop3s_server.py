"""A minimal POP3S server for the lab (nginx-light has no mail module): TLS from the first
byte, a greeting, CAPA and QUIT. Each connection's peer address is appended to a log file
so a test can assert what the server saw.

Run: python -m tests.support.pop3s_server CERT KEY PORT LOG
"""

from __future__ import annotations

import asyncio
import ssl
import sys


async def serve(cert: str, key: str, port: int, log: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        with open(log, "a") as handle:
            handle.write(f"{peer[0]} {peer[1]}\n")
        writer.write(b"+OK tlsgw lab POP3 server ready\r\n")
        await writer.drain()
        try:
            while line := await reader.readline():
                command = line.strip().upper()
                if command == b"CAPA":
                    writer.write(b"+OK capability list follows\r\nUSER\r\nUIDL\r\n.\r\n")
                elif command == b"QUIT":
                    writer.write(b"+OK bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"-ERR unknown command\r\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(session, "0.0.0.0", port, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
