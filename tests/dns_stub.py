"""A loopback DNS server answering from a dict, for tests (dnspython's message API, UDP).

``DnsStub({("example.org", "MX"): ["10 mx.example.net."]})``: names lower case without
the final dot, types as text, values as rdata in zone-file syntax. A known name asked for
another type answers NOERROR with no data; an unknown name NXDOMAIN. Use it as
``async with DnsStub(...) as stub`` on the test's loop (in-process resolvers), or
``start_thread()`` / ``stop()`` for a server or CLI in another process or a blocking
resolver in this one. ``stub.port`` is the UDP port on 127.0.0.1; ``stub.queries`` lists
(name, type) as asked.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stub: DnsStub) -> None:
        self.stub = stub
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not DNS: dropped, as a server would
        assert self.transport is not None
        self.transport.sendto(self.stub.answer(query).to_wire(), addr)


class DnsStub:
    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = {(name.lower().rstrip("."), rtype.upper()): list(values)
                        for (name, rtype), values in records.items()}
        self.names = {name for name, _ in self.records}
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            rtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rtype))
            values = self.records.get((name, rtype))
            if values:
                response.answer.append(
                    dns.rrset.from_text(question.name, 300, "IN", rtype, *values))
            elif name not in self.names:
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def __aenter__(self) -> DnsStub:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def start_thread(self) -> None:
        """Serve from a thread of its own (its own loop) until ``stop()``."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.__aexit__())
            loop.close()

        self._thread = threading.Thread(target=run, name="dns-stub", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the DNS stub did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None
