"""The SQLite store and ChangeHub, in-process against a real database in a temp folder."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailstead.mime.parse import ParsedMessage, parse_message
from mailstead.store.api import (
    AlreadyExists,
    Appended,
    ChangeBatch,
    Expunged,
    FlagMode,
    FlagsChanged,
    InvalidName,
    MailboxGone,
    NewMessage,
    NotFound,
    StorageFull,
)
from mailstead.store.hub import ChangeHub
from mailstead.store.reads_api import Octets
from mailstead.store.sqlite import SqliteStore

MSG = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.org>\r\n\r\nHello Bob\r\n"
)


@pytest.fixture
async def store(tmp_path: Path):
    st = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())
    await st.open()
    yield st
    await st.close()


async def inbox_of(store: SqliteStore, name: str = "bob"):
    user = await store.create_user(name, "$argon2id$fake")
    mbox = await store.get_mailbox(user.id, "INBOX")
    assert mbox is not None
    return user, mbox


async def test_new_user_gets_special_use_mailboxes_subscribed(store: SqliteStore) -> None:
    user = await store.create_user("Bob", "hash")
    boxes = {m.name: m.special_use for m in await store.list_mailboxes(user.id)}
    assert boxes == {
        "INBOX": None, "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash",
        "Junk": "\\Junk", "Archive": "\\Archive",
    }
    assert sorted(await store.list_subscriptions(user.id)) == sorted(boxes)
    # User names are case-insensitive and unique.
    assert (await store.get_user("BOB")).id == user.id
    with pytest.raises(AlreadyExists):
        await store.create_user("bob", "hash")
    with pytest.raises(InvalidName):
        await store.create_user("bad name", "hash")


async def test_append_assigns_uids_and_modseqs_and_publishes_after_commit(
    store: SqliteStore,
) -> None:
    _user, inbox = await inbox_of(store)
    seen: list[ChangeBatch] = []
    store.hub.subscribe(inbox.id, seen.append)
    when = datetime(2026, 3, 5, 9, 3, 1, tzinfo=timezone(timedelta(hours=2)))
    uids = await store.append(
        inbox.id, [NewMessage(MSG, frozenset({"\\Seen"}), when), NewMessage(MSG)]
    )
    assert uids == [1, 2]
    # The event was published before the caller resumed, i.e. right after commit.
    assert len(seen) == 1 and seen[0].mailbox_id == inbox.id
    assert [type(e) for e in seen[0].events] == [Appended, Appended]
    infos = await store.list_messages(inbox.id)
    assert [i.uid for i in infos] == [1, 2]
    assert infos[0].flags == {"\\Seen"} and infos[0].internaldate == when
    assert infos[0].size == len(MSG)
    assert await store.read_message(inbox.id, 1) == MSG
    headers = await store.read_headers(inbox.id, [1, 2])
    assert headers[1] == MSG[: MSG.index(b"\r\n\r\n") + 4]
    status = await store.mailbox_status(inbox.id)
    assert (status.messages, status.unseen, status.uidnext, status.size) == (2, 1, 3, 2 * len(MSG))
    assert status.highestmodseq == seen[0].events[0].modseq


async def test_failed_job_publishes_nothing_and_does_not_spoil_the_batch(
    store: SqliteStore,
) -> None:
    _user, inbox = await inbox_of(store)
    seen: list[ChangeBatch] = []
    store.hub.subscribe(inbox.id, seen.append)
    store.hub.subscribe(999_999, seen.append)
    results = await asyncio.gather(
        store.append(inbox.id, [NewMessage(MSG)]),
        store.append(999_999, [NewMessage(MSG)]),  # no such mailbox: rolled back alone
        store.append(inbox.id, [NewMessage(MSG)]),
        return_exceptions=True,
    )
    assert results[0] == [1] and results[2] == [2]
    assert isinstance(results[1], NotFound)
    assert [b.mailbox_id for b in seen] == [inbox.id, inbox.id]
    assert [e.uid for b in seen for e in b.events] == [1, 2]


async def test_concurrent_appends_group_commit_without_loss(store: SqliteStore) -> None:
    _user, inbox = await inbox_of(store)
    before = store.commits
    results = await asyncio.gather(*(store.deliver([inbox.id], MSG) for _ in range(100)))
    uids = sorted(u for r in results for u in r)
    assert uids == list(range(1, 101))
    assert store.commits - before < 100  # several deliveries shared one commit
    assert (await store.mailbox_status(inbox.id)).messages == 100


async def test_flags_replace_add_remove_and_unchangedsince(store: SqliteStore) -> None:
    _user, inbox = await inbox_of(store)
    await store.append(inbox.id, [NewMessage(MSG), NewMessage(MSG), NewMessage(MSG)])
    seen: list[ChangeBatch] = []
    store.hub.subscribe(inbox.id, seen.append)
    res = await store.store_flags(inbox.id, [1, 2], FlagMode.ADD, ["\\Seen", "$Forwarded"])
    assert [c.uid for c in res.changed] == [1, 2]
    assert res.changed[0].flags == {"\\Seen", "$Forwarded"}
    modseq = res.changed[0].modseq
    assert isinstance(seen[-1].events[0], FlagsChanged)
    res = await store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Seen"])
    assert res.changed == [] and res.unchanged[0].uid == 1
    res = await store.store_flags(inbox.id, [2], FlagMode.REMOVE, ["$Forwarded"])
    assert res.changed[0].flags == {"\\Seen"}
    res = await store.store_flags(inbox.id, [3], FlagMode.REPLACE, ["\\Flagged"])
    assert res.changed[0].flags == {"\\Flagged"}
    # UNCHANGEDSINCE: message 2 changed after `modseq`, message 1 did not.
    res = await store.store_flags(
        inbox.id, [1, 2], FlagMode.ADD, ["\\Answered"], unchanged_since=modseq
    )
    assert res.failed_uids == [2] and [c.uid for c in res.changed] == [1]
    # Nonexistent UIDs are simply not there.
    res = await store.store_flags(inbox.id, [42], FlagMode.ADD, ["\\Seen"])
    assert res.changed == [] and res.failed_uids == []


async def test_expunge_deleted_and_by_uid(store: SqliteStore) -> None:
    _user, inbox = await inbox_of(store)
    await store.append(inbox.id, [NewMessage(MSG) for _ in range(4)])
    await store.store_flags(inbox.id, [2, 3], FlagMode.ADD, ["\\Deleted"])
    seen: list[ChangeBatch] = []
    store.hub.subscribe(inbox.id, seen.append)
    assert await store.expunge(inbox.id) == [2, 3]
    assert all(isinstance(e, Expunged) for e in seen[0].events)
    assert await store.expunge(inbox.id, [1, 99]) == [1]
    assert [i.uid for i in await store.list_messages(inbox.id)] == [4]
    assert await store.read_message(inbox.id, 2) is None
    assert await store.expunge(inbox.id, [1]) == []


async def test_copy_and_move_share_the_blob(store: SqliteStore) -> None:
    user, inbox = await inbox_of(store)
    archive = await store.get_mailbox(user.id, "Archive")
    await store.append(inbox.id, [NewMessage(MSG, frozenset({"\\Flagged"})), NewMessage(MSG)])
    pairs = await store.copy(inbox.id, [1, 2, 7], archive.id)
    assert pairs == [(1, 1), (2, 2)]
    await store.expunge(inbox.id, [1])
    assert await store.read_message(archive.id, 1) == MSG  # the copy survives
    assert (await store.get_messages(archive.id, [1]))[0].flags == {"\\Flagged"}
    pairs = await store.copy(inbox.id, [2], archive.id, move=True)
    assert pairs == [(2, 3)]
    assert await store.list_messages(inbox.id) == []
    assert len(await store.list_messages(archive.id)) == 3


async def test_mailbox_create_rename_delete(store: SqliteStore) -> None:
    user, _inbox = await inbox_of(store)
    a = await store.create_mailbox(user.id, "Projects")
    await store.create_mailbox(user.id, "Projects/2026")
    await store.append(a.id, [NewMessage(MSG)])
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(user.id, "Projects")
    for bad in ("", "a//b", "/a", "a/", "..", "a/../b", "x\x01y", "a*"):
        with pytest.raises(InvalidName):
            await store.create_mailbox(user.id, bad)
    await store.set_subscribed(user.id, "Projects/2026", True)
    await store.rename_mailbox(user.id, "Projects", "Work")
    names = {m.name for m in await store.list_mailboxes(user.id)}
    assert {"Work", "Work/2026"} <= names and "Projects" not in names
    assert "Work/2026" in await store.list_subscriptions(user.id)
    renamed = await store.get_mailbox(user.id, "Work")
    assert renamed.id == a.id and renamed.uidvalidity == a.uidvalidity
    assert len(await store.list_messages(a.id)) == 1
    with pytest.raises(InvalidName):
        await store.rename_mailbox(user.id, "Work", "Work/inner")
    # Deleting and recreating gives a new UIDVALIDITY.
    gone: list[ChangeBatch] = []
    store.hub.subscribe((await store.get_mailbox(user.id, "Work/2026")).id, gone.append)
    await store.delete_mailbox(user.id, "Work/2026")
    assert isinstance(gone[0].events[0], MailboxGone)
    again = await store.create_mailbox(user.id, "Work/2026")
    assert again.uidvalidity > renamed.uidvalidity
    with pytest.raises(NotFound):
        await store.delete_mailbox(user.id, "Nope")


async def test_rename_inbox_moves_messages_and_keeps_inbox(store: SqliteStore) -> None:
    user, inbox = await inbox_of(store)
    await store.append(inbox.id, [NewMessage(MSG), NewMessage(MSG)])
    await store.rename_mailbox(user.id, "INBOX", "Old")
    old = await store.get_mailbox(user.id, "Old")
    assert len(await store.list_messages(old.id)) == 2
    assert await store.list_messages(inbox.id) == []
    assert (await store.get_mailbox(user.id, "INBOX")).id == inbox.id


async def test_recent_is_claimed_once(store: SqliteStore) -> None:
    _user, inbox = await inbox_of(store)
    await store.append(inbox.id, [NewMessage(MSG), NewMessage(MSG)])
    assert (await store.mailbox_status(inbox.id)).recent == 2
    assert await store.claim_recent(inbox.id) == 1
    assert await store.claim_recent(inbox.id) == 3
    assert (await store.mailbox_status(inbox.id)).recent == 0


async def test_delete_user_removes_everything(store: SqliteStore) -> None:
    user, inbox = await inbox_of(store)
    await store.append(inbox.id, [NewMessage(MSG)])
    assert await store.delete_user("BOB") is True
    assert await store.get_user("bob") is None
    assert await store.list_mailboxes(user.id) == []
    assert await store.delete_user("bob") is False


async def test_maildrop_lock_is_exclusive(store: SqliteStore) -> None:
    assert store.try_lock_maildrop(1)
    assert not store.try_lock_maildrop(1)
    assert store.try_lock_maildrop(2)
    store.unlock_maildrop(1)
    assert store.try_lock_maildrop(1)


async def closed_store_with_one_message(path: Path) -> int:
    """Make a database at ``path`` holding MSG as UID 1 of bob's INBOX; its mailbox id."""
    st = SqliteStore(path)
    await st.open()
    _user, inbox = await inbox_of(st)
    await st.append(inbox.id, [NewMessage(MSG)])
    await st.close()
    return inbox.id


async def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    inbox_id = await closed_store_with_one_message(path)
    st2 = SqliteStore(path)
    await st2.open()
    assert await st2.read_message(inbox_id, 1) == MSG
    await st2.close()


async def test_octets_carry_the_dot_line_mark_made_at_delivery(store: SqliteStore) -> None:
    _user, inbox = await inbox_of(store)
    dotted = b"Subject: x\r\n\r\n.leading dot\r\n"
    await store.append(inbox.id, [NewMessage(MSG), NewMessage(dotted)])
    got = await store.read_octets(inbox.id, [1, 2, 3])
    assert got == {1: Octets(MSG, False), 2: Octets(dotted, True)}


async def test_a_database_from_before_the_dot_line_mark_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    inbox_id = await closed_store_with_one_message(path)
    conn = sqlite3.connect(path)  # make it look like an older version's database
    conn.execute("ALTER TABLE blobs DROP COLUMN dot_lines")
    conn.execute("PRAGMA user_version=0")
    conn.commit()
    conn.close()
    st2 = SqliteStore(path)
    await st2.open()
    assert await st2.read_octets(inbox_id, [1]) == {1: Octets(MSG, None)}
    await st2.append(inbox_id, [NewMessage(MSG)])
    assert (await st2.read_octets(inbox_id, [2]))[2] == Octets(MSG, False)
    await st2.close()


async def test_changes_committed_by_another_process_are_published(tmp_path: Path) -> None:
    # Two stores on one file stand for the server and a CLI tool run beside it.
    path = tmp_path / "db.sqlite3"
    hub = ChangeHub()
    server = SqliteStore(path, hub)
    await server.open()
    _user, inbox = await inbox_of(server)
    await server.append(inbox.id, [NewMessage(MSG) for _ in range(3)])
    seen: list[ChangeBatch] = []
    hub.subscribe(inbox.id, seen.append)
    tool = SqliteStore(path)
    await tool.open()
    try:
        await server.append(inbox.id, [NewMessage(MSG)])  # ours: published once, as usual
        await tool.append(inbox.id, [NewMessage(MSG), NewMessage(MSG)])
        await tool.store_flags(inbox.id, [2], FlagMode.ADD, ["\\Flagged"])
        await tool.expunge(inbox.id, [1])
        await server.store_flags(inbox.id, [3], FlagMode.ADD, ["\\Seen"])

        async def events() -> list[object]:
            for _ in range(100):
                got = [ev for batch in seen for ev in batch.events]
                if len(got) >= 6:
                    return got
                await asyncio.sleep(0.05)
            return got

        got = await events()
        await asyncio.sleep(1.2)  # two idle looks more: nothing is announced twice
        assert [ev for batch in seen for ev in batch.events] == got
        kinds = sorted((type(ev).__name__, ev.uid) for ev in got)  # type: ignore[attr-defined]
        assert kinds == [("Appended", 4), ("Appended", 5), ("Appended", 6), ("Expunged", 1),
                         ("FlagsChanged", 2), ("FlagsChanged", 3)]
        flagged = next(ev for ev in got if isinstance(ev, FlagsChanged) and ev.uid == 2)
        assert flagged.flags == {"\\Flagged"}
        gone: list[ChangeBatch] = []
        archive = await tool.get_mailbox(_user.id, "Archive")
        assert archive is not None
        hub.subscribe(archive.id, gone.append)
        await tool.delete_mailbox(_user.id, "Archive")
        for _ in range(100):
            if gone:
                break
            await asyncio.sleep(0.05)
        assert [type(ev) for batch in gone for ev in batch.events] == [MailboxGone]
    finally:
        await tool.close()
        await server.close()


async def test_full_store_fails_cleanly_and_the_writer_survives(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), max_bytes=400_000)
    await st.open()
    try:
        _user, inbox = await inbox_of(st)
        big = MSG + b"x" * 50_000 + b"\r\n"
        results = await asyncio.gather(
            *(st.deliver([inbox.id], big) for _ in range(20)), return_exceptions=True
        )
        stored = [r for r in results if isinstance(r, list)]
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed and all(isinstance(e, StorageFull) for e in failed)
        # What was acknowledged is there, intact; nothing else is.
        infos = await st.list_messages(inbox.id)
        assert sorted(u for r in stored for u in r) == [i.uid for i in infos]
        for info in infos:
            assert await st.read_message(inbox.id, info.uid) == big
        # The writer thread is still alive: freeing space makes writes work again.
        await st.expunge(inbox.id, [i.uid for i in infos[:3]])
        assert await st.append(inbox.id, [NewMessage(MSG)])
    finally:
        await st.close()


async def test_structures_come_back_typed_and_a_damaged_one_is_parsed_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    inbox_id = await closed_store_with_one_message(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE blobs SET structure = 'not json'")
    conn.commit()
    conn.close()
    st = SqliteStore(path)
    await st.open()
    try:
        other = b"From: Carol <carol@example.org>\r\nSubject: two\r\n\r\nx\r\n"
        await st.append(inbox_id, [NewMessage(other)])
        got = await st.read_structures(inbox_id, [1, 2, 99])
        assert set(got) == {1, 2}
        assert all(isinstance(p, ParsedMessage) for p in got.values())
        assert got[1] == parse_message(MSG)  # the damaged row, parsed from its octets
        assert got[2] == parse_message(other)
        assert got[2].envelope.subject == b"two"
    finally:
        await st.close()


async def test_a_new_user_gets_inbox_and_as_many_defaults_as_the_limit_allows(
    tmp_path: Path,
) -> None:
    for limit, expected in ((1, ["INBOX"]), (3, ["Drafts", "INBOX", "Sent"])):
        st = SqliteStore(tmp_path / f"db{limit}.sqlite3", max_mailboxes=limit, fsync=False)
        await st.open()
        try:
            user = await st.create_user("bob", "hash")
            assert [b.name for b in await st.list_mailboxes(user.id)] == expected
            assert await st.list_subscriptions(user.id) == expected
        finally:
            await st.close()
