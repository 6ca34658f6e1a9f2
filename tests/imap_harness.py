"""In-process IMAP: the real IMAPProtocol and session on a memory transport, the real SQLite
store in a temp folder, several clients on one store and one change hub.

This is where command tests live: no subprocess, no socket, no port. ``ImapWorld`` owns the
store and the server context; ``MemoryIMAP`` is a client with the same vocabulary as the
socket client in ``imap_wire`` (``cmd``, ``cmd_literal``, ``login``, ``select``,
``append``), but every call is awaited on the test's own event loop. ``world.pop3()`` is a
POP3 client on the same context (``pop3_harness``), ``memory_session.MemorySession`` the twin
of ``imap_session.Session`` for tests that watch untagged responses arrive. conftest's
``world`` fixture gives a fresh world per test; ``running_world`` one for a fixture of your
own, which also fails when the server logged a traceback. Tests that need a real socket
(TLS, limits on connections, back-pressure of a kernel buffer, real clients, the daemon
itself) stay on ``imap_wire`` (``test_imap_socket``).

Differences from a real server, on purpose: passwords are hashed with argon2id at the
smallest cost (a LOGIN costs a tenth of a millisecond, not a tenth of a second); TLS
contexts exist only when asked for (``tls=True``, so that STARTTLS is advertised), but a
memory transport cannot run a handshake, so STARTTLS itself belongs to the socket suite;
the memory transport never pushes back, so output back-pressure belongs there too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imap_wire import Reply
from mailstead.auth.passwords import PasswordHasher
from mailstead.auth.throttle import LoginThrottle
from mailstead.auth.users import Authenticator
from mailstead.config import load_config
from mailstead.context import ServerContext
from mailstead.imap.factory import IMAPFactory
from mailstead.pop3.factory import POP3Factory
from mailstead.store.api import Mailbox, NewMessage, User
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.tls import TLSContexts, generate_self_signed
from memory_transport import MemoryConnection

if TYPE_CHECKING:
    from pop3_harness import MemoryPOP3

PASSWORD = "secret"
_LITERAL_END = re.compile(rb"\{(\d+)\}$")


class MemoryIMAP(MemoryConnection):
    """One client connection to an in-process IMAP server."""

    def __init__(self, world: ImapWorld, *, peer: str = "127.0.0.1") -> None:
        self.world = world
        self.counter = itertools.count(1)
        super().__init__(world.factory.buildProtocol(None), peer=peer)

    def next_tag(self) -> bytes:
        return b"A%03d" % next(self.counter)

    async def response(self) -> bytes:
        """One whole response: a line, plus any literals and the lines that follow them."""
        out = await self.line()
        while (m := _LITERAL_END.search(out)) is not None:
            out += b"\r\n" + await self.read_exact(int(m.group(1)))
            out += await self.line()
        return out

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


class ErrorLog(logging.Handler):
    """Log records that carry a traceback: what the socket suite looked for in the log."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None:
            self.records.append(record)

    def tracebacks(self) -> list[str]:
        text = logging.Formatter()
        return [f"{r.name}: {r.getMessage()}\n{text.formatException(r.exc_info)}"
                for r in self.records if r.exc_info is not None]


class ImapWorld:
    """One store, one hub, one server context, and the clients connected to it."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.factory = IMAPFactory(ctx, implicit_tls=False)
        self.pop3_factory = POP3Factory(ctx)
        self.clients: list[MemoryIMAP] = []
        self.pop3_clients: list[MemoryPOP3] = []
        self.errors = ErrorLog()
        logging.getLogger().addHandler(self.errors)
        self._users = itertools.count(1)

    async def add_user(self, name: str | None = None) -> str:
        name = name or f"u{next(self._users)}"
        await self.store.create_user(name, password_hash())
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

    async def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """The octets of a mailbox's messages as the store keeps them, by ascending UID."""
        mb = await self.mailbox(user, mailbox)
        found = [await self.store.read_message(mb.id, i.uid)
                 for i in await self.store.list_messages(mb.id)]
        return [m for m in found if m is not None]

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

    async def pop3(self, user: str | None = None, *, peer: str = "127.0.0.1") -> MemoryPOP3:
        """A POP3 client on the same context (logged in as ``user`` when given)."""
        from pop3_harness import MemoryPOP3  # it builds on this module

        client = MemoryPOP3(self, peer=peer)
        self.pop3_clients.append(client)
        client.greeting = await client.status()
        if user is not None:
            await client.login(user)
        return client

    async def drop_clients(self) -> None:
        """Every client connected so far goes away (the store and context stay)."""
        for client in self.clients:
            client.drop()
        for pop in self.pop3_clients:
            pop.drop()
        for client in self.clients:
            await client.settle()
        self.clients.clear()
        self.pop3_clients.clear()

    async def close(self) -> None:
        await self.drop_clients()
        logging.getLogger().removeHandler(self.errors)


_hasher: PasswordHasher | None = None
_password_hash: str | None = None


def _shared_hasher() -> PasswordHasher:
    """argon2id at its smallest cost. The hashes ``add_user`` stores have exactly these
    parameters, so a LOGIN verifies in microseconds and never asks for a rehash."""
    global _hasher
    if _hasher is None:
        _hasher = PasswordHasher("argon2")
        _hasher.context = _hasher.context.copy(
            argon2__memory_cost=8, argon2__rounds=1, argon2__parallelism=1
        )
    return _hasher


_tls: dict[tuple[str, tuple[str, ...]], TLSContexts] = {}


def _tls_contexts(tmp_path: Path, hostname: str, domains: tuple[str, ...]) -> TLSContexts:
    """One generated pair per host name in the test process (the keys cost milliseconds);
    the files stay in the first world's folder, which outlives the run's tests."""
    if (hostname, domains) not in _tls:
        cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
        generate_self_signed(cert, key, hostname, domains=domains)
        _tls[(hostname, domains)] = TLSContexts(cert, key)
    return _tls[(hostname, domains)]


def password_hash() -> str:
    """The stored hash of ``PASSWORD`` for every user the harness creates."""
    global _password_hash
    if _password_hash is None:
        _password_hash = _shared_hasher().hash(PASSWORD)
    return _password_hash


async def open_world(tmp_path: Path, config: dict[str, Any] | None = None, *,
                     tls: bool = False, db_name: str = "db.sqlite3") -> ImapWorld:
    """A fresh store in ``tmp_path``; ``config`` overrides keys as {section: {key: value}}.

    ``tls``: give the context TLS material (a self-signed pair, see ``_tls_contexts``), so
    the session advertises STARTTLS as a server with a certificate does. ``db_name``:
    ``mailstead.sqlite3`` where a CLI run with ``data_dir = tmp_path`` must find the store.
    """
    env: dict[str, str] = {}
    for section, keys in (config or {}).items():
        for key, value in keys.items():
            env[f"MAILSTEAD_{section.upper()}__{key.upper()}"] = _env_value(value)
    cfg = load_config(None, env=env)
    contexts = _tls_contexts(tmp_path, cfg.hostname, cfg.domains) if tls else None
    hub = ChangeHub()
    store = SqliteStore(tmp_path / db_name, hub, fsync=False)
    await store.open()
    # As the daemon builds it, so that [auth] and [limits] overrides reach the login policy.
    throttle = LoginThrottle(
        base_delay=cfg.auth.failure_delay, max_delay=cfg.auth.failure_delay_max,
        burst=cfg.auth.failure_burst, block=cfg.auth.failure_block_seconds,
    )
    auth = Authenticator(
        store, _shared_hasher(), cfg.domains, throttle=throttle,
        throttle_loopback=cfg.auth.throttle_loopback,
        max_in_progress=cfg.limits.max_logins_in_progress,
    )
    ctx = ServerContext(cfg, store, hub, auth, contexts, asyncio.get_running_loop())
    return ImapWorld(ctx)


@asynccontextmanager
async def running_world(tmp_path: Path, config: dict[str, Any] | None = None, *,
                        tls: bool = False, db_name: str = "db.sqlite3"
                        ) -> AsyncIterator[ImapWorld]:
    """``open_world``, then on exit: every client dropped, the store closed, and no
    traceback logged meanwhile (the socket suite checks the server log the same way)."""
    world = await open_world(tmp_path, config, tls=tls, db_name=db_name)
    try:
        yield world
    finally:
        await world.close()
        await world.store.close()
    assert world.errors.tracebacks() == [], "\n".join(world.errors.tracebacks())


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)
