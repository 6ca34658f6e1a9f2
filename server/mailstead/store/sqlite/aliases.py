"""Aliases: addresses that reach one or more users besides their own names."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..api import Alias, ChangeBatch, NotFound, User
from .base import INLINE_ROWS, Offload, SqliteBase


class AliasesMixin(SqliteBase):
    async def add_alias(self, address: str, user_ids: Sequence[int]) -> Alias:
        def job(conn: sqlite3.Connection) -> tuple[Alias, list[ChangeBatch]]:
            for user_id in user_ids:
                if not conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                    raise NotFound(f"no user with id {user_id}")
                conn.execute(
                    "INSERT OR IGNORE INTO aliases (address, user_id) VALUES (?, ?)",
                    (address, user_id),
                )
            return _alias(conn, address), []

        result: Alias = await self._write(job)
        return result

    async def delete_alias(self, address: str) -> bool:
        def job(conn: sqlite3.Connection) -> tuple[bool, list[ChangeBatch]]:
            cur = conn.execute("DELETE FROM aliases WHERE address = ?", (address,))
            return cur.rowcount > 0, []

        found: bool = await self._write(job)
        return found

    async def list_aliases(self) -> list[Alias]:
        def q(conn: sqlite3.Connection) -> list[Alias]:
            rows = conn.execute(
                "SELECT a.address, u.name FROM aliases a JOIN users u ON u.id = a.user_id "
                "ORDER BY a.address, u.name"
            ).fetchall()
            found: dict[str, list[str]] = {}
            for address, name in rows:
                found.setdefault(address, []).append(name)
            return [Alias(a, tuple(names)) for a, names in found.items()]

        return await self._read(q)

    async def alias_users(self, address: str) -> list[User]:
        def q(conn: sqlite3.Connection, bound: int | None = None) -> list[User]:
            rows = conn.execute(
                "SELECT u.id, u.name, u.password_hash FROM aliases a "
                "JOIN users u ON u.id = a.user_id WHERE a.address = ? ORDER BY u.id "
                "LIMIT ?", (address, -1 if bound is None else bound + 1),
            ).fetchall()
            if bound is not None and len(rows) > bound:
                raise Offload  # an alias of very many users: read on a thread
            return [User(*row) for row in rows]

        # Rows by their key, at most INLINE_ROWS on the loop: an RCPT of no user name
        # asks this twice (the address, the catch-all) without a thread hop, and reads
        # fresh each time, so alias changes count at the next lookup.
        return await self._read(q, bounded=lambda c: q(c, INLINE_ROWS), one_statement=True)


def _alias(conn: sqlite3.Connection, address: str) -> Alias:
    names = conn.execute(
        "SELECT u.name FROM aliases a JOIN users u ON u.id = a.user_id "
        "WHERE a.address = ? ORDER BY u.name", (address,),
    ).fetchall()
    return Alias(address, tuple(n for (n,) in names))
