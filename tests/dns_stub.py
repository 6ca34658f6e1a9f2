"""A loopback DNS server for tests: answers from a dict, over UDP on 127.0.0.1.

Built on dnspython's message API, so what it sends is real DNS on the wire and the code
under test resolves through its ordinary resolver (``[dns] nameservers`` and ``port``).
Names it does not know are NXDOMAIN; a known name asked for another type is NOERROR with
no answer (what a "no MX record" domain looks like). ``records`` may be changed while it
runs. It serves on its own thread, so it works for in-process tests (``async with``) and
for server subprocesses (``start_thread``/``stop``) alike.

``silent`` (a set of names, empty at first) lists names whose queries get no reply at
all, so a resolver times out on them: a DNS outage for one domain.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsStub:
    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        # key: (name lower case without the trailing dot, "MX"/"A"/"AAAA"/"TXT"/"SRV"/"CNAME")
        self.records = records
        self.queries: list[tuple[str, str]] = []
        self.silent: set[str] = set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> DnsStub:
        self.start_thread()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="dns-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
                if any(q.name.to_text(omit_final_dot=True).lower() in self.silent
                       for q in query.question):
                    continue
                reply = self.answer(query)
            except Exception:  # a malformed query gets no answer, like a real server's
                continue
            self._sock.sendto(reply.to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            datas = self.records.get((name, rdtype))
            if datas:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, 60, dns.rdataclass.IN, rdtype, datas
                ))
            elif not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response
