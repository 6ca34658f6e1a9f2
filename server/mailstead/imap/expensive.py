"""Expensive IMAP commands: a bound per user, and threads of their own.

SEARCH over headers or text, and FETCH of message bodies, cost time and memory in
proportion to the mailbox, and one user may hold many sessions
(``[limits] max_sessions_per_user``). Six slow SEARCHes of one user once held every
thread of asyncio's default executor, and every other user's LOGIN waited for them. So:

* each user runs at most ``[limits] max_expensive_commands_per_user`` such commands at a
  time; the others wait for their turn (those sessions answer nothing else meanwhile,
  exactly as if the command were slow; other users' sessions are not affected);
* their CPU work runs on a small pool of its own, never on the event loop and never on
  the executor that other kinds of work (password checks) use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# Matching threads for the whole server. A user may occupy at most
# max_expensive_commands_per_user of them (2 by default), so others still find one free.
POOL_THREADS = 4


@dataclass(slots=True)
class _UserSlots:
    semaphore: asyncio.Semaphore
    users: int = 0  # holders and waiters; the entry is dropped at zero
    running: int = 0  # holders


class ExpensiveWork:
    """Per-user slots for expensive commands and the thread pool their CPU work runs on."""

    def __init__(self, per_user: int, threads: int = POOL_THREADS) -> None:
        if per_user < 1:
            raise ValueError("per_user must be at least 1")
        self.per_user = per_user
        self._slots: dict[int, _UserSlots] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imap-work")

    @asynccontextmanager
    async def slot(self, user_id: int) -> AsyncIterator[None]:
        """Hold one of ``user_id``'s slots for the duration of the block."""
        entry = self._slots.get(user_id)
        if entry is None:
            entry = self._slots[user_id] = _UserSlots(asyncio.Semaphore(self.per_user))
        entry.users += 1
        try:
            async with entry.semaphore:
                entry.running += 1
                try:
                    yield
                finally:
                    entry.running -= 1
        finally:
            entry.users -= 1
            if entry.users == 0 and self._slots.get(user_id) is entry:
                del self._slots[user_id]

    def busy(self, user_id: int) -> int:
        """How many of the user's slots are taken (for tests and metrics)."""
        entry = self._slots.get(user_id)
        return 0 if entry is None else entry.running

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
