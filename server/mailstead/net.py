"""Transport glue shared by the IMAP and POP3 protocols: output with back-pressure,
per-IP connection limits and inactivity timers, on Twisted transports."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

log = logging.getLogger(__name__)

# A client that stops reading may not make us buffer without bound.
MAX_BUFFERED_WHILE_PAUSED = 16 * 1024 * 1024


@implementer(IPushProducer)
class TransportOutput:
    """Writes to a Twisted transport; ``drain()`` waits while the peer is not reading."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        # Writes made in one loop iteration go out in one transport.write: a FETCH of
        # thousands of lines costs one system call per batch, not one per line.
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._paused_bytes = 0
        transport.registerProducer(self, True)

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._writable.is_set():
            self._paused_bytes += len(data)
            if self._paused_bytes > MAX_BUFFERED_WHILE_PAUSED:
                log.warning("dropping a client that does not read its responses")
                self._pending.clear()
                self.transport.abortConnection()
                self.lost()
                return
        self._pending.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._pending and not self._closed:
            data = b"".join(self._pending)
            self._pending.clear()
            self.transport.write(data)

    async def drain(self) -> None:
        self.flush()
        if not self._closed:
            await self._writable.wait()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self.transport.loseConnection()
            self._writable.set()

    def lost(self) -> None:
        self._closed = True
        self._writable.set()

    # Input back-pressure: stop reading from a client that pipelines faster than we
    # answer, so queued commands cannot grow without bound.
    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resumeProducing()

    # IPushProducer: the transport tells us when its buffer is full and drained.
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._paused_bytes = 0
        self._writable.set()

    def stopProducing(self) -> None:
        self.lost()


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


class ConnectionLimiter:
    """Counts connections per remote IP across every listener that shares it."""

    def __init__(self) -> None:
        self.per_ip: Counter[str] = Counter()

    def acquire(self, ip: str, limit: int) -> bool:
        if self.per_ip[ip] >= limit:
            return False
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class IdleTimer:
    """Calls ``expire`` after ``seconds`` without ``touch()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, expire: Any) -> None:
        self._loop = loop
        self._seconds = seconds
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None
        self.touch()

    def touch(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(self._seconds, self._expire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
