"""Users: create (with the default mailboxes), look up, change password, delete."""

from __future__ import annotations

import sqlite3
import time

from ..api import DEFAULT_MAILBOXES, AlreadyExists, ChangeBatch, InvalidName, NotFound, User
from .base import SqliteBase
from .mailboxes import drop_mailbox, insert_mailbox


class UsersMixin(SqliteBase):
    async def create_user(self, name: str, password_hash: str) -> User:
        name = name.strip()
        if not name or any(ord(c) < 0x21 or c in '"\\()' for c in name) or len(name) > 255:
            raise InvalidName(f"invalid user name {name!r}")

        def job(conn: sqlite3.Connection) -> tuple[User, list[ChangeBatch]]:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"user {name} already exists")
            cur = conn.execute(
                "INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)",
                (name, password_hash, int(time.time())),
            )
            user_id = cur.lastrowid
            assert user_id is not None
            # INBOX always (RFC 3501 §5.1); the others as far as max_mailboxes allows.
            for mbox, special in DEFAULT_MAILBOXES[: max(1, self.max_mailboxes)]:
                insert_mailbox(conn, user_id, mbox, special)
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (user_id, name) VALUES (?, ?)",
                    (user_id, mbox),
                )
            return User(user_id, name, password_hash), []

        return await self._write(job)

    async def get_user(self, name: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT id, name, password_hash FROM users WHERE name = ?", (name.strip(),)
            ).fetchone()
            return User(*row) if row else None

        # One row by its key: on the loop (no thread hop per RCPT or login), and read
        # fresh each time, so a `user del` or a new user counts at the next lookup.
        return await self._read(q, bounded=q, one_statement=True)

    async def list_users(self) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute("SELECT id, name, password_hash FROM users ORDER BY name")
            return [User(*row) for row in rows]

        return await self._read(q)

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            cur = conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )
            if cur.rowcount == 0:
                raise NotFound("no such user")
            return None, []

        await self._write(job)

    async def delete_user(self, name: str) -> bool:
        def job(conn: sqlite3.Connection) -> tuple[bool, list[ChangeBatch]]:
            row = conn.execute("SELECT id FROM users WHERE name = ?", (name.strip(),)).fetchone()
            if row is None:
                return False, []
            changes = []
            for (mbox_id,) in conn.execute(
                "SELECT id FROM mailboxes WHERE user_id = ?", (row[0],)
            ).fetchall():
                changes.append(drop_mailbox(conn, mbox_id))
            conn.execute("DELETE FROM users WHERE id = ?", (row[0],))
            return True, changes

        return await self._write(job)
