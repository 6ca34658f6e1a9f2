"""With several worker processes, the store writers take turns on a flock
(store/sqlite/writer.py, WRITER_LOCK) before SQLite's write lock: a batch waits while
another worker holds the turn, commits as soon as it is given back, and every job that
queued meanwhile joins that one batch. With one process there is no lock file at all."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.writer import WRITER_LOCK

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


async def test_a_writer_waits_for_its_turn_and_takes_what_queued_meanwhile(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await store.open()
    try:
        user = await store.create_user("bob", "$argon2id$fake")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        assert not (tmp_path / "run" / WRITER_LOCK).exists()  # one process: no turns

        (tmp_path / "run" / "maildrop").mkdir(parents=True)
        store.maildrop_lock_dir = tmp_path / "run" / "maildrop"  # as worker.attach does
        other = os.open(tmp_path / "run" / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)  # another worker is committing
            commits = store.commits
            first = asyncio.ensure_future(store.deliver([inbox.id], MESSAGE))
            await asyncio.sleep(0.1)  # the writer is now waiting for its turn
            more = [asyncio.ensure_future(store.deliver([inbox.id], MESSAGE))
                    for _ in range(5)]
            await asyncio.sleep(0.1)
            assert not first.done() and not any(m.done() for m in more)
            assert store.commits == commits
            fcntl.flock(other, fcntl.LOCK_UN)
            uids = [await first] + [await m for m in more]
        finally:
            os.close(other)
        assert sorted(u for (u,) in uids) == [1, 2, 3, 4, 5, 6]
        assert store.commits == commits + 1  # the first job and the five that queued
        listing = await store.list_messages(inbox.id)
        assert [m.uid for m in listing] == [1, 2, 3, 4, 5, 6]
    finally:
        await store.close()
