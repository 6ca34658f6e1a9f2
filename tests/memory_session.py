"""The in-process twin of ``imap_session.Session``: an IMAP client that keeps every untagged
response, counts EXISTS/EXPUNGE the way a client must, and watches responses arrive (IDLE).

The same methods as the socket one (``ok``, ``command``, ``idle``, ``done``, ``wait_for``,
``uid_map``, ``exists``, ``select``, ``close``), awaited, over a harness ``MemoryIMAP``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time

from imap_harness import PASSWORD, ImapWorld, MemoryIMAP

_EXISTS_OR_EXPUNGE = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE)$")


class MemorySession:
    _tags = itertools.count(1)

    def __init__(self, client: MemoryIMAP) -> None:
        self.client = client
        self._exists = 0
        self.idle_tag = b""

    @classmethod
    async def open(cls, world: ImapWorld, user: str, password: str = PASSWORD
                   ) -> MemorySession:
        client = await world.connect()
        assert client.greeting.startswith(b"* OK")
        session = cls(client)
        await session.ok(f"LOGIN {user} {password}")
        return session

    def send(self, data: bytes) -> None:
        self.client.send(data)

    async def line(self) -> bytes:
        """One response (literals inline), counted if it is EXISTS or EXPUNGE."""
        line = await self.client.response()
        m = _EXISTS_OR_EXPUNGE.match(line)
        if m:
            n = int(m.group(1))
            self._exists = n if m.group(2) == b"EXISTS" else self._exists - 1
        return line

    async def command(self, text: str) -> tuple[list[bytes], bytes]:
        tag = f"t{next(self._tags)}".encode()
        self.send(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            line = await self.line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    async def ok(self, text: str) -> list[bytes]:
        untagged, done = await self.command(text)
        assert b" OK" in done[:20], (text, done)
        return untagged

    async def idle(self) -> None:
        self.idle_tag = f"t{next(self._tags)}".encode()
        self.send(self.idle_tag + b" IDLE\r\n")
        assert (await self.line()).startswith(b"+ ")

    async def done(self) -> list[bytes]:
        self.send(b"DONE\r\n")
        untagged = []
        while True:
            line = await self.line()
            if line.startswith(self.idle_tag + b" "):
                assert b"OK" in line
                return untagged
            untagged.append(line)

    async def wait_for(self, pattern: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
        """The first untagged line matching ``pattern`` and how long it took."""
        start = time.perf_counter()
        while True:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                raise TimeoutError(pattern)
            try:
                async with asyncio.timeout(left):
                    line = await self.line()
            except TimeoutError:
                raise TimeoutError(pattern) from None
            if re.search(pattern, line):
                return line, time.perf_counter() - start

    async def uid_map(self) -> list[int]:
        lines = await self.ok("UID FETCH 1:* (UID)") if await self.exists() else []
        out = {}
        for line in lines:
            m = re.match(rb"\* (\d+) FETCH \(.*UID (\d+)", line)
            if m:
                out[int(m.group(1))] = int(m.group(2))
        return [out[k] for k in sorted(out)]

    async def exists(self) -> int:
        await self.ok("NOOP")
        return self._exists

    async def select(self, mailbox: str = "INBOX") -> list[bytes]:
        return await self.ok(f"SELECT {mailbox}")

    async def close(self) -> None:
        if not self.client.closed_by_server:
            self.send(b"z LOGOUT\r\n")
        self.client.drop()
