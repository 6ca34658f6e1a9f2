"""The embedded SQLite store (WAL mode): one writer thread with group commit, pooled readers.

Writes are jobs queued to a single writer thread. It takes every job that is waiting,
runs each inside its own SAVEPOINT of one transaction and commits once (one fsync for
many deliveries), then hands results and change events back to the loop in one callback
so the ``ChangeHub`` sees batches strictly in commit order, and only after commit.
Reads run on a small thread pool, each thread with its own connection (WAL lets readers
run beside the writer). Message octets, the header block and the parse result live in
``blobs``, shared by copies of a message; ``messages`` holds per-mailbox state.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from ..mime.parse import has_dot_lines, parse_message
from .api import (
    DEFAULT_MAILBOXES,
    AlreadyExists,
    Appended,
    ChangeBatch,
    Expunged,
    FlagMode,
    FlagsChanged,
    FlagUpdate,
    InvalidName,
    LimitExceeded,
    Mailbox,
    MailboxGone,
    MailboxStatus,
    MailStore,
    MessageInfo,
    NewMessage,
    NotFound,
    Octets,
    StoreUnavailable,
    User,
    ViewSnapshot,
)
from .hub import ChangeHub
from .names import validate_mailbox_name
from .writer import WriteJob, Writer, map_error

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    first_recent_uid INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    UNIQUE (user_id, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY,
    refcount INTEGER NOT NULL,
    header BLOB NOT NULL,
    structure TEXT NOT NULL,
    data BLOB NOT NULL,
    dot_lines INTEGER  -- 1 when a line starts with ".", NULL: unknown (older databases)
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob_id INTEGER NOT NULL REFERENCES blobs(id),
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
"""



def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _octets(data: bytes, dot_lines: int | None) -> Octets:
    return Octets(data, None if dot_lines is None else bool(dot_lines))


def _flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _to_row_date(when: datetime | None) -> tuple[int, int]:
    if when is None:
        when = datetime.now(UTC).astimezone()
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    return int(when.timestamp()), int(offset.total_seconds() // 60)


def _from_row_date(ts: int, tzoffset: int) -> datetime:
    return datetime.fromtimestamp(ts, timezone(timedelta(minutes=tzoffset)))


READER_MMAP_BYTES = 1 << 30


class SqliteStore(MailStore):
    """``MailStore`` on one SQLite database file in WAL mode."""

    def __init__(
        self,
        path: str | Path,
        hub: ChangeHub | None = None,
        *,
        fsync: bool = True,
        max_mailboxes: int = 1000,
        max_depth: int = 16,
        max_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.hub = hub or ChangeHub()
        self._fsync = fsync
        self.max_mailboxes = max_mailboxes
        self.max_depth = max_depth
        self.max_bytes = max_bytes  # 0: unlimited; else the database may not grow past it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._maildrop_locks: set[int] = set()
        # Called with ("read" | "write", seconds) per store call, for metrics.
        self.on_latency: Callable[[str, float], None] | None = None

    # --- connections ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        if self.max_bytes:
            # SQLite then fails writes with SQLITE_FULL, exactly as on a full disk.
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(self.max_bytes // page, 16)}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            # Read message octets straight from the page cache instead of page by page
            # through read(2): the blobs span overflow pages. Readers only: SQLite maps
            # for reading, and the writer keeps plain I/O with its SQLITE_FULL handling.
            conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
            self._local.conn = conn
            with self._reader_lock:
                self._all_readers.append(conn)
        return conn

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def init() -> None:
            conn = self._connect()
            try:
                conn.executescript(SCHEMA)
                self._upgrade(conn)
            finally:
                conn.close()

        try:
            await self._loop.run_in_executor(None, init)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the mail store {self.path}: {exc}") from None
        self._writer = Writer(self._connect, self)
        self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Bring a database made by an earlier version up to ``SCHEMA``."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}
        if "dot_lines" not in columns:
            conn.execute("ALTER TABLE blobs ADD COLUMN dot_lines INTEGER")

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._reader_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # --- plumbing ------------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None or self._loop is None:
            raise StoreUnavailable("the mail store is closed")

        def run() -> T:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        started = time.perf_counter()
        try:
            return await self._loop.run_in_executor(self._readers, run)
        except sqlite3.Error as exc:
            raise map_error(exc) from None
        finally:
            if self.on_latency is not None:
                self.on_latency("read", time.perf_counter() - started)

    async def _write(self, job: WriteJob) -> Any:
        if self._writer is None or self._loop is None:
            raise StoreUnavailable("the mail store is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        started = time.perf_counter()
        self._writer.submit(job, fut)
        try:
            return await fut
        finally:
            if self.on_latency is not None:
                self.on_latency("write", time.perf_counter() - started)

    def _complete(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, list[ChangeBatch], BaseException | None]],
    ) -> None:
        """Called on the writer thread after commit; hops to the loop exactly once."""

        def finish() -> None:
            for fut, result, changes, err in outcomes:
                for change in changes:
                    self.hub.publish(change)
                if fut.cancelled():
                    continue
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(result)

        self._on_loop(finish)

    def _publish(self, changes: list[ChangeBatch]) -> None:
        """Publish change batches committed by another process (from the writer thread)."""

        def publish() -> None:
            for change in changes:
                self.hub.publish(change)

        self._on_loop(publish)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop, after what the writer thread handed over before it."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
            pass

    # --- users -----------------------------------------------------------------------
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
            for mbox, special in DEFAULT_MAILBOXES:
                self._insert_mailbox(conn, user_id, mbox, special)
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

        return await self._read(q)

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
                changes.append(self._drop_mailbox(conn, mbox_id))
            conn.execute("DELETE FROM users WHERE id = ?", (row[0],))
            return True, changes

        return await self._write(job)

    # --- mailboxes -------------------------------------------------------------------
    def _next_uidvalidity(self, conn: sqlite3.Connection) -> int:
        """Strictly increasing across the store, so a recreated mailbox never reuses one."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        value = max(int(time.time()), (row[0] + 1) if row else 1) & 0xFFFFFFFF or 1
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (value,),
        )
        return value

    def _insert_mailbox(
        self, conn: sqlite3.Connection, user_id: int, name: str, special: str | None
    ) -> int:
        cur = conn.execute(
            "INSERT INTO mailboxes (user_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
            (user_id, name, self._next_uidvalidity(conn), special),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    @staticmethod
    def _mailbox_row(row: Sequence[Any]) -> Mailbox:
        return Mailbox(*row)

    _MAILBOX_COLS = "id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use"

    async def list_mailboxes(self, user_id: int) -> list[Mailbox]:
        def q(conn: sqlite3.Connection) -> list[Mailbox]:
            rows = conn.execute(
                f"SELECT {self._MAILBOX_COLS} FROM mailboxes WHERE user_id = ? ORDER BY name",
                (user_id,),
            )
            return [self._mailbox_row(r) for r in rows]

        return await self._read(q)

    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None:
        def q(conn: sqlite3.Connection) -> Mailbox | None:
            row = conn.execute(
                f"SELECT {self._MAILBOX_COLS} FROM mailboxes WHERE user_id = ? AND name = ?",
                (user_id, name),
            ).fetchone()
            return self._mailbox_row(row) if row else None

        return await self._read(q)

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
                raise AlreadyExists(f"a mailbox with {special_use} already exists")
            mbox_id = self._insert_mailbox(conn, user_id, name, special_use)
            row = conn.execute(
                f"SELECT {self._MAILBOX_COLS} FROM mailboxes WHERE id = ?", (mbox_id,)
            ).fetchone()
            return self._mailbox_row(row), []

        return await self._write(job)

    def _drop_mailbox(self, conn: sqlite3.Connection, mbox_id: int) -> ChangeBatch:
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

    async def delete_mailbox(self, user_id: int, name: str, origin: object = None) -> None:
        def job(conn: sqlite3.Connection) -> tuple[None, list[ChangeBatch]]:
            row = conn.execute(
                "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"mailbox {name} does not exist")
            return None, [self._drop_mailbox(conn, row[0])]

        await self._write(job)

    async def rename_mailbox(
        self, user_id: int, old: str, new: str, origin: object = None
    ) -> None:
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
                dst_id = self._insert_mailbox(conn, user_id, new, None)
                changes = self._move_all(conn, src[0], dst_id)
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

    def _move_all(self, conn: sqlite3.Connection, src_id: int, dst_id: int) -> list[ChangeBatch]:
        uids = [r[0] for r in conn.execute(
            "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (src_id,)
        )]
        _pairs, dst_events = self._copy_rows(conn, src_id, uids, dst_id)
        src_events = self._expunge_rows(conn, src_id, uids)
        out = []
        if src_events:
            out.append(ChangeBatch(src_id, tuple(src_events)))
        if dst_events:
            out.append(ChangeBatch(dst_id, tuple(dst_events)))
        return out

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

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
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
            first_unseen = conn.execute(
                "SELECT MIN(uid) FROM messages WHERE mailbox_id = ? AND instr(flags, '\\Seen') = 0",
                (mailbox_id,),
            ).fetchone()[0]
            return MailboxStatus(
                name, count, unseen, recent, uidvalidity, uidnext, highestmodseq, size,
                first_unseen,
            )

        return await self._read(q)

    async def claim_recent(self, mailbox_id: int, below: int | None = None) -> int:
        def job(conn: sqlite3.Connection) -> tuple[int, list[ChangeBatch]]:
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
            return was, []

        return await self._write(job)

    async def read_view(self, mailbox_id: int) -> ViewSnapshot:
        def q(conn: sqlite3.Connection) -> ViewSnapshot:
            row = conn.execute(
                f"SELECT {self._MAILBOX_COLS}, first_recent_uid FROM mailboxes WHERE id = ?",
                (mailbox_id,),
            ).fetchone()
            if row is None:
                raise NotFound("mailbox does not exist")
            rows = conn.execute(
                f"SELECT {self._INFO_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            )
            return ViewSnapshot(self._mailbox_row(row[:-1]), [self._info(r) for r in rows],
                                row[-1])

        return await self._read(q)

    # --- messages --------------------------------------------------------------------
    def _bump(self, conn: sqlite3.Connection, mailbox_id: int) -> int:
        """Advance the mailbox modseq once for this transaction-job and return it."""
        row = conn.execute(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ? "
            "RETURNING highestmodseq",
            (mailbox_id,),
        ).fetchone()
        if row is None:
            raise NotFound("mailbox does not exist")
        return row[0]

    def _insert_blob(self, conn: sqlite3.Connection, data: bytes, refs: int) -> tuple[int, int]:
        parsed = parse_message(data)
        header = data[: parsed.root.header_end]
        cur = conn.execute(
            "INSERT INTO blobs (refcount, header, structure, data, dot_lines) "
            "VALUES (?, ?, ?, ?, ?)",
            (refs, header, parsed.to_json(), data, has_dot_lines(data)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid, len(data)

    def _insert_message(
        self,
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
        fl = frozenset(flags)
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, internaldate, tzoffset, "
            "size, blob_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, modseq, _flags_text(fl), *internaldate, size, blob_id),
        )
        return Appended(uid, modseq, fl)

    async def append(
        self, mailbox_id: int, messages: Sequence[NewMessage], origin: object = None
    ) -> list[int]:
        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            modseq = self._bump(conn, mailbox_id)
            events = []
            for msg in messages:
                blob_id, size = self._insert_blob(conn, msg.data, 1)
                events.append(
                    self._insert_message(
                        conn, mailbox_id, modseq, blob_id, size, msg.flags,
                        _to_row_date(msg.internaldate),
                    )
                )
            return [e.uid for e in events], [ChangeBatch(mailbox_id, tuple(events), origin)]

        return await self._write(job)

    async def deliver(self, mailbox_ids: Sequence[int], data: bytes) -> list[int]:
        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            blob_id, size = self._insert_blob(conn, data, len(mailbox_ids))
            when = _to_row_date(None)
            uids, changes = [], []
            for mailbox_id in mailbox_ids:
                modseq = self._bump(conn, mailbox_id)
                ev = self._insert_message(conn, mailbox_id, modseq, blob_id, size, (), when)
                uids.append(ev.uid)
                changes.append(ChangeBatch(mailbox_id, (ev,)))
            return uids, changes

        return await self._write(job)

    @staticmethod
    def _info(row: Sequence[Any]) -> MessageInfo:
        uid, modseq, flags, ts, tz, size = row
        return MessageInfo(uid, modseq, _flags_set(flags), _from_row_date(ts, tz), size)

    _INFO_COLS = "uid, modseq, flags, internaldate, tzoffset, size"

    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]:
        def q(conn: sqlite3.Connection) -> list[MessageInfo]:
            rows = conn.execute(
                f"SELECT {self._INFO_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            )
            return [self._info(r) for r in rows]

        return await self._read(q)

    @staticmethod
    def _chunks(uids: Iterable[int], size: int = 500) -> Iterable[list[int]]:
        it = iter(sorted(set(uids)))
        while chunk := list(itertools.islice(it, size)):
            yield chunk

    async def get_messages(self, mailbox_id: int, uids: Iterable[int]) -> list[MessageInfo]:
        wanted = list(uids)

        def q(conn: sqlite3.Connection) -> list[MessageInfo]:
            out = []
            for chunk in self._chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {self._INFO_COLS} FROM messages WHERE mailbox_id = ? "
                    f"AND uid IN ({marks}) ORDER BY uid",
                    (mailbox_id, *chunk),
                )
                out.extend(self._info(r) for r in rows)
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
            for chunk in self._chunks(wanted):
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
        return await self._blob_column("data", mailbox_id, uids, "dot_lines", _octets)

    async def read_headers(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        return await self._blob_column("header", mailbox_id, uids)

    async def read_structures(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, str]:
        return await self._blob_column("structure", mailbox_id, uids)

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
        origin: object = None,
    ) -> FlagUpdate:
        wanted = list(uids)
        given = frozenset(flags)

        def job(conn: sqlite3.Connection) -> tuple[FlagUpdate, list[ChangeBatch]]:
            result = FlagUpdate()
            modseq: int | None = None
            updates: list[tuple[str, int, int, int]] = []
            for chunk in self._chunks(wanted):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? "
                    f"AND uid IN ({marks}) ORDER BY uid",
                    (mailbox_id, *chunk),
                ).fetchall()
                for uid, old_modseq, text in rows:
                    old = _flags_set(text)
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
                        modseq = self._bump(conn, mailbox_id)
                    updates.append((_flags_text(new), modseq, mailbox_id, uid))
                    result.changed.append(FlagsChanged(uid, modseq, new))
            # One statement for all rows: a POP3 download marks thousands \Seen at once.
            conn.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                updates,
            )
            changes = (
                [ChangeBatch(mailbox_id, tuple(result.changed), origin)] if result.changed else []
            )
            return result, changes

        return await self._write(job)

    def _expunge_rows(
        self, conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]
    ) -> list[Expunged]:
        if not uids:
            return []
        modseq = self._bump(conn, mailbox_id)
        events = []
        for chunk in self._chunks(uids):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"DELETE FROM messages WHERE mailbox_id = ? AND uid IN ({marks}) "
                "RETURNING uid, blob_id",
                (mailbox_id, *chunk),
            ).fetchall()
            for uid, blob_id in sorted(rows):
                conn.execute("UPDATE blobs SET refcount = refcount - 1 WHERE id = ?", (blob_id,))
                conn.execute(
                    "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    (mailbox_id, uid, modseq),
                )
                events.append(Expunged(uid, modseq))
        conn.execute("DELETE FROM blobs WHERE refcount <= 0")
        return events

    async def expunge(
        self, mailbox_id: int, uids: Iterable[int] | None = None, origin: object = None
    ) -> list[int]:
        wanted = None if uids is None else sorted(set(uids))

        def job(conn: sqlite3.Connection) -> tuple[list[int], list[ChangeBatch]]:
            if wanted is None:
                targets = [r[0] for r in conn.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? AND "
                    "instr(flags, '\\Deleted') > 0 ORDER BY uid",
                    (mailbox_id,),
                )]
            else:
                targets = wanted
            events = self._expunge_rows(conn, mailbox_id, targets)
            changes = [ChangeBatch(mailbox_id, tuple(events), origin)] if events else []
            return [e.uid for e in events], changes

        return await self._write(job)

    def _copy_rows(
        self, conn: sqlite3.Connection, src_id: int, uids: Sequence[int], dst_id: int
    ) -> tuple[list[tuple[int, int]], list[Appended]]:
        pairs: list[tuple[int, int]] = []
        events: list[Appended] = []
        modseq: int | None = None
        for chunk in self._chunks(uids):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT uid, flags, internaldate, tzoffset, size, blob_id FROM messages "
                f"WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
                (src_id, *chunk),
            ).fetchall()
            for uid, flags, ts, tz, size, blob_id in rows:
                if modseq is None:
                    modseq = self._bump(conn, dst_id)
                conn.execute("UPDATE blobs SET refcount = refcount + 1 WHERE id = ?", (blob_id,))
                ev = self._insert_message(
                    conn, dst_id, modseq, blob_id, size, _flags_set(flags), (ts, tz)
                )
                pairs.append((uid, ev.uid))
                events.append(ev)
        return pairs, events

    async def copy(
        self,
        src_id: int,
        uids: Iterable[int],
        dst_id: int,
        *,
        move: bool = False,
        origin: object = None,
    ) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        def job(conn: sqlite3.Connection) -> tuple[list[tuple[int, int]], list[ChangeBatch]]:
            if conn.execute("SELECT 1 FROM mailboxes WHERE id = ?", (dst_id,)).fetchone() is None:
                raise NotFound("destination mailbox does not exist")
            pairs, dst_events = self._copy_rows(conn, src_id, wanted, dst_id)
            changes = []
            if move and pairs:
                src_events = self._expunge_rows(conn, src_id, [p[0] for p in pairs])
                changes.append(ChangeBatch(src_id, tuple(src_events), origin))
            if dst_events:
                changes.append(ChangeBatch(dst_id, tuple(dst_events), None))
            return pairs, changes

        return await self._write(job)

    # --- POP3 maildrop lock ----------------------------------------------------------
    # One server process owns an SQLite store, so an in-memory set is the whole truth.
    def try_lock_maildrop(self, user_id: int) -> bool:
        if user_id in self._maildrop_locks:
            return False
        self._maildrop_locks.add(user_id)
        return True

    def unlock_maildrop(self, user_id: int) -> None:
        self._maildrop_locks.discard(user_id)
