"""A POP3 client on the in-process harness's world: the real POP3Protocol, the same store,
hub and server context as the world's IMAP clients.

``MemoryPOP3`` answers like ``poplib.POP3`` (same method names, same return shapes, the same
``poplib.error_proto`` for ``-ERR``), but every call is awaited; so a test written against a
real POP3 listener reads the same in process. ``close()`` drops the connection without QUIT.
"""

from __future__ import annotations

import poplib
from typing import TYPE_CHECKING

from imap_harness import PASSWORD, MemoryConnection

if TYPE_CHECKING:
    from imap_harness import ImapWorld

LongReply = tuple[bytes, list[bytes], int]  # as poplib: (status line, lines, octets)


class MemoryPOP3(MemoryConnection):
    """One POP3 connection to the world's server."""

    def __init__(self, world: ImapWorld, *, peer: str = "127.0.0.1") -> None:
        super().__init__(world.pop3_factory.buildProtocol(None), peer=peer)

    async def _short(self, command: str) -> bytes:
        self.send(command.encode() + b"\r\n")
        return await self.status()

    async def status(self) -> bytes:
        """One status line; ``-ERR`` raises as in poplib."""
        line = await self.line()
        if not line.startswith(b"+"):
            raise poplib.error_proto(line)
        return line

    async def _long(self, command: str) -> LongReply:
        status = await self._short(command)
        lines: list[bytes] = []
        octets = 0
        while (line := await self.line()) != b".":
            size = len(line) + 2
            if line.startswith(b".."):  # dot-stuffing removed, as poplib does
                size -= 1
                line = line[1:]
            octets += size
            lines.append(line)
        return status, lines, octets

    async def user(self, name: str) -> bytes:
        return await self._short(f"USER {name}")

    async def pass_(self, password: str) -> bytes:
        return await self._short(f"PASS {password}")

    async def login(self, name: str, password: str = PASSWORD) -> bytes:
        await self.user(name)
        return await self.pass_(password)

    async def dele(self, which: int) -> bytes:
        return await self._short(f"DELE {which}")

    async def retr(self, which: int) -> LongReply:
        return await self._long(f"RETR {which}")

    async def top(self, which: int, howmuch: int) -> LongReply:
        return await self._long(f"TOP {which} {howmuch}")

    async def list(self) -> LongReply:
        return await self._long("LIST")

    async def uidl(self) -> LongReply:
        return await self._long("UIDL")

    async def quit(self) -> bytes:
        """QUIT: the deletions are committed before the ``+OK``; the server then closes."""
        return await self._short("QUIT")

    def close(self) -> None:
        self.drop()
