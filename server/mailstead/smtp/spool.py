"""Where a message waits between the socket and the store.

``Spool``: a message of up to ``FLUSH_AT`` octets stays in memory, and the store takes
it as bytes (``MailStore.deliver``: no file, no spool thread, and a small one is parsed
without a thread hop). A bigger one goes to an unlinked temporary file in
``<data_dir>/spool`` (the kernel removes it when it is closed, even after a crash),
written in pieces of ``FLUSH_AT`` octets on a small thread pool of its own, so disk I/O
never runs on the loop nor waits behind SEARCH in the default executor. While a write is
under way the DATA reader waits, so a client sending faster than the disk is held back by
TCP, not by memory.

The store takes a big message from the spool file itself (``MailStore.deliver_file``); a
recipient other than the first gets a file of their own (their trace headers, then the
data, copied in pieces), so each delivery's file is exactly its stored form.

``DeliveryMemory``: what a delivery holds in memory from the spool to the commit (the
store says how much: ``MailStore.delivery_memory``; the whole message for a small one).
This budget bounds those octets across every SMTP and LMTP session: deliveries beyond it
wait (their data is safe on disk) in arrival order; one bigger than the budget goes alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ..files import pread_exact
from ..store.api import MessageFile

FLUSH_AT = 256 * 1024
COPY_PIECE = 1024 * 1024  # octets per read when a recipient's own file is made
_IO = ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtp-spool")


class Spool:
    """One message being received: ``prefix`` (the first recipient's trace headers), then
    the data as it arrives. Up to ``FLUSH_AT`` octets it stays in memory and has no file
    at all (``in_memory``): most mail is a few KiB, and for it a file costs more system
    calls and thread hops than the whole rest of the delivery."""

    def __init__(self, folder: Path, prefix: bytes) -> None:
        self._folder = folder
        # Made at the first flush, closed by close(), which the DATA command always
        # reaches (try/finally).
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = [prefix]
        self._pending_size = len(prefix)
        self.body_start = len(prefix)
        self._written = 0  # octets in the file
        self.error: OSError | None = None  # the first write error; later data is dropped
        self.discarded = False
        self._head: tuple[bytes, int] = (b"", 0)  # see edit_head

    @property
    def size(self) -> int:
        """Octets kept so far (trace headers included), in the file or in memory."""
        return self._written + self._pending_size

    @property
    def in_memory(self) -> bool:
        """Whether the whole message is in memory (no file was needed)."""
        return self._file is None

    async def write(self, data: bytes) -> None:
        if self.error is not None or self.discarded:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending to the file, if the message has one or needs one now."""
        if not self._pending or self.error is not None or self.discarded:
            return
        if self._file is None and self._pending_size < FLUSH_AT:
            return  # small: it stays in memory
        pieces = self._pending
        try:
            await asyncio.get_running_loop().run_in_executor(_IO, self._write, pieces)
        except OSError as exc:
            self.error = exc
            return
        self._pending, self._pending_size = [], 0
        self._written += sum(map(len, pieces))

    def _write(self, pieces: list[bytes]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._folder, prefix="msg-")  # noqa: SIM115
        self._file.writelines(pieces)
        self._file.flush()  # readers use os.pread, below the file object's buffer

    def discard(self) -> None:
        """Forget the data (it was refused); the file is emptied when it is closed."""
        self.discarded = True
        self._pending = []
        self._pending_size = 0

    def _memory(self) -> bytes:
        """The whole spool of an in-memory message, joined once."""
        if len(self._pending) != 1:
            self._pending = [b"".join(self._pending)]
        return self._pending[0]

    async def message(self, *, data_only: bool = False) -> bytes:
        """The spool as written, whole: for submission, which completes the header and
        hands the message to the outbound queue (its size is bounded by the caller's
        ``DeliveryMemory`` hold), and for the sender checks. Delivery reads a big one as
        a file (``message_file``). ``data_only``: without the first recipient's trace
        headers (what was sent)."""
        await self.flush()
        if self.error is not None:
            raise self.error
        start = self.body_start if data_only else 0
        if self._file is None:
            return self._memory()[start:]
        fileno, size = self._file.fileno(), self.size - start
        return await asyncio.get_running_loop().run_in_executor(
            _IO, pread_exact, fileno, size, start)

    def edit_head(self, head: bytes, replaces: int) -> None:
        """Every stored copy gets ``head`` in place of the first ``replaces`` octets of
        the data (inbound_auth: our Authentication-Results added, forged ones removed)."""
        self._head = (head, replaces)

    def stored_size(self, trace: bytes | None = None) -> int:
        """The size of ``message_file(trace)`` (or ``stored_bytes(trace)``)."""
        head, replaces = self._head
        first = self.body_start if trace is None else len(trace)
        return first + len(head) + self.size - self.body_start - replaces

    def stored_bytes(self, trace: bytes | None = None) -> bytes | None:
        """The stored form for one recipient (see ``message_file``) of an in-memory
        message; None when the message is in a file (then use ``message_file``)."""
        if self._file is not None or self.error is not None:
            return None
        data = self._memory()
        head, replaces = self._head
        if trace is None and not head and not replaces:
            return data
        first = data[: self.body_start] if trace is None else trace
        return b"".join((first, head, data[self.body_start + replaces :]))

    @contextlib.asynccontextmanager
    async def message_file(self, trace: bytes | None = None) -> AsyncIterator[MessageFile]:
        """The stored form for one recipient, as a file open inside the ``async with``: the
        spool as written (``trace`` None, the first recipient's), else a copy of it with
        ``trace`` in place of the first recipient's trace headers (and a copy too when
        ``edit_head`` changed the start of the data, or the message was in memory)."""
        await self.flush()
        if self.error is not None:
            raise self.error
        if self._file is not None and trace is None and self._head == (b"", 0):
            yield MessageFile(self._file.fileno(), self.size)
            return
        loop = asyncio.get_running_loop()
        copy = await loop.run_in_executor(_IO, self._copy_for, trace)
        try:
            yield MessageFile(copy.fileno(), self.stored_size(trace))
        finally:
            copy.close()

    def _copy_for(self, trace: bytes | None) -> IO[bytes]:
        copy = tempfile.TemporaryFile(dir=self._folder, prefix="msg-")  # noqa: SIM115
        try:
            if self._file is None:
                stored = self.stored_bytes(trace)
                assert stored is not None
                copy.write(stored)
                copy.flush()
                return copy
            fileno = self._file.fileno()
            head, replaces = self._head
            copy.write(pread_exact(fileno, self.body_start, 0) if trace is None else trace)
            copy.write(head)
            at = self.body_start + replaces
            while at < self.size:
                piece = pread_exact(fileno, min(COPY_PIECE, self.size - at), at)
                copy.write(piece)
                at += len(piece)
            copy.flush()
        except BaseException:
            copy.close()
            raise
        return copy

    @property
    def data_size(self) -> int:
        """Octets of data received and kept, trace headers excluded."""
        return self.size - self.body_start

    def close(self) -> None:
        self._pending = []
        self._pending_size = 0
        if self._file is not None:
            self._file.close()


_MADE: set[Path] = set()  # folders made already: a mkdir per message is a system call


def make_spool_folder(folder: Path) -> Path:
    if folder not in _MADE:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _MADE.add(folder)
    return folder


class DeliveryMemory:
    """Octets of messages held in memory for the store, at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the delivery memory budget must be positive")
        self.limit = limit
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @classmethod
    def for_message_size(cls, max_message_size: int) -> DeliveryMemory:
        """Room for the biggest message allowed, and never less than 64 MiB, so small
        mail flows in parallel while one big message is being stored."""
        return cls(max(max_message_size, 64 * 1024 * 1024))

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(max(size, 0), self.limit)
        await self._acquire(size)
        try:
            yield
        finally:
            self.used -= size
            self._grant()

    async def _acquire(self, size: int) -> None:
        if not self._waiting and self.used + size <= self.limit:
            self.used += size
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, fut)
        self._waiting.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give back
                self.used -= size
            else:
                self._waiting.remove(entry)
            self._grant()
            raise

    def _grant(self) -> None:
        # First come, first served: a big message at the head is not overtaken for ever.
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            size, fut = self._waiting.popleft()
            self.used += size
            fut.set_result(None)
