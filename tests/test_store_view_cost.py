"""What sessions' views cost the store: it hands out one frozenset per distinct set of flags,
so a view of a large mailbox (imap/selected.py keeps every message's flags) holds a few
shared objects instead of one per message, while every value stays what was stored."""

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



@pytest.mark.parametrize("strict", [False, True])
def test_a_view_of_100k_messages_costs_under_a_megabyte(strict: bool) -> None:
    """The client map (imap/client_map.py) and the stream checker's copy of the UIDs
    (imap/stream_check.py: kept in tests, not for big views outside them) in compact
    arrays: well under 1 MB outside tests, where lists cost about 6 MB."""
    import tracemalloc
    from datetime import UTC, datetime

    from mailstead.imap.selected import SelectedMailbox
    from mailstead.imap.stream_check import StreamChecker
    from mailstead.store.api import Mailbox, MessageInfo
    from mailstead.store.view_api import ViewSnapshot

    n = 100_000
    when = datetime(2024, 1, 1, tzinfo=UTC)
    box = Mailbox(id=1, user_id=1, name="INBOX", uidvalidity=7, uidnext=n + 1,
                  highestmodseq=n + 5, special_use=None)
    # Modseqs and UIDs as a store hands them out: int objects of their own.
    snap = ViewSnapshot(box, [MessageInfo(int(str(u)), int(str(u + 5)), KINDS[u % 3], when,
                                          600) for u in range(1, n + 1)], n + 1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        view = SelectedMailbox(None, box, readonly=True)  # type: ignore[arg-type]
        view.checker = StreamChecker(strict=strict)
        view.load(snap)
        view.opening_lines()
        cost = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert view.exists == n and view.checker.violations == 0
    assert cost < (1_500_000 if strict else 1_000_000), cost
