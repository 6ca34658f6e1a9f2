"""Output of one connection: writes with back-pressure, large responses in chunks, and a
close that really closes, also over TLS.

``TransportOutput`` is registered with the transport as a streaming producer for the
whole connection, so the transport tells it when the client stops reading (its buffer is
full) and when it drained. Sessions ``await drain()`` before answering the next command,
and a large response goes out in chunks that each wait for a drained buffer, so a client
that does not read cannot make the server buffer without bound; one that keeps the buffer
full past ``MAX_BUFFERED_WHILE_PAUSED`` is dropped.

Closing unregisters the producer before ``loseConnection()``: Twisted's TLS transport
does not start its close (the close_notify alert, then the TCP close) while a producer is
registered, so without that a TLS session stayed open after LOGOUT or BYE (plain TCP
closed anyway). A peer that never completes the close is aborted after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

log = logging.getLogger(__name__)

# A client that stops reading may not make us buffer without bound.
MAX_BUFFERED_WHILE_PAUSED = 16 * 1024 * 1024
# Octets the transport may hold before it pauses us: room for a burst of pipelined
# answers of typical size, and still a bound for a client that does not read.
TRANSPORT_BUFFER = 256 * 1024
# A response larger than this is written in chunks, each after the buffer drained.
WRITE_CHUNK = 64 * 1024
# Coalesced writes go out at the latest when this much is waiting.
FLUSH_AT = 64 * 1024
# Seconds a closing connection may take before it is aborted: TLS waits for the
# client's close_notify, which a client that stopped reading never sends.
CLOSE_GRACE = 10.0
GOODBYE_GRACE = 2.0  # refusals, timeouts and shutdown: the server is the one leaving


@implementer(IPushProducer)
class TransportOutput:
    """Writes to a Twisted transport; ``drain()`` waits while the peer is not reading.

    ``coalesce`` joins the writes of one loop iteration into one ``transport.write``
    (an IMAP FETCH of thousands of lines then costs one call per batch, not one per
    line); without it every write goes to the transport at once. ``on_resume`` is
    called whenever the client has read what was buffered (activity for idle timers).
    """

    def __init__(
        self,
        transport: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        coalesce: bool = False,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self._loop = loop
        self._coalesce = coalesce
        self._on_resume = on_resume
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = False
        self._lost = False
        self._registered = False
        self._paused_bytes = 0
        self._abort_handle: asyncio.TimerHandle | None = None
        # How long a close() may take; the protocol shortens it when the server stops.
        self.close_grace = CLOSE_GRACE
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = TRANSPORT_BUFFER
        transport.registerProducer(self, True)
        self._registered = True

    @property
    def closed(self) -> bool:
        """True once closing started (nothing more is written) or the connection is gone."""
        return self._closing or self._lost

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def paused(self) -> bool:
        """True while the client is not reading (the transport's buffer is full)."""
        return not self._writable.is_set()

    # --- writing --------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closing or self._lost:
            return
        if not self._writable.is_set():
            self._paused_bytes += len(data)
            if self._paused_bytes > MAX_BUFFERED_WHILE_PAUSED:
                log.warning("dropping a client that does not read its responses")
                self.abort()
                return
        if not self._coalesce:
            self.transport.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= FLUSH_AT:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def write_parts(self, parts: list[bytes]) -> Awaitable[None] | None:
        """Write a response made of pieces. A large one is written in chunks that wait
        for the client to read: the returned awaitable does that (None: all written)."""
        if self._closing or self._lost:
            return None
        size = 0
        for part in parts:
            size += len(part)
        if size <= WRITE_CHUNK:
            if self._coalesce:
                for part in parts:
                    self.write(part)
            else:
                self.transport.writeSequence(parts)
            return None
        return self._write_chunks(b"".join(parts))

    async def _write_chunks(self, data: bytes) -> None:
        self.flush()
        view = memoryview(data)
        for offset in range(0, len(data), WRITE_CHUNK):
            await self._writable.wait()
            if self._closing or self._lost:
                return
            self.transport.write(bytes(view[offset:offset + WRITE_CHUNK]))

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending and not (self._closing or self._lost):
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has read enough that more may be written."""
        self.flush()
        if not (self._closing or self._lost):
            await self._writable.wait()

    def start_tls(self, creator: Any) -> None:
        """Start TLS after what was written so far (the OK to STARTTLS goes out in the
        clear). Twisted moves the registered producer onto the TLS layer."""
        self.flush()
        self.transport.startTLS(creator)

    # --- closing --------------------------------------------------------------------
    def close(self, grace: float | None = None) -> None:
        """Send what is written, then close; abort if the close takes over ``grace``
        seconds (default ``close_grace``)."""
        if self._closing or self._lost:
            return
        if grace is None:
            grace = self.close_grace
        self.flush()
        self._closing = True
        self._writable.set()  # wake a chunked write, which then gives up
        self._unregister()  # (a TLS transport does not close while one is registered)
        self.transport.loseConnection()
        self._abort_handle = self._loop.call_later(grace, self.abort)

    def hurry(self, grace: float = GOODBYE_GRACE) -> None:
        """A close under way must be done within ``grace`` seconds (the server stops)."""
        if self._abort_handle is not None and not self._lost:
            self._abort_handle.cancel()
            self._abort_handle = self._loop.call_later(grace, self.abort)

    def abort(self) -> None:
        """Drop the connection now, without waiting for anything."""
        if self._lost:
            return
        if not self._closing:
            log.debug("aborting a connection")
        self._closing = True
        self._pending.clear()
        self._writable.set()
        self._unregister()
        self.transport.abortConnection()

    def connection_lost(self) -> None:
        """The transport is gone: forget everything, wake every waiter."""
        self._lost = True
        self._closing = True
        self._registered = False
        self._pending.clear()
        for handle in (self._flush_handle, self._abort_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._abort_handle = None
        self._writable.set()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    # --- input back-pressure ----------------------------------------------------------
    def pause_reading(self) -> None:
        if not (self._closing or self._lost):
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if not (self._closing or self._lost):
            self.transport.resumeProducing()

    # --- IPushProducer: the transport tells us when its buffer is full and drained ------
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._paused_bytes = 0
        self._writable.set()
        if self._on_resume is not None:
            self._on_resume()

    def stopProducing(self) -> None:
        self._closing = True
        self._writable.set()


def set_nodelay(transport: Any) -> None:
    """Disable Nagle: a response must not wait for the client's delayed ACK of the last one.

    With TLS the TCP transport sits below the TLS protocol, so walk down to it.
    """
    for _ in range(3):
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)
        if transport is None:
            return
