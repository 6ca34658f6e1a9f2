"""\\Recent claims that arrive together share one write (store/sqlite/mailboxes.py): a delivery
to a mailbox that many sessions have selected makes each claim the new message at once. Each
UID still goes to exactly one caller, also when callers go away and across two stores on one
database (two worker processes)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailstead.store.api import NewMessage
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore

MSG = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture
async def store(tmp_path: Path):
    st = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())
    await st.open()
    yield st
    await st.close()


async def filled_inbox(store: SqliteStore, n: int) -> int:
    user = await store.create_user("bob", "$argon2id$fake")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, [NewMessage(MSG) for _ in range(n)])
    return inbox.id


@contextmanager
def counted_writes(store: SqliteStore) -> Iterator[list[int]]:
    """Counts the store's writer jobs (the real writer still runs each)."""
    count = [0]
    real = store._write

    async def write(job: Any) -> Any:
        count[0] += 1
        return await real(job)

    store._write = write  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del store._write


def assert_each_uid_once(claims: list[tuple[int, int]], first: int, top: int) -> None:
    """``claims``: (below, returned boundary) per caller, who got [returned, below)."""
    got: list[int] = []
    for below, was in claims:
        got += range(was, below)
    assert sorted(got) == list(range(first, top)), claims


async def test_claims_of_one_new_message_by_many_sessions_make_one_write(
        store: SqliteStore) -> None:
    box = await filled_inbox(store, 3)
    with counted_writes(store) as writes:
        answers = await asyncio.gather(*(store.claim_recent(box, below=4) for _ in range(200)))
    assert writes[0] == 1
    assert sorted(answers) == [1] + [4] * 199
    assert (await store.mailbox_status(box)).recent == 0


async def test_claims_up_to_different_uids_each_get_theirs_once(store: SqliteStore) -> None:
    box = await filled_inbox(store, 40)
    rng = random.Random(3)
    belows = [rng.randint(1, 41) for _ in range(300)]
    with counted_writes(store) as writes:
        answers = await asyncio.gather(*(store.claim_recent(box, below=b) for b in belows))
    assert writes[0] < len(belows)
    assert_each_uid_once(list(zip(belows, answers, strict=True)), 1, max(belows))


async def test_a_caller_that_goes_away_does_not_take_the_others_claim(
        store: SqliteStore) -> None:
    box = await filled_inbox(store, 5)
    first = asyncio.get_running_loop().create_task(store.claim_recent(box, below=6))
    await asyncio.sleep(0)  # its write is under way
    others = [asyncio.get_running_loop().create_task(store.claim_recent(box, below=6))
              for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.gather(*others) == [6] * 5  # nothing left: the first one's write
    assert (await store.mailbox_status(box)).recent == 0


async def test_two_stores_on_one_database_never_give_a_uid_twice(
        store: SqliteStore, tmp_path: Path) -> None:
    box = await filled_inbox(store, 30)
    other = SqliteStore(tmp_path / "db.sqlite3", ChangeHub())
    await other.open()
    try:
        rng = random.Random(5)
        calls = [(rng.choice((store, other)), rng.randint(1, 31)) for _ in range(200)]
        answers = await asyncio.gather(*(st.claim_recent(box, below=b) for st, b in calls))
    finally:
        await other.close()
    assert_each_uid_once([(b, was) for (_, b), was in zip(calls, answers, strict=True)],
                         1, max(b for _, b in calls))
