"""POP3 retrieval benchmark: log in, STAT, UIDL, RETR everything (pipelined), QUIT.

Uses raw asyncio streams rather than ``poplib`` so the client is not the bottleneck.
``scripts/bench pop3`` calls ``bench_pop3`` and prints the dict it returns. It lives in
``scripts/`` (not in the package) because it is a client tool, not part of the server.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

PIPELINE_WINDOW = 32  # RETR commands in flight at once
READ_LIMIT = 256 * 1024 * 1024


class BenchError(Exception):
    """The server answered something the benchmark did not expect."""


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def status(self, what: str) -> bytes:
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise BenchError(f"{what}: {line.decode(errors='replace').strip() or 'closed'}")
        return line

    async def body(self) -> bytes:
        """One multi-line body after its status line, still dot-stuffed, with ``.CRLF``."""
        parts: list[bytes] = []
        while True:
            chunk = await self.reader.readuntil(b".\r\n")
            parts.append(chunk)
            # The terminator is ".CRLF" at the start of a line: either the whole body
            # is just ".CRLF" or the dot follows a CRLF.
            if (len(parts) == 1 and chunk == b".\r\n") or chunk.endswith(b"\r\n.\r\n"):
                return b"".join(parts)
            if len(chunk) == 3 and parts[-2].endswith(b"\r\n"):
                return b"".join(parts)

    async def command(self, line: str, *, multiline: bool = False) -> tuple[bytes, bytes]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        status = await self.status(line.split()[0])
        return status, (await self.body() if multiline else b"")


async def bench_pop3(
    host: str,
    port: int,
    user: str,
    password: str,
    n: int,
    *,
    tls: ssl.SSLContext | None = None,
    window: int = PIPELINE_WINDOW,
) -> dict[str, Any]:
    """Retrieve up to ``n`` messages (0 = all) of ``user``'s INBOX and time it.

    ``window`` RETR commands are kept in flight (1: no pipelining, like poplib).
    Nothing is deleted. Returns counts, octets on the wire and timings: ``retr_msgs_per_s``
    and ``retr_mb_per_s`` measure the pipelined RETR phase alone.
    """
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=READ_LIMIT)
    client = _Client(reader, writer)
    try:
        await client.status("greeting")
        await client.command(f"USER {user}")
        await client.command(f"PASS {password}")
        t_login = time.perf_counter()

        status, _ = await client.command("STAT")
        count, size = (int(x) for x in status.split()[1:3])
        t_stat = time.perf_counter()

        _, uidl = await client.command("UIDL", multiline=True)
        uids = uidl.count(b"\r\n") - 1
        t_uidl = time.perf_counter()

        wanted = count if n <= 0 else min(n, count)
        octets = 0
        sent = 0
        done = 0
        while done < wanted:
            while sent < wanted and sent - done < window:
                sent += 1
                writer.write(b"RETR %d\r\n" % sent)
            await writer.drain()
            await client.status(f"RETR {done + 1}")
            octets += len(await client.body())
            done += 1
        t_retr = time.perf_counter()

        await client.command("QUIT")
        t_quit = time.perf_counter()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    retr_s = max(t_retr - t_uidl, 1e-9)
    return {
        "messages": count,
        "maildrop_octets": size,
        "uidl_entries": uids,
        "retrieved": wanted,
        "retrieved_octets": octets,
        "login_s": round(t_login - t0, 4),
        "stat_s": round(t_stat - t_login, 4),
        "uidl_s": round(t_uidl - t_stat, 4),
        "retr_s": round(retr_s, 4),
        "quit_s": round(t_quit - t_retr, 4),
        "retr_msgs_per_s": round(wanted / retr_s, 1),
        "retr_mb_per_s": round(octets / retr_s / 1e6, 2),
    }
