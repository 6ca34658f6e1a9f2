"""Issue 12's IMAP fixes through the in-process harness (real session, real SQLite store).

LIST limits and adversarial patterns, FETCH (repeats answered once, big messages streamed
exactly, NUL octets only in BINARY's literal8), SEARCH with a huge UID set, the per-user
bound on expensive commands, a 0-octet APPEND, CREATE of missing parents.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from imap_harness import ImapWorld, open_world
from imap_wire import literals
from mailstead.imap.handlers.fetch import MAX_FETCH_ITEMS
from mailstead.imap.handlers.fetch_items import INLINE_BODY

MSG = b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def message(subject: str, body: bytes) -> bytes:
    return (b"From: a@example.net\r\nTo: b@example.org\r\nSubject: " + subject.encode()
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)


# --- LIST ---------------------------------------------------------------------------------------
async def test_list_refuses_absurd_patterns_clearly(world: ImapWorld) -> None:
    c = await world.login(await world.add_user())
    reply = await c.cmd('LIST "" "' + "%" * 1000 + '"')
    assert reply.tagged.startswith(reply.tag + b" NO [LIMIT]"), reply
    reply = await c.cmd('LIST "" (' + " ".join(f'"p{i}"' for i in range(40)) + ")")
    assert reply.tagged.startswith(reply.tag + b" NO [LIMIT]"), reply
    assert (await c.cmd("NOOP")).ok  # the session goes on


async def test_list_answers_the_redos_patterns(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    assert (await c.cmd('CREATE "' + "a" * 80 + '"')).ok
    reply = await c.cmd('LIST "" "' + "%" * 40 + 'Q"')
    assert reply.ok and reply.untagged == [], reply
    reply = await c.cmd('LIST "" "*a*a*a*a*a*a*b"')
    assert reply.ok and reply.untagged == [], reply
    reply = await c.cmd('LIST "" "*a*a*a*a*a*a*"')
    assert reply.ok and any(b"a" * 80 in line for line in reply.untagged), reply
    reply = await c.cmd('LSUB "" "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%Q"')
    assert reply.ok and reply.untagged == [], reply


# --- CREATE, APPEND ---------------------------------------------------------------------------
async def test_create_makes_the_missing_parents(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    assert (await c.cmd('CREATE "a/b/c"')).ok
    reply = await c.cmd('LIST "" "a*"')
    listed = {line.rsplit(b" ", 1)[1].strip(b'"'): line for line in reply.untagged}
    assert set(listed) == {b"a", b"a/b", b"a/b/c"}, reply
    assert not any(b"\\Noselect" in line or b"\\NonExistent" in line
                   for line in listed.values()), reply
    assert (await c.cmd('SELECT "a/b"')).ok
    assert (await c.cmd('CREATE "a/b/d"')).ok  # existing parents are fine
    assert (await c.cmd('CREATE "a/b/c"')).tagged.split()[1] == b"NO"


async def test_a_refused_name_creates_no_parent(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    reply = await c.cmd('CREATE "x/y/../z"')
    assert reply.tagged.split()[1] == b"NO", reply
    assert (await c.cmd('LIST "" "x*"')).untagged == []


async def test_an_empty_append_is_refused_and_stores_nothing(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user, select="INBOX")
    reply = await c.cmd_literal("APPEND INBOX", b"")
    assert reply.tagged.split()[1] == b"NO", reply
    reply = await c.cmd_literal("APPEND INBOX", b"", plus=True)
    assert reply.tagged.split()[1] == b"NO", reply
    # MULTIAPPEND: one empty message refuses the whole command.
    c.send(b"m1 APPEND INBOX {%d+}\r\n%s {0+}\r\n\r\n" % (len(MSG), MSG))
    reply = await c.collect(b"m1")
    assert reply.tagged.split()[1] == b"NO", reply
    status = await c.cmd("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 0" in status.untagged[0], status
    assert await world.store.list_messages((await world.mailbox(user)).id) == []


# --- FETCH ------------------------------------------------------------------------------------
async def test_repeated_items_are_answered_once(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [MSG])
    c = await world.login(user, select="INBOX")
    reply = await c.cmd("FETCH 1 (RFC822 " + "RFC822 " * 50 + "BODY.PEEK[] BODY[] FLAGS FLAGS)")
    assert reply.ok, reply
    (line,) = [u for u in reply.untagged if b" FETCH " in u]
    assert line.count(b"RFC822 {") == 1 and line.count(b"BODY[] {") == 1, line
    assert line.count(b"FLAGS (") == 1
    assert b"\\Seen" in line  # BODY[] (not .PEEK) still sets \Seen


async def test_too_many_distinct_items_are_refused(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [MSG])
    c = await world.login(user, select="INBOX")
    items = " ".join(f"BODY.PEEK[]<{i}.10>" for i in range(MAX_FETCH_ITEMS + 1))
    reply = await c.cmd(f"FETCH 1 ({items})")
    assert reply.tagged.startswith(reply.tag + b" NO [LIMIT]"), reply.tagged
    items = " ".join(f"BODY.PEEK[]<{i}.10>" for i in range(MAX_FETCH_ITEMS))
    assert (await c.cmd(f"FETCH 1 ({items})")).ok


def big_multipart(size: int) -> bytes:
    part = bytes(range(32, 127)) * (size // 95 + 1)
    lines = b"\r\n".join(part[i : i + 76] for i in range(0, size, 76))
    return (b"From: a@example.net\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
            b"Content-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + lines + b"\r\n--XX--\r\n")


async def test_big_messages_are_streamed_exactly(world: ImapWorld) -> None:
    user = await world.add_user()
    big = big_multipart(3 * INLINE_BODY)
    assert len(big) > 2 * INLINE_BODY
    await world.seed(user, [MSG, big, MSG])
    c = await world.login(user, select="INBOX")
    reply = await c.cmd("FETCH 1:3 (BODY.PEEK[] BODY.PEEK[]<300000.400000> RFC822.SIZE)")
    assert reply.ok, reply
    fetched = [literals(u) for u in reply.untagged if b" FETCH " in u]
    assert fetched[0] == [MSG, MSG[300000:700000]]
    assert fetched[1] == [big, big[300000:700000]]
    assert fetched[2] == [MSG, b""]
    body = big[big.index(b"octet-stream\r\n\r\n") + 16 : big.rindex(b"\r\n--XX--")]
    reply = await c.cmd("FETCH 2 (BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[1] BINARY.SIZE[2])")
    got = literals(reply.untagged[0])
    assert got[0] == body and got[1].startswith(b"Content-Type: application/octet-stream")
    assert got[2] == b"first part"
    assert re.search(rb"BINARY\.SIZE\[2\] %d" % len(body), reply.untagged[0])


async def test_nul_octets_are_sent_only_in_binary_literal8(world: ImapWorld) -> None:
    user = await world.add_user()
    raw = message("nul\0here", b"a\0b\0c\r\n")
    await world.seed(user, [raw])
    c = await world.login(user, select="INBOX")
    reply = await c.cmd("FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT] ENVELOPE RFC822.SIZE)")
    line = reply.untagged[0]
    assert b"\0" not in line, line
    body, text = literals(line)[:2]
    assert body == raw.replace(b"\0", b"\x80") and len(body) == len(raw)
    assert text == b"a\x80b\x80c\r\n"
    assert b"RFC822.SIZE %d" % len(raw) in line
    reply = await c.cmd("FETCH 1 (BINARY.PEEK[1])")
    line = reply.untagged[0]
    assert b"BINARY[1] ~{7}\r\na\0b\0c\r\n" in line, line


async def test_a_message_expunged_mid_literal_closes_the_connection(world: ImapWorld) -> None:
    user = await world.add_user()
    big = big_multipart(4 * INLINE_BODY)
    await world.seed(user, [big])
    c = await world.login(user, select="INBOX")
    other = await world.login(user, select="INBOX")
    # Take the message away between the listing and the reading of its octets.
    store = world.store
    real = store.read_range
    calls = 0

    async def vanish_after_first(mailbox_id: int, uid: int, offset: int, length: int
                                 ) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            assert (await other.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")).ok
            assert (await other.cmd("EXPUNGE")).ok
        return await real(mailbox_id, uid, offset, length)

    store.read_range = vanish_after_first  # type: ignore[method-assign]
    try:
        c.send(b"v1 FETCH 1 BODY.PEEK[]\r\n")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if c.closed_by_server:
                break
        assert c.closed_by_server
    finally:
        store.read_range = real  # type: ignore[method-assign]


# --- SEARCH and the per-user bound ------------------------------------------------------------
async def test_search_with_a_huge_uid_set(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [MSG] * 300)
    c = await world.login(user, select="INBOX")
    uid_set = ",".join(str(n) for n in range(1, 12000, 2))
    reply = await c.cmd(f"UID SEARCH UID {uid_set}")
    assert reply.untagged == [b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 301, 2))]
    reply = await c.cmd(f"SEARCH NOT UID {uid_set} TEXT body")
    assert reply.untagged == [b"* SEARCH " + b" ".join(b"%d" % n for n in range(2, 301, 2))]


async def test_a_users_expensive_commands_take_turns(tmp_path: Path) -> None:
    world = await open_world(tmp_path, {"limits": {"max_expensive_commands_per_user": 1}})
    try:
        alice, bob = await world.add_user("alice"), await world.add_user("bob")
        await world.seed(alice, [message("x", b"needle\r\n")])
        await world.seed(bob, [message("x", b"needle\r\n")])
        a1 = await world.login(alice, select="INBOX")
        a2 = await world.login(alice, select="INBOX")
        a3 = await world.login(alice, select="INBOX")
        b1 = await world.login(bob, select="INBOX")
        work = world.ctx.imap_expensive
        alice_id = (await world.user(alice)).id
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with work.slot(alice_id):
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        a1.send(b"s1 SEARCH BODY needle\r\n")
        a2.send(b"s2 FETCH 1 BODY.PEEK[]\r\n")
        await a1.settle()
        await a2.settle()
        assert b"s1 " not in await a1.pending()  # waits for alice's slot
        assert b"s2 " not in await a2.pending()
        assert (await a3.cmd("SEARCH UNSEEN")).ok  # cheap commands do not wait
        assert (await b1.cmd("SEARCH BODY needle")).untagged == [b"* SEARCH 1"]  # nor bob
        release.set()
        await holder
        assert (await a1.collect(b"s1")).untagged == [b"* SEARCH 1"]
        assert (await a2.collect(b"s2")).ok
        assert work.busy(alice_id) == 0
    finally:
        await world.close()
        await world.store.close()
