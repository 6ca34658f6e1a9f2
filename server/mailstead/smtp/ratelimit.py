"""Messages per user per hour for submission ([submission] max_messages_per_hour).

Counted in memory in a sliding window of one hour: a submission costs no extra store
write (and no extra fsync) for the count, and a restart forgetting at most an hour of
counting only lets a user send one more hour's worth, which is what the limit allows
anyway. With several worker processes the supervisor counts for all of them (``shared``:
``shared.SharedRate``, answered by the supervisor's own ``SubmissionRate``), so a user's
messages are counted whichever worker took them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..shared import SharedRate

WINDOW = 3600.0


class SubmissionRate:
    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self._sent: dict[int, deque[float]] = {}
        self.shared: SharedRate | None = None  # several workers: the supervisor counts

    def _window(self, user_id: int) -> deque[float]:
        sent = self._sent.get(user_id)
        if sent is None:
            return deque()
        cutoff = self.clock() - WINDOW
        while sent and sent[0] <= cutoff:
            sent.popleft()
        if not sent:
            del self._sent[user_id]
        return sent

    def allowed(self, user_id: int) -> bool:
        """Whether ``user_id`` may submit one more message now (this count only)."""
        return len(self._window(user_id)) < self.per_hour

    async def check(self, user_id: int) -> bool:
        """``allowed``, asked of the supervisor when there are several workers."""
        if self.shared is not None:
            return await self.shared.rate_allowed(user_id, self.per_hour)
        return self.allowed(user_id)

    def record(self, user_id: int) -> None:
        """One message of ``user_id`` was accepted."""
        if self.shared is not None:
            self.shared.rate_record(user_id)
            return
        self._window(user_id)
        self._sent.setdefault(user_id, deque()).append(self.clock())
