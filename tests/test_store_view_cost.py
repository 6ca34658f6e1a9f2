"""What sessions' views cost the store: it hands out one frozenset per distinct set of flags,
so a view of a large mailbox (imap/selected.py keeps every message's flags) holds a few
shared objects instead of one per message; and a \\Recent claim already known to be made
costs no write, while claims by another process are still seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstead.store.api import Appended, ChangeBatch, FlagMode, NewMessage
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore

MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n"
KINDS = [frozenset(), frozenset({"\\Seen"}), frozenset({"$Forwarded", "\\Seen"})]


@pytest.fixture
async def store(tmp_path: Path):
    st = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())
    await st.open()
    yield st
    await st.close()


async def test_listings_events_and_flag_updates_share_equal_flag_sets(
        store: SqliteStore) -> None:
    user = await store.create_user("bob", "$argon2id$fake")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    seen: list[ChangeBatch] = []
    store.hub.subscribe(inbox.id, seen.append)
    await store.append(inbox.id, [NewMessage(MSG, KINDS[i % 3]) for i in range(60)])

    snap = await store.read_view(inbox.id)
    assert [m.flags for m in snap.messages] == [KINDS[i % 3] for i in range(60)]
    assert len({id(m.flags) for m in snap.messages}) == 3
    appended = [ev for b in seen for ev in b.events if isinstance(ev, Appended)]
    assert [ev.flags for ev in appended] == [KINDS[i % 3] for i in range(60)]
    assert {id(ev.flags) for ev in appended} == {id(m.flags) for m in snap.messages}

    res = await store.store_flags(inbox.id, range(1, 61), FlagMode.ADD, ["\\Flagged"])
    assert [c.flags for c in res.changed] == [KINDS[i % 3] | {"\\Flagged"} for i in range(60)]
    assert len({id(c.flags) for c in res.changed}) == 3
    again = await store.read_view(inbox.id)
    assert {id(m.flags) for m in again.messages} == {id(c.flags) for c in res.changed}


async def test_a_claim_known_to_be_made_is_answered_without_losing_other_claims(
        tmp_path: Path) -> None:
    a = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())
    await a.open()
    b = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())  # another process on the folder
    await b.open()
    try:
        user = await a.create_user("bob", "$argon2id$fake")
        inbox = await a.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        await a.append(inbox.id, [NewMessage(MSG) for _ in range(7)])
        assert await a.claim_recent(inbox.id, below=3) == 1  # UIDs 1, 2 are a's
        assert await a.claim_recent(inbox.id, below=3) >= 3  # known: none for a second
        assert await a.claim_recent(inbox.id, below=2) >= 2
        assert await b.claim_recent(inbox.id, below=6) == 3  # 3..5 are b's
        assert await a.claim_recent(inbox.id, below=6) == 6  # a hears of b's claim
        assert await a.claim_recent(inbox.id) == 6  # 6, 7 are a's
        assert await b.claim_recent(inbox.id, below=8) == 8
        snap = await b.read_view(inbox.id)
        assert snap.first_recent_uid == 8 and snap.recent_uids == []
    finally:
        await b.close()
        await a.close()
