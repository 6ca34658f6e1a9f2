"""What the worker processes of one server share through their supervisor.

With ``[server] workers = 1`` there is nothing to share and none of this is used: the
counters are plain in-process ones. With more workers, connection caps, sessions per
user and login throttling must count every worker's clients, so the worker asks the
supervisor (``bus.BusClient`` implements these protocols; ``supervisor.Coordinator``
answers). The protocols live here, below ``auth/`` and ``connection/``, so those layers
use them without knowing about processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class SharedCounters(Protocol):
    """Holders per key against a limit, counted across every worker."""

    async def acquire(self, holds: Sequence[tuple[str, int]]) -> int:
        """Take one hold of each ``(key, limit)``, all or none: -1 when taken, else the
        index of the first key at its limit (nothing is taken then)."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Give back one hold of each key (no answer is awaited)."""
        ...


class SharedRate(Protocol):
    """Submitted messages per user in the last hour, counted across every worker
    (``smtp.ratelimit.SubmissionRate`` rules)."""

    async def rate_allowed(self, user_id: int, per_hour: int) -> bool:
        """Whether the user may submit one more message now."""
        ...

    def rate_record(self, user_id: int) -> None:
        """One message of the user was accepted (no answer is awaited)."""
        ...


class SharedThrottle(Protocol):
    """Failed logins counted across every worker (``auth.throttle.LoginThrottle`` rules)."""

    async def failure(self, ip: str, user: str) -> float:
        """Record a failure; the delay to wait before answering it."""
        ...

    def success(self, ip: str, user: str) -> None:
        """A good login clears the user's failures."""
        ...
