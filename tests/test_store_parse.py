"""New messages are parsed before their write job, never on the writer thread (issue 10)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailstead.mime.parse import ParsedMessage
from mailstead.store.api import FlagMode, NewMessage
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite import messages as store_messages

SMALL = b"From: a@example.org\r\nSubject: small\r\n\r\nhello\r\n"
# Well over the inline-parse limit: a multipart message of a few megabytes.
HUGE = b"Subject: huge\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
    b"--b\r\nContent-Type: text/plain\r\n\r\n" + b"line of text\r\n" * 2000 for _ in range(100)
) + b"--b--\r\n"


async def test_a_flag_store_commits_while_a_huge_message_is_still_being_parsed(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(HUGE) > store_messages.INLINE_PARSE_BYTES
    user = await store.create_user("bob", "hash")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    await store.append(inbox.id, [NewMessage(SMALL)])

    real_parse = store_messages.parse_message
    parsing = threading.Event()
    release = threading.Event()
    order: list[str] = []
    parse_threads: list[str] = []

    def held_parse(data: bytes) -> ParsedMessage:
        """The huge message's parse does not end before the test lets it."""
        if data is HUGE:
            parse_threads.append(threading.current_thread().name)
            parsing.set()
            release.wait(30)
            order.append("huge parsed")
        return real_parse(data)

    monkeypatch.setattr(store_messages, "parse_message", held_parse)
    loop = asyncio.get_running_loop()
    append = loop.create_task(store.append(inbox.id, [NewMessage(HUGE)]))
    assert await loop.run_in_executor(None, parsing.wait, 10)
    try:
        # Were the parse on the writer thread, this write would queue behind it.
        update = await asyncio.wait_for(
            store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Flagged"]), 10
        )
        order.append("flags stored")
    finally:
        release.set()
    assert await append == [2]
    assert order == ["flags stored", "huge parsed"]
    assert parse_threads and parse_threads[0].startswith("store-parse")
    # The writer committed the flag change first: it has the lower modseq.
    infos = {i.uid: i for i in await store.list_messages(inbox.id)}
    assert update.changed[0].modseq == infos[1].modseq < infos[2].modseq
    assert infos[1].flags == {"\\Flagged"}
    assert await store.read_message(inbox.id, 2) == HUGE
    parsed = (await store.read_structures(inbox.id, [2]))[2]
    assert parsed.envelope.subject == b"huge" and len(parsed.root.parts) == 100


async def test_small_messages_are_parsed_on_the_callers_thread(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await store.create_user("bob", "hash")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    real_parse = store_messages.parse_message
    threads: list[str] = []

    def watched_parse(data: bytes) -> ParsedMessage:
        threads.append(threading.current_thread().name)
        return real_parse(data)

    monkeypatch.setattr(store_messages, "parse_message", watched_parse)
    await store.append(inbox.id, [NewMessage(SMALL), NewMessage(SMALL)])
    await store.deliver([inbox.id], SMALL)
    assert threads == [threading.current_thread().name] * 3
    assert (await store.read_headers(inbox.id, [3]))[3] == SMALL[: SMALL.index(b"\r\n\r\n") + 4]
