"""The process's copy of a mailbox's rows (store/mailbox_rows.py, store/sqlite/view_reads.py):
SELECT copies it instead of listing the mailbox, and it never shows less than the store has
committed: after this process's commits, another process's (a second store on the same
database, as a second worker has), an expunge between the copy and the SELECT, an
eviction, or a UIDVALIDITY change."""

from __future__ import annotations

import dataclasses
import random
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imap_harness import ImapWorld
from mailstead.store.api import ChangeBatch, FlagMode, Mailbox, NewMessage, NotFound
from mailstead.store.hub import ChangeHub
from mailstead.store.mailbox_rows import MailboxRows, RowsDelta, RowsSnapshot
from mailstead.store.sqlite import SqliteStore

MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n"
FLAG_CHOICES = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "$Work"}),
                frozenset({"\\Flagged"})]


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """Two stores on one database: what two worker processes have."""
    one = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    two = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await one.open()
    await two.open()
    yield one, two
    await two.close()
    await one.close()


async def inbox_of(store: SqliteStore, name: str = "bob") -> Mailbox:
    user = await store.get_user(name) or await store.create_user(name, "$argon2id$fake")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    return inbox


def columns(snap: RowsSnapshot) -> list[tuple[int, int, frozenset[str]]]:
    return [(u, m, snap.flag_sets[f])
            for u, m, f in zip(snap.uids, snap.modseqs, snap.flag_of, strict=True)]


async def truth(store: SqliteStore, mailbox_id: int) -> tuple[int, list[tuple[int, int,
                                                                           frozenset[str]]]]:
    """The full listing, read afresh: (highestmodseq, rows)."""
    view = await store.read_view(mailbox_id)
    return view.mailbox.highestmodseq, [(m.uid, m.modseq, m.flags) for m in view.messages]


async def served(store: SqliteStore, mailbox_id: int) -> tuple[int, list[tuple[int, int,
                                                                            frozenset[str]]]]:
    snap = await store.read_rows(mailbox_id)
    return snap.mailbox.highestmodseq, columns(snap)


def listings(store: SqliteStore) -> list[str]:
    """Records the statements that list a mailbox's messages, on every read connection
    the store has now (and the loop's, made now if it had none)."""
    seen: list[str] = []
    store._inline_conn()
    for conn in [*store._all_readers]:
        conn.set_trace_callback(
            lambda sql: seen.append(sql) if "FROM messages" in sql else None)
    return seen


async def random_change(store: SqliteStore, mailbox_id: int, rng: random.Random) -> None:
    uids = [m.uid for m in (await store.read_view(mailbox_id)).messages]
    what = rng.random()
    if what < 0.35 or not uids:
        await store.append(mailbox_id, [NewMessage(MSG, rng.choice(FLAG_CHOICES))
                                        for _ in range(rng.randint(1, 3))])
    elif what < 0.7:
        await store.store_flags(mailbox_id, rng.sample(uids, min(len(uids), 3)),
                                rng.choice(list(FlagMode)), rng.choice(FLAG_CHOICES))
    elif what < 0.85:
        await store.expunge(mailbox_id, rng.sample(uids, 1))
    else:
        await store.copy(mailbox_id, rng.sample(uids, 1), mailbox_id, move=True)


async def test_a_select_after_a_commit_in_either_process_shows_the_store_as_committed(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, two = stores
    inbox = await inbox_of(one)
    await one.append(inbox.id, [NewMessage(MSG, f) for f in FLAG_CHOICES * 5])
    assert await served(one, inbox.id) == await truth(one, inbox.id)
    assert inbox.id in one.row_cache
    rng = random.Random(7)
    for step in range(60):
        for _ in range(rng.randint(1, 3)):  # both may commit before either reads
            writer = one if rng.random() < 0.5 else two
            await random_change(writer, inbox.id, rng)
        # Straight after the commit: no wait for the other process's poll or a hint.
        for reader in (one, two):
            assert await served(reader, inbox.id) == await truth(reader, inbox.id), step
            # STATUS without SIZE counts from the copy; the store's own count agrees.
            counted = await reader.mailbox_status(inbox.id, size=False)
            assert dataclasses.replace(await reader.mailbox_status(inbox.id), size=0) == (
                counted), step


async def test_a_current_copy_is_served_without_listing_the_mailbox(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, _ = stores
    inbox = await inbox_of(one)
    await one.append(inbox.id, [NewMessage(MSG, f) for f in FLAG_CHOICES * 50])
    await one.read_rows(inbox.id)  # the first SELECT lists it and keeps the copy
    seen = listings(one)
    await one.store_flags(inbox.id, [3, 4], FlagMode.ADD, ["\\Deleted"])
    await one.expunge(inbox.id, [3, 4])
    await one.append(inbox.id, [NewMessage(MSG)])
    snap = await one.read_rows(inbox.id)
    assert (snap.mailbox.highestmodseq, columns(snap)) == await truth(one, inbox.id)
    assert [s for s in seen if "internaldate" in s]  # truth()'s listing: the trace works
    assert not [s for s in seen if "uid, modseq, flags FROM" in s]  # none of the copy's
    status = await one.mailbox_status(inbox.id, size=False)
    assert (status.messages, status.unseen, status.recent) == (199, 100, 199)
    assert not [s for s in seen if "COUNT(" in s]  # counted from the copy


async def test_an_expunge_by_another_process_between_copy_and_select_is_caught_up(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, two = stores
    inbox = await inbox_of(one)
    await one.append(inbox.id, [NewMessage(MSG, frozenset({"\\Seen"})) for _ in range(200)])
    before = await one.read_rows(inbox.id)
    assert len(before.uids) == 200
    seen = listings(one)
    await two.expunge(inbox.id, [10, 11, 150])
    await two.store_flags(inbox.id, [12], FlagMode.REPLACE, ["\\Answered"])
    after = await one.read_rows(inbox.id)  # before `one` hears of it in any other way
    assert 10 not in after.uids and 150 not in after.uids and len(after.uids) == 197
    assert (after.mailbox.highestmodseq, columns(after)) == await truth(one, inbox.id)
    # Caught up from the modseq (the changed rows and the expunged UIDs), not listed again.
    copy_reads = [s for s in seen if "uid, modseq, flags FROM" in s]
    assert copy_reads and all("modseq >" in s for s in copy_reads)


async def test_copies_are_evicted_least_recently_used_first_within_their_bound(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, _ = stores
    one.row_cache.max_rows = 250
    boxes = [await inbox_of(one, name) for name in ("ann", "ben", "cat")]
    for i, box in enumerate(boxes):
        await one.append(box.id, [NewMessage(MSG) for _ in range(100 + i)])
    for box in boxes:
        await one.read_rows(box.id)
    assert one.row_cache.rows <= 250
    assert boxes[0].id not in one.row_cache  # the least recently used went first
    assert boxes[1].id in one.row_cache and boxes[2].id in one.row_cache
    await one.read_rows(boxes[1].id)  # now the most recent
    await one.read_rows(boxes[0].id)
    assert boxes[2].id not in one.row_cache and boxes[1].id in one.row_cache
    await one.append(boxes[1].id, [NewMessage(MSG) for _ in range(50)])
    assert one.row_cache.rows <= 250  # a copy growing by our own appends evicts too
    for box in boxes:  # evicted or not, what is served is the store's
        assert await served(one, box.id) == await truth(one, box.id)
    big = await inbox_of(one, "dan")
    await one.append(big.id, [NewMessage(MSG) for _ in range(260)])
    assert await served(one, big.id) == await truth(one, big.id)
    assert big.id not in one.row_cache  # bigger than the bound: served, never kept
    assert one.row_cache.rows <= 250


async def test_a_new_uidvalidity_or_a_deleted_mailbox_drops_the_copy(
        stores: tuple[SqliteStore, SqliteStore], tmp_path: Path) -> None:
    one, two = stores
    inbox = await inbox_of(one)
    await one.append(inbox.id, [NewMessage(MSG) for _ in range(20)])
    await one.read_rows(inbox.id)
    # Another program rewrites the mailbox under a new UIDVALIDITY (a restore, say): the
    # UIDs and modseqs are then another numbering, even where they look alike.
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    with conn:
        conn.execute("UPDATE mailboxes SET uidvalidity = uidvalidity + 1 WHERE id = ?",
                     (inbox.id,))
        conn.execute("UPDATE messages SET flags = '\\Seen' WHERE mailbox_id = ?", (inbox.id,))
    conn.close()
    snap = await one.read_rows(inbox.id)
    assert snap.mailbox.uidvalidity == inbox.uidvalidity + 1
    assert set(columns(snap)) == set((await truth(one, inbox.id))[1])
    assert all(f == frozenset({"\\Seen"}) for _, _, f in columns(snap))

    user = await one.get_user("bob")
    assert user is not None
    box = await one.create_mailbox(user.id, "Old")
    await one.append(box.id, [NewMessage(MSG)])
    await one.read_rows(box.id)
    await two.delete_mailbox(user.id, "Old")  # by the other process
    with pytest.raises(NotFound):
        await one.read_rows(box.id)
    assert box.id not in one.row_cache
    box = await one.create_mailbox(user.id, "Old")
    await one.append(box.id, [NewMessage(MSG)])
    await one.read_rows(box.id)
    await one.delete_mailbox(user.id, "Old")  # by this one: dropped at commit
    assert box.id not in one.row_cache


async def test_recent_is_claimed_once_across_processes_with_copies(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, two = stores
    inbox = await inbox_of(one)
    await one.append(inbox.id, [NewMessage(MSG) for _ in range(5)])
    await one.read_rows(inbox.id)
    await two.read_rows(inbox.id)  # both have copies
    first = await one.open_rows(inbox.id, claim_recent=True)
    second = await two.open_rows(inbox.id, claim_recent=True)
    await two.append(inbox.id, [NewMessage(MSG) for _ in range(3)])
    third = await one.open_rows(inbox.id, claim_recent=True)
    examined = await two.open_rows(inbox.id, claim_recent=False)

    def recent(snap: RowsSnapshot) -> list[int]:
        return [u for u in snap.uids if u >= snap.first_recent_uid]

    assert recent(first) == [1, 2, 3, 4, 5]
    assert recent(second) == []
    assert recent(third) == [6, 7, 8]
    assert recent(examined) == []


def test_a_copy_applies_only_the_next_commit_and_catches_up_from_a_read() -> None:
    from mailstead.store.api import Appended, Expunged, FlagsChanged

    box = Mailbox(1, 1, "INBOX", 7, 4, 10, None)
    seen, none = frozenset({"\\Seen"}), frozenset[str]()
    rows = MailboxRows(box, [1, 2, 3], [3, 5, 10], ["", "\\Seen", ""], lambda t: (
        frozenset(str(t).split())))
    # Modseq 12 skips 11 (another process's): the copy stays exact where it was.
    assert rows.apply([ChangeBatch(1, (FlagsChanged(1, 12, seen),))])
    assert rows.highestmodseq == 10 and rows.snapshot(box, 1).flag_sets[rows.flag_of[0]] == none
    assert rows.apply([ChangeBatch(1, (Appended(4, 11, none),))])
    assert rows.highestmodseq == 11 and list(rows.uids) == [1, 2, 3, 4]
    # A read from 10 that saw 11 and 12 (and an expunge at 13): merged over 11.
    read = Mailbox(1, 1, "INBOX", 7, 5, 13, None)
    rows.merge(RowsDelta(10, read, [(1, 12, seen), (4, 11, none)], [2]))
    assert rows.highestmodseq == 13 and rows.uidnext == 5
    snap = rows.snapshot(read, 1)
    assert columns(snap) == [(1, 12, seen), (3, 10, none), (4, 11, none)]
    assert snap.used_flag_sets == [none, seen]
    # Our own commit 13 arrives after the read brought it: skipped; 14 applies.
    assert rows.apply([ChangeBatch(1, (Expunged(2, 13),)),
                       ChangeBatch(1, (FlagsChanged(3, 14, seen),))])
    assert rows.highestmodseq == 14 and rows.count_without("\\Seen") == 1


# --- through IMAP, in process (the world fixture) ------------------------------------------
async def test_a_select_in_one_session_sees_what_another_session_just_committed(
        world: ImapWorld) -> None:

    user = await world.add_user()
    await world.seed(user, [MSG] * 30)
    a = await world.login(user, select="INBOX")  # makes the copy, claims \Recent of all
    b = await world.login(user)

    async def seen_by_b() -> tuple[int, list[tuple[int, bytes]], int]:
        reply = await b.cmd("SELECT INBOX")
        assert reply.ok, reply
        [exists] = [int(u.split()[1]) for u in reply.untagged if u.endswith(b" EXISTS")]
        [recent] = [int(u.split()[1]) for u in reply.untagged if u.endswith(b" RECENT")]
        fetched = await b.cmd("UID FETCH 1:* (FLAGS)")
        rows = [(int(m[1]), m[2]) for u in fetched.untagged
                if (m := re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", u))]
        return exists, rows, recent

    assert (await a.cmd("UID STORE 5 +FLAGS (\\Seen $Work)")).ok
    exists, rows, recent = await seen_by_b()
    assert exists == 30 and (5, b"$Work \\Seen") in rows and recent == 0
    assert (await a.cmd("UID STORE 6:7 +FLAGS (\\Deleted)")).ok
    assert (await a.cmd("EXPUNGE")).ok
    await world.deliver(user, MSG)  # UID 31, by delivery: recent for the first SELECT
    exists, rows, recent = await seen_by_b()
    assert exists == 29 and [u for u, _ in rows] == [*range(1, 6), *range(8, 32)]
    assert recent == 1  # b's SELECT claimed it (a's view learns of it as not recent)
    assert (await b.cmd("UID STORE 31 FLAGS (\\Answered)")).ok
    reply = await a.cmd("SELECT INBOX")
    assert b"* 29 EXISTS" in reply.untagged and b"* 0 RECENT" in reply.untagged
    fetched = await a.cmd("UID FETCH 31 (FLAGS)")
    assert any(b"FLAGS (\\Answered)" in u for u in fetched.untagged), fetched


async def test_the_pop3_listing_reads_uid_size_and_seen_as_the_full_listing_has_them(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    one, _ = stores
    inbox = await inbox_of(one)
    kinds = [frozenset({"\\Seen"}), frozenset({"$Seen"}), frozenset(),
             frozenset({"\\Seen", "$x"}), frozenset({"\\Answered"})]
    await one.append(inbox.id, [NewMessage(MSG + b"x" * i, f) for i, f in enumerate(kinds)])
    listed = [(m.uid, m.size, "\\Seen" in m.flags) for m in await one.list_messages(inbox.id)]
    assert [(u, s, bool(seen)) for u, s, seen in await one.list_maildrop(inbox.id)] == listed
    assert [seen for _, _, seen in listed] == [True, False, False, True, False]
