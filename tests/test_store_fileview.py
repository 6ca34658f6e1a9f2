"""Big deliveries from a file are stored exactly as from bytes, without holding the message
(issue 12 #9).

``deliver_file`` parses a big message through ``FileOctets`` (windows read from the
spool) and writes its blob in pieces; ``deliver`` parses ``bytes`` and inserts it whole.
Both must store the same rows: octets, header block, structure (envelope, body
structure, section offsets, sizes), dot-line mark. The windows are shrunk here to a few
octets so that every find, count and delimiter check straddles window ends.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.mime.parse import has_dot_lines, normalise_crlf, parse_message
from mailstead.store.api import MessageFile
from mailstead.store.sqlite import SqliteStore, fileview
from mailstead.store.sqlite import messages as store_messages
from mailstead.store.sqlite.fileview import FileOctets
from mailstead.store.sqlite.schema import create_or_upgrade


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


NESTED = crlf(
    "From: Ann <ann@example.org>\nTo: bob@example.org, \"C. D.\" <cd@example.net>\n"
    "Subject: =?utf-8?q?nested_=C3=A9?=\nMessage-ID: <n@x>\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n\npreamble\n"
    "--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
    "--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    "caf\u00e9 na\u00efve\n.dot line\n..two dots\n"
    "--inner  \t\nContent-Type: text/html\n\n<p>hi</p>\n--inner--\n"
    "--outer\nContent-Type: message/rfc822\n\n"
    "From: x@example.com\nSubject: inner\n\n"
    "body of the inner message\n"
    "--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    + "QUJD" * 40 + "\n--outer--\nepilogue\n"
)
CORPUS = [
    crlf("Subject: plain\n\nhello\n"),
    crlf("From: a@example.org\nSubject: no body"),  # all header, no blank line
    crlf("\nbody without a header\n"),
    crlf("Subject: dots\n\n.\n.leading\nmiddle\n.\n"),
    b".starts with a dot\r\n\r\nbody\r\n",
    crlf("Subject: 8bit \u00e9\u00e8\nContent-Type: text/plain; charset=latin-1\n\n")
    + b"\xe9t\xe9\r\n\xff\xfe\r\n",
    b"Subject: bare LF\n\nline one\nline two\n",  # not normalised: the parser stays in bounds
    normalise_crlf(b"Subject: bare LF normalised\n\nline one\n.dot\n"),
    crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nempty header part\n--b\n--b--\n"),
    crlf("Content-Type: multipart/mixed; boundary=b\n\nno delimiter at all\n"),
    crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in digest\n\nx\n--d--"),
    NESTED,
    NESTED.replace(b"\r\n", b"\n"),
]


@contextlib.contextmanager
def small_windows(window: int, ahead: int) -> Iterator[None]:
    saved = fileview.WINDOW, fileview.READ_AHEAD
    fileview.WINDOW, fileview.READ_AHEAD = window, ahead
    try:
        yield
    finally:
        fileview.WINDOW, fileview.READ_AHEAD = saved


@contextlib.contextmanager
def in_file(data: bytes) -> Iterator[int]:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        yield f.fileno()


def view_of(fileno: int, size: int) -> FileOctets:
    return FileOctets(os.dup(fileno), size)


_PIECES = st.sampled_from([
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"--b", b"--b--", b"--c", b" ", b"\t", b".", b"x",
    b"\xe9", b"Subject: s\r\n", b"From: A <a@b.c>\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/alternative; boundary=c\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: text/plain\r\n",
])
MESSAGES = st.lists(_PIECES, max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=MESSAGES, window=st.integers(1, 12), ahead=st.integers(1, 12))
def test_parsing_a_file_view_equals_parsing_bytes(data: bytes, window: int, ahead: int) -> None:
    with in_file(data) as fileno, small_windows(window, ahead):
        view = view_of(fileno, len(data))
        try:
            as_bytes = cast(bytes, view)  # what the store does (messages.prepare_file)
            assert parse_message(as_bytes).to_json() == parse_message(data).to_json()
            assert has_dot_lines(as_bytes) == has_dot_lines(data)
        finally:
            view.close()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40), sub=st.sampled_from([b"\n", b"\r\n", b"ab", b"aba", b"x"]),
       start=st.integers(-50, 50), end=st.one_of(st.none(), st.integers(-50, 50)),
       window=st.integers(1, 8))
def test_file_view_answers_like_bytes(data: bytes, sub: bytes, start: int, end: int | None,
                                      window: int) -> None:
    data = data.replace(b"\x00", b"a")  # more hits for the needles
    with in_file(data) as fileno, small_windows(window, window):
        view = view_of(fileno, len(data))
        try:
            assert view.find(sub, start, end) == data.find(sub, start, end)
            assert view.count(sub, start, end) == data.count(sub, start, end)
            assert view.startswith(sub, start, end) == data.startswith(sub, start, end)
            assert view[start:end] == data[start:end]
            assert len(view) == len(data)
            if -len(data) <= start < len(data):
                assert view[start] == data[start]
        finally:
            view.close()


def _blob_row(db: Path, blob_id: int) -> tuple[object, ...]:
    """Everything stored for a blob but its id: its row and its decoded header text."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(blobs)") if r[1] not in (
            "id", "refcount")]
        row = conn.execute(
            f"SELECT {', '.join(cols)} FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        (text,) = conn.execute(
            "SELECT text FROM blob_search WHERE blob_id = ?", (blob_id,)).fetchone()
        return (*row, text)


def test_no_blob_column_after_data_holds_octets(tmp_path: Path) -> None:
    """A big blob is inserted as zeroblob(n) and written in pieces; SQLite builds the
    zeroblob in memory (n octets, out of tracemalloc's sight) when a later column of the
    row holds octets. dot_lines (NULL, 0 or 1) holds none; anything new goes elsewhere."""
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        create_or_upgrade(conn)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(blobs)")]
    finally:
        conn.close()
    assert cols[cols.index("data") + 1 :] == ["dot_lines"]


def _blob_ids(db: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT blob_id FROM messages ORDER BY uid")]


async def test_deliver_file_stores_what_deliver_stores(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await store.create_user("bob", "hash")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    big = NESTED + b"x" * 70 + b"\r\n" * 5000  # several pieces even at full size
    corpus = [*CORPUS, big]
    monkeypatch.setattr(fileview, "WINDOW_AT", 0)  # every message through FileOctets
    for data in corpus:
        monkeypatch.setattr(store_messages, "BLOB_PIECE", 1 << 40)  # bytes: one INSERT
        (from_bytes,) = await store.deliver([inbox.id], data)
        monkeypatch.setattr(store_messages, "BLOB_PIECE", 1000)  # pieces across the data
        with in_file(data) as fileno, small_windows(7, 5):
            (from_file,) = await store.deliver_file([inbox.id], MessageFile(fileno, len(data)))
        assert await store.read_message(inbox.id, from_file) == data
        structures = await store.read_structures(inbox.id, [from_bytes, from_file])
        assert structures[from_bytes] == structures[from_file]
        octets = await store.read_octets(inbox.id, [from_bytes, from_file])
        assert octets[from_bytes] == octets[from_file]
    ids = _blob_ids(tmp_path / "db.sqlite3")
    assert len(ids) == 2 * len(corpus)
    for a, b in zip(ids[::2], ids[1::2], strict=True):
        assert _blob_row(tmp_path / "db.sqlite3", a) == _blob_row(tmp_path / "db.sqlite3", b)


async def test_a_big_delivery_from_a_file_is_never_held_whole(store: SqliteStore) -> None:
    user = await store.create_user("bob", "hash")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    size = 16 * 1024 * 1024
    data = NESTED + (b"y" * 76 + b"\r\n") * (size // 78)
    total = len(data)
    with in_file(data) as fileno:
        del data  # the test must not hold it either
        tracemalloc.start()
        try:
            (uid,) = await store.deliver_file([inbox.id], MessageFile(fileno, total))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # A read window, a blob piece and the header block; whole, the message is 16 MiB.
    assert peak < 4 * 1024 * 1024, peak
    info = await store.get_messages(inbox.id, [uid])
    assert info[0].size == total
    assert len(await store.read_message(inbox.id, uid) or b"") == total
