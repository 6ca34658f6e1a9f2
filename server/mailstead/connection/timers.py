"""Timers of a connection that cost nothing per received octet.

``ActivityTimer`` only notes the time of the last activity (one float per call) and
checks it when its deadline comes, re-arming for the rest; cancelling and re-creating a
timer handle for every read would cost more than most commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ActivityTimer:
    """Calls ``expire()`` once ``seconds`` pass without ``touch()`` while not ``busy()``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        seconds: float,
        expire: Callable[[], None],
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self._loop = loop
        self.seconds = seconds
        self._expire = expire
        self._busy = busy
        self._last = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_later(seconds, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def restart(self, seconds: float) -> None:
        """A new timeout from now (e.g. a longer one after login)."""
        self.seconds = seconds
        self._last = self._loop.time()
        self.cancel()
        self._handle = self._loop.call_later(seconds, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        idle = self._loop.time() - self._last
        if self._busy is not None and self._busy():
            self._handle = self._loop.call_later(self.seconds, self._check)
        elif idle < self.seconds:
            self._handle = self._loop.call_later(self.seconds - idle + 0.01, self._check)
        else:
            self._handle = None
            self._expire()
