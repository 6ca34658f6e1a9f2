"""SEARCH matches the header text decoded at delivery, never decoding at SEARCH time
(issue 12 #7), with the answers the decode-at-search code gave.

``mime.header_text.HeaderText`` is checked against ``mime.search.header_values`` and the
header half of ``mime.search.search_text`` (what SEARCH computed per message before), on a
corpus and with hypothesis; SEARCH itself is run with the RFC 2047 decoder counting its
calls; an older database (schema version 2, no stored text) is upgraded without decoding
anything and filled when a SEARCH first needs it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imap_harness import ImapWorld, MemoryIMAP
from mailstead.mime import search as mime_search
from mailstead.mime.header_text import HeaderText, header_text
from mailstead.mime.headers import header_units
from mailstead.mime.parse import parse_message
from mailstead.mime.search import header_values, search_text
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.schema import SCHEMA_VERSION

MANY_WORDS = "\r\n ".join(["=?utf-8?q?a?="] * 12_000)  # 168 K characters: past a budget
CORPUS = [
    b"Subject: =?utf-8?q?caf=C3=A9?= and =?iso-8859-1?b?6Q==?=\r\nFrom: a@b.c\r\n\r\nx\r\n",
    b"Subject: one\r\nsubject: =?utf-8?q?two?=\r\nSUBJECT:three\r\n\r\n",
    b" leading continuation\r\nNot a field line\r\nX-8bit: \xe9t\xe9 \xff\r\n\r\nbody\r\n",
    b"From: =?utf-8?q?J=C3=B6rg?= <j@x.de>, Group: m@x.de;\r\nTo: <@r:a@b>\r\n\r\n",
    b"Subject: =?utf-8?q?broken\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n",
    b"Subject: =?utf-8?b?!!!?= x\r\n\r\n",
    b"all header, no blank line: x\r\nSubject: s",
    # One field name's budget spent: its later values and the block's TEXT differ.
    f"Subject: {MANY_WORDS}\r\nTo: =?utf-8?q?T=C3=B6?= <t@x>\r\nSubject: =?utf-8?q?late?=\r\n"
    f"Comments: =?utf-8?q?after_the_budget?=\r\n\r\nbody\r\n".encode(),
    f"Comments: {MANY_WORDS}\r\nSubject: =?utf-8?q?own_budget?=\r\n\r\n".encode(),
]
NAMES = ["subject", "from", "to", "date", "x-8bit", "comments", "SUBJECT", "missing", "é"]


def _check(raw: bytes) -> None:
    parsed = parse_message(raw)
    header = raw[: parsed.root.header_end]
    stored = HeaderText.from_json(header_text(header, parsed.envelope).to_json())
    fields = {f.decode("latin-1") for f, _ in header_units(header) if f is not None}
    for name in [*NAMES, *fields]:
        assert stored.values(name) == header_values(header, name), name
    assert stored.text() == search_text(raw, parsed)[0]


@pytest.mark.parametrize("raw", CORPUS)
def test_stored_header_text_answers_as_decoding_at_search_did(raw: bytes) -> None:
    _check(raw)


_PIECES = st.sampled_from([
    "Subject: ", "subject:", "To: ", "X: ", "\r\n", "\r\n ", " ", "=?", "?=", "?q?", "?b?",
    "=?utf-8?q?a_b?=", "=?utf-8?b?w6k=?=", "=?iso-8859-1?q?=E9?=", "=C3", "x", "é", "\t",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40))
def test_stored_header_text_answers_as_decoding_at_search_did_hypothesis(
    pieces: list[str],
) -> None:
    _check("".join(pieces).encode("utf-8") + b"\r\n\r\nbody\r\n")


@contextlib.contextmanager
def counting_decoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    real = mime_search.decode_encoded_words

    def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(mime_search, "decode_encoded_words", counted)
    yield calls
    monkeypatch.setattr(mime_search, "decode_encoded_words", real)


async def search(c: MemoryIMAP, criteria: str) -> list[int]:
    reply = await c.cmd(f"SEARCH {criteria}")
    assert reply.ok, reply
    (line,) = reply.lines(b"* SEARCH")
    return [int(n) for n in line.split()[2:]]


MESSAGES = [
    b"From: =?utf-8?q?J=C3=B6rg?= <j@x.de>\r\nSubject: =?utf-8?q?caf=C3=A9_cr=C3=A8me?=\r\n"
    b"X-Tag: =?utf-8?q?=C3=A9t=C3=A9?=\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody one\r\n",
    f"From: x@y.z\r\nSubject: {MANY_WORDS}\r\n\r\nbody two\r\n".encode(),
]


@pytest.mark.parametrize(("criteria", "expected"), [
    ("SUBJECT café", [1]),
    ("SUBJECT CRÈME", [1]),
    ("SUBJECT aaaa", [2]),
    ("HEADER X-Tag été", [1]),
    ("FROM jörg", [1]),
    ("TEXT crème", [1]),
    ("TEXT two", [2]),
    ("SENTON 1-Jan-2024", [1]),
    ("OR SUBJECT zzz HEADER subject zzz", []),
])
async def test_search_reads_the_stored_text_and_decodes_nothing(
    world: ImapWorld, monkeypatch: pytest.MonkeyPatch, criteria: str, expected: list[int]
) -> None:
    user = await world.add_user()
    for m in MESSAGES:
        await world.deliver(user, m)
    c = await world.login(user, select="INBOX")
    with counting_decoder(monkeypatch) as calls:
        found = await search(c, f"CHARSET UTF-8 {criteria}")
    assert found == expected
    assert calls[0] == 0, "SEARCH decoded encoded words instead of reading the stored text"


def _make_version_2(path: Path) -> None:
    """What a database of schema version 2 looks like: no ``blob_search`` table."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE blob_search")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()


async def test_an_older_database_is_upgraded_then_filled_by_the_first_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.sqlite3"
    store = SqliteStore(db, ChangeHub(), fsync=False)
    await store.open()
    user = await store.create_user("old", "hash")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    uids = [(await store.deliver([inbox.id], m))[0] for m in MESSAGES]
    expected = await store.read_header_texts(inbox.id, uids)
    await store.close()
    _make_version_2(db)

    store = SqliteStore(db, ChangeHub(), fsync=False)
    with counting_decoder(monkeypatch) as calls:
        await store.open()
        assert calls[0] == 0, "the upgrade decoded headers: it must stay constant-time"
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("SELECT COUNT(*) FROM blob_search").fetchone()[0] == 0
        assert await store.read_header_texts(inbox.id, uids) == expected  # decoded lazily
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM blob_search").fetchone()[0] == len(
                MESSAGES)
        with counting_decoder(monkeypatch) as calls:
            assert await store.read_header_texts(inbox.id, uids) == expected
            assert calls[0] == 0, "the filled rows were decoded again"
    finally:
        await store.close()


async def test_a_delivery_stores_the_decoded_text(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await store.open()
    try:
        user = await store.create_user("new", "hash")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        await store.deliver([inbox.id], MESSAGES[0])
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as conn:
        (text,) = conn.execute("SELECT text FROM blob_search").fetchone()
    assert HeaderText.from_json(text).values("subject") == ["café crème"]


@pytest.mark.parametrize("junk", [
    '[1,[["from","From",3,null]],[[],[],[],[]],null]',  # a number where text belongs
    '[1,[["from","From"]],[[],[],[],[]],null]',  # a field of two parts
    '[1,[],[[1],[],[],[]],null]',  # an address form that is no text
    '[1,[],[[],[],[],[]],7]',  # a whole header that is no text
    '[1,[],[[],[],[]],null]',  # three address fields
    '[2,[],[[],[],[],[]],null]',  # a later version
    '{"fields": []}',
])
def test_stored_header_text_of_the_wrong_shape_is_refused(junk: str) -> None:
    """A damaged row is decoded again from the header (reads.read_header_texts) rather
    than matched as if it were text: from_json refuses every shape it did not write."""
    with pytest.raises(ValueError):
        HeaderText.from_json(junk)


async def test_a_small_message_full_of_encoded_words_is_decoded_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small messages are prepared on the caller's thread (the loop), but decoding a
    header of thousands of encoded words takes tens of ms: that one goes to a thread."""
    from mailstead.store.api import NewMessage
    from mailstead.store.sqlite import messages as store_messages

    threads: list[str] = []
    real = store_messages.prepare_blobs

    def recorded(datas):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return real(datas)

    monkeypatch.setattr(store_messages, "prepare_blobs", recorded)
    store = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await store.open()
    try:
        user = await store.create_user("u", "hash")
        inbox = await store.get_mailbox(user.id, "INBOX")
        assert inbox is not None
        words = "\r\n ".join(["=?utf-8?q?a?="] * 3000)
        hostile = f"Subject: {words}\r\n\r\nx\r\n".encode()
        assert len(hostile) < store_messages.INLINE_PARSE_BYTES
        await store.append(inbox.id, [NewMessage(MESSAGES[0])])
        await store.append(inbox.id, [NewMessage(hostile)])
    finally:
        await store.close()
    main = threading.main_thread().name
    assert threads[0] == main  # a typical message: inline, as before
    assert threads[1] != main and threads[1].startswith("store-parse")
