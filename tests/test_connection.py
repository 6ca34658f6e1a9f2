"""The shared connection layer and the one login policy, in process (no sockets).

IMAP runs on the in-process harness (``imap_harness``), POP3 on the same server context
with its real ``POP3Protocol`` on a memory transport, so one test can watch both
protocols share one policy: failures per connection, sessions per user (and no slot
leaking when a client goes away while its password is checked, issue 12 #6), the
global connection cap, the login deadline, input back-pressure by octets (issue 12 #2),
and the answers to over-long lines and oversized literals (issue 12 #10).
Real sockets (TLS closes, timeouts, caps) are in ``test_connection_tls.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from imap_harness import ImapWorld, open_world
from mailstead.imap.syntax.reader import CommandReader, Fatal, RawCommand, Reject
from mailstead.pop3.factory import POP3Factory
from mailstead.pop3.protocol import POP3Protocol
from mailstead.store.api import User
from memory_transport import WAIT, NotifyingTransport

PASSWORD = "secret"


async def make_world(tmp_path: Path, **config: dict[str, Any]) -> ImapWorld:
    w = await open_world(tmp_path, config)
    w.ctx.auth.throttle.base_delay = 0.01  # failed logins answer fast here
    return w


@pytest.fixture
async def worlds(tmp_path: Path) -> AsyncIterator[list[ImapWorld]]:
    """Worlds a test opens with ``make_world``; closed (clients dropped) at the end."""
    opened: list[ImapWorld] = []
    yield opened
    for w in opened:
        await w.close()
        await w.store.close()


@pytest.fixture(autouse=True)
async def _drop_pop3_clients() -> AsyncIterator[None]:
    yield
    for pop in POP.live:  # no timers or tasks left behind on the shared loop
        pop.drop()
    POP.live.clear()
    await asyncio.sleep(0.01)


async def world_with(worlds: list[ImapWorld], tmp_path: Path, **config: dict[str, Any]
                     ) -> ImapWorld:
    w = await make_world(tmp_path / f"w{len(worlds)}", **config)
    worlds.append(w)
    return w


class POP:
    """One in-process POP3 client on a world's server context."""

    live: list[POP] = []

    def __init__(self, world: ImapWorld, peer: str = "127.0.0.1") -> None:
        self.proto: POP3Protocol = POP3Factory(world.ctx).buildProtocol(None)
        self.tr = NotifyingTransport(peer)
        self.proto.makeConnection(self.tr)
        self.buf = b""
        POP.live.append(self)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.tr.value()
            if data:
                self.tr.clear()
                self.buf += data
                continue
            if self.tr.closed:
                raise ConnectionError(f"closed; buffered {self.buf!r}")
            self.tr.written.clear()
            await asyncio.wait_for(self.tr.written.wait(), WAIT)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    async def cmd(self, text: str) -> bytes:
        self.proto.dataReceived(text.encode() + b"\r\n")
        return await self.line()

    async def login(self, user: str, password: str = PASSWORD) -> bytes:
        assert (await self.cmd(f"USER {user}")).startswith(b"+OK")
        return await self.cmd(f"PASS {password}")

    def drop(self) -> None:
        if not self.proto.out.lost:
            from twisted.internet.error import ConnectionDone
            from twisted.python.failure import Failure

            self.proto.connectionLost(Failure(ConnectionDone()))


def hold_password_checks(world: ImapWorld, monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[asyncio.Event, asyncio.Event]:
    """Password checks wait for ``release``; ``entered`` is set when one has begun."""
    entered, release = asyncio.Event(), asyncio.Event()
    real: Callable[..., Awaitable[User | None]] = world.ctx.auth.check

    async def held(login: str, password: str, ip: str = "") -> User | None:
        entered.set()
        await release.wait()
        return await real(login, password, ip)

    monkeypatch.setattr(world.ctx.auth, "check", held)
    return entered, release


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --- sessions per user, and the slot of a client that left mid-login (issue 12 #6) ---------
async def test_imap_client_gone_during_password_check_leaks_no_session_slot(
    worlds: list[ImapWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_sessions_per_user": 1})
    user = await w.add_user()
    entered, release = hold_password_checks(w, monkeypatch)
    for _ in range(3):
        entered.clear()
        a = await w.connect()
        a.send(f"A1 LOGIN {user} {PASSWORD}\r\n")
        await asyncio.wait_for(entered.wait(), WAIT)
        a.drop()  # the client gives up while its password is verified
        release.set()
        await a.settle()
        await asyncio.sleep(0.05)
        release.clear()
    release.set()
    b = await w.connect()
    reply = await b.cmd(f"LOGIN {user} {PASSWORD}")
    assert reply.ok, reply  # before the fix: NO [LIMIT] Too many sessions for this user


async def test_pop3_and_imap_share_one_session_limit_and_pop3_leaks_no_slot(
    worlds: list[ImapWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_sessions_per_user": 1})
    user = await w.add_user()
    entered, release = hold_password_checks(w, monkeypatch)
    gone = POP(w)
    await gone.line()
    gone.proto.dataReceived(f"USER {user}\r\nPASS {PASSWORD}\r\n".encode())
    await asyncio.wait_for(entered.wait(), WAIT)
    gone.drop()
    release.set()
    await asyncio.sleep(0.1)
    pop = POP(w)
    await pop.line()
    assert (await pop.login(user)).startswith(b"+OK Maildrop locked"), "slot leaked"
    # The POP3 session counts for the user's IMAP logins too.
    imap = await w.connect()
    tagged = (await imap.cmd(f"LOGIN {user} {PASSWORD}")).tagged
    assert b"NO [LIMIT]" in tagged, tagged
    assert (await pop.cmd("QUIT")).startswith(b"+OK")
    pop.drop()
    assert (await imap.cmd(f"LOGIN {user} {PASSWORD}")).ok


async def test_pop3_login_beyond_the_session_limit_is_in_use(
    worlds: list[ImapWorld], tmp_path: Path,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_sessions_per_user": 1})
    user = await w.add_user()
    await w.login(user)
    pop = POP(w)
    await pop.line()
    assert await pop.login(user) == b"-ERR [IN-USE] Too many sessions for this user"
    assert not pop.tr.closed  # the connection stays usable


# --- failures per connection: one key for both protocols -----------------------------------
async def test_failures_per_connection_come_from_one_key_for_both_protocols(
    worlds: list[ImapWorld], tmp_path: Path,
) -> None:
    w = await world_with(worlds, tmp_path, auth={"max_failures_per_connection": 2})
    user = await w.add_user()
    c = await w.connect()
    first = await c.cmd(f"LOGIN {user} wrong")
    assert b"NO [AUTHENTICATIONFAILED]" in first.tagged
    second = await c.cmd(f"LOGIN {user} wrong")
    assert b"NO [AUTHENTICATIONFAILED]" in second.tagged  # answered, then the BYE
    assert await c.line() == b"* BYE Too many failed logins"
    await c.settle()
    assert c.closed_by_server
    pop = POP(w)
    await pop.line()
    assert await pop.login(user, "wrong") == b"-ERR [AUTH] Authentication failed"
    assert (await pop.login(user, "wrong")).startswith(b"-ERR [AUTH] Authentication failed;")
    await until(lambda: pop.tr.closed, "the POP3 connection to close")


async def test_a_foreign_authzid_is_refused_before_any_password_check_and_counts(
    worlds: list[ImapWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    w = await world_with(worlds, tmp_path, auth={"max_failures_per_connection": 2})
    victim, user = await w.add_user(), await w.add_user()
    checks: list[str] = []
    real = w.ctx.auth.check

    async def counted(login: str, password: str, ip: str = "") -> User | None:
        checks.append(login)
        return await real(login, password, ip)

    monkeypatch.setattr(w.ctx.auth, "check", counted)
    c = await w.connect()
    blob = base64.b64encode(f"{victim}\0{user}\0{PASSWORD}".encode()).decode()
    reply = await c.cmd(f"AUTHENTICATE PLAIN {blob}")
    assert b"NO [AUTHORIZATIONFAILED]" in reply.tagged, reply
    assert checks == []
    blob = base64.b64encode(f"{user}@example.org\0{user}\0{PASSWORD}".encode()).decode()
    assert tuple(w.ctx.config.domains) == ("localhost",)
    reply = await c.cmd(f"AUTHENTICATE PLAIN {blob}")
    # user@example.org is not a user here (not a served domain): the second failure.
    assert b"NO [AUTHORIZATIONFAILED]" in reply.tagged, reply
    assert await c.line() == b"* BYE Too many failed logins"


# --- the global connection cap and the login deadline ---------------------------------------
async def test_the_global_cap_counts_imap_and_pop3_together(
    worlds: list[ImapWorld], tmp_path: Path,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_connections": 2})
    first = await w.connect()
    pop = POP(w)
    assert (await pop.line()).startswith(b"+OK")
    third = await w.connect(greeting=False)
    assert (await third.line()).startswith(b"* BYE [UNAVAILABLE] Server busy")
    assert third.closed_by_server
    refused = POP(w, peer="192.0.2.1")
    assert (await refused.line()).startswith(b"-ERR [SYS/TEMP] Server busy")
    third.drop()
    refused.drop()
    first.drop()
    again = POP(w)
    assert (await again.line()).startswith(b"+OK")
    assert w.ctx.connections.gate.total == 2


async def test_no_login_within_the_login_timeout_closes_both_protocols(
    worlds: list[ImapWorld], tmp_path: Path,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"login_timeout_seconds": 0.3})
    user = await w.add_user()
    idle = await w.connect()
    busy = await w.connect()
    busy.send(b"t NOOP\r\n")  # activity does not extend the deadline
    logged_in = await w.login(user)
    pop = POP(w)
    await pop.line()
    await asyncio.sleep(0.5)
    assert (await idle.line()).startswith(b"* BYE Autologout; no login")
    assert idle.closed_by_server and busy.closed_by_server
    assert await pop.line() == b"-ERR No login within the time allowed, closing connection"
    assert pop.tr.closed
    assert (await logged_in.cmd("NOOP")).ok  # a logged-in session is not affected


# --- input back-pressure by octets (issue 12 #2) ---------------------------------------------
async def test_reading_stops_at_the_byte_bound_while_the_session_is_busy(
    worlds: list[ImapWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_queued_input_bytes": 100_000})
    user = await w.add_user()
    entered, release = hold_password_checks(w, monkeypatch)
    c = await w.connect()
    c.send(f"A1 LOGIN {user} wrong\r\n".encode())
    await asyncio.wait_for(entered.wait(), WAIT)
    # While the login is checked, 64 KiB-tag NOOPs pile up: far fewer than 256 commands.
    for i in range(3):
        c.send(b"T" * 60_000 + b"%d NOOP\r\n" % i)
    assert c.transport.producerState == "paused"
    release.set()
    await until(lambda: c.transport.producerState == "producing", "reading to resume")
    replies = [await c.line() for _ in range(4)]
    assert b"NO [AUTHENTICATIONFAILED]" in replies[0]
    assert all(b" OK " in r for r in replies[1:]), replies


async def test_pop3_reading_stops_at_the_byte_bound_while_the_session_is_busy(
    worlds: list[ImapWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_queued_input_bytes": 20_000})
    user = await w.add_user()
    entered, release = hold_password_checks(w, monkeypatch)
    pop = POP(w)
    await pop.line()
    pop.proto.dataReceived(f"USER {user}\r\nPASS wrong\r\n".encode())
    await asyncio.wait_for(entered.wait(), WAIT)
    for _ in range(4):
        pop.proto.dataReceived(b"CAPA " + b"x" * 8000 + b"\r\n")  # 4 lines, 32 KB
    assert pop.tr.producerState == "paused"
    release.set()
    await until(lambda: pop.tr.producerState == "producing", "reading to resume")


# --- literals before login, oversized literals, endless lines (issue 12 #10) -----------------
async def test_before_login_literal_minus_applies(world: ImapWorld) -> None:
    c = await world.connect()
    assert b"LITERAL-" in c.greeting and b"LITERAL+" not in c.greeting
    c.send(b"A1 LOGIN {5000+}\r\n")
    (line,) = (await c.pending()).splitlines()
    assert line.startswith(b"A1 BAD [TOOBIG]"), line  # at once, not after 5000 octets
    c.send(b"x" * 5000 + b" y\r\nA2 LOGIN {5000}\r\n")
    assert await c.pending() == b"A2 BAD Literal too large\r\n"  # and no "+"
    assert (await c.cmd("NOOP")).ok


async def test_oversized_non_sync_append_is_answered_at_once_and_streaming_it_closes(
    world: ImapWorld,
) -> None:
    user = await world.add_user()
    c = await world.login(user)
    c.send(b"A1 APPEND INBOX {99999999999+}\r\n")
    assert await c.pending() == b"A1 BAD [TOOBIG] Message too large\r\n"
    for _ in range(20):
        c.send(b"x" * 8192)
    out = await c.pending()
    assert out.startswith(b"* BYE [TOOBIG]"), out
    assert c.closed_by_server


async def test_endless_imap_line_is_answered_at_the_limit_and_closed_past_the_cap(
    worlds: list[ImapWorld], tmp_path: Path,
) -> None:
    w = await world_with(worlds, tmp_path, limits={"max_line_length": 1000})
    user = await w.add_user()
    c = await w.login(user)
    c.send(b"A1 SEARCH TEXT " + b"x" * 2000)  # no line end
    assert await c.pending() == b"A1 BAD Command line too long\r\n"
    for _ in range(1100):  # past the hard cap (1 MiB)
        c.send(b"x" * 1000)
    assert (await c.pending()).startswith(b"* BYE Command line too long")
    assert c.closed_by_server


async def test_discarded_input_does_not_keep_an_imap_session_alive(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    timer = c.proto._autologout
    assert timer is not None
    timer.restart(0.3)
    c.send(b"A1 SEARCH TEXT " + b"x" * 70_000)  # over the line limit: thrown away
    await c.pending()
    for _ in range(10):
        c.send(b"x" * 100)
        await asyncio.sleep(0.05)
    await until(lambda: c.closed_by_server, "the autologout")
    assert b"* BYE Autologout; idle for too long" in await c.pending()


async def test_discarded_input_does_not_keep_a_pop3_session_alive(world: ImapWorld) -> None:
    user = await world.add_user()
    pop = POP(world)
    await pop.line()
    assert (await pop.login(user)).startswith(b"+OK")
    assert pop.proto._idle is not None
    pop.proto._idle.restart(0.3)
    pop.proto.dataReceived(b"LIST " + b"1" * 9000)
    assert await pop.line() == b"-ERR Line too long"  # at once
    for _ in range(10):
        pop.proto.dataReceived(b"1" * 100)
        await asyncio.sleep(0.05)
    await until(lambda: pop.tr.closed, "the idle timeout")
    assert await pop.line() == b"-ERR Idle for too long, closing connection"


async def test_endless_pop3_line_is_closed_past_the_cap(world: ImapWorld) -> None:
    pop = POP(world)
    await pop.line()
    pop.proto.dataReceived(b"CAPA" + b"x" * 10_000)
    assert await pop.line() == b"-ERR Line too long"
    for _ in range(110):
        pop.proto.dataReceived(b"x" * 10_000)
    assert await pop.line() == b"-ERR Line too long, closing connection"
    assert pop.tr.closed


def test_reader_skips_at_most_a_budget_of_a_refused_literal() -> None:
    reader = CommandReader(max_literal=100)
    assert reader.feed(b"a APPEND INBOX {200+}\r\n") == [
        Reject(b"a", "Message too large", "BAD", "TOOBIG")]
    assert reader.feed(b"x" * 200 + b"\r\nb NOOP\r\n") == [
        RawCommand(b"b", (b"b NOOP",), (), b"NOOP")]  # a small overshoot is skipped
    assert reader.feed(b"c APPEND INBOX {10000000+}\r\n")[0].status == "BAD"
    events = []
    for _ in range(100):
        events += reader.feed(b"x" * 1000)
    assert events == [Fatal("[TOOBIG] Too much data sent for a refused command")]
    assert reader.feed(b"d NOOP\r\n") == []  # nothing more is read
