"""Submission listeners on real loopback sockets, in the test's process, over a harness world.

``open_submission(tmp_path, config)`` gives a ``SubmissionWorld``: an ``ImapWorld`` (real
store, real login policy, TLS material) plus the 587-style (STARTTLS) and 465-style
(implicit TLS) submission listeners bound to 127.0.0.1 on the test's loop, and a
``RecordingQueue`` as ``ctx.outbound``: the other component (the outbound queue) stands
in as a list of what it was handed. smtplib is blocking, so clients run in threads
(``world.client``), while the server answers on the loop.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from imap_harness import ImapWorld, open_world
from mailstead.smtp.submission import SubmissionHandler, submission_factory

T = TypeVar("T")

BASE = {"server": {"hostname": "mail.test", "domains": ["example.org", "example.net"]}}


class RecordingQueue:
    """An ``OutboundSink`` that records each call; ``gate`` (when set) holds enqueue."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], bytes]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail = False

    async def enqueue(self, mail_from: str, recipients: list[str], data: bytes) -> int:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("queue disk gone")
        self.calls.append((mail_from, list(recipients), data))
        return 1000 + len(self.calls)


class SubmissionWorld:
    def __init__(self, world: ImapWorld, plain_port: int, tls_port: int,
                 queue: RecordingQueue) -> None:
        self.world = world
        self.ctx = world.ctx
        self.store = world.store
        self.plain_port = plain_port
        self.tls_port = tls_port
        self.queue = queue
        assert world.ctx.tls is not None
        self.client_tls = ssl.create_default_context(
            cafile=str(world.ctx.tls.cert.parent / "ca.pem"))
        self.client_tls.check_hostname = False  # the certificate names mail.test

    async def client(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking smtplib function in a thread, bounded in time."""
        async with asyncio.timeout(30):
            return await asyncio.to_thread(fn, *args)

    def smtp(self) -> smtplib.SMTP:
        """A connection to the STARTTLS listener, after EHLO (not yet TLS)."""
        conn = smtplib.SMTP("127.0.0.1", self.plain_port, timeout=10)
        conn.ehlo("client.test")
        return conn

    def starttls(self) -> smtplib.SMTP:
        conn = self.smtp()
        conn.starttls(context=self.client_tls)
        conn.ehlo("client.test")
        return conn

    def smtps(self) -> smtplib.SMTP_SSL:
        conn = smtplib.SMTP_SSL("127.0.0.1", self.tls_port, timeout=10,
                                context=self.client_tls)
        conn.ehlo("client.test")
        return conn

    def send(self, login: str, mail_from: str, to: list[str], message: bytes,
             password: str = "secret", tls: str = "starttls") -> dict[str, Any]:
        """Log in and send one message (blocking); smtplib's refused-recipients dict."""
        conn = self.starttls() if tls == "starttls" else self.smtps()
        try:
            conn.login(login, password)
            return conn.sendmail(mail_from, to, message)
        finally:
            conn.quit()


@asynccontextmanager
async def open_submission(tmp_path: Path, config: dict[str, Any] | None = None, *,
                          outbound: bool = True) -> AsyncIterator[SubmissionWorld]:
    merged: dict[str, Any] = {k: dict(v) for k, v in BASE.items()}
    for section, keys in (config or {}).items():
        merged.setdefault(section, {}).update(keys)
    world = await open_world(tmp_path, merged, tls=True)
    queue = RecordingQueue()
    if outbound:
        world.ctx.outbound = queue
    ctx = world.ctx
    assert ctx.tls is not None
    handler = SubmissionHandler(ctx, spool_dir=tmp_path / "spool")
    loop = asyncio.get_running_loop()
    size = ctx.config.limits.max_message_size
    plain = await loop.create_server(
        submission_factory(handler, hostname=ctx.config.hostname, max_size=size,
                           tls_context=ctx.tls.stdlib),
        "127.0.0.1", 0)
    tls = await loop.create_server(
        submission_factory(handler, hostname=ctx.config.hostname, max_size=size),
        "127.0.0.1", 0, ssl=ctx.tls.stdlib)
    try:
        yield SubmissionWorld(world, plain.sockets[0].getsockname()[1],
                              tls.sockets[0].getsockname()[1], queue)
    finally:
        plain.close()
        tls.close()
        await world.close()
        await world.store.close()
    assert world.errors.tracebacks() == [], "\n".join(world.errors.tracebacks())


def message(sender: str, to: str, subject: str = "hello", *, extra: str = "") -> bytes:
    """A message with From/To/Subject and no Date or Message-ID (the server adds them)."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n"
            "Hi there.\r\n").encode()
