"""Message reads: listings, octets, header blocks and the structures parsed at delivery."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from ...mime.header_text import HeaderText, header_text
from ...mime.model import ParsedMessage
from ...mime.parse import parse_message
from ..api import ChangeBatch, MessageInfo, Octets, StoreError
from .base import SqliteBase
from .rows import INFO_COLS, chunks, message_info, octets
from .writer import NotDurable

log = logging.getLogger(__name__)


class ReadsMixin(SqliteBase):
    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]:
        def q(conn: sqlite3.Connection) -> list[MessageInfo]:
            rows = conn.execute(
                f"SELECT {INFO_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            )
            return [message_info(r) for r in rows]

        return await self._read(q)

    async def get_messages(self, mailbox_id: int, uids: Iterable[int]) -> list[MessageInfo]:
        wanted = list(uids)

        def q(conn: sqlite3.Connection) -> list[MessageInfo]:
            out: list[MessageInfo] = []
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {INFO_COLS} FROM messages WHERE mailbox_id = ? "
                    f"AND uid IN ({marks}) ORDER BY uid",
                    (mailbox_id, *chunk),
                )
                out.extend(message_info(r) for r in rows)
            return out

        return await self._read(q)

    async def read_message(self, mailbox_id: int, uid: int) -> bytes | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT b.data FROM messages m JOIN blobs b ON b.id = m.blob_id "
                "WHERE m.mailbox_id = ? AND m.uid = ?",
                (mailbox_id, uid),
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._read(q)

    async def read_range(
        self, mailbox_id: int, uid: int, offset: int, length: int
    ) -> bytes | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT blob_id FROM messages WHERE mailbox_id = ? AND uid = ?",
                (mailbox_id, uid),
            ).fetchone()
            if row is None:
                return None
            # Incremental blob I/O reads only the pages of the range; SELECT substr()
            # would load the whole message for every piece.
            with conn.blobopen("blobs", "data", row[0], readonly=True) as blob:
                blob.seek(min(max(offset, 0), len(blob)))
                return blob.read(max(length, 0))

        return await self._read(q)

    async def _blob_column(
        self,
        column: str,
        mailbox_id: int,
        uids: Iterable[int],
        extra: str = "",
        combine: Callable[[Any, Any], Any] | None = None,
    ) -> dict[int, Any]:
        """uid -> the blob ``column`` of each message, or ``combine(column, extra)``."""
        wanted = list(uids)
        select = f"b.{column}, b.{extra}" if extra else f"b.{column}"

        def q(conn: sqlite3.Connection) -> dict[int, Any]:
            out: dict[int, Any] = {}
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT m.uid, {select} FROM messages m JOIN blobs b ON b.id = m.blob_id "
                    f"WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *chunk),
                )
                if combine is None:
                    out.update(rows)
                else:
                    for uid, value, more in rows:
                        out[uid] = combine(value, more)
            return out

        return await self._read(q)

    async def read_messages(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        return await self._blob_column("data", mailbox_id, uids)

    async def read_octets(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, Octets]:
        return await self._blob_column("data", mailbox_id, uids, "dot_lines", octets)

    async def read_headers(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        return await self._blob_column("header", mailbox_id, uids)

    async def read_structures(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, ParsedMessage]:
        wanted = list(uids)

        def q(conn: sqlite3.Connection) -> dict[int, ParsedMessage]:
            # Decoded here, on a reader thread, so the loop only formats the result.
            out: dict[int, ParsedMessage] = {}
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT m.uid, b.structure, b.id FROM messages m JOIN blobs b "
                    f"ON b.id = m.blob_id WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *chunk),
                )
                for uid, text, blob_id in rows:
                    out[uid] = _decode_structure(conn, text, blob_id)
            return out

        return await self._read(q)

    async def read_header_texts(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, HeaderText]:
        wanted = list(uids)
        filled: list[tuple[str, int]] = []  # (text, blob id) decoded now: older rows

        def q(conn: sqlite3.Connection) -> dict[int, HeaderText]:
            out: dict[int, HeaderText] = {}
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT m.uid, s.text, m.blob_id FROM messages m LEFT JOIN blob_search s "
                    f"ON s.blob_id = m.blob_id WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *chunk),
                ).fetchall()
                for uid, text, blob_id in rows:
                    if text is not None:
                        try:
                            out[uid] = HeaderText.from_json(text)
                            continue
                        except ValueError:
                            log.warning("store: stored header text of blob %d unreadable; "
                                        "decoding again", blob_id)
                    decoded = _decode_header_text(conn, blob_id)
                    out[uid] = decoded
                    filled.append((decoded.to_json(), blob_id))
            return out

        found = await self._read(q)
        if filled:
            await self._keep_header_texts(filled)
        return found

    async def _keep_header_texts(self, filled: list[tuple[str, int]]) -> None:
        """Store header texts decoded for rows that had none (made before version 3), so
        the next SEARCH reads them. Losing this write costs only decoding them again."""

        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            # OR IGNORE: another search may have filled it first. A blob expunged since is
            # gone, and its text with it.
            for text, blob_id in filled:
                if conn.execute("SELECT 1 FROM blobs WHERE id = ?", (blob_id,)).fetchone():
                    conn.execute("INSERT OR IGNORE INTO blob_search (blob_id, text) "
                                 "VALUES (?, ?)", (blob_id, text))
            return None, []

        try:
            await self._write(NotDurable(job))
        except StoreError as exc:
            log.warning("store: could not keep decoded header texts: %s", exc)


def _decode_header_text(conn: sqlite3.Connection, blob_id: int) -> HeaderText:
    header, structure = conn.execute(
        "SELECT header, structure FROM blobs WHERE id = ?", (blob_id,)
    ).fetchone()
    envelope = _decode_structure(conn, structure, blob_id).envelope
    return header_text(bytes(header), envelope)


def _decode_structure(conn: sqlite3.Connection, text: str, blob_id: int) -> ParsedMessage:
    try:
        return ParsedMessage.from_json(text)
    except ValueError:
        # A damaged row (or a format this version does not know): the octets are still
        # there, so parse them again rather than fail every FETCH of this message.
        log.warning("store: stored structure of blob %d unreadable; parsing again", blob_id)
        (data,) = conn.execute("SELECT data FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        return parse_message(bytes(data))
