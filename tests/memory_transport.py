"""The client's end of an in-process connection: a protocol on a memory transport.

``NotifyingTransport`` is Twisted's ``StringTransport`` that wakes a waiting client when the
server writes and that, once the server closes it, delivers ``connectionLost`` as a real
transport does. ``MemoryConnection`` is what an in-process IMAP or POP3 client is built on:
bytes in, lines and octets out, each read bounded in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

WAIT = 10.0  # seconds a response may take before the test fails (a hang, not a slow CI)


class NotifyingTransport(StringTransport):
    """A StringTransport that wakes the waiting client whenever the server writes.

    When the server closes it, the protocol hears ``connectionLost`` on the next turn of
    the loop, as from a real transport once its buffer is written: the session then gives
    back its per-user and per-IP slots and POP3 its maildrop lock.
    """

    def __init__(self, peer: str, on_lost: Callable[[], None] | None = None) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.written = asyncio.Event()
        self.closed = False
        self._on_lost = on_lost

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written.set()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))  # (StringTransport's own would not wake the client)

    def loseConnection(self) -> None:
        super().loseConnection()
        if not self.closed and self._on_lost is not None:
            asyncio.get_running_loop().call_soon(self._on_lost)
        self.closed = True
        self.written.set()

    def abortConnection(self) -> None:
        self.loseConnection()


class MemoryConnection:
    """A client's end of one in-process connection: bytes in, lines and octets out."""

    def __init__(self, proto: Protocol, *, peer: str) -> None:
        self.proto = proto
        self.transport = NotifyingTransport(peer, self.drop)
        self.buf = b""
        self.greeting = b""
        self._lost = False
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes | str) -> None:
        self.proto.dataReceived(data.encode() if isinstance(data, str) else data)

    async def _fill(self) -> None:
        data = self.transport.value()
        if data:
            self.transport.clear()
            self.buf += data
            return
        if self.transport.closed:
            raise ConnectionError(f"server closed the connection; buffered {self.buf!r}")
        self.transport.written.clear()
        try:
            await asyncio.wait_for(self.transport.written.wait(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no response within {WAIT}s; buffered {self.buf!r}") from None
        self.buf += self.transport.value()
        self.transport.clear()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            await self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    async def settle(self) -> None:
        """Let the loop run until the server has nothing more to do for this client."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def pending(self) -> bytes:
        """Whatever the server has written that has not been read yet (after settling)."""
        await self.settle()
        data, self.buf = self.buf + self.transport.value(), b""
        self.transport.clear()
        return data

    @property
    def closed_by_server(self) -> bool:
        return self.transport.closed

    def drop(self) -> None:
        """The client goes away without LOGOUT (a dropped connection)."""
        if not self._lost:
            self._lost = True
            self.proto.connectionLost(Failure(ConnectionDone()))
