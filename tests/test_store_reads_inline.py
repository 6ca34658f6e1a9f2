"""Store calls per command and where reads run (store/sqlite/base.py, "Store reads").

A FETCH round is one store call (``read_for_fetch``), whatever items it asks for; a read
bounded whatever the client asks (a handful of rows by key, a few hundred kilobytes) runs
on the loop thread, anything bigger on a reader thread, and both give the same answer.
The reader pool is watched by counting what is handed to it, not replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from imap_harness import ImapWorld
from mailstead.store.api import NewMessage
from mailstead.store.reads_api import FetchWants
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.base import INLINE_BYTES, INLINE_ROWS


def message(i: int, body: bytes = b"body\r\n") -> bytes:
    return (b"From: a%d@example.org\r\nTo: b@example.org\r\nSubject: s%d\r\n\r\n" % (i, i)
            + body)


class PoolCount:
    """How many reads were handed to the reader threads."""

    def __init__(self, store: SqliteStore) -> None:
        self.count = 0
        pool = store._readers
        assert pool is not None
        real = pool.submit

        def counted(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(fn, *args, **kwargs)

        pool.submit = counted  # type: ignore[method-assign]


async def _inbox(store: SqliteStore, messages: list[bytes]) -> int:
    user = await store.create_user("bob", "$argon2id$fake")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, [NewMessage(m) for m in messages])
    return inbox.id


WANTS = FetchWants(info=True, structure=True, headers=True, bodies=True,
                   body_max=256 * 1024, batch_bytes=4 << 20, batch_count=200)


async def test_a_small_fetch_round_is_read_on_the_loop_a_big_one_on_a_thread(
        store: SqliteStore) -> None:
    # Three bodies, each small enough to read whole, together over the loop's bound.
    third = message(99, b"x" * (INLINE_BYTES // 3) + b"\r\n")
    mbox = await _inbox(store, [message(i) for i in range(1, INLINE_ROWS + 2)] + [third] * 3)
    pool = PoolCount(store)
    small = await store.read_for_fetch(mbox, [1, 2, 3], WANTS)
    assert pool.count == 0
    assert small.bodies == {i: message(i) for i in (1, 2, 3)}
    assert small.headers[2] == message(2)[: message(2).index(b"\r\n\r\n") + 4]
    assert small.structures[3].envelope.subject == b"s3"
    assert sorted(small.infos) == [1, 2, 3]

    # More rows than the bound, or more octets: a reader thread, the same answers.
    many = await store.read_for_fetch(mbox, list(range(1, INLINE_ROWS + 2)), WANTS)
    assert pool.count == 1
    assert many.bodies == {i: message(i) for i in range(1, INLINE_ROWS + 2)}
    thirds = [INLINE_ROWS + 2, INLINE_ROWS + 3, INLINE_ROWS + 4]
    heavy = await store.read_for_fetch(mbox, thirds, WANTS)
    assert pool.count == 2
    assert heavy.bodies == dict.fromkeys(thirds, third)
    assert (await store.read_for_fetch(mbox, thirds[:2], WANTS)).bodies == dict.fromkeys(
        thirds[:2], third)
    assert pool.count == 2


async def test_reads_bounded_by_rows_stay_on_the_loop(store: SqliteStore) -> None:
    mbox = await _inbox(store, [message(i) for i in range(1, INLINE_ROWS + 2)])
    pool = PoolCount(store)
    for n in (1, 3, INLINE_ROWS):  # padded IN lists: never a message twice
        infos = await store.get_messages(mbox, range(1, n + 1))
        assert [i.uid for i in infos] == list(range(1, n + 1))
    assert pool.count == 0
    infos = await store.get_messages(mbox, range(1, INLINE_ROWS + 2))
    assert [i.uid for i in infos] == list(range(1, INLINE_ROWS + 2))
    assert pool.count == 1
    await store.read_view(mbox)  # grows with the mailbox: always a thread
    assert pool.count == 2


async def test_a_fetch_of_size_headers_and_body_is_one_store_call(world: ImapWorld) -> None:
    user = await world.add_user()
    await world.seed(user, [message(i) for i in range(1, 6)])
    client = await world.connect()
    await client.login(user)
    await client.select()
    calls: list[str] = []
    real = world.store._read

    async def counted(fn: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        return await real(fn, **kwargs)

    world.store._read = counted  # type: ignore[method-assign]
    reply = await client.cmd(
        "FETCH 1:5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[])")
    assert reply.ok
    assert len([u for u in reply.untagged if b" FETCH " in u]) == 5
    assert b"Subject: s4" in reply.untagged[3]
    assert len(calls) == 1
