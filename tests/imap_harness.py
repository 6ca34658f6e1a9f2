"""In-process IMAP: the real IMAPProtocol and session on a memory transport, the real SQLite
store in a temp folder, several clients on one store and one change hub.

This is where command tests live: no subprocess, no socket, no port. ``ImapWorld`` owns the
store and the server context; ``MemoryIMAP`` is a client with the same vocabulary as the
socket client in ``imap_wire`` (``cmd``, ``cmd_literal``, ``login``, ``select``,
``append``), but every call is awaited on the test's own event loop. Tests that need a real
socket (TLS, limits on connections, back-pressure of a kernel buffer, real clients) stay on
``imap_wire``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fuzzlib import cheap_hash
from imap_wire import Reply
from mailstead.auth.passwords import PasswordHasher
from mailstead.auth.users import Authenticator
from mailstead.config import load_config
from mailstead.context import ServerContext
from mailstead.imap.factory import IMAPFactory
from mailstead.pop3.factory import POP3Factory
from mailstead.store.api import Mailbox, NewMessage, User
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore

PASSWORD = "secret"
WAIT = 10.0  # seconds a response may take before the test fails (a hang, not a slow CI)
_LITERAL_END = re.compile(rb"\{(\d+)\}$")


class NotifyingTransport(StringTransport):
    """A StringTransport that wakes the waiting client whenever the server writes."""

    def __init__(self, peer: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.written = asyncio.Event()
        self.closed = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written.set()

    def writeSequence(self, data: list[bytes]) -> None:  # POP3 sends multi-line replies so
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        super().loseConnection()
        self.closed = True
        self.written.set()

    def abortConnection(self) -> None:
        self.loseConnection()


class MemoryIMAP:
    """One client connection to an in-process IMAP server."""

    def __init__(self, world: ImapWorld, *, peer: str = "127.0.0.1") -> None:
        self.world = world
        self.proto = world.factory.buildProtocol(None)
        self.transport = NotifyingTransport(peer)
        self.proto.makeConnection(self.transport)
        self.buf = b""
        self.counter = itertools.count(1)
        self.greeting = b""
        self._lost = False

    # --- low level -------------------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        self.proto.dataReceived(data.encode() if isinstance(data, str) else data)

    async def _fill(self) -> None:
        data = self.transport.value()
        if data:
            self.transport.clear()
            self.buf += data
            return
        if self.transport.closed:
            raise ConnectionError(f"server closed the connection; buffered {self.buf!r}")
        self.transport.written.clear()
        try:
            await asyncio.wait_for(self.transport.written.wait(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no response within {WAIT}s; buffered {self.buf!r}") from None
        self.buf += self.transport.value()
        self.transport.clear()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            await self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    async def response(self) -> bytes:
        """One whole response: a line, plus any literals and the lines that follow them."""
        out = await self.line()
        while (m := _LITERAL_END.search(out)) is not None:
            out += b"\r\n" + await self.read_exact(int(m.group(1)))
            out += await self.line()
        return out

    async def settle(self) -> None:
        """Let the loop run until the server has nothing more to do for this client."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def pending(self) -> bytes:
        """Whatever the server has written that has not been read yet (after settling)."""
        await self.settle()
        data, self.buf = self.buf + self.transport.value(), b""
        self.transport.clear()
        return data

    @property
    def closed_by_server(self) -> bool:
        return self.transport.closed

    def next_tag(self) -> bytes:
        return b"A%03d" % next(self.counter)

    # --- commands --------------------------------------------------------------------
    async def collect(self, tag: bytes) -> Reply:
        reply = Reply(tag)
        while True:
            resp = await self.response()
            if resp.startswith(tag + b" "):
                reply.tagged = resp
                return reply
            reply.untagged.append(resp)

    async def cmd(self, text: bytes | str, tag: bytes | None = None) -> Reply:
        tag = tag or self.next_tag()
        body = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + body + b"\r\n")
        return await self.collect(tag)

    async def cmd_literal(self, head: bytes | str, data: bytes, tail: bytes | str = b"",
                          tag: bytes | None = None, *, plus: bool = False) -> Reply:
        """``tag head {n}`` + data + tail; waits for ``+`` unless ``plus`` (LITERAL+)."""
        tag = tag or self.next_tag()
        head_b = head.encode() if isinstance(head, str) else head
        tail_b = tail.encode() if isinstance(tail, str) else tail
        marker = b"{%d+}" % len(data) if plus else b"{%d}" % len(data)
        self.send(tag + b" " + head_b + b" " + marker + b"\r\n")
        if plus:
            self.send(data + tail_b + b"\r\n")
            return await self.collect(tag)
        reply = Reply(tag)
        while True:
            resp = await self.response()
            if resp.startswith(b"+"):
                break
            if resp.startswith(tag + b" "):
                reply.tagged = resp
                return reply
            reply.untagged.append(resp)
        self.send(data + tail_b + b"\r\n")
        rest = await self.collect(tag)
        rest.untagged[:0] = reply.untagged
        return rest

    async def login(self, user: str, password: str = PASSWORD) -> Reply:
        reply = await self.cmd(f"LOGIN {user} {password}")
        assert reply.ok, reply
        return reply

    async def select(self, mailbox: str = "INBOX") -> Reply:
        reply = await self.cmd(f'SELECT "{mailbox}"')
        assert reply.ok, reply
        return reply

    async def append(self, mailbox: str, message: bytes, flags: str = "",
                     date: str | None = None) -> Reply:
        head = f'APPEND "{mailbox}"'
        if flags:
            head += f" ({flags})"
        if date:
            head += f' "{date}"'
        reply = await self.cmd_literal(head, message, plus=True)
        assert reply.ok, reply
        return reply

    def drop(self) -> None:
        """The client goes away without LOGOUT (a dropped connection)."""
        if not self._lost:
            self._lost = True
            self.proto.connectionLost(Failure(ConnectionDone()))


class MemoryPOP3:
    """One client connection to an in-process POP3 server on the same context."""

    def __init__(self, world: ImapWorld, *, peer: str = "127.0.0.1") -> None:
        self.proto = world.pop3_factory.buildProtocol(None)
        self.transport = NotifyingTransport(peer)
        self.proto.makeConnection(self.transport)
        self.buf = b""
        self._lost = False

    def send(self, data: bytes | str) -> None:
        self.proto.dataReceived(data.encode() if isinstance(data, str) else data)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.transport.value()
            if data:
                self.transport.clear()
                self.buf += data
                continue
            if self.transport.closed:
                raise ConnectionError(f"server closed the connection; buffered {self.buf!r}")
            self.transport.written.clear()
            try:
                await asyncio.wait_for(self.transport.written.wait(), WAIT)
            except TimeoutError:
                raise AssertionError(f"no POP3 response within {WAIT}s; buffered {self.buf!r}"
                                     ) from None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    async def cmd(self, text: str) -> bytes:
        """One command, its status line (``+OK …`` or ``-ERR …``)."""
        self.send(text.encode() + b"\r\n")
        return await self.line()

    async def multiline(self, text: str) -> tuple[bytes, list[bytes]]:
        """A command answered with a multi-line response (LIST, UIDL): status, lines."""
        status = await self.cmd(text)
        lines: list[bytes] = []
        if status.startswith(b"+OK"):
            while (line := await self.line()) != b".":
                lines.append(line[1:] if line.startswith(b"..") else line)
        return status, lines

    async def login(self, user: str, password: str = PASSWORD) -> bytes:
        """USER/PASS after the greeting; returns the PASS reply (``+OK`` or ``-ERR``)."""
        greeting = await self.line()
        assert greeting.startswith(b"+OK"), greeting
        reply = await self.cmd(f"USER {user}")
        assert reply.startswith(b"+OK"), reply
        return await self.cmd(f"PASS {password}")

    def drop(self) -> None:
        """The client goes away without QUIT: the session must apply nothing."""
        if not self._lost:
            self._lost = True
            self.proto.connectionLost(Failure(ConnectionDone()))


class ImapWorld:
    """One store, one hub, one server context, and the clients connected to it."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.factory = IMAPFactory(ctx, implicit_tls=False)
        self.pop3_factory = POP3Factory(ctx)
        self.clients: list[MemoryIMAP] = []
        self.pop3_clients: list[MemoryPOP3] = []
        self._users = itertools.count(1)

    async def add_user(self, name: str | None = None) -> str:
        name = name or f"u{next(self._users)}"
        await self.store.create_user(name, cheap_hash())
        return name

    async def user(self, name: str) -> User:
        user = await self.store.get_user(name)
        assert user is not None, name
        return user

    async def mailbox(self, user: str, name: str = "INBOX") -> Mailbox:
        mb = await self.store.get_mailbox((await self.user(user)).id, name)
        assert mb is not None, name
        return mb

    async def deliver(self, user: str, message: bytes, mailbox: str = "INBOX") -> list[int]:
        """Deliver as SMTP/LMTP do (the delivery API, not IMAP APPEND)."""
        return await self.store.deliver([(await self.mailbox(user, mailbox)).id], message)

    async def seed(self, user: str, messages: list[bytes], mailbox: str = "INBOX") -> list[int]:
        mb = await self.mailbox(user, mailbox)
        return await self.store.append(mb.id, [NewMessage(m) for m in messages])

    async def connect(self, *, greeting: bool = True, peer: str = "127.0.0.1") -> MemoryIMAP:
        client = MemoryIMAP(self, peer=peer)
        self.clients.append(client)
        if greeting:
            client.greeting = await client.response()
        return client

    async def login(self, user: str, select: str | None = None) -> MemoryIMAP:
        client = await self.connect()
        await client.login(user)
        if select is not None:
            await client.select(select)
        return client

    def pop3(self, *, peer: str = "127.0.0.1") -> MemoryPOP3:
        """A POP3 connection on the same store and hub (greeting not yet read)."""
        client = MemoryPOP3(self, peer=peer)
        self.pop3_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            client.drop()
        for pop in self.pop3_clients:
            pop.drop()
        for client in self.clients:
            await client.settle()
        for _ in range(50):  # a dropped POP3 session may still be flushing \Seen marks
            if all(p.proto._worker is None or p.proto._worker.done() for p in self.pop3_clients):
                break
            await asyncio.sleep(0.01)
        self.clients.clear()
        self.pop3_clients.clear()


_hasher: PasswordHasher | None = None


def _shared_hasher() -> PasswordHasher:
    global _hasher
    if _hasher is None:
        _hasher = PasswordHasher("argon2")
    return _hasher


async def open_world(tmp_path: Path, config: dict[str, Any] | None = None) -> ImapWorld:
    """A fresh store in ``tmp_path``; ``config`` overrides keys as {section: {key: value}}."""
    env: dict[str, str] = {}
    for section, keys in (config or {}).items():
        for key, value in keys.items():
            env[f"MAILSTEAD_{section.upper()}__{key.upper()}"] = _env_value(value)
    cfg = load_config(None, env=env)
    hub = ChangeHub()
    store = SqliteStore(tmp_path / "db.sqlite3", hub, fsync=False)
    await store.open()
    auth = Authenticator(store, _shared_hasher(), cfg.domains)
    ctx = ServerContext(cfg, store, hub, auth, None, asyncio.get_running_loop())
    return ImapWorld(ctx)


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)
