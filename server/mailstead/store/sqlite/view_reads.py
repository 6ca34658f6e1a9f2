"""What SELECT and EXAMINE read, served from the process's copy of the mailbox's rows.

The copy (``store/mailbox_rows.py``) is a cache, and the store is the truth: every read
starts with the mailbox row (one row by its key, on the loop). When the copy is as far as
that row's ``highestmodseq``, the view is copied from it and nothing else is read. When
it is behind (another process committed, or a commit of ours has not reached it yet), one
read transaction on a reader thread takes the mailbox row again with every message whose
modseq is above the copy's and every UID expunged above it (the ``expunged`` table keeps
them all), and the copy catches up. With no copy, or one of another UIDVALIDITY, the
mailbox is listed whole and a new copy made. So a view is never older than what the store
had committed when the read began.
"""

from __future__ import annotations

import sqlite3

from ..api import Mailbox, MailboxStatus, NotFound
from ..mailbox_rows import MailboxRows, RowsDelta, RowsSnapshot
from .mailboxes import MailboxesMixin
from .rows import MAILBOX_COLS, flags_set, mailbox_row

_HEAD = f"SELECT {MAILBOX_COLS}, first_recent_uid FROM mailboxes WHERE id = ?"


def _head(conn: sqlite3.Connection, mailbox_id: int) -> tuple[Mailbox, int]:
    row = conn.execute(_HEAD, (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound("mailbox does not exist")
    return mailbox_row(row[:-1]), row[-1]


def _listing(conn: sqlite3.Connection, mailbox: Mailbox) -> MailboxRows:
    rows = conn.execute(
        "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? ORDER BY uid",
        (mailbox.id,),
    ).fetchall()
    return MailboxRows(mailbox, [r[0] for r in rows], [r[1] for r in rows],
                       [r[2] for r in rows], flags_set)


def _delta(conn: sqlite3.Connection, mailbox: Mailbox, base: int) -> RowsDelta:
    # Sorted here: an ORDER BY uid would make SQLite walk the primary key (every message
    # of the mailbox) instead of the modseq index (only the changed ones).
    changed = sorted((uid, modseq, flags_set(text)) for uid, modseq, text in conn.execute(
        "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? AND modseq > ?",
        (mailbox.id, base)))
    expunged = [uid for (uid,) in conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ?", (mailbox.id, base))]
    return RowsDelta(base, mailbox, changed, expunged)


class ViewReadsMixin(MailboxesMixin):
    """Before ``MailboxesMixin`` (which counts STATUS from the rows themselves)."""

    async def read_rows(self, mailbox_id: int) -> RowsSnapshot:
        cache = self.row_cache
        try:
            found = await self._current_copy(mailbox_id)
            if found is not None:
                copy, mailbox, first_recent = found
                return copy.snapshot(mailbox, first_recent)

            def listing(conn: sqlite3.Connection) -> tuple[int, MailboxRows, Mailbox]:
                fresh, first = _head(conn, mailbox_id)
                return first, _listing(conn, fresh), fresh

            first_recent, made, mailbox = await self._read(listing)
        except NotFound:
            cache.drop(mailbox_id)
            raise
        cache.keep(mailbox_id, made)
        return made.snapshot(mailbox, first_recent)

    async def mailbox_status(self, mailbox_id: int, *, size: bool = True) -> MailboxStatus:
        # Counted from a copy when there is one: a STATUS of every mailbox (LIST-STATUS)
        # makes none, so it never pushes out the copies SELECT uses. The copy knows no
        # message sizes.
        found = None if size else await self._current_copy(mailbox_id)
        if found is None:
            return await MailboxesMixin.mailbox_status(self, mailbox_id, size=size)
        copy, mailbox, first_recent = found
        return MailboxStatus(mailbox.name, len(copy), copy.count_without("\\Seen"),
                             copy.count_from(first_recent), copy.uidvalidity, copy.uidnext,
                             copy.highestmodseq, 0)

    async def _current_copy(self, mailbox_id: int) -> tuple[MailboxRows, Mailbox, int] | None:
        """The copy of the mailbox's rows, brought up to the store (module docstring), the
        mailbox row and its \\Recent boundary; None when there is no usable copy."""
        copy = self.row_cache.get(mailbox_id)

        # One row by its key: on the loop, no thread hop (base.py, "bounded").
        def head(conn: sqlite3.Connection) -> tuple[Mailbox, int]:
            return _head(conn, mailbox_id)

        mailbox, first_recent = await self._read(head, bounded=head, one_statement=True)
        if copy is None or copy.uidvalidity != mailbox.uidvalidity:
            return None
        if mailbox.highestmodseq <= copy.highestmodseq:
            return copy, mailbox, first_recent
        base = copy.highestmodseq

        def catch_up(conn: sqlite3.Connection) -> tuple[int, RowsDelta]:
            fresh, first = _head(conn, mailbox_id)
            return first, _delta(conn, fresh, base)

        first_recent, delta = await self._read(catch_up)
        if delta.mailbox.uidvalidity != copy.uidvalidity:
            return None
        self.row_cache.catch_up(mailbox_id, copy, delta)
        return copy, delta.mailbox, first_recent
