"""What the outbound tests share: a "remote MX" (aiosmtpd on 127.0.0.2, served with
``loop.create_server``), the stub DNS, and an ``OutboundQueue`` on a real store."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

from dns_stub import DnsStub
from mailstead.config import Config, load_config
from mailstead.outbound.queue import OutboundQueue
from mailstead.store.sqlite import SqliteStore
from mailstead.tls import generate_self_signed

MX_HOST = "127.0.0.2"


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    tls: bool


@dataclass
class Sink:
    """An aiosmtpd handler that records what it accepted and answers as told."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)  # one per DATA, then 250
    drops: int = 0  # DATA transactions to end by closing the connection, unanswered
    hangs: int = 0  # DATA transactions never answered (the connection stays open)
    connections: int = 0
    datas: int = 0  # DATA transactions seen, answered or not
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.datas += 1
        if self.drops:
            self.drops -= 1
            server.transport.abort()  # the data arrived; its reply never will
            return "250 2.0.0 (never sent)"
        if self.hangs:
            self.hangs -= 1
            await asyncio.sleep(3600)
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 queued"
        if reply.startswith("2"):
            tls = server.transport.get_extra_info("ssl_object") is not None
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.content, tls))
        return reply

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"relayuser", b"relaypass")
        return AuthResult(success=ok, handled=False)  # (handled: aiosmtpd sends 235/535)


def tls_pair(folder: Path, hostname: str) -> tuple[ssl.SSLContext, Path]:
    """A server context for ``hostname`` and the CA file that verifies it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    ca = generate_self_signed(cert, key, hostname)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, ca


async def start_smtp(sink: Sink, host: str = MX_HOST, *, tls: ssl.SSLContext | None = None,
                     implicit: bool = False, auth: bool = False
                     ) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        sink.connections += 1
        kwargs: dict[str, Any] = {}
        if auth:
            # (aiosmtpd counts only STARTTLS as TLS for auth_require_tls: with implicit
            # TLS the whole connection is encrypted anyway.)
            kwargs = {"authenticator": sink.authenticate, "auth_required": True,
                      "auth_require_tls": not implicit}
        return SMTP(sink, hostname="mx.remote.test", decode_data=False,
                    tls_context=None if implicit else tls, **kwargs)

    server = await loop.create_server(factory, host, 0, ssl=tls if implicit else None)
    return server, server.sockets[0].getsockname()[1]


def write_config(root: Path, mx_port: int, dns_port: int, extra: str = "",
                 queue: str = "") -> Config:
    """Small retry times; ``queue`` lines ("key = value") replace the defaults here."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mailstead.toml"
    settings = dict(line.split(" = ", 1) for line in f"""retry_first = 0.3
retry_max = 0.6
queue_lifetime = 60
poll_seconds = 0.2
connect_timeout = 5
command_timeout = 10
mx_port = {mx_port}
{queue}""".splitlines() if line.strip())
    queue_lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    path.write_text(f"""
[server]
hostname = "mail.example.org"
data_dir = "data"
domains = ["example.org"]

[queue]
{queue_lines}

[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}
{extra}
""")
    return load_config(path)


RECORDS: dict[tuple[str, str], list[str]] = {
    ("example.net", "MX"): ["10 mx.example.net."],
    ("mx.example.net", "A"): [MX_HOST],
    ("fallback.test", "MX"): ["10 dead.fallback.test.", "20 mx.example.net."],
    ("dead.fallback.test", "A"): ["127.0.0.3"],
    ("implicit.test", "A"): [MX_HOST],
    ("nullmx.test", "MX"): ["0 ."],
    ("stuck.test", "A"): ["127.0.0.4"],  # nothing listens there: always deferred
}


class World:
    """A store, its queue and a user ``alice`` whose INBOX receives the bounces."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = SqliteStore(config.db_path)
        self.queue: OutboundQueue | None = None
        self.counts: list[tuple[str, dict[str, Any]]] = []

    async def open(self, start: bool = True) -> World:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        if await self.store.get_user("alice") is None:
            await self.store.create_user("alice", "x")
        self.queue = OutboundQueue(self.store, self.config,
                                   count=lambda e, **kw: self.counts.append((e, kw)))
        if start:
            self.queue.start()
        return self

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.stop(2.0)
        await self.store.close()

    async def enqueue(self, rcpts: list[str], body: str = "hello", *,
                      sender: str = "alice@example.org", subject: str = "test") -> int:
        assert self.queue is not None
        data = (f"From: Alice <{sender or 'alice@example.org'}>\nTo: {', '.join(rcpts)}\n"
                f"Subject: {subject}\nMessage-ID: <{time.time_ns()}@example.org>\n\n"
                f"{body}\n").encode()
        return await self.queue.enqueue(sender, rcpts, data)

    async def inbox(self) -> list[bytes]:
        user = await self.store.get_user("alice")
        assert user is not None
        mbox = await self.store.get_mailbox(user.id, "INBOX")
        assert mbox is not None
        out = []
        for info in await self.store.list_messages(mbox.id):
            data = await self.store.read_message(mbox.id, info.uid)
            assert data is not None
            out.append(data)
        return out


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


class ThreadedMx:
    """The sink on a loop of its own thread: for tests that drive a server subprocess."""

    def __init__(self, sink: Sink) -> None:
        import threading

        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_smtp(sink), self.loop)
        self.server, self.port = future.result(10)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def wait_sync(cond: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.05)


async def start_dns() -> DnsStub:
    stub = DnsStub(dict(RECORDS))
    stub.start_thread()
    return stub
