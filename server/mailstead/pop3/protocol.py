"""The Twisted side of a POP3 connection: framing, ordering and timeouts.

Admission, output with back-pressure, closing, TLS and the login deadline are the shared
connection layer's (``connection.ConnectionProtocol``). Received octets are split into
lines and queued. Most commands need neither the store nor a wait (STAT, LIST, DELE, and
RETR of a message the session has read ahead), so the queue is answered right in
``data_received``; the first line that must wait hands the rest of the queue to one
asyncio task, so a command that awaits the store is never overtaken by the next
pipelined one. Reading pauses while too many lines (or octets) wait; no further command
is answered while the client does not read, and large responses wait between chunks,
so neither direction can grow memory without bound.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import ITLSTransport

from ..connection import GOODBYE_GRACE, ActivityTimer, ConnectionProtocol, InputBudget, Refusal
from ..eventlog import Event
from .session import POP3Session
from .wire import MAX_AUTH_LINE, Line, LineBuffer, err

if TYPE_CHECKING:
    from .factory import POP3Factory


MAX_QUEUED_LINES = 256  # pause reading beyond this many unprocessed pipelined lines
# Lines answered in one turn of the event loop: a client pipelining thousands of cheap
# commands (one 256 KiB read holds ~40,000 NOOPs) must not hold up every other session.
LINES_PER_TURN = 64

_REFUSALS = {
    Refusal.SERVER_FULL: err("Server busy: too many connections; try again later",
                             "SYS/TEMP"),
    Refusal.PER_IP: err("Too many connections from your address", "SYS/TEMP"),
}


def _size(line: Line) -> int:
    return len(line) if isinstance(line, bytes) else 0


class POP3Protocol(ConnectionProtocol):
    """One POP3 connection; also the ``LiveSession`` the daemon can shut down."""

    protocol_name = "pop3"

    def __init__(self, factory: POP3Factory) -> None:
        super().__init__(factory.ctx, implicit_tls=factory.implicit_tls)
        self.factory = factory
        self.session: POP3Session | None = None
        self._buffer = LineBuffer(MAX_AUTH_LINE)
        self._pending: collections.deque[Line] = collections.deque()
        self._budget: InputBudget | None = None
        self._worker: asyncio.Task[None] | None = None
        self._cleaned = False
        self._shutdown_reason: str | None = None
        self._idle: ActivityTimer | None = None

    # --- Channel interface for the session ----------------------------------------------
    @property
    def tls_available(self) -> bool:
        return (
            not self.tls_active
            and self.ctx.tls is not None
            and ITLSTransport.providedBy(self.transport)
        )

    def send(self, data: bytes) -> None:
        self.out.write(data)

    def send_parts(self, parts: list[bytes]) -> Awaitable[None] | None:
        return self.out.write_parts(parts)

    def queued_lines(self) -> collections.deque[Line]:
        return self._pending

    def start_tls(self, reply: bytes) -> None:
        # Nothing the client sent after STLS may be read as a command (RFC 2595 §2.2).
        self._buffer.clear()
        self._pending.clear()
        assert self._budget is not None
        self._budget.clear()
        self._budget.check(busy=False)
        self.send(reply)
        self.begin_tls()

    def close(self) -> None:
        self._pending.clear()
        self.out.close()

    # --- ConnectionProtocol -------------------------------------------------------------
    def refusal_message(self, refusal: Refusal) -> bytes:
        return _REFUSALS[refusal]

    def connection_started(self) -> None:
        settings = self.factory.settings
        self._budget = InputBudget(self.out, max_items=MAX_QUEUED_LINES,
                                   max_bytes=self.services.settings.max_queued_input)
        self.session = POP3Session(self.ctx, settings, self, self.factory.last_login)
        self.ctx.sessions.add(self)
        self.ctx.count("connections", protocol="pop3")
        self._idle = ActivityTimer(self.loop, settings.idle_timeout, self._idle_expired,
                                   busy=self._busy_sending)
        self.send(self.session.greeting())

    def data_received(self, data: bytes) -> None:
        if self._shutdown_reason is not None:
            return
        lines = self._buffer.feed(data)
        if not lines:
            return  # (a part of a line is no activity: a trickle cannot keep us open)
        assert self._idle is not None and self._budget is not None
        self._idle.touch()
        budget = self._budget
        for line in lines:
            budget.queued(_size(line))
        self._pending.extend(lines)
        if self._worker is None:
            self._answer_queued()
        budget.check(busy=self._worker is not None, framing=self._buffer.pending)

    def output_drained(self) -> None:
        if self._idle is not None:
            self._idle.touch()  # a client reading a long download is not idle

    def login_expired(self) -> None:
        self._pending.clear()
        self.send(err("No login within the time allowed, closing connection"))
        self.out.close(GOODBYE_GRACE)

    def connection_ended(self) -> None:
        self._pending.clear()
        if self._budget is not None:
            self._budget.clear()
        if self._idle is not None:
            self._idle.cancel()
        session = self.session
        if session is None:
            return
        session.connection_lost()
        if self._worker is None:
            if session.seen_busy:
                # The client is gone and nothing will be deleted: its reconnect must not
                # find the maildrop locked while the \Seen flags of its RETRs are written.
                session.release()
                self._worker = self.loop.create_task(self._run(None))  # flushes, cleans up
            else:
                self._cleanup()

    # --- LiveSession ------------------------------------------------------------------
    def shutdown(self, reason: str) -> None:
        """Finish the command in progress, then say goodbye without applying deletions."""
        self.out.close_grace = GOODBYE_GRACE
        self.out.hurry()  # already leaving (after QUIT): a slow TLS close must not hold us
        if self.out.closed or self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        self._pending.clear()
        if self._worker is None:
            self._goodbye()

    # --- internals ----------------------------------------------------------------------
    def _take(self) -> Line:
        line = self._pending.popleft()
        assert self._budget is not None
        self._budget.taken(_size(line))
        return line

    def _answer_queued(self) -> None:
        """Answer queued lines here and now until one has to wait (for the store, or for
        the client to read); that one and the rest go to the ``_run`` task."""
        session = self.session
        assert session is not None
        pending, out = self._pending, self.out
        answered = 0
        while pending and not out.closed:
            if out.paused or answered == LINES_PER_TURN:
                self._worker = self.loop.create_task(self._run(None))
                return
            rest = session.handle_now(self._take())
            answered += 1
            if rest is not None:
                self._worker = self.loop.create_task(self._run(rest))
                return
        self._queue_ran_dry()

    def _queue_ran_dry(self) -> None:
        if self._budget is not None:
            self._budget.check(busy=False)
        if not self.out.closed and self.session is not None:
            # Write the \Seen flags the burst of RETRs left pending, in the background.
            self.session.schedule_seen()

    async def _run(self, first: Awaitable[None] | None) -> None:
        session = self.session
        assert session is not None and self._budget is not None
        pending, out, budget = self._pending, self.out, self._budget
        try:
            if first is not None:
                await first
            answered = 0
            while pending and not out.closed:
                if out.paused:
                    await out.drain()
                    continue
                if answered == LINES_PER_TURN:  # let the other sessions have the loop
                    answered = 0
                    await asyncio.sleep(0)
                    continue
                rest = session.handle_now(self._take())
                answered += 1
                if rest is not None:
                    await rest
                budget.check(busy=True, framing=self._buffer.pending)
            if out.closed:
                if out.lost:  # dropped: unlock first (see connection_ended)
                    session.release()
                await session.flush_seen()  # every \Seen is written before the session ends
            else:
                self._queue_ran_dry()
        finally:
            self._worker = None
            if out.lost:
                self._cleanup()
            elif self._shutdown_reason is not None:
                self._goodbye()

    def _goodbye(self) -> None:
        if self.out.closed:
            return
        self.send(err(self._shutdown_reason or "Server shutting down", "SYS/TEMP"))
        self.out.close(GOODBYE_GRACE)

    def _busy_sending(self) -> bool:
        """A command is running and the client is reading: not idle."""
        return self._worker is not None and not self.out.paused

    def _idle_expired(self) -> None:
        if self.out.closed:
            return
        self.events.emit(Event.TIMEOUT, "idle")
        self.send(err("Idle for too long, closing connection"))
        self.out.close(GOODBYE_GRACE)

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        session = self.session
        if session is None:  # refused at connect: never registered
            return
        session.release()
        self.ctx.sessions.discard(self)
