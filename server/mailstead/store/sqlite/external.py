"""Changes other processes commit to the SQLite database, turned into change events.

The server's own writes publish their events as they commit. ``mailstead import``, ``user
del`` and any other tool run against the same database write from their own process, and
without this the sessions of the running server would not learn of them until they select
the mailbox again. ``ExternalChanges`` lives on the writer thread: after each batch and
when idle it asks SQLite's ``PRAGMA data_version``, which changes exactly when another
connection committed, and only then compares the modseqs of the mailboxes changed since
the last look (``mailbox_changes``, which triggers keep: see ``schema.py``) with what the
server has announced. Every mutation bumps its mailbox's modseq, so the messages and
expunges above that mark, less the ones the server's own commits produced, are the
others' work. With several worker processes another process commits all the time, so a
look reads the mailboxes that changed, never every mailbox of every user.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field

from ..api import (
    Appended,
    ChangeBatch,
    ChangeEvent,
    Expunged,
    FlagsChanged,
    MailboxGone,
)
from .rows import chunks, flags_set


@dataclass
class _Mark:
    """How far the server has announced one mailbox's changes."""

    modseq: int
    uidnext: int


@dataclass
class _Own:
    """What the server's own commits did to one mailbox since the last look."""

    modseqs: set[int] = field(default_factory=set)
    appended: set[int] = field(default_factory=set)
    top_modseq: int = 0
    top_uid: int = 0


class ExternalChanges:
    """Finds what other processes committed; used by the writer thread only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._version = self._data_version(conn)
        conn.execute("BEGIN")  # the marks and the change number from one snapshot
        try:
            self._seq = self._last_change(conn)
            self._marks = self._current_marks(conn)
        finally:
            conn.execute("COMMIT")
        self._own: defaultdict[int, _Own] = defaultdict(_Own)

    def note_own(self, changes: list[ChangeBatch]) -> None:
        """Remember the events of the server's own commit (already published)."""
        for batch in changes:
            own = self._own[batch.mailbox_id]
            for ev in batch.events:
                own.modseqs.add(ev.modseq)
                own.top_modseq = max(own.top_modseq, ev.modseq)
                if isinstance(ev, Appended):
                    own.appended.add(ev.uid)
                    own.top_uid = max(own.top_uid, ev.uid)

    def collect(self, conn: sqlite3.Connection) -> list[ChangeBatch]:
        """The change batches others committed since the last call (outside a transaction)."""
        version = self._data_version(conn)
        if version == self._version:
            # Nobody else committed: every change since the last look was our own.
            for mbox, own in self._own.items():
                mark = self._marks.get(mbox)
                if mark is None:  # a mailbox made since we started: what it holds is ours
                    row = conn.execute(
                        "SELECT highestmodseq, uidnext FROM mailboxes WHERE id = ?", (mbox,)
                    ).fetchone()
                    if row is not None:
                        self._marks[mbox] = _Mark(*row)
                else:
                    mark.modseq = max(mark.modseq, own.top_modseq)
                    mark.uidnext = max(mark.uidnext, own.top_uid + 1)
            self._own.clear()
            return []
        conn.execute("BEGIN")
        try:
            batches = self._diff(conn)
        finally:
            conn.execute("COMMIT")
        self._version = version  # only now: a failed look is made again next time
        self._own.clear()
        return batches

    def _diff(self, conn: sqlite3.Connection) -> list[ChangeBatch]:
        changed = conn.execute(
            "SELECT mailbox_id, seq FROM mailbox_changes WHERE seq > ?", (self._seq,)
        ).fetchall()
        if not changed:
            return []
        ids = sorted({mbox for mbox, _ in changed})
        now: dict[int, _Mark] = {}
        for chunk in chunks(ids):
            now.update(
                (mbox, _Mark(modseq, uidnext))
                for mbox, modseq, uidnext in conn.execute(
                    "SELECT id, highestmodseq, uidnext FROM mailboxes WHERE id IN "
                    f"({','.join('?' * len(chunk))})", chunk)
            )
        batches: list[ChangeBatch] = []
        for mbox in ids:
            current = now.get(mbox)
            mark = self._marks.get(mbox)
            if current is None:
                if mark is not None:  # deleted by another process (or by us: harmless)
                    batches.append(ChangeBatch(mbox, (MailboxGone(mark.modseq + 1),)))
                continue
            # A mailbox new to us that we never wrote to holds only others' work (a session
            # may have selected it meanwhile). If we did write to it (a RENAME moves mail),
            # sessions ignore what they know already.
            mark = mark or _Mark(0, 1)
            if current.modseq > mark.modseq:
                events = self._events(conn, mbox, mark, self._own.get(mbox, _Own()))
                if events:
                    batches.append(ChangeBatch(mbox, tuple(events)))
        # Taken over only now that every read succeeded (a failed look is made again).
        for mbox in ids:
            if mbox in now:
                self._marks[mbox] = now[mbox]
            else:
                self._marks.pop(mbox, None)
        self._seq = max(seq for _, seq in changed)
        return batches

    @staticmethod
    def _events(conn: sqlite3.Connection, mbox: int, mark: _Mark, own: _Own) -> list[ChangeEvent]:
        events: list[ChangeEvent] = []
        for uid, modseq in sorted(conn.execute(
            # No ORDER BY: it would walk every row of the mailbox instead of the index.
            "SELECT uid, modseq FROM expunged WHERE mailbox_id = ? AND modseq > ?",
            (mbox, mark.modseq),
        ).fetchall()):
            if modseq not in own.modseqs:
                events.append(Expunged(uid, modseq))
        for uid, modseq, flags in sorted(conn.execute(
            "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? AND modseq > ?",
            (mbox, mark.modseq),
        ).fetchall()):
            flag_set = flags_set(flags)
            if uid >= mark.uidnext and uid not in own.appended:
                events.append(Appended(uid, modseq, flag_set))
            elif modseq not in own.modseqs:
                events.append(FlagsChanged(uid, modseq, flag_set))
        return events

    @staticmethod
    def _current_marks(conn: sqlite3.Connection) -> dict[int, _Mark]:
        """Every mailbox's state as the database has it now."""
        return {
            mbox: _Mark(modseq, uidnext)
            for mbox, modseq, uidnext in conn.execute(
                "SELECT id, highestmodseq, uidnext FROM mailboxes"
            )
        }

    @staticmethod
    def _last_change(conn: sqlite3.Connection) -> int:
        return int(conn.execute(
            "SELECT coalesce(max(seq), 0) FROM mailbox_changes").fetchone()[0])

    @staticmethod
    def _data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])
