"""Schema versions and upgrades, and ids that are never handed out twice (issue 11, defect 4)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mailstead.store.api import NewMessage, StoreUnavailable
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.schema import SCHEMA, SCHEMA_VERSION

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


async def test_a_recreated_mailbox_gets_a_new_id_and_a_larger_uidvalidity(
    store: SqliteStore,
) -> None:
    user = await store.create_user("bob", "hash")
    started = time.time()
    seen = []
    for _ in range(5):  # well within one second: UIDVALIDITY must still grow each time
        box = await store.create_mailbox(user.id, "Work")
        seen.append((box.id, box.uidvalidity))
        await store.delete_mailbox(user.id, "Work")
    assert time.time() - started < 5
    ids = [i for i, _ in seen]
    validities = [v for _, v in seen]
    assert ids == sorted(set(ids)), f"a mailbox id came back: {ids}"
    assert validities == sorted(set(validities)), f"UIDVALIDITY did not grow: {validities}"
    # Renaming keeps the mailbox (RFC 3501 §6.3.5), so its UIDVALIDITY stays.
    box = await store.create_mailbox(user.id, "A")
    await store.rename_mailbox(user.id, "A", "B")
    renamed = await store.get_mailbox(user.id, "B")
    assert renamed is not None and (renamed.id, renamed.uidvalidity) == (box.id, box.uidvalidity)
    again = await store.create_mailbox(user.id, "A")
    assert again.id > box.id and again.uidvalidity > box.uidvalidity


async def test_a_recreated_user_gets_new_user_and_mailbox_ids(store: SqliteStore) -> None:
    first = await store.create_user("carol", "hash")
    first_boxes = {b.id for b in await store.list_mailboxes(first.id)}
    assert await store.delete_user("carol")
    second = await store.create_user("carol", "hash")
    second_boxes = {b.id for b in await store.list_mailboxes(second.id)}
    assert second.id > first.id
    assert min(second_boxes) > max(first_boxes)


def _old_database(path: Path) -> None:
    """A database as versions before schema versioning made it: plain rowid ids, no
    recorded version, no UIDVALIDITY counter, and a deleted mailbox whose id SQLite
    would hand out again."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA.replace(" AUTOINCREMENT", ""))
    conn.execute("ALTER TABLE blobs DROP COLUMN dot_lines")
    conn.execute("INSERT INTO users (id, name, password_hash, created) VALUES (1, 'dan', 'h', 0)")
    conn.executemany(
        "INSERT INTO mailboxes (id, user_id, name, uidvalidity, uidnext, highestmodseq) "
        "VALUES (?, 1, ?, ?, 1, 1)",
        [(1, "INBOX", 100), (2, "Future", 4_000_000_000), (3, "Gone", 300)],
    )
    conn.execute("INSERT INTO subscriptions (user_id, name) VALUES (1, 'INBOX')")
    conn.execute("DELETE FROM mailboxes WHERE id = 3")
    conn.commit()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


async def test_an_old_database_is_upgraded_and_then_never_reuses_ids(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _old_database(path)
    st = SqliteStore(path, ChangeHub(), fsync=False)
    await st.open()
    try:
        user = await st.get_user("dan")
        assert user is not None and user.id == 1
        boxes = {b.name: b for b in await st.list_mailboxes(user.id)}
        assert {n: (b.id, b.uidvalidity) for n, b in boxes.items()} == {
            "INBOX": (1, 100), "Future": (2, 4_000_000_000)
        }
        assert await st.list_subscriptions(user.id) == ["INBOX"]
        await st.append(boxes["INBOX"].id, [NewMessage(MSG)])
        assert await st.read_message(boxes["INBOX"].id, 1) == MSG
        # The next mailbox takes the next id once; after its deletion that id stays used.
        made = await st.create_mailbox(user.id, "X")
        assert made.id == 3
        # UIDVALIDITY goes above every one in use, even one ahead of the clock.
        assert made.uidvalidity > 4_000_000_000
        await st.delete_mailbox(user.id, "X")
        remade = await st.create_mailbox(user.id, "X")
        assert remade.id == 4 and remade.uidvalidity > made.uidvalidity
        # References to the rebuilt tables still cascade.
        assert await st.delete_user("dan")
    finally:
        await st.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table in ("users", "mailboxes"):
            sql = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()[0]
            assert "AUTOINCREMENT" in sql
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM subscriptions").fetchone()[0] == 0
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert {r[2] for r in conn.execute("PRAGMA foreign_key_list(messages)")} == {
            "mailboxes", "blobs"
        }
    finally:
        conn.close()


async def test_opening_twice_upgrades_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _old_database(path)
    first, second = SqliteStore(path, fsync=False), SqliteStore(path, fsync=False)
    await first.open()
    await second.open()  # already at the current version: nothing to do
    try:
        assert [b.id for b in await second.list_mailboxes(1)] == [2, 1]
    finally:
        await first.close()
        await second.close()


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    st = SqliteStore(path)
    with pytest.raises(StoreUnavailable, match="newer Mailstead"):
        await st.open()
