"""What other processes commit, as the server's writer finds it (``store/sqlite/external.py``).

The other process is a second ``SqliteStore`` on the same database file (as ``mailstead
import`` or another worker is); the server's side is an ``ExternalChanges`` on a connection
of its own. A look must find every change, and read only the mailboxes that changed: with
several workers another process commits all the time, and a look that read every mailbox
of every user cost 0.2-0.4 s with 80,000 mailboxes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailstead.store.api import (
    Appended,
    ChangeBatch,
    Expunged,
    FlagMode,
    FlagsChanged,
    MailboxGone,
    NewMessage,
)
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.external import ExternalChanges

MAILBOXES = 60


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await store.open()
    for name in ("bob", "carol"):
        user = await store.create_user(name, "x")
        for i in range(MAILBOXES // 2):
            await store.create_mailbox(user.id, f"box{i}")
    yield store
    await store.close()


def server_side(tmp_path: Path) -> tuple[sqlite3.Connection, ExternalChanges, list[str]]:
    conn = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    look = ExternalChanges(conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)  # set after the start-up read
    return conn, look, statements


def by_mailbox(batches: list[ChangeBatch]) -> dict[int, list[object]]:
    out: dict[int, list[object]] = {}
    for batch in batches:
        out.setdefault(batch.mailbox_id, []).extend(batch.events)
    return out


def assert_read_no_whole_table(statements: list[str]) -> None:
    for sql in statements:
        if "FROM mailboxes" in sql:
            assert "WHERE id IN" in sql, sql


async def test_a_look_finds_the_changes_and_reads_only_the_changed_mailboxes(
    other: SqliteStore, tmp_path: Path
) -> None:
    bob = await other.get_user("bob")
    assert bob is not None
    inbox = await other.get_mailbox(bob.id, "INBOX")
    box3 = await other.get_mailbox(bob.id, "box3")
    assert inbox is not None and box3 is not None
    await other.append(box3.id, [NewMessage(b"Subject: a\r\n\r\nold\r\n")])
    conn, look, statements = server_side(tmp_path)
    assert look.collect(conn) == []  # nothing since the look began

    await other.append(inbox.id, [NewMessage(b"Subject: %d\r\n\r\nx\r\n" % i) for i in (1, 2)])
    await other.store_flags(box3.id, [1], FlagMode.ADD, ["\\Flagged"])
    found = by_mailbox(look.collect(conn))
    assert set(found) == {inbox.id, box3.id}
    assert [(type(e), e.uid) for e in found[inbox.id]] == [(Appended, 1), (Appended, 2)]
    [flagged] = found[box3.id]
    assert isinstance(flagged, FlagsChanged) and "\\Flagged" in flagged.flags
    assert_read_no_whole_table(statements)
    # Read once: the next look finds nothing new.
    assert look.collect(conn) == []

    await other.expunge(inbox.id, [1])
    [gone] = by_mailbox(look.collect(conn))[inbox.id]
    assert isinstance(gone, Expunged) and gone.uid == 1
    assert_read_no_whole_table(statements)
    conn.close()


async def test_deleted_mailboxes_and_users_are_gone_for_the_server(
    other: SqliteStore, tmp_path: Path
) -> None:
    bob = await other.get_user("bob")
    carol = await other.get_user("carol")
    assert bob is not None and carol is not None
    box1 = await other.get_mailbox(bob.id, "box1")
    carol_boxes = [m.id for m in await other.list_mailboxes(carol.id)]
    assert box1 is not None and len(carol_boxes) > MAILBOXES // 2  # and Sent, Trash…
    conn, look, statements = server_side(tmp_path)

    await other.delete_mailbox(bob.id, "box1")
    found = by_mailbox(look.collect(conn))
    assert list(found) == [box1.id]
    assert isinstance(found[box1.id][0], MailboxGone)

    assert await other.delete_user("carol")  # its mailboxes go by ON DELETE CASCADE
    found = by_mailbox(look.collect(conn))
    assert sorted(found) == sorted(carol_boxes)
    assert all(isinstance(events[0], MailboxGone) for events in found.values())
    assert_read_no_whole_table(statements)

    # A mailbox made by the other process is new to the server: what it holds is news.
    made = await other.create_mailbox(bob.id, "fresh")
    await other.append(made.id, [NewMessage(b"Subject: n\r\n\r\nx\r\n")])
    found = by_mailbox(look.collect(conn))
    assert [(type(e), e.uid) for e in found[made.id]] == [(Appended, 1)]
    conn.close()

