"""The Twisted side of a POP3 connection: framing, ordering, flow control, TLS, timeouts.

Received octets are split into lines and queued. Most commands need neither the store nor
a wait (STAT, LIST, DELE, and RETR of a message the session has read ahead), so the queue
is answered right in ``dataReceived``; the first line that must wait hands the rest of
the queue to one asyncio task, so a command that awaits the store is never overtaken by
the next pipelined one. Reading pauses while too many lines wait. Output goes through a
streaming producer registered for the whole connection: while the client does not read,
no further command is answered and large responses wait between chunks, so neither
direction can grow memory without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer, ITLSTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..net import set_nodelay
from ..twisted_types import StreamTransport
from .session import POP3Session
from .wire import MAX_AUTH_LINE, Line, LineBuffer, err

if TYPE_CHECKING:
    from .factory import POP3Factory

log = logging.getLogger("mailstead.pop3")

MAX_QUEUED_LINES = 256  # pause reading beyond this many unprocessed pipelined lines
RESUME_QUEUED_LINES = 32
# Lines answered in one turn of the event loop: a client pipelining thousands of cheap
# commands (one 256 KiB read holds ~40,000 NOOPs) must not hold up every other session.
LINES_PER_TURN = 64
WRITE_CHUNK = 64 * 1024
# Octets of output the transport may hold before no further command is answered: room for
# a burst of pipelined RETRs of typical mail, and a bound for a client that does not read.
OUTPUT_BUFFER = 256 * 1024
# Seconds a closing connection may take before it is aborted: TLS waits for the client's
# close_notify, which a client that stopped reading never sends.
ABORT_AFTER_CLOSE = 10.0
ABORT_AFTER_GOODBYE = 2.0  # shutdown and idle timeout: the server is the one leaving


@implementer(IPushProducer)
class _OutputGate:
    """A streaming producer whose pause/resume the transport drives; we await it."""

    def __init__(self, on_resume: Any) -> None:
        self._ready = asyncio.Event()
        self._ready.set()
        self._on_resume = on_resume
        self.stopped = False

    def pauseProducing(self) -> None:
        self._ready.clear()

    def resumeProducing(self) -> None:
        self._ready.set()
        self._on_resume()

    def stopProducing(self) -> None:
        self.stopped = True
        self._ready.set()

    @property
    def paused(self) -> bool:
        return not self._ready.is_set()

    async def wait(self) -> None:
        await self._ready.wait()


class POP3Protocol(Protocol):
    """One POP3 connection; also the ``LiveSession`` the daemon can shut down."""

    transport: StreamTransport  # type: ignore[assignment]  # Twisted: ITransport | None, see twisted_types

    def __init__(self, factory: POP3Factory) -> None:
        self.factory = factory
        self.ctx = factory.ctx
        self.loop: asyncio.AbstractEventLoop = factory.ctx.loop
        self.peer = "?"
        self.peer_host = ""
        self.session: POP3Session | None = None
        self._tls = factory.implicit_tls
        self._buffer = LineBuffer(MAX_AUTH_LINE)
        self._pending: collections.deque[Line] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._closing = False
        self._lost = False
        self._cleaned = False
        self._counted = False  # holds a slot in the per-IP connection count
        self._shutdown_reason: str | None = None
        self._gate = _OutputGate(self._touch)
        self._producing = False  # the gate is registered with the transport
        self._last_activity = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    # --- Channel interface for the session ----------------------------------------------
    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def tls_available(self) -> bool:
        return (
            not self._tls
            and self.ctx.tls is not None
            and ITLSTransport.providedBy(self.transport)
        )

    def send(self, data: bytes) -> None:
        if not self._lost and self.transport is not None:
            self.transport.write(data)

    def send_parts(self, parts: list[bytes]) -> Awaitable[None] | None:
        if self._lost or self.transport is None:
            return None
        size = 0
        for part in parts:
            size += len(part)
        if size <= WRITE_CHUNK:
            self.transport.writeSequence(parts)
            return None
        return self._send_chunked(b"".join(parts))

    async def _send_chunked(self, data: bytes) -> None:
        # Chunks wait for a drained buffer, so a huge message is neither copied whole into
        # the transport's buffer nor held there for a client that does not read.
        gate = self._gate
        for offset in range(0, len(data), WRITE_CHUNK):
            await gate.wait()
            if self._lost or gate.stopped:
                return
            self.transport.write(data[offset:offset + WRITE_CHUNK])

    def queued_lines(self) -> collections.deque[Line]:
        return self._pending

    def start_tls(self, reply: bytes) -> None:
        # Nothing the client sent after STLS may be read as a command (RFC 2595 §2.2).
        self._buffer.clear()
        self._pending.clear()
        self._resume_reading()
        self.send(reply)
        assert self.ctx.tls is not None
        self.transport.startTLS(self.ctx.tls.creator())
        self._tls = True
        log.debug("pop3 STLS from %s", self.peer)

    def close(self, abort_after: float = ABORT_AFTER_CLOSE) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._pending.clear()
        self._stop_producing()  # (TLS would wait for the producer before closing)
        self.transport.loseConnection()
        self._abort_timer = self.loop.call_later(abort_after, self._abort)

    # --- Twisted protocol events ----------------------------------------------------------
    def connectionMade(self) -> None:
        addr = self.transport.getPeer()
        self.peer_host = str(getattr(addr, "host", ""))
        set_nodelay(self.transport)
        port = getattr(addr, "port", None)
        host = f"[{self.peer_host}]" if ":" in self.peer_host else self.peer_host
        self.peer = f"{host}:{port}" if port is not None else host
        if not self.factory.limiter.acquire(self.peer_host, self.factory.max_per_ip):
            log.warning("pop3 connection from %s refused: too many from this address", self.peer)
            self.ctx.count("pop3_refused_per_ip")
            self.send(err("Too many connections from your address", "SYS/TEMP"))
            self.close(ABORT_AFTER_GOODBYE)
            return
        self._counted = True
        settings = self.factory.settings
        self.session = POP3Session(self.ctx, settings, self, self.factory.last_login)
        self.ctx.sessions.add(self)
        self.ctx.count("connections", protocol="pop3")
        log.info("pop3 session open from %s%s", self.peer, " (TLS)" if self._tls else "")
        self._touch()
        self._idle_timer = self.loop.call_later(settings.idle_timeout, self._check_idle)
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = OUTPUT_BUFFER
        self.transport.registerProducer(self._gate, True)
        self._producing = True
        self.send(self.session.greeting())

    def dataReceived(self, data: bytes) -> None:
        self._touch()
        if self._closing or self._lost or self._shutdown_reason is not None:
            return  # (a refused connection is closing from the start)
        lines = self._buffer.feed(data)
        if not lines:
            return
        self._pending.extend(lines)
        if self._worker is None:
            self._answer_queued()
        if len(self._pending) > MAX_QUEUED_LINES and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._pending.clear()
        for timer in (self._idle_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._gate.stopProducing()
        self._producing = False
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.peer_host)
        if self._worker is None:
            if self.session is not None and self.session.seen_busy:
                self._worker = self.loop.create_task(self._run(None))  # flushes, cleans up
            else:
                self._cleanup()

    # --- LiveSession ------------------------------------------------------------------
    def shutdown(self, reason: str) -> None:
        """Finish the command in progress, then say goodbye without applying deletions."""
        if self._closing and not self._lost and self._abort_timer is not None:
            # Already leaving (e.g. after QUIT): do not let a slow TLS close hold up the stop.
            self._abort_timer.cancel()
            self._abort_timer = self.loop.call_later(ABORT_AFTER_GOODBYE, self._abort)
        if self._closing or self._lost or self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        self._pending.clear()
        if self._worker is None:
            self._goodbye()

    # --- internals ----------------------------------------------------------------------
    def _answer_queued(self) -> None:
        """Answer queued lines here and now until one has to wait (for the store, or for
        the client to read); that one and the rest go to the ``_run`` task."""
        session = self.session
        assert session is not None
        pending, gate = self._pending, self._gate
        answered = 0
        while pending and not (self._lost or self._closing):
            if gate.paused or answered == LINES_PER_TURN:
                self._worker = self.loop.create_task(self._run(None))
                return
            rest = session.handle_now(pending.popleft())
            answered += 1
            if rest is not None:
                self._worker = self.loop.create_task(self._run(rest))
                return
        self._queue_ran_dry()

    def _queue_ran_dry(self) -> None:
        if self._reading_paused:
            self._resume_reading()
        if not (self._lost or self._closing) and self.session is not None:
            # Write the \Seen flags the burst of RETRs left pending, in the background.
            self.session.schedule_seen()

    async def _run(self, first: Awaitable[None] | None) -> None:
        session = self.session
        assert session is not None
        pending, gate = self._pending, self._gate
        try:
            if first is not None:
                await first
            answered = 0
            while pending and not (self._lost or self._closing):
                if gate.paused:
                    await gate.wait()
                    continue
                if answered == LINES_PER_TURN:  # let the other sessions have the loop
                    answered = 0
                    await asyncio.sleep(0)
                    continue
                rest = session.handle_now(pending.popleft())
                answered += 1
                if rest is not None:
                    await rest
                if self._reading_paused and len(pending) <= RESUME_QUEUED_LINES:
                    self._resume_reading()
            if self._lost or self._closing:
                await session.flush_seen()  # every \Seen is written before the session ends
            else:
                self._queue_ran_dry()
        finally:
            self._worker = None
            if self._lost:
                self._cleanup()
            elif self._shutdown_reason is not None:
                self._goodbye()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._lost:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _goodbye(self) -> None:
        if self._closing or self._lost:
            return
        self.send(err(self._shutdown_reason or "Server shutting down", "SYS/TEMP"))
        self.close(ABORT_AFTER_GOODBYE)

    def _touch(self) -> None:
        self._last_activity = self.loop.time()

    def _check_idle(self) -> None:
        timeout = self.factory.settings.idle_timeout
        idle = self.loop.time() - self._last_activity
        busy = self._worker is not None and not self._gate.paused
        if busy or idle < timeout:  # re-arm for the rest (a busy server is not idle)
            rest = timeout if busy else timeout - idle + 0.01
            self._idle_timer = self.loop.call_later(rest, self._check_idle)
            return
        self._idle_timer = None
        log.info("pop3 idle timeout for %s", self.peer)
        self.send(err("Idle for too long, closing connection"))
        self.close(ABORT_AFTER_GOODBYE)

    def _stop_producing(self) -> None:
        self._gate.stopProducing()  # wakes a chunked write, which then gives up
        if self._producing and not self._lost:
            self._producing = False
            self.transport.unregisterProducer()

    def _abort(self) -> None:
        if not self._lost:
            log.info("pop3 connection from %s did not close in time; aborting", self.peer)
            self.transport.abortConnection()

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        session = self.session
        if session is None:  # refused at connect: never registered
            return
        session.release()
        self.ctx.sessions.discard(self)
        who = session.user.name if session.user else None
        log.info("pop3 session closed from %s%s", self.peer, f" ({who!r})" if who else "")
