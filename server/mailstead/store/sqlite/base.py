"""The SQLite store's connections and plumbing: the writer thread, pooled readers, the loop hop.

Writes are jobs queued to a single writer thread (``writer.py``). Reads run on a small
thread pool, each thread with its own connection (WAL lets readers run beside the
writer). Results and change events come back to the event loop in commit order.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..api import ChangeBatch, MailboxGone, MailStore, StoreUnavailable
from ..header_cache import HeaderTextCache
from ..hub import ChangeHub
from ..mailbox_rows import RowCache
from .schema import create_or_upgrade
from .writer import WriteJob, Writer, map_error

T = TypeVar("T")

READER_MMAP_BYTES = 1 << 30
STATEMENT_CACHE = 256  # twice sqlite3's default: each padded IN list is up to ten statements
# A read on the loop's own connection waits this long for a lock at most, then goes to a
# reader thread (which waits up to busy_timeout). WAL readers take no lock SQLite waits
# on, short of recovering a crashed writer's WAL or a connection in exclusive mode.
INLINE_BUSY_MS = 5
# The bound of a read on the loop thread: rows found by key, and octets of blobs copied.
# Measured: 64 rows of the listing cost ~0.15 ms, 256 KB of blob a memcpy.
INLINE_ROWS = 64
INLINE_BYTES = 256 * 1024


class Offload(Exception):
    """Raised by a read function running inline when what it found is over its bound:
    the read is run again on a reader thread."""


class SqliteBase(MailStore):
    """Connections, the writer thread and the reader pool; the API lives in the mixins."""

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
        self._parsers: ThreadPoolExecutor | None = None  # MIME parses of big new messages
        self._local = threading.local()
        self._loop_conn: sqlite3.Connection | None = None  # inline reads (see _read)
        self._all_readers: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._maildrop_locks: set[int] = set()
        # This process's copies of its mailboxes' rows, for SELECT (view_reads.py); only
        # the loop thread touches them.
        self.row_cache = RowCache()
        # Decoded header texts for SEARCH (store/header_cache.py); the loop thread only.
        self.header_texts = HeaderTextCache()
        # With several worker processes on this database (supervisor.py): the folder of
        # the per-user flock files that make the POP3 maildrop lock hold across them.
        self.maildrop_lock_dir: Path | None = None
        self._maildrop_fds: dict[int, int] = {}
        # Called on the loop after each of this process's commits with the ids of the
        # mailboxes it changed: the worker's bus tells the other workers (bus.py).
        self.on_commit: Callable[[set[int]], None] | None = None
        # Called with ("read" | "write", seconds) per store call, for metrics.
        self.on_latency: Callable[[str, float], None] | None = None
        # Called on the writer thread just before each COMMIT with the change batches it
        # holds, in commit order (the hub gets them after): for an observer that must
        # never lag behind a reader, as the model-based sync test's record of the truth.
        self.commit_observer: Callable[[list[ChangeBatch]], None] | None = None

    # --- connections ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # Statements are reused from sqlite3's cache (keyed by the SQL text; the store
        # pads IN lists to a few lengths, rows.in_list): room for all of them.
        conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False,
            cached_statements=STATEMENT_CACHE,
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
            conn = self._reader_connection()
            self._local.conn = conn
        return conn

    def _reader_connection(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only=ON")
        # Read message octets straight from the page cache instead of page by page
        # through read(2): the blobs span overflow pages. Readers only: SQLite maps
        # for reading, and the writer keeps plain I/O with its SQLITE_FULL handling.
        conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
        with self._reader_lock:
            self._all_readers.append(conn)
        return conn

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def init() -> None:
            conn = self._connect()
            try:
                create_or_upgrade(conn)
            finally:
                conn.close()

        try:
            await self._loop.run_in_executor(None, init)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the mail store {self.path}: {exc}") from None
        self._writer = Writer(self._connect, self)
        self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-parse")

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        for pool in (self._parsers, self._readers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._parsers = self._readers = None
        self._loop_conn = None
        with self._reader_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # --- plumbing ------------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T], *,
                    bounded: Callable[[sqlite3.Connection], T] | None = None,
                    one_statement: bool = False) -> T:
        """``fn(conn)`` in one read transaction, on a reader thread.

        ``bounded``: a read whose work is bounded whatever the client asks (at most
        INLINE_ROWS rows by their key, INLINE_BYTES of blobs), run first on the loop
        thread itself; it raises :class:`Offload` past its bound, and then ``fn`` runs
        on a thread. A thread hop costs the loop more than such a read does: the
        executor's futures, the wake-up and the GIL handover each way
        (docs/architecture.md, "Store reads").

        ``one_statement``: ``fn`` runs a single SELECT, which is a consistent read on its
        own; the BEGIN and COMMIT around it would only cost two more statements.
        """
        if self._readers is None or self._loop is None:
            raise StoreUnavailable("the mail store is closed")
        started = time.perf_counter()
        try:
            if bounded is not None:
                try:
                    return self._run_read(self._inline_conn(), bounded, one_statement)
                except Offload:
                    pass
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY,
                                                          sqlite3.SQLITE_LOCKED):
                        raise
            return await self._loop.run_in_executor(
                self._readers, lambda: self._run_read(self._reader(), fn, one_statement))
        except sqlite3.Error as exc:
            raise map_error(exc) from None
        finally:
            if self.on_latency is not None:
                self.on_latency("read", time.perf_counter() - started)

    @staticmethod
    def _run_read(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
                  one_statement: bool = False) -> T:
        if one_statement:
            return fn(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def _inline_conn(self) -> sqlite3.Connection:
        conn = self._loop_conn
        if conn is None:
            conn = self._loop_conn = self._reader_connection()
            conn.execute(f"PRAGMA busy_timeout={INLINE_BUSY_MS}")
        return conn

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
            self.row_cache.committed([c for _, _, changes, _ in outcomes for c in changes])
            if self.on_commit is not None:
                changed = {c.mailbox_id for _, _, changes, _ in outcomes for c in changes}
                if changed:
                    self.on_commit(changed)
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
            # Not applied to the copies of the rows: a diff of another process's work is
            # not one commit; a copy behind catches up from the store at the next SELECT.
            for change in changes:
                if any(isinstance(ev, MailboxGone) for ev in change.events):
                    self.row_cache.drop(change.mailbox_id)
                self.hub.publish(change)

        self._on_loop(publish)

    def look_outside_soon(self) -> None:
        """Look for other processes' commits now, not at the next poll (a worker's hint)."""
        if self._writer is not None:
            self._writer.look_soon()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop, after what the writer thread handed over before it."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
            pass

    # --- POP3 maildrop lock ----------------------------------------------------------
    # One server process: the in-memory set is the whole truth. Several worker processes:
    # an exclusive flock on <maildrop_lock_dir>/<user id> as well, which the kernel drops
    # when the worker holding it dies, however it dies. The files stay (removing one
    # would let a second locker lock a new file while the first holds the old one).
    def try_lock_maildrop(self, user_id: int) -> bool:
        if user_id in self._maildrop_locks:
            return False
        if self.maildrop_lock_dir is not None and not self._flock_maildrop(user_id):
            return False
        self._maildrop_locks.add(user_id)
        return True

    def unlock_maildrop(self, user_id: int) -> None:
        self._maildrop_locks.discard(user_id)
        fd = self._maildrop_fds.pop(user_id, None)
        if fd is not None:
            os.close(fd)

    def _flock_maildrop(self, user_id: int) -> bool:
        assert self.maildrop_lock_dir is not None
        try:
            fd = os.open(self.maildrop_lock_dir / str(user_id),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot lock the maildrop: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._maildrop_fds[user_id] = fd
        return True
