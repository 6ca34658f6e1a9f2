"""The outbound queue on SQLite: ``queue`` (one row per message) and ``queue_recipients``.

Every write is a job of the one writer thread, so it commits with the same group commit
and fsync as a delivery: a message ``queue_add`` returned an id for is on disk. The
outcome of an attempt, the bounce it produced (a message in the sender's INBOX, or a new
queued message to a remote sender) and the removal of a finished message are one job,
so a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import sqlite3
import time

from ..api import ChangeBatch
from ..queue_api import PENDING, Bounce, Outcome, QueuedMessage, QueuedRecipient
from .base import SqliteBase
from .messages import bump, insert_blob, insert_message, prepare_blob
from .rows import to_row_date

_RCPT_COLS = "queue_id, address, domain, state, attempts, next_attempt, last_reply"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _insert(conn: sqlite3.Connection, mail_from: str, recipients: list[str], data: bytes,
            now: float) -> int:
    cur = conn.execute(
        "INSERT INTO queue (mail_from, data, created) VALUES (?, ?, ?)", (mail_from, data, now)
    )
    queue_id = cur.lastrowid
    assert queue_id is not None
    conn.executemany(
        "INSERT OR IGNORE INTO queue_recipients (queue_id, address, domain, next_attempt) "
        "VALUES (?, ?, ?, ?)",
        [(queue_id, rcpt, _domain(rcpt), now) for rcpt in recipients],
    )
    return queue_id


class QueueMixin(SqliteBase):
    async def queue_add(self, mail_from: str, recipients: list[str], data: bytes) -> int:
        rcpts = list(dict.fromkeys(recipients))
        if not rcpts:
            raise ValueError("a queued message needs at least one recipient")
        now = time.time()

        def job(conn: sqlite3.Connection) -> tuple[int, list[ChangeBatch]]:
            return _insert(conn, mail_from, rcpts, data, now), []

        return int(await self._write(job))

    async def queue_due(self, now: float, limit: int) -> list[QueuedRecipient]:
        def q(conn: sqlite3.Connection) -> list[QueuedRecipient]:
            rows = conn.execute(
                f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE state = ? "
                "AND next_attempt <= ? ORDER BY next_attempt, queue_id LIMIT ?",
                (PENDING, now, limit),
            )
            return [QueuedRecipient(*row) for row in rows]

        return await self._read(q)

    async def queue_next_due(self) -> float | None:
        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT MIN(next_attempt) FROM queue_recipients WHERE state = ?", (PENDING,)
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(q)

    def _message(self, conn: sqlite3.Connection, row: tuple[int, str, float, int]
                 ) -> QueuedMessage:
        rcpts = conn.execute(
            f"SELECT {_RCPT_COLS} FROM queue_recipients WHERE queue_id = ? ORDER BY address",
            (row[0],),
        )
        return QueuedMessage(*row, recipients=tuple(QueuedRecipient(*r) for r in rcpts))

    async def queue_message(self, queue_id: int) -> QueuedMessage | None:
        def q(conn: sqlite3.Connection) -> QueuedMessage | None:
            row = conn.execute(
                "SELECT id, mail_from, created, length(data) FROM queue WHERE id = ?",
                (queue_id,),
            ).fetchone()
            return None if row is None else self._message(conn, row)

        return await self._read(q)

    async def queue_data(self, queue_id: int) -> bytes | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT data FROM queue WHERE id = ?", (queue_id,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(q)

    async def queue_list(self) -> list[QueuedMessage]:
        def q(conn: sqlite3.Connection) -> list[QueuedMessage]:
            rows = conn.execute(
                "SELECT id, mail_from, created, length(data) FROM queue ORDER BY id"
            ).fetchall()
            return [self._message(conn, row) for row in rows]

        return await self._read(q)

    async def queue_record(
        self, queue_id: int, outcomes: list[Outcome], bounce: Bounce | None = None
    ) -> None:
        blob = prepare_blob(bounce.data) if bounce and bounce.mailbox_id is not None else None
        now = time.time()

        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            if conn.execute("SELECT 1 FROM queue WHERE id = ?", (queue_id,)).fetchone() is None:
                return None, []  # deleted during the attempt: no outcome, no bounce
            for out in outcomes:
                conn.execute(
                    "UPDATE queue_recipients SET state = ?, attempts = attempts + 1, "
                    "next_attempt = ?, last_reply = ? "
                    "WHERE queue_id = ? AND address = ? AND state = ?",
                    (out.state, out.next_attempt, out.reply, queue_id, out.address, PENDING),
                )
            changes: list[ChangeBatch] = []
            if bounce is not None and blob is not None and bounce.mailbox_id is not None:
                # The sender's user may have been deleted meanwhile: then there is nobody
                # to tell, and the outcomes must still be recorded.
                if conn.execute(
                    "SELECT 1 FROM mailboxes WHERE id = ?", (bounce.mailbox_id,)
                ).fetchone():
                    blob_id, size = insert_blob(conn, blob, 1)
                    modseq = bump(conn, bounce.mailbox_id)
                    ev = insert_message(conn, bounce.mailbox_id, modseq, blob_id, size, (),
                                        to_row_date(None))
                    changes.append(ChangeBatch(bounce.mailbox_id, (ev,)))
            elif bounce is not None and bounce.remote:
                _insert(conn, "", [bounce.remote], bounce.data, now)
            left = conn.execute(
                "SELECT 1 FROM queue_recipients WHERE queue_id = ? AND state = ? LIMIT 1",
                (queue_id, PENDING),
            ).fetchone()
            if left is None:
                conn.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
            return None, changes

        await self._write(job)

    async def queue_retry(self, queue_id: int | None, now: float) -> int:
        def job(conn: sqlite3.Connection) -> tuple[int, list[ChangeBatch]]:
            sql = "UPDATE queue_recipients SET next_attempt = ? WHERE state = ?"
            params: tuple[object, ...] = (now, PENDING)
            if queue_id is not None:
                sql += " AND queue_id = ?"
                params += (queue_id,)
            return conn.execute(sql, params).rowcount, []

        return int(await self._write(job))

    async def queue_delete(self, queue_id: int) -> bool:
        def job(conn: sqlite3.Connection) -> tuple[bool, list[ChangeBatch]]:
            cur = conn.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
            return cur.rowcount > 0, []

        return bool(await self._write(job))

    async def queue_pending(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                "SELECT COUNT(*) FROM queue_recipients WHERE state = ?", (PENDING,)
            ).fetchone()[0])

        return await self._read(q)

