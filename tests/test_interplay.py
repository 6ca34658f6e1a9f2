"""IMAP and POP3 on one store: every POP3 change reaches IMAP at once, and both agree.

POP3 QUIT's deletions arrive as EXPUNGE in an idling IMAP session within milliseconds,
RETR's \\Seen as FETCH (FLAGS), UIDL and IMAP UID name the same message, LIST sizes are
IMAP's RFC822.SIZE, RETR is BODY[], and the POP3 lock never blocks IMAP. In process: IMAP
and POP3 sessions on one server context (store, hub, locks), with poplib's vocabulary
(``pop3_harness``); the same path through the daemon's listeners is in ``test_imap_socket``.
"""

from __future__ import annotations

import asyncio
import poplib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imap_harness import ImapWorld, running_world
from memory_session import MemorySession
from pop3_harness import MemoryPOP3


async def deliver(world: ImapWorld, user: str, n: int) -> None:
    """Deliver as SMTP does (the store's delivery call), one message at a time."""
    for i in range(n):
        body = f"Subject: m{i}\r\n\r\n.dot line {i}\r\nbody {i}\r\n".encode()
        await world.deliver(user, body)


async def pop3(world: ImapWorld, user: str) -> MemoryPOP3:
    p = await world.pop3()
    await p.user(user)
    await p.pass_("secret")
    return p


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ImapWorld]:
    async with running_world(tmp_path) as w:
        yield w


@pytest.fixture
async def user(world: ImapWorld) -> str:
    return await world.add_user()


@pytest.fixture
async def imap(world: ImapWorld, user: str) -> AsyncIterator[MemorySession]:
    s = await MemorySession.open(world, user)
    yield s
    await s.close()


async def uid_fetch(s: MemorySession, items: str) -> dict[int, bytes]:
    out = {}
    for line in await s.ok(f"UID FETCH 1:* ({items})"):
        m = re.match(rb"\* \d+ FETCH \(.*?UID (\d+)", line, re.S)
        if m:
            out[int(m.group(1))] = line
    return out


async def test_pop3_quit_expunges_in_idle_imap_within_milliseconds(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 4)
    await imap.select()
    await imap.idle()
    p = await pop3(world, user)
    await p.dele(1)
    await p.dele(3)
    start = time.perf_counter()
    await p.quit()
    first, _ = await imap.wait_for(rb"EXPUNGE")
    latency = time.perf_counter() - start
    second, _ = await imap.wait_for(rb"EXPUNGE")
    assert (first, second) == (b"* 3 EXPUNGE", b"* 1 EXPUNGE")
    assert latency < 0.5  # generous: measured in milliseconds, see the closing note
    await imap.done()
    assert await imap.uid_map() == [2, 4]


async def test_pop3_retr_sets_seen_visible_to_idle_imap_and_top_does_not(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 2)
    await imap.select()
    await imap.idle()
    p = await pop3(world, user)
    await p.top(2, 0)
    await p.retr(1)
    line, latency = await imap.wait_for(rb"FETCH")
    assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\\Seen( \\Recent)?\)\)", line), line
    assert latency < 2.0
    await p.quit()
    await imap.done()
    flags = await uid_fetch(imap, "FLAGS")
    assert b"\\Seen" not in flags[2]


async def test_uidl_and_imap_uid_name_the_same_message_with_the_same_bytes(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 3)
    select = await imap.select()
    uidvalidity = int(next(re.search(rb"UIDVALIDITY (\d+)", x).group(1)
                           for x in select if b"UIDVALIDITY" in x))
    # A message removed over IMAP first, so numbers and UIDs differ.
    await imap.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await imap.ok("EXPUNGE")
    p = await pop3(world, user)
    _, listing, _ = await p.uidl()
    _, sizes, _ = await p.list()
    bodies = await uid_fetch(imap, "RFC822.SIZE BODY.PEEK[]")
    for entry, size_entry in zip(listing, sizes, strict=True):
        number, uidl = entry.split()
        assert size_entry.split()[0] == number
        validity, _, uid = uidl.decode().partition(".")
        assert int(validity) == uidvalidity
        imap_line = bodies[int(uid)]
        literal = imap_line[imap_line.index(b"}\r\n") + 3 : imap_line.rindex(b")")]
        _, lines, _octets = await p.retr(int(number))
        retr = b"\r\n".join(lines) + b"\r\n"
        assert retr == literal  # poplib removed the dot-stuffing; bytes are equal
        assert int(size_entry.split()[1]) == len(literal)
        assert f"RFC822.SIZE {len(literal)}".encode() in imap_line
    await p.quit()


async def test_pop3_lock_does_not_block_imap_and_second_pop3_gets_in_use(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 1)
    p = await pop3(world, user)
    second = await world.pop3()
    await second.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        await second.pass_("secret")
    second.close()
    await imap.select()
    await imap.ok("STORE 1 +FLAGS (\\Flagged)")
    assert (await imap.ok("FETCH 1 (FLAGS)"))[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged")
    await p.quit()


async def test_imap_expunge_during_pop3_session(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 3)
    p = await pop3(world, user)
    await imap.select()
    await imap.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await imap.ok("EXPUNGE")
    with pytest.raises(poplib.error_proto, match="no longer exists"):
        await p.retr(2)
    await p.dele(3)
    await p.quit()
    await imap.ok("NOOP")
    assert await imap.uid_map() == [1]


async def test_dropped_pop3_connection_deletes_nothing_imap_sees_all(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 2)
    p = await pop3(world, user)
    await p.dele(1)
    p.close()  # drop the connection without QUIT
    await asyncio.sleep(0.2)
    await imap.select()
    assert await imap.uid_map() == [1, 2]
    # The lock was released with the connection.
    await (await pop3(world, user)).quit()


async def test_message_read_ahead_then_expunged_over_imap_is_not_served(
    world: ImapWorld, user: str, imap: MemorySession
) -> None:
    await deliver(world, user, 4)
    p = await pop3(world, user)
    await p.retr(1)  # the server reads 2..4 ahead in the background
    await asyncio.sleep(0.2)
    await imap.select()
    await imap.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    await imap.ok("EXPUNGE")
    await p.retr(2)
    with pytest.raises(poplib.error_proto, match="no longer exists"):
        await p.retr(3)
    await p.retr(4)
    await p.quit()
