"""Direct writes (``connection.transport``) over real loopback sockets, in process.

A response goes straight to the socket while Twisted queues nothing: no writability
registration (``reactor.addWriter``, an ``epoll_ctl``) per response. When the kernel
takes only part (a client that does not read, a tiny send buffer), the rest is queued
by Twisted behind it: every octet arrives in order, and a full buffer still pauses the
connection's producer (``TransportOutput``) until the client has read.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from twisted.internet.protocol import Factory, Protocol

from imap_harness import PASSWORD, ImapWorld
from mailstead.connection import transport as direct
from mailstead.connection.output import TRANSPORT_BUFFER, TransportOutput
from mailstead.connection.reactor import make_reactor

pytestmark = pytest.mark.skipif(not direct.DIRECT_WRITES, reason="Twisted internals differ")

MESSAGE = b"From: a@example.test\r\nSubject: hello\r\n\r\n" + b"body line\r\n" * 40


@pytest.fixture
async def reactor() -> Any:
    """A reactor of its own on the test loop, not installed: other tests in this process
    may have installed Twisted's default one (nothing here uses the global reactor)."""
    return make_reactor(asyncio.get_running_loop())


@pytest.fixture
async def writer_registrations(
    reactor: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[Any]]:
    """Every ``reactor.addWriter`` call: one per response that Twisted had to queue."""
    seen: list[Any] = []
    add_writer = reactor.addWriter

    def recording(writer: Any) -> None:
        seen.append(writer)
        add_writer(writer)

    monkeypatch.setattr(reactor, "addWriter", recording)
    yield seen


async def _listen(reactor: Any, factory: Any) -> tuple[Any, int]:
    port = direct.listen_tcp(reactor, 0, factory, 50, "127.0.0.1")
    return port, port.getHost().port


async def _until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def _reply(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, out
        out += line
        if line.startswith(tag + b" "):
            return out


async def test_imap_responses_go_out_without_a_writability_registration(
    world: ImapWorld, reactor: Any, writer_registrations: list[Any]
) -> None:
    user = await world.add_user()
    for _ in range(3):
        await world.deliver(user, MESSAGE)
    port, number = await _listen(reactor, world.factory)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", number)
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"* OK")
        commands = [
            b"a LOGIN " + user.encode() + b" " + PASSWORD.encode(),
            b"b SELECT INBOX",
            b"c FETCH 1:* (FLAGS RFC822.SIZE)",
            b"d FETCH 2 BODY.PEEK[]",
            b"e NOOP",
        ]
        replies = []
        for command in commands:
            writer.write(command + b"\r\n")
            replies.append(await _reply(reader, command.split()[0]))
        assert all(b" OK " in r.splitlines()[-1] for r in replies), replies
        assert replies[1].count(b" EXISTS") == 1
        assert replies[2].count(b" FETCH (") == 3
        assert MESSAGE in replies[3]
        # Twisted's own write registers the socket for writability for every response;
        # while the kernel takes each one whole, a direct write never does.
        assert writer_registrations == []
        writer.write(b"z LOGOUT\r\n")
        assert b"z OK" in await _reply(reader, b"z")
        writer.close()
    finally:
        await port.stopListening().asFuture(asyncio.get_running_loop())


class _Sender(Protocol):
    """Writes what a test asks through a ``TransportOutput``, as sessions do."""

    def __init__(self, made: asyncio.Future[_Sender]) -> None:
        self.made = made

    def connectionMade(self) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.out = TransportOutput(self.transport, asyncio.get_running_loop())
        self.made.set_result(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.out.connection_lost()


async def test_a_partial_send_queues_the_rest_in_order_and_pauses_the_producer(
    reactor: Any, writer_registrations: list[Any]
) -> None:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[_Sender] = loop.create_future()
    port, number = await _listen(reactor, Factory.forProtocol(lambda: _Sender(made)))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", number))
        sender = await asyncio.wait_for(made, 10)
        chunk = 64 * 1024
        blocks = [f"{i:08d}".encode() * (chunk // 8) for i in range(2 * TRANSPORT_BUFFER // chunk)]
        # The client reads nothing: the kernel takes a little, Twisted queues the rest.
        sender.out.write(blocks[0])
        transport = sender.transport
        assert writer_registrations == [transport], "the untaken rest goes to Twisted"
        for block in blocks[1:]:
            sender.out.write(block)
        assert sender.out.paused, "a full buffer pauses the producer"
        expected = b"".join(blocks)
        received = bytearray()
        while len(received) < len(expected):
            data = await asyncio.wait_for(loop.sock_recv(client, 65536), 10)
            assert data, "connection closed early"
            received += data
        assert bytes(received) == expected
        await _until(lambda: not sender.out.paused, "the producer resumed once read")
        # Queue empty again: the next write goes straight out, not through Twisted.
        registered = len(writer_registrations)
        sender.out.write(b"after\r\n")
        assert len(writer_registrations) == registered
        assert await asyncio.wait_for(loop.sock_recv(client, 100), 10) == b"after\r\n"
    finally:
        client.close()
        await port.stopListening().asFuture(asyncio.get_running_loop())
