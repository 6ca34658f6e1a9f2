"""Failed-login throttling shared by IMAP and POP3.

Each failure is remembered per remote IP and per user name for ``window`` seconds. The
delay before answering a failure grows exponentially with the recent failures of that IP
or user (whichever is larger), capped at ``max_delay``; the delay is an ``await`` in the
failing session only, so one attacker never slows other clients. An IP with ``burst``
failures inside the window is refused outright for ``block`` seconds, before any
password is checked (IMAP ``NO [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``). Loopback can
be exempted from blocking so a local admin cannot lock themselves out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class LoginThrottle:
    """Remembers recent failures by IP and by user; tells how long to wait or to refuse."""

    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        burst: int = 10,
        window: float = 300.0,
        block: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.burst = burst
        self.window = window
        self.block = block
        self._clock = clock
        self._max_entries = max_entries
        self._ips: dict[str, _Record] = {}
        self._users: dict[str, _Record] = {}

    def _recent(self, table: dict[str, _Record], key: str) -> _Record | None:
        rec = table.get(key)
        if rec is None:
            return None
        cutoff = self._clock() - self.window
        while rec.failures and rec.failures[0] < cutoff:
            rec.failures.popleft()
        if not rec.failures and rec.blocked_until <= self._clock():
            del table[key]
            return None
        return rec

    def blocked(self, ip: str) -> bool:
        """True while ``ip`` is refused after a burst of failures."""
        rec = self._recent(self._ips, ip)
        return rec is not None and rec.blocked_until > self._clock()

    def failure(self, ip: str, user: str) -> float:
        """Record a failure; returns the delay (seconds) to wait before answering."""
        now = self._clock()
        counts = []
        for table, key in ((self._ips, ip), (self._users, user.lower()[:320])):
            rec = self._recent(table, key)
            if rec is None:
                if len(table) >= self._max_entries:  # memory stays bounded under a flood
                    table.pop(next(iter(table)))
                rec = table[key] = _Record()
            rec.failures.append(now)
            counts.append(len(rec.failures))
        ip_rec = self._ips[ip]
        if len(ip_rec.failures) >= self.burst:
            ip_rec.blocked_until = now + self.block
        n = max(counts)
        return min(self.base_delay * 2 ** (n - 1), self.max_delay)

    def block_ip(self, ip: str, seconds: float) -> None:
        """Refuse ``ip`` for ``seconds`` (another worker process saw its burst)."""
        rec = self._ips.get(ip)
        if rec is None:
            if len(self._ips) >= self._max_entries:
                self._ips.pop(next(iter(self._ips)))
            rec = self._ips[ip] = _Record()
        rec.blocked_until = max(rec.blocked_until, self._clock() + seconds)

    def success(self, ip: str, user: str) -> None:
        """A good login clears the user's failures (not the IP's: a guesser may share it)."""
        self._users.pop(user.lower()[:320], None)
