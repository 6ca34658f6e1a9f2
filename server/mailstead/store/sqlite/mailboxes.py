"""Mailboxes: create, delete, rename, subscriptions, STATUS and the \\Recent claim."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from ..api import (
    AlreadyExists,
    ChangeBatch,
    InvalidName,
    LimitExceeded,
    Mailbox,
    MailboxGone,
    MailboxStatus,
    NotFound,
    SpecialUseTaken,
)
from ..names import validate_mailbox_name
from ..view_api import ViewSnapshot
from .base import SqliteBase
from .messages import copy_rows, expunge_rows
from .rows import INFO_COLS, MAILBOX_COLS, mailbox_row, message_info
from .writer import NotDurable


def next_uidvalidity(conn: sqlite3.Connection) -> int:
    """Strictly increasing across the store, so a recreated mailbox never reuses one."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
    value = max(int(time.time()), (row[0] + 1) if row else 1) & 0xFFFFFFFF or 1
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (value,),
    )
    return value


def insert_mailbox(conn: sqlite3.Connection, user_id: int, name: str, special: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO mailboxes (user_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
        (user_id, name, next_uidvalidity(conn), special),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def drop_mailbox(conn: sqlite3.Connection, mbox_id: int) -> ChangeBatch:
    """Delete a mailbox row and release its messages' blobs."""
    conn.execute(
        "UPDATE blobs SET refcount = refcount - c.n FROM "
        "(SELECT blob_id, COUNT(*) AS n FROM messages WHERE mailbox_id = ? GROUP BY blob_id)"
        " AS c WHERE blobs.id = c.blob_id",
        (mbox_id,),
    )
    conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (mbox_id,))
    conn.execute("DELETE FROM blobs WHERE refcount <= 0")
    conn.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mbox_id,))
    modseq = conn.execute(
        "SELECT highestmodseq FROM mailboxes WHERE id = ?", (mbox_id,)
    ).fetchone()[0]
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mbox_id,))
    return ChangeBatch(mbox_id, (MailboxGone(modseq + 1),))


def move_all(conn: sqlite3.Connection, src_id: int, dst_id: int) -> list[ChangeBatch]:
    uids = [r[0] for r in conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (src_id,)
    )]
    _pairs, dst_events = copy_rows(conn, src_id, uids, dst_id)
    src_events = expunge_rows(conn, src_id, uids)
    out = []
    if src_events:
        out.append(ChangeBatch(src_id, tuple(src_events)))
    if dst_events:
        out.append(ChangeBatch(dst_id, tuple(dst_events)))
    return out


@dataclass(slots=True)
class _PendingClaim:
    """A \\Recent claim being written: up to ``below``; ``write`` gives (was, now)."""

    below: int
    write: asyncio.Future[tuple[int, int]]


_claims_of: WeakKeyDictionary[SqliteBase, dict[int, _PendingClaim]] = WeakKeyDictionary()


def _pending_claims(store: SqliteBase) -> dict[int, _PendingClaim]:
    """The claims in flight of one store, by mailbox (kept beside it: base.py builds the
    store's state, this module only needs it for ``claim_recent``)."""
    claims = _claims_of.get(store)
    if claims is None:
        claims = _claims_of[store] = {}
    return claims


class MailboxesMixin(SqliteBase):
    async def list_mailboxes(self, user_id: int) -> list[Mailbox]:
        def q(conn: sqlite3.Connection) -> list[Mailbox]:
            rows = conn.execute(
                f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE user_id = ? ORDER BY name",
                (user_id,),
            )
            return [mailbox_row(r) for r in rows]

        return await self._read(q)

    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None:
        def q(conn: sqlite3.Connection) -> Mailbox | None:
            row = conn.execute(
                f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE user_id = ? AND name = ?",
                (user_id, name),
            ).fetchone()
            return mailbox_row(row) if row else None

        return await self._read(q, bounded=q, one_statement=True)  # one row by its key

    async def create_mailbox(
        self, user_id: int, name: str, special_use: str | None = None
    ) -> Mailbox:
        validate_mailbox_name(name, self.max_depth)

        def job(conn: sqlite3.Connection) -> tuple[Mailbox, list[ChangeBatch]]:
            count = conn.execute(
                "SELECT COUNT(*) FROM mailboxes WHERE user_id = ?", (user_id,)
            ).fetchone()[0]
            if count >= self.max_mailboxes:
                raise LimitExceeded(f"at most {self.max_mailboxes} mailboxes per user")
            if conn.execute(
                "SELECT 1 FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
            ).fetchone():
                raise AlreadyExists(f"mailbox {name} already exists")
            if special_use and conn.execute(
                "SELECT 1 FROM mailboxes WHERE user_id = ? AND special_use = ?",
                (user_id, special_use),
            ).fetchone():
                raise SpecialUseTaken(f"a mailbox with {special_use} already exists")
            mbox_id = insert_mailbox(conn, user_id, name, special_use)
            row = conn.execute(
                f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = ?", (mbox_id,)
            ).fetchone()
            return mailbox_row(row), []

        return await self._write(job)

    async def delete_mailbox(self, user_id: int, name: str) -> None:
        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            row = conn.execute(
                "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"mailbox {name} does not exist")
            return None, [drop_mailbox(conn, row[0])]

        await self._write(job)

    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        validate_mailbox_name(new, self.max_depth)

        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            src = conn.execute(
                "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, old)
            ).fetchone()
            has_children = conn.execute(
                "SELECT 1 FROM mailboxes WHERE user_id = ? AND substr(name, 1, ?) = ?",
                (user_id, len(old) + 1, old + "/"),
            ).fetchone()
            if src is None and not has_children:
                raise NotFound(f"mailbox {old} does not exist")
            if conn.execute(
                "SELECT 1 FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, new)
            ).fetchone():
                raise AlreadyExists(f"mailbox {new} already exists")
            if new.startswith(old + "/"):
                raise InvalidName("cannot rename a mailbox into its own hierarchy")
            if old == "INBOX" and src is not None:
                # RFC 3501 §6.3.5: INBOX's messages move to the new name, INBOX stays.
                dst_id = insert_mailbox(conn, user_id, new, None)
                changes = move_all(conn, src[0], dst_id)
                return None, changes
            rows = conn.execute(
                "SELECT id, name FROM mailboxes WHERE user_id = ? AND (name = ? OR "
                "substr(name, 1, ?) = ?)",
                (user_id, old, len(old) + 1, old + "/"),
            ).fetchall()
            for mbox_id, name in rows:
                target = new + name[len(old):]
                if conn.execute(
                    "SELECT 1 FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, target)
                ).fetchone():
                    raise AlreadyExists(f"mailbox {target} already exists")
                # Same mailbox, same UIDs: UIDVALIDITY stays and selected sessions go on.
                conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (target, mbox_id))
                conn.execute(
                    "UPDATE subscriptions SET name = ? WHERE user_id = ? AND name = ?",
                    (target, user_id, name),
                )
            return None, []

        await self._write(job)

    async def list_subscriptions(self, user_id: int) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT name FROM subscriptions WHERE user_id = ? ORDER BY name", (user_id,)
            )
            return [r[0] for r in rows]

        return await self._read(q)

    async def set_subscribed(self, user_id: int, name: str, subscribed: bool) -> None:
        if subscribed:
            validate_mailbox_name(name, self.max_depth)

        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            if subscribed:
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (user_id, name) VALUES (?, ?)",
                    (user_id, name),
                )
            else:
                conn.execute(
                    "DELETE FROM subscriptions WHERE user_id = ? AND name = ?", (user_id, name)
                )
            return None, []

        await self._write(job)

    async def mailbox_status(self, mailbox_id: int, *, size: bool = True) -> MailboxStatus:
        def q(conn: sqlite3.Connection) -> MailboxStatus:
            mb = conn.execute(
                "SELECT name, uidvalidity, uidnext, highestmodseq, first_recent_uid "
                "FROM mailboxes WHERE id = ?",
                (mailbox_id,),
            ).fetchone()
            if mb is None:
                raise NotFound("mailbox does not exist")
            name, uidvalidity, uidnext, highestmodseq, first_recent = mb
            count, size, unseen, recent = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), "
                "COALESCE(SUM(instr(flags, '\\Seen') = 0), 0), "
                "COALESCE(SUM(uid >= ?), 0) FROM messages WHERE mailbox_id = ?",
                (first_recent, mailbox_id),
            ).fetchone()
            return MailboxStatus(
                name, count, unseen, recent, uidvalidity, uidnext, highestmodseq, size
            )

        return await self._read(q)

    # --- \Recent claim and the snapshot SELECT reads (see MailStore.open_view) ----------
    async def claim_recent(self, mailbox_id: int, below: int | None = None) -> int:
        # A delivery to a mailbox that 1,000 sessions have selected makes each claim the
        # new message at once: the claims that a write in flight already covers join it
        # instead of queueing 1,000 writes. The caller that started the write gets where
        # the boundary was; one that joined gets where the write left it, as if its own
        # claim had run right after (nothing below it is left to claim). So each UID
        # still goes to exactly one caller, and across processes the write is atomic.
        claims = _pending_claims(self)
        pending = claims.get(mailbox_id)
        if below is not None and pending is not None and below <= pending.below:
            _, target = await asyncio.shield(pending.write)
            if below <= target:
                return target
        write = asyncio.get_running_loop().create_task(self._claim_write(mailbox_id, below))
        if below is not None and (pending is None or below > pending.below):
            mine = claims[mailbox_id] = _PendingClaim(below, write)

            def done(task: asyncio.Future[tuple[int, int]]) -> None:
                if claims.get(mailbox_id) is mine:
                    del claims[mailbox_id]
                if not task.cancelled():
                    task.exception()  # retrieved: whoever awaits it sees it

            write.add_done_callback(done)
        # Shielded: a session closing while its claim is written must not cancel the write
        # that others joined (its own UIDs then go to nobody, never to two sessions).
        was, _ = await asyncio.shield(write)
        return was

    async def _claim_write(self, mailbox_id: int, below: int | None) -> tuple[int, int]:
        """The claim itself: (the boundary as it was, where it is now)."""
        def job(conn: sqlite3.Connection) -> tuple[tuple[int, int], list[ChangeBatch]]:
            # The writer is the only writer and runs inside BEGIN IMMEDIATE, so this read
            # and the UPDATE are one atomic step, for other processes too.
            row = conn.execute(
                "SELECT first_recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
            ).fetchone()
            if row is None:
                raise NotFound("mailbox does not exist")
            was, uidnext = row
            target = uidnext if below is None else min(below, uidnext)
            conn.execute(
                "UPDATE mailboxes SET first_recent_uid = ? WHERE id = ? AND first_recent_uid < ?",
                (target, mailbox_id, target),
            )
            return (was, max(was, target)), []

        result: tuple[int, int] = await self._write(NotDurable(job))
        return result

    async def read_view(self, mailbox_id: int) -> ViewSnapshot:
        def q(conn: sqlite3.Connection) -> ViewSnapshot:
            row = conn.execute(
                f"SELECT {MAILBOX_COLS}, first_recent_uid FROM mailboxes WHERE id = ?",
                (mailbox_id,),
            ).fetchone()
            if row is None:
                raise NotFound("mailbox does not exist")
            rows = conn.execute(
                f"SELECT {INFO_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            )
            return ViewSnapshot(mailbox_row(row[:-1]), [message_info(r) for r in rows], row[-1])

        return await self._read(q)
