"""Input back-pressure: a bound on what one connection may have read but not yet handled.

While a session is busy (a command waiting for the store, a failed login's delay, a client
that does not read its answers), the framer keeps turning received octets into queued
commands. ``InputBudget`` counts them and their octets, literals included, plus the octets
of the command still being framed, and stops reading from the client when either bound is
passed. Reading resumes once the queue has shrunk well below the bounds, or at once when
the session has nothing left to do: a command still being framed can only complete by
reading on, and it is bounded by the framer's own limits (line length, literal size).
"""

from __future__ import annotations

from typing import Protocol


class Reading(Protocol):
    """The transport side: stop and restart reading from the client."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class InputBudget:
    """Queued commands and their octets against ``max_items`` and ``max_bytes``."""

    def __init__(self, reading: Reading, *, max_items: int, max_bytes: int) -> None:
        self._reading = reading
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items = 0
        self.bytes = 0
        self.paused = False

    def queued(self, size: int) -> None:
        self.items += 1
        self.bytes += size

    def taken(self, size: int) -> None:
        self.items -= 1
        self.bytes -= size

    def clear(self) -> None:
        self.items = 0
        self.bytes = 0

    def over(self, framing: int = 0) -> bool:
        return self.items > self.max_items or self.bytes + framing > self.max_bytes

    def check(self, *, busy: bool, framing: int = 0) -> None:
        """Pause or resume reading; ``framing`` is the octets of a partly framed command."""
        if busy and self.over(framing):
            if not self.paused:
                self.paused = True
                self._reading.pause_reading()
        elif self.paused and (not busy or (
            self.items <= self.max_items // 8 and self.bytes + framing <= self.max_bytes // 2
        )):
            self.paused = False
            self._reading.resume_reading()
