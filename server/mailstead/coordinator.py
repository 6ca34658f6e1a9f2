"""The supervisor's side of what workers share: counted holds and the login throttle.

Why here and not in the database: these are asked on every connection and login, their
answer must come in microseconds, they must vanish with the worker that held them (a
worker killed with SIGKILL cannot give anything back), and none of them needs to survive
a restart of the whole server. The supervisor sees a worker die (its end of the bus
reads end-of-file) and drops all its holds at once. POP3 maildrop locks are not here:
they are ``flock``s the kernel drops itself (``store/sqlite/base.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .auth.throttle import LoginThrottle


class Holds:
    """Holders per key across every worker, each worker's own holds remembered."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self._by_worker: dict[int, Counter[str]] = {}

    def acquire(self, worker: int, holds: Sequence[tuple[str, int]]) -> int:
        """All of ``holds`` for ``worker`` or none: -1, else the first key at its limit."""
        for i, (key, limit) in enumerate(holds):
            if self.total[key] >= limit:
                return i
        mine = self._by_worker.setdefault(worker, Counter())
        for key, _ in holds:
            self.total[key] += 1
            mine[key] += 1
        return -1

    def release(self, worker: int, keys: Sequence[str]) -> None:
        mine = self._by_worker.get(worker)
        if mine is None:
            return
        for key in keys:
            if mine[key] <= 0:
                continue  # not held by this worker: nothing of another's is given back
            mine[key] -= 1
            self._drop(key, 1)
            if not mine[key]:
                del mine[key]

    def drop_worker(self, worker: int) -> int:
        """Forget everything ``worker`` held (it died); how many holds that was."""
        mine = self._by_worker.pop(worker, Counter())
        for key, n in mine.items():
            self._drop(key, n)
        return sum(mine.values())

    def _drop(self, key: str, n: int) -> None:
        self.total[key] -= n
        if self.total[key] <= 0:
            del self.total[key]


class SharedThrottleState:
    """One ``LoginThrottle`` for every worker; blocks are announced to all of them."""

    def __init__(self, throttle: LoginThrottle) -> None:
        self.throttle = throttle

    def failure(self, ip: str, user: str) -> tuple[float, float]:
        """(delay for this failure, seconds ``ip`` is now blocked for, 0 if it is not)."""
        was_blocked = self.throttle.blocked(ip)
        delay = self.throttle.failure(ip, user)
        blocked = not was_blocked and self.throttle.blocked(ip)
        return delay, self.throttle.block if blocked else 0.0

    def success(self, ip: str, user: str) -> None:
        self.throttle.success(ip, user)
