"""Message writes: append, deliver, flags, expunge, copy and move.

A new message is parsed (envelope, body structure, part offsets, dot-line mark, the
header decoded for SEARCH) before
its write job is queued, never on the writer thread: the writer runs every write of the
server one after another, so a big message parsed there would hold up every flag change
and delivery behind it. Small messages are parsed on the caller's thread (cheaper than a
thread hop), larger ones on the store's parse threads.

A message delivered from a file (``deliver_file``: SMTP and LMTP hand over their spool)
is read whole only up to ``WINDOW_AT`` octets; a bigger one is parsed from the file in
windows (``fileview.py``) and copied into its blob row in ``BLOB_PIECE`` pieces, so
parallel big deliveries never hold their messages in memory. Every blob bigger than a
piece (a big APPEND too) is written in pieces: binding it whole to the INSERT would make
SQLite copy it twice more.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from ...mime.header_text import header_text
from ...mime.parse import has_dot_lines, parse_message
from ..api import (
    Appended,
    ChangeBatch,
    Expunged,
    FlagMode,
    FlagsChanged,
    FlagUpdate,
    MessageFile,
    NewMessage,
    NotFound,
    StoreUnavailable,
    read_message_file,
)
from .base import SqliteBase
from .fileview import WINDOW_AT, FileOctets
from .rows import chunks, flags_set, flags_text, to_row_date


def bump(conn: sqlite3.Connection, mailbox_id: int) -> int:
    """Advance the mailbox modseq once for this transaction-job and return it."""
    row = conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ? "
        "RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound("mailbox does not exist")
    return row[0]


# Up to this many bytes per call are parsed on the caller's thread: ~30 µs for a typical
# 2 KB message (and ~60 µs more to decode its header for SEARCH), against ~100 µs for the
# round trip to a thread. Encoded words cost ~25 µs each to decode, and a 64 KiB header
# holds thousands, so a call with more than a few goes to a thread whatever its size.
INLINE_PARSE_BYTES = 64 * 1024
INLINE_ENCODED_WORDS = 8
# A blob bigger than this is written in pieces of this size (incremental blob I/O).
BLOB_PIECE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PreparedBlob:
    """A message's octets with everything computed from them that the blob row keeps."""

    data: bytes
    header: bytes
    structure: str  # ParsedMessage.to_json()
    dot_lines: bool
    search: str  # HeaderText.to_json(): the header decoded once, for SEARCH


def prepare_blob(data: bytes) -> PreparedBlob:
    parsed = parse_message(data)
    header = data[: parsed.root.header_end]
    return PreparedBlob(data, header, parsed.to_json(), has_dot_lines(data),
                        header_text(header, parsed.envelope).to_json())


def prepare_blobs(datas: Sequence[bytes]) -> list[PreparedBlob]:
    return [prepare_blob(data) for data in datas]


def prepare_file(fileno: int, size: int) -> PreparedBlob:
    """``prepare_blob`` for a message in a file. Takes ``fileno`` (a duplicate): closed
    here for a small message, by ``release`` for a big one, which is read in windows."""
    if size <= WINDOW_AT:
        try:
            return prepare_blob(read_message_file(MessageFile(fileno, size)))
        finally:
            os.close(fileno)
    view = FileOctets(fileno, size)
    try:
        # The view answers everything the parser asks of bytes (see fileview.py).
        return prepare_blob(cast(bytes, view))
    except BaseException:
        view.close()
        raise


def insert_blob(conn: sqlite3.Connection, blob: PreparedBlob, refs: int) -> tuple[int, int]:
    size = len(blob.data)
    big = size > BLOB_PIECE
    cur = conn.execute(
        "INSERT INTO blobs (refcount, header, structure, data, dot_lines) "
        f"VALUES (?, ?, ?, {'zeroblob(?)' if big else '?'}, ?)",
        (refs, blob.header, blob.structure, size if big else blob.data, blob.dot_lines),
    )
    assert cur.lastrowid is not None
    conn.execute("INSERT INTO blob_search (blob_id, text) VALUES (?, ?)",
                 (cur.lastrowid, blob.search))
    if big:
        data = blob.data
        with conn.blobopen("blobs", "data", cur.lastrowid) as dest:
            if isinstance(data, bytes):
                with memoryview(data) as view:  # pieces without copies
                    for at in range(0, size, BLOB_PIECE):
                        dest.write(view[at : at + BLOB_PIECE])
            else:  # a FileOctets: each piece read from the file as it is written
                for at in range(0, size, BLOB_PIECE):
                    dest.write(data[at : at + BLOB_PIECE])
    return cur.lastrowid, size


def release(blob: PreparedBlob) -> None:
    """Close a big message's file once its rows are written (or will never be)."""
    data: object = blob.data
    if isinstance(data, FileOctets):
        data.close()


def insert_message(
    conn: sqlite3.Connection,
    mailbox_id: int,
    modseq: int,
    blob_id: int,
    size: int,
    flags: Iterable[str],
    internaldate: tuple[int, int],
) -> Appended:
    uid = conn.execute(
        "UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
        (mailbox_id,),
    ).fetchone()[0]
    text = flags_text(flags)
    conn.execute(
        "INSERT INTO messages (mailbox_id, uid, modseq, flags, internaldate, tzoffset, "
        "size, blob_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (mailbox_id, uid, modseq, text, *internaldate, size, blob_id),
    )
    return Appended(uid, modseq, flags_set(text))


def expunge_rows(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]) -> list[Expunged]:
    if not uids:
        return []
    modseq = bump(conn, mailbox_id)
    events: list[Expunged] = []
    for chunk in chunks(uids):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"DELETE FROM messages WHERE mailbox_id = ? AND uid IN ({marks}) "
            "RETURNING uid, blob_id",
            (mailbox_id, *chunk),
        ).fetchall()
        rows.sort()
        conn.executemany("UPDATE blobs SET refcount = refcount - 1 WHERE id = ?",
                         [(blob_id,) for _, blob_id in rows])
        conn.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            [(mailbox_id, uid, modseq) for uid, _ in rows],
        )
        events.extend(Expunged(uid, modseq) for uid, _ in rows)
        # Only the blobs just released can have dropped to 0: a sweep of the whole table
        # (refcount has no index) read every stored message's row on every EXPUNGE.
        released = sorted({blob_id for _, blob_id in rows})
        if released:
            marks = ",".join("?" * len(released))
            conn.execute(f"DELETE FROM blobs WHERE refcount <= 0 AND id IN ({marks})", released)
    return events


def copy_rows(
    conn: sqlite3.Connection, src_id: int, uids: Sequence[int], dst_id: int
) -> tuple[list[tuple[int, int]], list[Appended]]:
    pairs: list[tuple[int, int]] = []
    events: list[Appended] = []
    modseq: int | None = None
    for chunk in chunks(uids):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT uid, flags, internaldate, tzoffset, size, blob_id FROM messages "
            f"WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
            (src_id, *chunk),
        ).fetchall()
        for uid, flags, ts, tz, size, blob_id in rows:
            if modseq is None:
                modseq = bump(conn, dst_id)
            conn.execute("UPDATE blobs SET refcount = refcount + 1 WHERE id = ?", (blob_id,))
            ev = insert_message(conn, dst_id, modseq, blob_id, size, flags_set(flags), (ts, tz))
            pairs.append((uid, ev.uid))
            events.append(ev)
    return pairs, events


class MessagesMixin(SqliteBase):
    async def _prepare(self, datas: Sequence[bytes]) -> list[PreparedBlob]:
        """Parse new messages before their write job: see the module docstring."""
        if sum(len(data) for data in datas) <= INLINE_PARSE_BYTES and sum(
            data.count(b"=?") for data in datas
        ) <= INLINE_ENCODED_WORDS:
            return prepare_blobs(datas)
        if self._parsers is None or self._loop is None:
            raise StoreUnavailable("the mail store is closed")
        return await self._loop.run_in_executor(self._parsers, prepare_blobs, datas)

    async def append(self, mailbox_id: int, messages: Sequence[NewMessage]) -> list[int]:
        blobs = await self._prepare([msg.data for msg in messages])

        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            modseq = bump(conn, mailbox_id)
            events = []
            for msg, blob in zip(messages, blobs, strict=True):
                blob_id, size = insert_blob(conn, blob, 1)
                events.append(
                    insert_message(
                        conn, mailbox_id, modseq, blob_id, size, msg.flags,
                        to_row_date(msg.internaldate),
                    )
                )
            return [e.uid for e in events], [ChangeBatch(mailbox_id, tuple(events))]

        return await self._write(job)

    async def deliver(self, mailbox_ids: Sequence[int], data: bytes) -> list[int]:
        (blob,) = await self._prepare([data])
        return await self._deliver_blob(mailbox_ids, blob)

    async def deliver_file(self, mailbox_ids: Sequence[int], message: MessageFile) -> list[int]:
        if self._parsers is None or self._loop is None:
            raise StoreUnavailable("the mail store is closed")
        # A duplicate, closed by prepare_file: the caller may close its file the moment
        # this call is cancelled, while the parse thread still reads.
        fileno = os.dup(message.fileno)
        try:
            blob = await self._loop.run_in_executor(
                self._parsers, prepare_file, fileno, message.size
            )
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the message: {exc}") from None
        return await self._deliver_blob(mailbox_ids, blob)

    def delivery_memory(self, size: int) -> int:
        # Read in windows and written in pieces: a piece, and the header block, at once.
        return size if size <= WINDOW_AT else BLOB_PIECE

    async def _deliver_blob(self, mailbox_ids: Sequence[int], blob: PreparedBlob) -> list[int]:
        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            try:
                blob_id, size = insert_blob(conn, blob, len(mailbox_ids))
            finally:
                release(blob)  # the job runs once, even if its caller stopped waiting
            when = to_row_date(None)
            uids, changes = [], []
            for mailbox_id in mailbox_ids:
                modseq = bump(conn, mailbox_id)
                ev = insert_message(conn, mailbox_id, modseq, blob_id, size, (), when)
                uids.append(ev.uid)
                changes.append(ChangeBatch(mailbox_id, (ev,)))
            return uids, changes

        try:
            return await self._write(job)
        except StoreUnavailable:
            release(blob)  # the store is closed: the job never ran (closing twice is fine)
            raise

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        wanted = list(uids)
        given = frozenset(flags)

        def job(conn: sqlite3.Connection) -> tuple[FlagUpdate, list[ChangeBatch]]:
            result = FlagUpdate()
            modseq: int | None = None
            updates: list[tuple[str, int, int, int]] = []
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? "
                    f"AND uid IN ({marks}) ORDER BY uid",
                    (mailbox_id, *chunk),
                ).fetchall()
                for uid, old_modseq, text in rows:
                    old = flags_set(text)
                    if unchanged_since is not None and old_modseq > unchanged_since:
                        result.failed_uids.append(uid)
                        continue
                    if mode is FlagMode.ADD:
                        new = old | given
                    elif mode is FlagMode.REMOVE:
                        new = old - given
                    else:
                        new = given
                    if new == old:
                        result.unchanged.append(FlagsChanged(uid, old_modseq, old))
                        continue
                    if modseq is None:
                        modseq = bump(conn, mailbox_id)
                    text = flags_text(new)
                    updates.append((text, modseq, mailbox_id, uid))
                    # The shared set: sessions keep it in their views (rows.flags_set).
                    result.changed.append(FlagsChanged(uid, modseq, flags_set(text)))
            # One statement for all rows: a POP3 download marks thousands \Seen at once.
            conn.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                updates,
            )
            changes = [ChangeBatch(mailbox_id, tuple(result.changed))] if result.changed else []
            return result, changes

        return await self._write(job)

    async def expunge(self, mailbox_id: int, uids: Iterable[int] | None = None, *,
                      deleted_only: bool = False) -> list[int]:
        wanted = None if uids is None else sorted(set(uids))

        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            if wanted is None or deleted_only:
                # \Deleted as of this transaction, not as some session last heard of it.
                flagged = [r[0] for r in conn.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? AND "
                    "instr(flags, '\\Deleted') > 0 ORDER BY uid",
                    (mailbox_id,),
                )]
                chosen = None if wanted is None else set(wanted)
                targets = [u for u in flagged if chosen is None or u in chosen]
            else:
                targets = wanted
            events = expunge_rows(conn, mailbox_id, targets)
            changes = [ChangeBatch(mailbox_id, tuple(events))] if events else []
            return [e.uid for e in events], changes

        return await self._write(job)

    async def copy(
        self,
        src_id: int,
        uids: Iterable[int],
        dst_id: int,
        *,
        move: bool = False,
    ) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        def job(conn: sqlite3.Connection) -> tuple[list[tuple[int, int]], list[ChangeBatch]]:
            if conn.execute("SELECT 1 FROM mailboxes WHERE id = ?", (dst_id,)).fetchone() is None:
                raise NotFound("destination mailbox does not exist")
            pairs, dst_events = copy_rows(conn, src_id, wanted, dst_id)
            changes = []
            if move and pairs:
                src_events = expunge_rows(conn, src_id, [p[0] for p in pairs])
                changes.append(ChangeBatch(src_id, tuple(src_events)))
            if dst_events:
                changes.append(ChangeBatch(dst_id, tuple(dst_events)))
            return pairs, changes

        return await self._write(job)
