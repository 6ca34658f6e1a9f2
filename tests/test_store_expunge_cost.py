"""EXPUNGE releases exactly the blobs it drops, at a cost that does not grow with the
number of messages stored (store/sqlite/messages.py, ``expunge_rows``)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from mailstead.store.api import NewMessage
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.messages import expunge_rows


def message(i: int) -> bytes:
    return b"From: a%d@example.org\r\nSubject: s%d\r\n\r\nbody %d\r\n" % (i, i, i)


async def _inbox(store: SqliteStore, n: int) -> int:
    user = await store.create_user("bob", "$argon2id$fake")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, [NewMessage(message(i)) for i in range(n)])
    return inbox.id


def _blob_ids(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM blobs")}


async def test_a_blob_goes_with_its_last_message(store: SqliteStore, tmp_path: Path) -> None:
    inbox = await _inbox(store, 3)
    before = _blob_ids(tmp_path / "db.sqlite3")
    pairs = await store.copy(inbox, [1], inbox)  # a second message on uid 1's blob
    assert _blob_ids(tmp_path / "db.sqlite3") == before
    assert await store.expunge(inbox, [1]) == [1]
    assert _blob_ids(tmp_path / "db.sqlite3") == before  # the copy still holds it
    assert await store.expunge(inbox, [pairs[0][1], 2]) == sorted([pairs[0][1], 2])
    assert len(_blob_ids(tmp_path / "db.sqlite3")) == 1


def _expunge_steps(db: Path, mailbox_id: int, uid: int) -> int:
    """SQLite VM steps of expunging one message, rolled back afterwards."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.set_progress_handler(count, 1)
        assert [e.uid for e in expunge_rows(conn, mailbox_id, [uid])] == [uid]
        conn.set_progress_handler(None, 1)
        conn.execute("ROLLBACK")
    return steps


async def test_expunging_one_message_does_not_read_every_blob(
    store: SqliteStore, tmp_path: Path
) -> None:
    inbox = await _inbox(store, 1000)
    db = tmp_path / "db.sqlite3"
    small = _expunge_steps(db, inbox, 1)
    # The same expunge with 1000 blobs stored or with 10 (the rest dropped for the test):
    # a sweep of the whole blobs table costs steps for every row.
    await store.expunge(inbox, range(11, 1001))
    few = _expunge_steps(db, inbox, 1)
    assert small < few * 2, (small, few)
