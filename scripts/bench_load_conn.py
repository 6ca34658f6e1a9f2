"""One IMAP connection of ``scripts/bench load``: raw lines on asyncio streams, every response
fed to the session's state checker, every command timed into ``Stats``."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from bench_load_checker import SessionChecker
from bench_load_wire import Continuation, Response, Tagged, Untagged, read_response

ERROR_TEXTS_KEPT = 3
READ_LIMIT = 1 << 24


class CommandFailed(Exception):
    """The server did not answer a command the benchmark needs (login, continuation)."""


@dataclass
class CommandStats:
    latencies: list[float] = field(default_factory=list)
    no: int = 0
    bad: int = 0
    texts: list[str] = field(default_factory=list)  # the first NO/BAD answers


@dataclass
class Stats:
    """Timings and failures of every command of every client, by command kind."""

    by_kind: dict[str, CommandStats] = field(default_factory=dict)
    timeouts: int = 0
    disconnects: int = 0
    sessions: int = 0
    disconnect_texts: list[str] = field(default_factory=list)

    def record(self, kind: str, seconds: float, tagged: Tagged) -> None:
        entry = self.by_kind.setdefault(kind, CommandStats())
        entry.latencies.append(seconds)
        if tagged.status != "OK":
            if tagged.status == "NO":
                entry.no += 1
            else:
                entry.bad += 1
            if len(entry.texts) < ERROR_TEXTS_KEPT:
                code = f"[{tagged.code}{' ' + tagged.code_args if tagged.code_args else ''}] "
                entry.texts.append(f"{tagged.status} {code if tagged.code else ''}{tagged.text}")

    def lost(self, what: str) -> None:
        self.disconnects += 1
        if len(self.disconnect_texts) < ERROR_TEXTS_KEPT:
            self.disconnect_texts.append(what[:200])


@dataclass
class Result:
    tagged: Tagged
    untagged: list[Untagged]

    @property
    def ok(self) -> bool:
        return self.tagged.status == "OK"


def command_name(text: str) -> str:
    """``UID FETCH 1:* (FLAGS)`` → ``UID FETCH``: the name the checker needs."""
    words = text.split(" ", 2)
    return " ".join(words[:2]).upper() if words[0].upper() == "UID" else words[0].upper()



def _unchecked_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 checker: SessionChecker, stats: Stats, timeout: float) -> None:
        self.reader, self.writer = reader, writer
        self.checker, self.stats, self.timeout = checker, stats, timeout
        self.capabilities: set[str] = set()
        self.tags = 0

    @classmethod
    async def open(cls, host: str, port: int, checker: SessionChecker, stats: Stats,
                   timeout: float, *, tls: bool = False) -> Connection:
        """``tls``: implicit TLS (IMAPS), the certificate not checked: a benchmark on
        loopback measures the cost of the encryption, not the trust in a name."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_LIMIT,
                                    ssl=_unchecked_tls() if tls else None), timeout)
        conn = cls(reader, writer, checker, stats, timeout)
        greeting = await asyncio.wait_for(conn.read(), timeout)
        if not isinstance(greeting, Untagged) or greeting.kind != "OK":
            raise CommandFailed(f"greeting: {checker.recent_lines()[-1]}")
        conn.learn_capabilities(greeting.code, greeting.code_args)
        return conn

    def learn_capabilities(self, code: str | None, args: str) -> None:
        if code == "CAPABILITY":
            self.capabilities = {c.upper() for c in args.split()}

    async def read(self) -> Response | None:
        return self.checker.feed(await read_response(self.reader))

    async def login(self, user: str, password: str) -> None:
        result = await self.command("login", f'LOGIN "{user}" "{password}"')
        if not result.ok:
            raise CommandFailed(f"LOGIN {user}: {result.tagged.status} {result.tagged.text}")
        self.learn_capabilities(result.tagged.code, result.tagged.code_args)
        if not self.capabilities or "IMAP4REV1" not in self.capabilities:
            caps = await self.command("capability", "CAPABILITY")
            for r in caps.untagged:
                if r.kind == "CAPABILITY":
                    self.capabilities = {str(v).upper() for v in r.values}

    async def command(self, kind: str, text: str, *, mailbox: str | None = None,
                      verify: bool = False, literal: bytes | None = None) -> Result:
        """Send one command, read up to its tagged answer, time it as ``kind``."""
        return await asyncio.wait_for(self._command(kind, text, mailbox, verify, literal),
                                      self.timeout)

    async def _command(self, kind: str, text: str, mailbox: str | None, verify: bool,
                       literal: bytes | None) -> Result:
        self.tags += 1
        tag = f"t{self.tags}"
        self.checker.begin(command_name(text), mailbox, verify)
        untagged: list[Untagged] = []
        start = time.perf_counter()
        if literal is None:
            self.send(f"{tag} {text}")
        elif "LITERAL+" in self.capabilities:
            self.send(f"{tag} {text} {{{len(literal)}+}}", literal)
        else:
            self.send(f"{tag} {text} {{{len(literal)}}}")
            tagged = await self.until(tag, untagged, stop_at_continuation=True)
            if tagged is not None:  # refused before the literal
                self.stats.record(kind, time.perf_counter() - start, tagged)
                return Result(tagged, untagged)
            self.send(None, literal)
        await self.writer.drain()
        tagged = await self.until(tag, untagged)
        assert tagged is not None
        self.stats.record(kind, time.perf_counter() - start, tagged)
        return Result(tagged, untagged)

    def send(self, line: str | None, literal: bytes | None = None) -> None:
        if line is not None:
            self.checker.sent(line if literal is None else f"{line} <{len(literal)} octets>")
            self.writer.write(line.encode() + b"\r\n")
        if literal is not None:
            self.writer.write(literal + b"\r\n")

    async def until(self, tag: str, untagged: list[Untagged],
                    stop_at_continuation: bool = False) -> Tagged | None:
        """Read responses up to ``tag``'s tagged one (or a continuation, if asked)."""
        while True:
            response = await self.read()
            if isinstance(response, Untagged):
                untagged.append(response)
                if response.kind == "BYE" and self.checker.command != "LOGOUT":
                    raise ConnectionError("BYE: " + self.checker.recent_lines()[-1])
            elif isinstance(response, Tagged):
                if response.tag == tag:
                    return response
                raise ConnectionError(f"unexpected tag {response.tag!r}, waiting for {tag}")
            elif isinstance(response, Continuation) and stop_at_continuation:
                return None

    async def idle(self, seconds: float) -> Result:
        """IDLE for ``seconds`` (reading what the server pushes), then DONE. The time
        recorded is DONE's, from DONE to the tagged answer."""
        self.tags += 1
        tag = f"t{self.tags}"
        self.checker.begin("IDLE")
        self.send(f"{tag} IDLE")
        await self.writer.drain()
        untagged: list[Untagged] = []
        start = time.perf_counter()
        tagged = await asyncio.wait_for(self.until(tag, untagged, True), self.timeout)
        if tagged is not None:
            self.stats.record("idle", time.perf_counter() - start, tagged)
            return Result(tagged, untagged)
        # One read task at a time, never cancelled midway (that could lose half a response).
        end = time.monotonic() + seconds
        pending: asyncio.Task[Any] | None = None
        while (left := end - time.monotonic()) > 0:
            pending = pending or asyncio.ensure_future(self.read())
            done, _ = await asyncio.wait({pending}, timeout=left)
            if done:
                response, pending = pending.result(), None
                if isinstance(response, Untagged):
                    untagged.append(response)
                elif response is not None:
                    raise ConnectionError("unexpected response during IDLE")
        self.send("DONE")
        await self.writer.drain()
        start = time.perf_counter()

        async def finish() -> Tagged | None:
            if pending is not None:
                response = await pending
                if isinstance(response, Tagged) and response.tag == tag:
                    return response
                if isinstance(response, Untagged):
                    untagged.append(response)
            return await self.until(tag, untagged)

        tagged = await asyncio.wait_for(finish(), self.timeout)
        assert tagged is not None
        self.stats.record("idle", time.perf_counter() - start, tagged)
        return Result(tagged, untagged)

    async def close(self) -> None:
        """LOGOUT (timed) and close; a connection already lost is just closed."""
        try:
            if not self.writer.is_closing():
                await self.command("logout", "LOGOUT")
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self.writer.close()
