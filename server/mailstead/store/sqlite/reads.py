"""Message reads: listings, octets, header blocks and the structures parsed at delivery."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...mime.header_text import HeaderText, header_text
from ...mime.model import ParsedMessage
from ...mime.parse import parse_message
from ..api import ChangeBatch, MessageInfo, StoreError
from ..reads_api import FetchData, FetchWants, Octets, small_run
from .base import INLINE_BYTES, INLINE_ROWS, Offload, SqliteBase
from .rows import CHUNK_ROWS, INFO_COLS, chunks, in_list, message_info, octets
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

    async def list_maildrop(self, mailbox_id: int) -> list[tuple[int, int, bool]]:
        def q(conn: sqlite3.Connection) -> list[tuple[int, int, bool]]:
            # STATUS UNSEEN's test: keywords cannot hold a backslash (RFC 3501 atom).
            return conn.execute(
                "SELECT uid, size, instr(flags, '\\Seen') > 0 FROM messages "
                "WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)).fetchall()

        return await self._read(q, one_statement=True)

    async def get_messages(self, mailbox_id: int, uids: Iterable[int]) -> list[MessageInfo]:
        wanted = list(uids)

        def q(conn: sqlite3.Connection) -> list[MessageInfo]:
            out: list[MessageInfo] = []
            for chunk in chunks(wanted):
                marks, params = in_list(chunk)
                rows = conn.execute(
                    f"SELECT {INFO_COLS} FROM messages WHERE mailbox_id = ? "
                    f"AND uid IN ({marks}) ORDER BY uid",
                    (mailbox_id, *params),
                )
                out.extend(message_info(r) for r in rows)
            return out

        return await self._read(q, bounded=q if len(wanted) <= INLINE_ROWS else None,
                                one_statement=len(wanted) <= CHUNK_ROWS)

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
                marks, params = in_list(chunk)
                rows = conn.execute(
                    f"SELECT m.uid, {select} FROM messages m JOIN blobs b ON b.id = m.blob_id "
                    f"WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *params),
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
                marks, params = in_list(chunk)
                rows = conn.execute(
                    "SELECT m.uid, b.structure, b.id FROM messages m JOIN blobs b "
                    f"ON b.id = m.blob_id WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *params),
                )
                for uid, text, blob_id in rows:
                    out[uid] = _decode_structure(conn, text, blob_id)
            return out

        return await self._read(q)

    async def read_for_fetch(
        self, mailbox_id: int, uids: Sequence[int], wants: FetchWants
    ) -> FetchData:
        order = list(uids)

        def q(conn: sqlite3.Connection, bound: bool) -> FetchData:
            if bound and len(order) > INLINE_ROWS:
                raise Offload
            out = FetchData()
            blob_of: dict[int, list[int]] = {}  # blob id -> UIDs (copies share a blob)
            heavy = 0  # blob octets the structure and header reads copy
            join = wants.headers or wants.structure
            sql = (_FETCH_LISTING_JOINED if join else _FETCH_LISTING)
            for chunk in chunks(order):
                marks, params = in_list(chunk)
                for row in conn.execute(sql % marks, (mailbox_id, *params)):
                    info = message_info(row[:6])
                    out.infos[info.uid] = info
                    blob_of.setdefault(row[6], []).append(info.uid)
                    if join:
                        heavy += (row[7] if wants.headers else 0) + (
                            row[8] if wants.structure else 0)
            run = small_run(order, out.infos, wants) if wants.bodies else []
            run = [u for u in run if u in out.infos]
            heavy += sum(out.infos[u].size for u in run)
            if bound and heavy > INLINE_BYTES:
                raise Offload
            if join:
                column = ("header, structure" if wants.headers and wants.structure
                          else "header, NULL" if wants.headers else "NULL, structure")
                for blob_id, header, structure in _blobs(conn, column, blob_of):
                    for uid in blob_of[blob_id]:
                        if header is not None:
                            out.headers[uid] = header
                        if structure is not None:
                            out.structures[uid] = _decode_structure(conn, structure, blob_id)
            if run:
                in_run = set(run)
                for blob_id, data, _ in _blobs(conn, "data, NULL", {
                        b for b, us in blob_of.items() if in_run.intersection(us)}):
                    for uid in blob_of[blob_id]:
                        if uid in in_run:
                            out.bodies[uid] = data
            return out

        return await self._read(lambda c: q(c, False), bounded=lambda c: q(c, True))

    async def read_header_texts(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, HeaderText]:
        # Those decoded before come from this process's copy (store/header_cache.py).
        kept, wanted = self.header_texts.take(mailbox_id, uids)
        if not wanted:
            return kept
        filled: list[tuple[str, int]] = []  # (text, blob id) decoded now: older rows

        def q(conn: sqlite3.Connection) -> dict[int, HeaderText]:
            out: dict[int, HeaderText] = {}
            for chunk in chunks(wanted):
                marks, params = in_list(chunk)
                rows = conn.execute(
                    "SELECT m.uid, s.text, m.blob_id FROM messages m LEFT JOIN blob_search s "
                    f"ON s.blob_id = m.blob_id WHERE m.mailbox_id = ? AND m.uid IN ({marks})",
                    (mailbox_id, *params),
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
        self.header_texts.keep(mailbox_id, found)
        if filled:
            await self._keep_header_texts(filled)
        found.update(kept)
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


_FETCH_LISTING = (
    "SELECT uid, modseq, flags, internaldate, tzoffset, size, blob_id FROM messages "
    "WHERE mailbox_id = ? AND uid IN (%s)"
)
# length() of a blob reads its size from the record header, not its octets.
_FETCH_LISTING_JOINED = (
    "SELECT m.uid, m.modseq, m.flags, m.internaldate, m.tzoffset, m.size, m.blob_id, "
    "length(b.header), length(b.structure) FROM messages m JOIN blobs b ON b.id = m.blob_id "
    "WHERE m.mailbox_id = ? AND m.uid IN (%s)"
)


def _blobs(conn: sqlite3.Connection, columns: str, ids: Iterable[int]) -> Iterable[Any]:
    """(id, first, second) of the given blob columns, per distinct blob."""
    for chunk in chunks(ids):
        marks, params = in_list(chunk)
        yield from conn.execute(f"SELECT id, {columns} FROM blobs WHERE id IN ({marks})",
                                params)


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
