"""The SQLite store's single writer thread: group commit, savepoints, commit-ordered events.

Writes are jobs queued to one thread. It takes every job that is waiting, runs each inside
its own SAVEPOINT of one transaction and commits once (one fsync for many deliveries),
then hands results and change events back to the loop in one callback, so the
``ChangeHub`` sees batches strictly in commit order and only after commit. A transaction
SQLite itself rolled back (SQLITE_FULL, I/O errors) fails every job of the batch, and the
thread lives on. After each batch, and every ``EXTERNAL_POLL_SECONDS`` when idle, the
thread also publishes what other processes committed (``external.ExternalChanges``),
and at once when asked (``look_soon``: another worker process hinted that it committed).
With several writer processes on one database, ``BEGIN IMMEDIATE`` may find the write lock
taken for longer than SQLite's busy timeout: the batch then waits and tries again for
``BUSY_RETRY_SECONDS`` before its jobs fail. Between this server's own worker processes
the write lock is taken in turn through a flock (``WRITER_LOCK``) before ``BEGIN
IMMEDIATE``: SQLite's busy handler polls with sleeps of 1 ms growing to 100 ms, a flock
waiter is woken the moment the other writer commits, and what queued meanwhile joins the
batch.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..api import ChangeBatch, StorageFull, StoreError, StoreUnavailable
from .external import ExternalChanges

if TYPE_CHECKING:
    from .base import SqliteBase

log = logging.getLogger(__name__)

_WRITE_BATCH = 64
# How soon an idle server notices a commit by another process (mailstead import, user del).
EXTERNAL_POLL_SECONDS = 0.5
# How long a batch keeps trying to take the write lock from other processes.
BUSY_RETRY_SECONDS = 120.0
_LOOK = object()  # queued by look_soon: look at other processes' commits now
# In the folder above the maildrop locks (several workers): our writers take turns on it.
WRITER_LOCK = "store-writer.lock"


def map_error(exc: BaseException) -> BaseException:
    """Translate SQLite failures into store errors the protocols know how to answer."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text:
            return StorageFull("the mail store is full")
        return StoreUnavailable(f"the mail store is unavailable: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):
        return StoreUnavailable(f"the mail store failed: {exc}")
    return exc


# A write job runs on the writer connection and returns (result, change batches).
WriteJob = Callable[[sqlite3.Connection], tuple[Any, list[ChangeBatch]]]


class NotDurable:
    """A write job whose loss in a power failure is harmless (a \\Recent claim: the message
    would be recent once more). A batch of only such jobs commits without waiting for
    fsync; the next durable commit syncs the log, and with it these, in order."""

    __slots__ = ("job",)

    def __init__(self, job: WriteJob) -> None:
        self.job = job

    def __call__(self, conn: sqlite3.Connection) -> tuple[Any, list[ChangeBatch]]:
        return self.job(conn)


class Writer:
    """The single writer thread; see the module docstring for the commit protocol."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], store: SqliteBase) -> None:
        self._connect = connect
        self._store = store
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # jobs, _LOOK, None
        self._look_queued = False
        self._turn_fd: int | None = None  # the WRITER_LOCK file, once there are workers
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: WriteJob, fut: asyncio.Future[Any]) -> None:
        self._queue.put((job, fut))

    def look_soon(self) -> None:
        """Look for other processes' commits as soon as the current batch is done (from
        any thread); several calls before the look make one look."""
        if not self._look_queued:
            self._look_queued = True
            self._queue.put(_LOOK)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        conn = self._connect()
        external = ExternalChanges(conn)
        try:
            while True:
                try:
                    first = self._queue.get(timeout=EXTERNAL_POLL_SECONDS)
                except queue.Empty:
                    self._look_outside(conn, external)
                    continue
                if first is None:
                    return
                if first is _LOOK:
                    self._look_queued = False
                    self._look_outside(conn, external)
                    continue
                turn = self._take_turn()
                batch = [first]
                stop = False
                while len(batch) < _WRITE_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    if nxt is _LOOK:  # the look after this batch is the one asked for
                        self._look_queued = False
                        continue
                    batch.append(nxt)
                try:
                    external.note_own(self._run_batch(conn, batch))
                except BaseException as exc:  # the writer must outlive any one batch
                    log.exception("store writer: batch failed")
                    self._abandon(conn, batch, exc)
                finally:
                    if turn is not None:
                        fcntl.flock(turn, fcntl.LOCK_UN)
                self._look_outside(conn, external)
                if stop:
                    return
        finally:
            conn.close()
            if self._turn_fd is not None:
                os.close(self._turn_fd)

    def _take_turn(self) -> int | None:
        """With several worker processes, wait for this writer's turn (an exclusive flock
        on WRITER_LOCK, given back after the batch); None with one process. Taken before
        the batch is gathered: the jobs that queue while another worker commits join it."""
        folder = self._store.maildrop_lock_dir  # set once the worker joined its bus
        if folder is None:
            return None
        if self._turn_fd is None:
            try:
                self._turn_fd = os.open(folder.parent / WRITER_LOCK,
                                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # SQLite's own locking still holds: only slower
                log.warning("store writer: cannot open %s: %s", WRITER_LOCK, exc)
                return None
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        return self._turn_fd

    def _look_outside(self, conn: sqlite3.Connection, external: ExternalChanges) -> None:
        try:
            changes = external.collect(conn)
        except sqlite3.Error as exc:  # the next look tries again
            log.warning("store writer: could not look for other processes' changes: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return
        if changes:
            self._store._publish(changes)

    def _abandon(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[WriteJob, asyncio.Future[Any]]],
        exc: BaseException,
    ) -> None:
        """Fail every job of a batch whose transaction is lost, and leave no transaction."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        err = map_error(exc)
        self._store._complete([(fut, None, [], err) for _, fut in batch])

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[WriteJob, asyncio.Future[Any]]]
    ) -> list[ChangeBatch]:
        """Run and commit one batch; the change batches it committed."""
        lazy = self._store._fsync and all(isinstance(job, NotDurable) for job, _ in batch)
        if not lazy:
            return self._commit_batch(conn, batch)
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._commit_batch(conn, batch)
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting out other processes' writes (SQLITE_BUSY)."""
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                log.warning("store writer: the database is busy (another process writes); "
                            "trying again")
                time.sleep(0.05)

    def _commit_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[WriteJob, asyncio.Future[Any]]]
    ) -> list[ChangeBatch]:
        outcomes: list[tuple[asyncio.Future[Any], Any, list[ChangeBatch], BaseException | None]]
        outcomes = []
        try:
            self._begin(conn)
        except Exception as exc:
            self._abandon(conn, batch, exc)
            return []
        for job, fut in batch:
            conn.execute("SAVEPOINT job")
            try:
                result, changes = job(conn)
            except BaseException as exc:  # the job failed: undo only its part
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (it may on SQLITE_FULL or
                    # IOERR): the jobs before this one are lost too, so all of them fail.
                    self._abandon(conn, batch, exc)
                    return []
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((fut, None, [], map_error(exc)))
            else:
                conn.execute("RELEASE job")
                outcomes.append((fut, result, changes, None))
        observe = self._store.commit_observer
        if observe is not None:
            # Before COMMIT, not after: once COMMIT makes the rows visible a reader may
            # return them at once, and an observer must never be behind what a reader saw.
            observe([change for _, _, changes, _ in outcomes for change in changes])
        try:
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            self._abandon(conn, batch, exc)
            return []
        self._store._complete(outcomes)
        return [change for _, _, changes, _ in outcomes for change in changes]
