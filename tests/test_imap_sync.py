"""What a session says about its selected mailbox while others change it (issue 11).

One test per defect of the issue, each on the in-process harness with the real store:
EXISTS skipped when one update both appends and expunges (1), FETCH or EXPUNGE for a
message before its EXISTS (2), \\Recent in two sessions (3), \\Recent lost on a recreated
mailbox (4), EXAMINE without RECENT (5), new keywords shown before FLAGS lists them and
NIL taken as a keyword (6). Every reply is also read by ``ClientModel``, which checks the
numbers as a client keeping a count would.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from imap_harness import ImapWorld, MemoryIMAP, open_world
from imap_wire import Reply

SYSTEM = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"


def msg(n: int) -> bytes:
    return b"From: a@example.net\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n)


class ClientModel:
    """The message count a client learns from untagged lines, and the checks it can make."""

    _LINE = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE|FETCH|RECENT)\b")

    def __init__(self, count: int) -> None:
        self.count = count

    def read(self, reply: Reply) -> Reply:
        for line in reply.untagged:
            m = self._LINE.match(line)
            if m is None:
                continue
            n, kind = int(m[1]), m[2]
            if kind == b"EXISTS":
                assert n >= self.count, (line, self.count)
                self.count = n
            elif kind == b"EXPUNGE":
                assert 1 <= n <= self.count, (line, self.count)
                self.count -= 1
            else:
                assert 0 <= n <= self.count and (kind == b"RECENT" or n >= 1), (line, self.count)
        return reply


def without_recent(reply: Reply) -> list[bytes]:
    return [line for line in reply.untagged if not line.endswith(b" RECENT")]


async def uids_of(c: MemoryIMAP) -> list[int]:
    reply = await c.cmd("FETCH 1:* (UID)")
    assert reply.ok, reply
    return [int(m[1]) for line in reply.untagged if (m := re.search(rb"UID (\d+)", line))]


async def flags_of(c: MemoryIMAP, uid: int) -> set[bytes]:
    reply = await c.cmd(f"UID FETCH {uid} (FLAGS)")
    assert reply.ok, reply
    [line] = [x for x in reply.untagged if b"FETCH (" in x and b"UID %d" % uid in x]
    found = re.search(rb"FLAGS \(([^)]*)\)", line)
    assert found is not None, line
    return set(found[1].split())


# --- defect 1: EXISTS after EXPUNGE in the same update -------------------------------------
async def test_move_within_the_selected_mailbox_expunges_then_announces(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1), msg(2)])
    a = await world.login(user, select="INBOX")
    uv = (await world.mailbox(user)).uidvalidity
    reply = ClientModel(2).read(await a.cmd("MOVE 1 INBOX"))
    assert reply.ok, reply
    # RFC 6851 §3.3: the source message goes, the moved copy comes, in that order.
    assert reply.untagged == [b"* OK [COPYUID %d 1 3] Moved" % uv, b"* 1 EXPUNGE",
                              b"* 2 EXISTS"]
    assert await uids_of(a) == [2, 3]


async def test_append_and_expunge_seen_at_once_leave_the_right_count(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1), msg(2)])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    await world.deliver(user, msg(3))
    assert (await b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")).ok
    assert (await b.cmd("EXPUNGE")).ok
    reply = ClientModel(2).read(await a.cmd("NOOP"))
    assert without_recent(reply) == [b"* 1 EXPUNGE", b"* 2 EXISTS"]
    assert await uids_of(a) == await uids_of(b) == [2, 3]


# --- defect 2: nothing about a message before its EXISTS -----------------------------------
async def test_a_new_message_is_announced_before_its_flags(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1)])
    a = await world.login(user, select="INBOX")
    await world.deliver(user, msg(2))
    b = await world.login(user, select="INBOX")  # takes the new message's \Recent
    assert (await b.cmd("UID STORE 2 +FLAGS (\\Deleted)")).ok
    reply = ClientModel(1).read(await a.cmd("NOOP"))
    assert reply.untagged == [b"* 2 EXISTS", b"* 2 FETCH (FLAGS (\\Deleted))"]


async def test_a_message_appended_and_expunged_unseen_is_never_mentioned(
    world: ImapWorld,
) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1)])
    a = await world.login(user, select="INBOX")
    await world.deliver(user, msg(2))
    b = await world.login(user, select="INBOX")
    assert (await b.cmd("UID STORE 2 +FLAGS.SILENT (\\Deleted)")).ok
    assert (await b.cmd("UID EXPUNGE 2")).ok
    reply = ClientModel(1).read(await a.cmd("NOOP"))
    assert reply.untagged == []
    assert await uids_of(a) == [1]


# --- defect 3: \Recent in exactly one session ----------------------------------------------
async def test_recent_is_claimed_once_across_processes(world: ImapWorld, tmp_path: Path) -> None:
    """Two server processes on one database: the claim is the database's, not memory's."""
    user = await world.add_user()
    other = await open_world(tmp_path)  # the same database file, its own writer and hub
    try:
        a = await world.login(user, select="INBOX")
        c = await other.login(user, select="INBOX")
        reply = await c.cmd_literal("APPEND INBOX", msg(1), plus=True)
        assert reply.ok and b"* 1 RECENT" in reply.untagged, reply  # c takes \Recent
        for _ in range(200):  # a hears of it when its process notices the other's commit
            reply = ClientModel(0).read(await a.cmd("NOOP"))
            if b"* 1 EXISTS" in reply.untagged:
                break
            await asyncio.sleep(0.025)
        assert reply.untagged == [b"* 1 EXISTS"], reply
        assert await flags_of(a, 1) == set()
        assert await flags_of(c, 1) == {b"\\Recent"}
        status = await (await world.login(user)).cmd("STATUS INBOX (RECENT)")
        assert status.untagged == [b'* STATUS "INBOX" (RECENT 0)']
    finally:
        await other.close()
        await other.store.close()


async def test_recent_goes_to_one_session_when_select_meets_a_delivery(
    world: ImapWorld,
) -> None:
    """A is selected, a message arrives while C selects: one of them has it as recent."""
    user = await world.add_user()
    a = await world.login(user, select="INBOX")
    c = await world.login(user)
    for n in range(1, 26):
        tag = c.next_tag()
        c.send(tag + b" SELECT INBOX\r\n")
        [uid] = await world.deliver(user, msg(n))
        assert (await c.collect(tag)).ok
        await asyncio.gather(a.cmd("NOOP"), c.cmd("NOOP"))
        holders = [s for s in (a, c) if b"\\Recent" in await flags_of(s, uid)]
        assert len(holders) == 1, (n, uid)
        status = await (await world.login(user)).cmd("STATUS INBOX (RECENT)")
        assert status.untagged == [b'* STATUS "INBOX" (RECENT 0)'], n
        assert (await c.cmd("UNSELECT")).ok


# --- defect 4 (\Recent part): a recreated mailbox starts afresh ----------------------------
async def test_a_recreated_mailbox_gets_recent_and_a_new_uidvalidity(world: ImapWorld) -> None:
    user = await world.add_user()
    a = await world.login(user)
    assert (await a.cmd("CREATE Box")).ok
    assert (await a.cmd("SELECT Box")).ok
    await world.deliver(user, msg(1), mailbox="Box")
    assert b"* 1 RECENT" in (await a.cmd("NOOP")).untagged
    first = (await world.mailbox(user, "Box")).uidvalidity
    assert (await a.cmd("UNSELECT")).ok
    assert (await a.cmd("DELETE Box")).ok
    assert (await a.cmd("CREATE Box")).ok
    assert (await world.mailbox(user, "Box")).uidvalidity > first
    assert (await a.cmd("SELECT Box")).ok
    await world.deliver(user, msg(2), mailbox="Box")
    reply = ClientModel(0).read(await a.cmd("NOOP"))
    assert reply.untagged == [b"* 1 EXISTS", b"* 1 RECENT"]
    status = await (await world.login(user)).cmd("STATUS Box (MESSAGES RECENT)")
    assert status.untagged == [b'* STATUS "Box" (MESSAGES 1 RECENT 0)']


# --- defect 5: EXAMINE reports \Recent and leaves it ----------------------------------------
async def test_examine_reports_recent_without_taking_it(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1), msg(2)])
    a = await world.login(user)
    reply = await a.cmd("EXAMINE INBOX")
    assert reply.ok and b"* 2 RECENT" in reply.untagged, reply
    assert await flags_of(a, 1) == {b"\\Recent"}
    b = await world.login(user)
    assert (await b.cmd("STATUS INBOX (RECENT)")).untagged == [
        b'* STATUS "INBOX" (RECENT 2)']
    assert b"* 2 RECENT" in (await b.cmd("SELECT INBOX")).untagged
    assert (await a.cmd("STATUS INBOX (RECENT)")).untagged == [
        b'* STATUS "INBOX" (RECENT 0)']
    assert b"* 0 RECENT" in (await a.cmd("EXAMINE INBOX")).untagged


# --- defect 6: keywords announced before use; NIL refused ----------------------------------
async def test_a_new_keyword_is_announced_before_any_fetch_shows_it(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1)])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    flags = b"* FLAGS (" + SYSTEM + b" $Label1)"
    permanent = b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 \\*)] Flags permitted"
    reply = await a.cmd("STORE 1 +FLAGS ($Label1)")
    assert reply.untagged == [flags, permanent, b"* 1 FETCH (FLAGS ($Label1 \\Recent))"]
    reply = await b.cmd("NOOP")
    assert reply.untagged == [flags, permanent, b"* 1 FETCH (FLAGS ($Label1))"]
    # Announced once: removing and adding it again says nothing more about FLAGS.
    assert (await a.cmd("STORE 1 -FLAGS ($Label1)")).untagged == [
        b"* 1 FETCH (FLAGS (\\Recent))"]
    # A message appended with a keyword new to the session: FLAGS before EXISTS.
    reply = ClientModel(1).read(await b.cmd_literal("APPEND INBOX ($New)", msg(2), plus=True))
    assert reply.untagged[:2] == [
        b"* FLAGS (" + SYSTEM + b" $Label1 $New)",
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 $New \\*)] Flags permitted"]
    assert b"* 2 EXISTS" in reply.untagged[2:]
    assert (await a.cmd("NOOP")).untagged == [
        b"* FLAGS (" + SYSTEM + b" $Label1 $New)",
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 $New \\*)] Flags permitted",
        b"* 2 EXISTS"]


async def test_nil_is_refused_as_a_keyword(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [msg(1)])
    a = await world.login(user, select="INBOX")
    for command in ("STORE 1 +FLAGS (NIL)", "STORE 1 FLAGS (\\Seen nil)",
                    "UID STORE 1 +FLAGS.SILENT (Nil)"):
        reply = await a.cmd(command)
        assert reply.status == b"NO" and b"[CANNOT]" in reply.tagged, (command, reply)
    reply = await a.cmd_literal("APPEND INBOX (NIL)", msg(2), plus=True)
    assert reply.status == b"NO" and b"[CANNOT]" in reply.tagged, reply
    assert await flags_of(a, 1) == {b"\\Recent"}
    assert await uids_of(a) == [1]


async def test_a_silent_store_does_not_hide_another_sessions_change(world: ImapWorld) -> None:
    """Found by the model test: B's .SILENT STORE commits on top of A's change that B had
    not heard of yet; B must still be told the flags A set."""
    user = await world.add_user()
    await world.seed(user, [msg(1), msg(2)])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    assert (await a.cmd("STORE 1:2 +FLAGS ($Later)")).ok
    reply = await b.cmd("STORE 2 +FLAGS.SILENT (\\Seen)")
    assert reply.ok, reply
    assert reply.untagged[0] == b"* FLAGS (" + SYSTEM + b" $Later)", reply
    assert sorted(reply.untagged[2:]) == [b"* 1 FETCH (FLAGS ($Later))",
                                          b"* 2 FETCH (FLAGS ($Later \\Seen))"], reply


async def test_a_silent_store_hears_a_later_change_after_it_completes(
    world: ImapWorld,
) -> None:
    """Found by the model test: A replaces B's message flags while B's .SILENT STORE
    runs; B hears of A's change only after its STORE completed."""
    user = await world.add_user()
    await world.seed(user, [msg(1)])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    tag = b.next_tag()
    b.send(tag + b" STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
    assert (await a.cmd("STORE 1 FLAGS (\\Draft)")).ok
    assert (await b.collect(tag)).untagged == []
    assert (await b.cmd("NOOP")).untagged == [b"* 1 FETCH (FLAGS (\\Draft))"]


async def test_uid_expunge_spares_a_message_whose_deleted_flag_was_just_cleared(
    world: ImapWorld,
) -> None:
    """Found by the model test: B's view still shows \\Deleted that A has cleared; B's UID
    EXPUNGE must go by the store's flags (RFC 4315 §2.1), never lose the message."""
    user = await world.add_user()
    await world.seed(user, [msg(1), msg(2)])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    assert (await a.cmd("STORE 1:2 +FLAGS.SILENT (\\Deleted)")).ok
    assert (await b.cmd("NOOP")).ok  # B learns both are \Deleted
    assert (await a.cmd("STORE 2 -FLAGS.SILENT (\\Deleted)")).ok
    reply = ClientModel(2).read(await b.cmd("UID EXPUNGE 1:2"))
    assert reply.ok and reply.untagged == [b"* 1 EXPUNGE", b"* 1 FETCH (FLAGS ())"], reply
    assert b"* 1 EXPUNGE" in (await a.cmd("NOOP")).untagged
    assert await uids_of(b) == await uids_of(a) == [2]
