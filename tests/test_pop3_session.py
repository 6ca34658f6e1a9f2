"""POP3Protocol in-process on a fake transport: ordering, shutdown, timeouts, failures.

These are the paths a real client cannot easily provoke: a slow or failing store, a
shutdown in the middle of a command, an idle timeout shorter than the one-minute
configuration minimum, a client that stops reading. No reactor is needed: the protocol
runs on the test's asyncio loop and writes into a ``StringTransport``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailstead.auth.passwords import PasswordHasher
from mailstead.auth.users import Authenticator
from mailstead.config import load_config
from mailstead.connection import ConnectionServices
from mailstead.context import ServerContext
from mailstead.pop3.factory import POP3Factory
from mailstead.pop3.protocol import LINES_PER_TURN, POP3Protocol
from mailstead.pop3.wire import unstuff
from mailstead.store.api import NewMessage, StoreUnavailable
from mailstead.store.hub import ChangeHub
from mailstead.store.reads_api import Octets
from mailstead.store.sqlite import SqliteStore

_hasher: PasswordHasher | None = None
BOB = 1  # the user id of the only user


def hasher() -> PasswordHasher:
    global _hasher
    if _hasher is None:
        _hasher = PasswordHasher("argon2")
    return _hasher


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ServerContext]:
    hub = ChangeHub()
    store = SqliteStore(tmp_path / "db.sqlite3", hub, fsync=False)
    await store.open()
    h = hasher()
    context = ServerContext(
        load_config(None, env={}), store, hub, Authenticator(store, h, ["example.org"]), None,
        asyncio.get_running_loop(),
    )
    user = await store.create_user("bob", h.hash("pw"))
    assert user.id == BOB
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, [NewMessage(b"Subject: %d\r\n\r\n.body %d\r\n" % (i, i))
                                  for i in range(1, 4)])
    yield context
    for client in Client.live:  # no timers or tasks left behind on the shared loop
        if not client.proto.out.lost:
            client.drop()
        await client.settle()
    Client.live.clear()
    await store.close()


class PausingTransport(StringTransport):
    """Like a socket whose send buffer fills: pauses the producer past ``limit`` octets."""

    limit = 100_000

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.io.getvalue()) > self.limit:
            self.producer.pauseProducing()


class Client:
    live: list[Client] = []

    def __init__(self, ctx: ServerContext, *, peer: str = "127.0.0.1",
                 transport: StringTransport | None = None, **settings: Any) -> None:
        factory = POP3Factory(ctx)
        if settings:
            factory.settings = dataclasses.replace(factory.settings, **settings)
        self.proto: POP3Protocol = factory.buildProtocol(None)
        self.tr = transport or StringTransport()
        self.tr.peerAddr = IPv4Address("TCP", peer, 40000)
        self.proto.makeConnection(self.tr)
        Client.live.append(self)

    def take(self) -> bytes:
        data = self.tr.value()
        self.tr.clear()
        return data

    async def settle(self, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.005)):
            if self.proto._worker is None:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the session did not finish its commands")

    async def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        await self.settle()
        return self.take()

    async def cmd(self, text: str) -> bytes:
        return await self.send(text.encode() + b"\r\n")

    async def login(self) -> None:
        self.take()
        out = await self.send(b"USER bob\r\nPASS pw\r\n")
        assert out.startswith(b"+OK Send your password\r\n+OK Maildrop locked and ready"), out

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


async def inbox_uids(ctx: ServerContext) -> list[int]:
    user = await ctx.store.get_user("bob")
    assert user is not None
    inbox = await ctx.store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    return [i.uid for i in await ctx.store.list_messages(inbox.id)]


async def test_pipelined_commands_wait_for_a_slow_store(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ctx.store.read_octets

    async def slow(mailbox_id: int, uids: Iterable[int]) -> dict[int, Octets]:
        uids = list(uids)[:1]  # no read-ahead: each RETR waits for its own read
        await asyncio.sleep(0.05 * (4 - uids[0]))  # the first RETR is the slowest
        return await real(mailbox_id, uids)

    monkeypatch.setattr(ctx.store, "read_octets", slow)
    c = Client(ctx)
    await c.login()
    out = await c.send(b"RETR 1\r\nSTAT\r\nRETR 2\r\nNOOP\r\nRETR 3\r\n")
    assert out.split(b"\r\n")[0] == b"+OK 23 octets"
    assert out.index(b"+OK 3 69") > out.index(b"..body 1")
    assert out.index(b"..body 1") < out.index(b"..body 2") < out.index(b"+OK\r\n")
    assert out.index(b"+OK\r\n") < out.index(b"..body 3")


async def test_shutdown_finishes_the_command_then_leaves_without_deleting(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    real = ctx.store.read_octets

    async def held(mailbox_id: int, uids: Iterable[int]) -> dict[int, Octets]:
        entered.set()
        await gate.wait()
        return await real(mailbox_id, uids)

    monkeypatch.setattr(ctx.store, "read_octets", held)
    c = Client(ctx)
    await c.login()
    assert len(ctx.sessions) == 1
    c.proto.dataReceived(b"DELE 1\r\nRETR 2\r\nQUIT\r\n")
    await asyncio.wait_for(entered.wait(), 5)
    c.proto.shutdown("Server shutting down")
    assert not c.tr.disconnecting  # RETR 2 still in progress
    gate.set()
    await c.settle()
    out = c.take()
    assert out.startswith(b"+OK Message 1 deleted\r\n+OK 23 octets\r\n")
    assert out.endswith(b".\r\n-ERR [SYS/TEMP] Server shutting down\r\n")
    assert b"Bye" not in out
    assert c.tr.disconnecting
    c.drop()
    await c.settle()  # the \Seen of RETR 2 is written before the session lets go
    assert len(ctx.sessions) == 0
    assert len(await inbox_uids(ctx)) == 3
    assert ctx.store.try_lock_maildrop(BOB)


async def test_shutdown_of_an_idle_session_is_immediate(ctx: ServerContext) -> None:
    c = Client(ctx)
    c.take()
    c.proto.shutdown("Server shutting down")
    assert c.take() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
    assert c.tr.disconnecting
    c.proto.dataReceived(b"NOOP\r\n")  # ignored once leaving
    await c.settle()
    assert c.take() == b""


async def test_quit_whose_expunge_fails_deletes_nothing(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> list[int]:
        raise StoreUnavailable("disk on fire")

    monkeypatch.setattr(ctx.store, "expunge", broken)
    c = Client(ctx)
    await c.login()
    await c.send(b"DELE 1\r\nDELE 2\r\n")
    assert await c.cmd("QUIT") == (
        b"-ERR [SYS/TEMP] Could not delete messages; none were deleted\r\n"
    )
    assert c.tr.disconnecting
    assert len(await inbox_uids(ctx)) == 3
    assert ctx.store.try_lock_maildrop(BOB)  # released at once


async def test_quit_applies_deletions_in_one_expunge_and_unlocks_once(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    unlocks: list[int] = []
    real_expunge, real_unlock = ctx.store.expunge, ctx.store.unlock_maildrop

    async def expunge(mailbox_id: int, uids: Any = None) -> list[int]:
        calls.append(list(uids))
        return await real_expunge(mailbox_id, uids)

    def unlock(user_id: int) -> None:
        unlocks.append(user_id)
        real_unlock(user_id)

    monkeypatch.setattr(ctx.store, "expunge", expunge)
    monkeypatch.setattr(ctx.store, "unlock_maildrop", unlock)
    c = Client(ctx)
    await c.login()
    uids = await inbox_uids(ctx)
    await c.send(b"DELE 3\r\nDELE 1\r\n")
    assert await c.cmd("QUIT") == b"+OK Bye (2 messages deleted)\r\n"
    c.drop()
    assert calls == [[uids[0], uids[2]]]
    assert unlocks == [BOB]
    assert await inbox_uids(ctx) == [uids[1]]


async def test_unexpected_error_answers_sys_temp_and_the_session_goes_on(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: Any) -> bytes:
        raise RuntimeError("boom")

    c = Client(ctx)
    await c.login()
    monkeypatch.setattr(ctx.store, "read_octets", boom)
    with caplog.at_level(logging.ERROR, "mailstead.pop3"):
        assert await c.cmd("RETR 1") == (
            b"-ERR [SYS/TEMP] Internal server error, try again later\r\n"
        )
    assert "pop3 command failed" in caplog.text
    assert await c.cmd("NOOP") == b"+OK\r\n"


async def test_idle_timeout_closes_without_update(ctx: ServerContext) -> None:
    c = Client(ctx, idle_timeout=0.5)
    await c.login()
    await c.cmd("DELE 1")
    await asyncio.sleep(0.3)
    await c.cmd("NOOP")  # activity postpones the timeout
    await asyncio.sleep(0.3)
    assert not c.tr.disconnecting
    for _ in range(300):
        if c.tr.disconnecting:
            break
        await asyncio.sleep(0.01)
    assert c.take() == b"-ERR Idle for too long, closing connection\r\n"
    assert c.tr.disconnecting
    c.drop()
    assert len(await inbox_uids(ctx)) == 3
    assert ctx.store.try_lock_maildrop(BOB)


async def test_drop_during_login_still_releases_the_lock(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    real = ctx.store.list_maildrop

    async def held(mailbox_id: int) -> Any:
        entered.set()
        await gate.wait()
        return await real(mailbox_id)

    monkeypatch.setattr(ctx.store, "list_maildrop", held)
    c = Client(ctx)
    c.proto.dataReceived(b"USER bob\r\nPASS pw\r\nSTAT\r\n")
    await asyncio.wait_for(entered.wait(), 5)
    assert not ctx.store.try_lock_maildrop(BOB)  # the session holds it now
    c.drop()
    assert len(ctx.sessions) == 1  # the login is still running
    gate.set()
    await c.settle()
    assert len(ctx.sessions) == 0
    assert ctx.store.try_lock_maildrop(BOB)


async def test_non_loopback_plaintext_is_refused_and_stls_unavailable(
    ctx: ServerContext,
) -> None:
    c = Client(ctx, peer="192.0.2.7")
    c.take()
    caps = await c.cmd("CAPA")
    assert b"USER" not in caps and b"SASL" not in caps and b"STLS" not in caps
    assert (await c.cmd("USER bob")).startswith(b"-ERR [AUTH] Plaintext authentication")
    assert (await c.cmd("AUTH PLAIN AGJvYgBwdw==")).startswith(b"-ERR [AUTH] Plaintext")
    assert await c.cmd("STLS") == b"-ERR TLS is not available\r\n"


async def test_overlong_sasl_answer_aborts_the_exchange(ctx: ServerContext) -> None:
    c = Client(ctx)
    c.take()
    assert await c.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await c.send(b"A" * 9000 + b"\r\n") == (
        b"-ERR Line too long; authentication aborted\r\n"
    )
    assert await c.cmd("NOOP") == b"-ERR NOOP is only valid after login\r\n"
    assert await c.cmd("AUTH LOGIN") == b"+ VXNlcm5hbWU6\r\n"
    assert await c.cmd("Ym9i") == b"+ UGFzc3dvcmQ6\r\n"
    assert (await c.cmd("cHc=")).startswith(b"+OK Maildrop locked")


async def test_a_flood_of_pipelined_lines_is_answered_a_turn_at_a_time(
    ctx: ServerContext,
) -> None:
    c = Client(ctx)
    await c.login()
    c.proto.dataReceived(b"NOOP\r\n" * 1000)
    # The first ones at once, without a task; the rest in later turns of the loop, so
    # that other sessions are served in between.
    got = c.take()
    assert got == b"+OK\r\n" * LINES_PER_TURN
    assert c.proto._worker is not None
    for _ in range(1000):
        if c.proto._worker is None:
            break
        await asyncio.sleep(0)  # one turn of the loop: at most one more batch
        more = c.take()
        assert len(more) <= len(b"+OK\r\n") * LINES_PER_TURN
        got += more
    assert c.tr.producerState == "producing"
    assert got == b"+OK\r\n" * 1000
    assert await c.cmd("NOOP") == b"+OK\r\n"  # and a lone command is answered at once
    assert c.proto._worker is None


async def test_lines_pile_up_and_reading_pauses_while_the_client_does_not_read(
    ctx: ServerContext,
) -> None:
    tr = PausingTransport()
    tr.limit = 2000
    c = Client(ctx, transport=tr)
    await c.login()
    c.take()
    c.proto.dataReceived(b"NOOP\r\n" * 1000)
    assert c.tr.producerState == "paused"  # no longer reading commands
    await asyncio.sleep(0.05)
    got = c.take()
    assert 2000 < len(got) < 3000  # answering stopped at the first full buffer
    producer = c.tr.producer
    assert producer is not None
    for _ in range(10_000):
        if c.proto._worker is None:
            break
        producer.resumeProducing()  # the client reads; the buffer drains
        await asyncio.sleep(0)
        got += c.take()
    got += c.take()
    assert got == b"+OK\r\n" * 1000
    assert c.tr.producerState == "producing"


async def test_large_retr_waits_while_the_client_does_not_read(ctx: ServerContext) -> None:
    big = b"Subject: big\r\n\r\n" + b"".join(b".%06d line of text\r\n" % i for i in range(40_000))
    user = await ctx.store.get_user("bob")
    assert user is not None
    inbox = await ctx.store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await ctx.store.append(inbox.id, [NewMessage(big)])
    c = Client(ctx, transport=PausingTransport())
    await c.login()
    c.proto.dataReceived(b"RETR 4\r\nNOOP\r\n")
    gate = c.proto.out  # the streaming producer registered for the connection
    for _ in range(1000):
        if gate.paused:
            break
        await asyncio.sleep(0.005)
    producer = c.tr.producer
    assert producer is gate and c.proto._worker is not None
    got = c.take()
    assert 100_000 < len(got) < len(big)  # stopped at the first full buffer
    await asyncio.sleep(0.05)
    assert c.take() == b""
    while c.proto._worker is not None:
        producer.resumeProducing()  # the client reads; the buffer drains
        await asyncio.sleep(0)
        got += c.take()
    await c.settle()
    got += c.take()
    head, _, rest = got.partition(b"\r\n")
    assert head == b"+OK %d octets" % len(big)
    assert rest.endswith(b".\r\n+OK\r\n")
    assert unstuff(rest[: -len(b"+OK\r\n")]) == big


async def test_connections_per_ip_are_limited(ctx: ServerContext) -> None:
    limits = dataclasses.replace(ctx.config.limits, max_connections_per_ip=2)
    ctx.config = dataclasses.replace(ctx.config, limits=limits)
    ctx.connections = ConnectionServices.from_config(ctx.config, ctx.auth)
    first, second = Client(ctx), Client(ctx, peer="127.0.0.1")
    other = Client(ctx, peer="192.0.2.9")
    third = Client(ctx)
    assert third.take() == b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
    assert third.tr.disconnecting
    third.drop()
    assert len(ctx.sessions) == 3
    assert not other.tr.disconnecting
    first.drop()
    fourth = Client(ctx)
    assert fourth.take().startswith(b"+OK ")
    assert not second.tr.disconnecting


async def test_auth_initial_response_may_exceed_the_command_line_cap(ctx: ServerContext) -> None:
    c = Client(ctx)
    c.take()
    blob = base64.b64encode(b"\0bob\0" + b"p" * 1500).decode()
    assert len(blob) > 1024
    assert await c.cmd(f"AUTH PLAIN {blob}") == b"-ERR [AUTH] Authentication failed\r\n"
    assert await c.cmd("NOOP " + "x" * 1100) == b"-ERR Line too long\r\n"


async def test_a_dropped_session_unlocks_before_its_seen_flags_are_written(
    ctx: ServerContext,
) -> None:
    first = Client(ctx)
    await first.login()
    assert (await first.cmd("RETR 1")).startswith(b"+OK")
    first.drop()  # the \Seen of that RETR is still waiting to be written
    second = Client(ctx)
    await second.login()  # at once: not -ERR [IN-USE]
    await second.cmd("QUIT")
    user = await ctx.store.get_user("bob")
    assert user is not None
    inbox = await ctx.store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    for _ in range(200):  # the dropped session's flags still arrive
        infos = await ctx.store.list_messages(inbox.id)
        if "\\Seen" in infos[0].flags:
            break
        await asyncio.sleep(0.01)
    assert "\\Seen" in infos[0].flags
