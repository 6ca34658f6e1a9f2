"""The outbound queue's part of the store: durable rows, one transaction per attempt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailstead.store.api import Appended, ChangeBatch
from mailstead.store.queue_api import BOUNCED, PENDING, SENT, Bounce, Outcome
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.schema import SCHEMA_VERSION


async def open_store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    return store


async def test_add_list_and_settle_in_one_transaction(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        user = await store.create_user("alice", "x")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        pushed: list[ChangeBatch] = []
        store.hub.subscribe(inbox.id, pushed.append)
        qid = await store.queue_add("alice@example.org",
                                    ["a@Example.NET", "b@example.net", "a@Example.NET"],
                                    b"Subject: x\r\n\r\nbody\r\n")
        msg = await store.queue_message(qid)
        assert msg is not None and msg.size == len(b"Subject: x\r\n\r\nbody\r\n")
        assert [(r.address, r.domain, r.state, r.attempts) for r in msg.recipients] == [
            ("a@Example.NET", "example.net", PENDING, 0),
            ("b@example.net", "example.net", PENDING, 0)]
        assert len(await store.queue_due(msg.created + 1, 10)) == 2
        assert await store.queue_pending() == 2
        # One recipient sent, one deferred: the message stays, with both recorded.
        await store.queue_record(qid, [Outcome("a@Example.NET", SENT, "250 ok"),
                                       Outcome("b@example.net", PENDING, "451 later",
                                               msg.created + 100)])
        msg = await store.queue_message(qid)
        assert msg is not None
        assert [(r.state, r.attempts, r.last_reply) for r in msg.recipients] == [
            (SENT, 1, "250 ok"), (PENDING, 1, "451 later")]
        assert await store.queue_due(msg.created + 50, 10) == []
        assert await store.queue_next_due() == msg.created + 100
        # A sent recipient is never changed again.
        await store.queue_record(qid, [Outcome("a@Example.NET", BOUNCED, "550 no")])
        msg = await store.queue_message(qid)
        assert msg is not None and msg.recipients[0].state == SENT
        # The last recipient bounces: the DSN lands in the INBOX and the message leaves
        # the queue, in the same commit.
        await store.queue_record(qid, [Outcome("b@example.net", BOUNCED, "550 5.1.1 no")],
                                 Bounce(b"Subject: bounce\r\n\r\nsorry\r\n", mailbox_id=inbox.id))
        assert await store.queue_message(qid) is None
        assert len(await store.list_messages(inbox.id)) == 1
        assert any(isinstance(e, Appended) for b in pushed for e in b.events)
        assert await store.queue_list() == []
    finally:
        await store.close()


async def test_a_remote_bounce_is_queued_with_a_null_sender(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        qid = await store.queue_add("someone@elsewhere.test", ["x@example.net"], b"\r\n")
        await store.queue_record(qid, [Outcome("x@example.net", BOUNCED, "550 no")],
                                 Bounce(b"Subject: dsn\r\n\r\n", remote="someone@elsewhere.test"))
        (dsn,) = await store.queue_list()
        assert dsn.mail_from == "" and dsn.recipients[0].address == "someone@elsewhere.test"
        assert await store.queue_data(dsn.id) == b"Subject: dsn\r\n\r\n"
    finally:
        await store.close()


async def test_retry_delete_and_a_deleted_sender(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        qid = await store.queue_add("a@example.org", ["x@example.net"], b"\r\n")
        msg = await store.queue_message(qid)
        assert msg is not None
        await store.queue_record(qid, [Outcome("x@example.net", PENDING, "451", 1e12)])
        assert await store.queue_retry(qid, 5.0) == 1
        assert (await store.queue_due(5.0, 10))[0].next_attempt == 5.0
        assert await store.queue_retry(None, 6.0) == 1
        # A bounce for a mailbox that is gone: the outcome is still recorded.
        user = await store.create_user("gone", "x")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        await store.delete_user("gone")
        await store.queue_record(qid, [Outcome("x@example.net", BOUNCED, "550")],
                                 Bounce(b"\r\n", mailbox_id=inbox.id))
        assert await store.queue_message(qid) is None
        assert not await store.queue_delete(qid)
        other = await store.queue_add("a@example.org", ["y@example.net"], b"\r\n")
        assert await store.queue_delete(other)
        assert await store.queue_pending() == 0
        with pytest.raises(ValueError):
            await store.queue_add("a@example.org", [], b"\r\n")
    finally:
        await store.close()


async def test_a_version_2_database_gets_the_queue_tables(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    conn.execute("DROP TABLE queue_recipients")
    conn.execute("DROP TABLE queue")
    conn.execute("PRAGMA user_version=2")  # before the queue (step 3 of UPGRADES)
    conn.commit()
    conn.close()
    store = await open_store(tmp_path)
    try:
        assert await store.queue_add("a@b.test", ["c@d.test"], b"\r\n") > 0
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_message_deleted_during_its_attempt_gets_no_bounce(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        user = await store.create_user("alice", "x")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        qid = await store.queue_add("alice@example.org", ["x@example.net"], b"\r\n")
        assert await store.queue_delete(qid)  # mailstead queue delete, mid-attempt
        await store.queue_record(qid, [Outcome("x@example.net", BOUNCED, "550 no")],
                                 Bounce(b"Subject: dsn\r\n\r\n", mailbox_id=inbox.id))
        assert await store.list_messages(inbox.id) == []
        assert await store.queue_list() == []
    finally:
        await store.close()
