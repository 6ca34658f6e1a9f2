"""Live propagation: every change reaches every session that has the mailbox selected.

Two and three raw IMAP sessions on one mailbox, with and without IDLE, in process (the
harness: the real sessions, store and hub): deliveries, flag changes, expunges (deferred
during FETCH/STORE/SEARCH, RFC 3501 §7.4.1), \\Recent to exactly one session, and sessions
never disagreeing about UIDs. Deliveries use the store's delivery call, as SMTP and LMTP do;
the path through the daemon's SMTP listener is in ``test_imap_socket``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conftest import ServerProcess
from imap_harness import ImapWorld, running_world
from memory_session import MemorySession

Sessions = Callable[[], Awaitable[MemorySession]]


async def deliver(world: ImapWorld, user: str, subject: str = "hi") -> None:
    """Deliver as SMTP does; awaited until committed and published to the sessions."""
    await world.deliver(user, f"Subject: {subject}\r\n\r\nbody {subject}\r\n".encode())


async def append(s: MemorySession, n: int) -> None:
    for i in range(n):
        await s.ok(f"APPEND INBOX {{{len(f'Subject: m{i}') + 4}+}}\r\nSubject: m{i}\r\n\r\n")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ImapWorld]:
    # The store where a CLI run with conftest's config (data_dir "data") finds it.
    (tmp_path / "data").mkdir()
    async with running_world(tmp_path / "data", db_name="mailstead.sqlite3") as w:
        yield w


@pytest.fixture
async def user(world: ImapWorld) -> str:
    return await world.add_user()


@pytest.fixture
async def sessions(world: ImapWorld, user: str) -> AsyncIterator[Sessions]:
    opened: list[MemorySession] = []

    async def open_session() -> MemorySession:
        s = await MemorySession.open(world, user)
        opened.append(s)
        return s

    yield open_session
    for s in opened:
        await s.close()


async def test_idle_session_gets_exists_within_milliseconds_of_delivery(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a = await sessions()
    await a.select()
    await a.idle()
    await deliver(world, user, "pushed")
    line, _ = await a.wait_for(rb"^\* 1 EXISTS")
    assert line == b"* 1 EXISTS"
    assert (await a.wait_for(rb"RECENT"))[0] == b"* 1 RECENT"
    await a.done()


async def test_flags_from_another_session_reach_idle_and_non_idle_sessions(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a, b, c = await sessions(), await sessions(), await sessions()
    await append(a, 3)
    for s in (a, b, c):
        await s.select()
    await a.idle()
    untagged = await b.ok("STORE 2 +FLAGS (\\Flagged $Forwarded)")
    # The storing session is answered once, with the new flags.
    assert [x for x in untagged if b"FETCH" in x] == [b"* 2 FETCH (FLAGS ($Forwarded \\Flagged))"]
    line, latency = await a.wait_for(rb"FETCH")
    # A selected first, so the messages are \Recent in its session.
    assert line == b"* 2 FETCH (FLAGS ($Forwarded \\Flagged \\Recent))"
    assert latency < 1.0
    await a.done()
    # The third session learns it with its next command.
    assert b"* 2 FETCH (FLAGS ($Forwarded \\Flagged))" in await c.ok("NOOP")
    # And the storer hears nothing twice.
    assert not [x for x in await b.ok("NOOP") if b"FETCH" in x]


async def test_expunge_is_deferred_during_fetch_store_search(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a, b = await sessions(), await sessions()
    await append(a, 4)
    await a.select()
    await b.select()
    await b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert await b.ok("EXPUNGE") == [b"* 2 EXPUNGE"]
    # A may not hear of it while answering FETCH, STORE or SEARCH ...
    for cmd in ("FETCH 1:4 (UID)", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL"):
        untagged, _done = await a.command(cmd)
        assert not [x for x in untagged if b"EXPUNGE" in x], (cmd, untagged)
    # ... and its sequence numbers stay valid meanwhile: 4 is still UID 4.
    untagged, _ = await a.command("FETCH 4 (UID)")
    assert b"* 4 FETCH (UID 4)" in untagged
    # The expunged message no longer matches anything, but keeps its number.
    assert (await a.ok("SEARCH ALL"))[-1] == b"* SEARCH 1 3 4"
    # A UID command may carry it, and so does NOOP.
    assert b"* 2 EXPUNGE" in await a.ok("NOOP")
    assert (await a.ok("SEARCH ALL"))[-1] == b"* SEARCH 1 2 3"
    assert await a.uid_map() == await b.uid_map() == [1, 3, 4]


async def test_uid_fetch_may_carry_the_expunge(world: ImapWorld, user: str,
                                               sessions: Sessions) -> None:
    a, b = await sessions(), await sessions()
    await append(a, 3)
    await a.select()
    await b.select()
    await b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    untagged = await a.ok("UID FETCH 1:* (FLAGS)")
    assert b"* 1 EXPUNGE" in untagged
    assert untagged.index(b"* 1 EXPUNGE") == len(untagged) - 1


async def test_fetch_of_a_message_expunged_elsewhere_says_expungeissued(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a, b = await sessions(), await sessions()
    await append(a, 2)
    await a.select()
    await b.select()
    await b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    untagged, done = await a.command("FETCH 2 (BODY.PEEK[])")
    assert b"NO [EXPUNGEISSUED]" in done
    assert not [x for x in untagged if b"EXPUNGE" in x and b"ISSUED" not in x]


async def test_recent_goes_to_exactly_one_session(world: ImapWorld, user: str,
                                                  sessions: Sessions) -> None:
    a, b = await sessions(), await sessions()
    await a.select()
    await b.select()
    await deliver(world, user, "r1")
    recents = []
    for s in (a, b):
        lines = await s.ok("NOOP")
        assert b"* 1 EXISTS" in lines
        recents.append(b"* 1 RECENT" in lines)
    assert sorted(recents) == [False, True]
    # A later SELECT elsewhere does not see it as recent either.
    c = await sessions()
    assert b"* 0 RECENT" in await c.select()


async def test_delivery_while_selected_appears_with_next_command(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a = await sessions()
    await a.select()
    await deliver(world, user, "one")
    await deliver(world, user, "two")
    lines = await a.ok("NOOP")
    assert b"* 2 EXISTS" in lines
    assert await a.uid_map() == [1, 2]


async def test_three_sessions_agree_after_random_changes(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    rng = random.Random(7)
    trio = [await sessions() for _ in range(3)]
    await append(trio[0], 12)
    for s in trio:
        await s.select()
    for _ in range(30):
        s = rng.choice(trio)
        n = await s.exists()
        op = rng.random()
        if op < 0.3 and n:
            await s.ok(f"STORE {rng.randint(1, n)} +FLAGS (\\Deleted)")
            await s.ok("EXPUNGE")
        elif op < 0.5:
            await deliver(world, user, f"d{rng.randrange(1000)}")
        elif op < 0.8 and n:
            await s.ok(f"STORE {rng.randint(1, n)}:{n} {rng.choice('+-')}FLAGS (\\Seen $x)")
        else:
            await s.ok("FETCH 1:* (FLAGS)" if n else "NOOP")
    maps = [await s.uid_map() for s in trio]
    assert maps[0] == maps[1] == maps[2]
    def without_recent(line: bytes) -> bytes:  # \Recent is per session by design
        return line.replace(b" \\Recent", b"").replace(b"\\Recent", b"")

    flags = [sorted(without_recent(x) for x in await s.ok("FETCH 1:* (UID FLAGS)") if b"FETCH" in x)
             for s in trio if maps[0]]
    assert all(f == flags[0] for f in flags)


async def test_idle_latency_of_expunge_from_another_session(
    world: ImapWorld, user: str, sessions: Sessions
) -> None:
    a, b = await sessions(), await sessions()
    await append(a, 3)
    await a.select()
    await b.select()
    await a.idle()
    await b.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    start = time.perf_counter()
    b.send(b"x EXPUNGE\r\n")
    line, _ = await a.wait_for(rb"EXPUNGE")
    latency = time.perf_counter() - start
    assert line == b"* 3 EXPUNGE"
    assert latency < 1.0  # generous bound; the real figure is in scripts/bench
    await a.done()


async def test_mail_imported_by_the_cli_beside_a_running_server_is_pushed(
    world: ImapWorld, user: str, sessions: Sessions, tmp_path: Path
) -> None:
    # ``mailstead import`` writes from a process of its own; the server notices the commit
    # (SQLite's data_version) and tells the sessions that have the mailbox selected. Here the
    # server is this process (the CLI finds its store through conftest's config), and the
    # CLI runs from a thread so that the server's loop goes on meanwhile.
    a, b = await sessions(), await sessions()
    await append(a, 1)
    for s in (a, b):
        await s.select()
    await a.idle()
    src = tmp_path / "in.mbox"
    src.write_bytes(b"From a@x.net Thu Nov  5 09:03:01 2026\nSubject: one\n\nbody\n\n"
                    b"From a@x.net Thu Nov  5 09:04:01 2026\nSubject: two\nStatus: RO\n\nbody\n")
    cli = ServerProcess(tmp_path)  # its config and data folder; no server process is started
    res = await asyncio.to_thread(cli.cli, "import", "mbox", str(src), "--user", user,
                                  "--mailbox", "INBOX")
    assert res.stdout.splitlines()[-1] == "imported 2, skipped 0 duplicates, 0 failed"
    assert (await a.wait_for(rb"^\* 3 EXISTS"))[0] == b"* 3 EXISTS"
    await a.done()
    untagged = await b.ok("NOOP")
    assert b"* 3 EXISTS" in untagged
    assert await b.uid_map() == await a.uid_map()
    assert b"\\Seen" in b"".join(await b.ok("FETCH 3 (FLAGS)"))  # Status: RO came along
