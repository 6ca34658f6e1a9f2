"""Helpers for the robustness tests (fuzzing, crash safety, limits).

Everything here talks to a real ``mailstead serve`` process on 127.0.0.1, with a timeout
on every socket operation and a bound on every loop. Nothing in here asserts about the
protocols; the test modules do.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

HOST = "127.0.0.1"
PASSWORD = "secret"
SOCK_TIMEOUT = 5.0


# --- configuration ----------------------------------------------------------------------
def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return str(value)


def server_config(*, limits: dict[str, int] | None = None, auth: dict[str, object] | None = None,
                  fsync: bool = True, tls: bool = False, workers: int = 1) -> str:
    """A config with a plain listener for each protocol on an ephemeral loopback port (and
    IMAPS/POP3S ones with ``tls``), the given ``[limits]`` and ``[auth]`` keys, and
    ``workers`` processes."""
    lim = {"max_message_size": 1_000_000, **(limits or {})}
    limit_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in lim.items())
    auth_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in (auth or {}).items())
    tls_listen = '["127.0.0.1:0"]' if tls else "[]"
    return f"""
[server]
hostname = "mail.test"
data_dir = "data"
domains = ["example.org", "mail.test"]
shutdown_grace = 5
workers = {workers}

[store]
fsync = {"true" if fsync else "false"}

[imap]
listen = ["127.0.0.1:0"]
listen_tls = {tls_listen}

[pop3]
listen = ["127.0.0.1:0"]
listen_tls = {tls_listen}

[smtp]
listen = ["127.0.0.1:0"]

[lmtp]
listen = ["127.0.0.1:0"]

[auth]
{auth_lines}

[limits]
{limit_lines}
"""


# --- the store, from this process ----------------------------------------------------------
_cheap_hash: str | None = None


def cheap_hash() -> str:
    """An argon2id hash of PASSWORD with one pass: LOGIN stays cheap, and the server's
    CryptContext does not ask for an upgrade (only the pass count differs)."""
    global _cheap_hash
    if _cheap_hash is None:
        from mailstead.auth.passwords import make_context

        _cheap_hash = make_context().handler("argon2").using(rounds=1).hash(PASSWORD)
    return _cheap_hash


def _run_store(server: ServerProcess, fn: Callable[[Any], Any]) -> Any:
    from mailstead.store.sqlite import SqliteStore

    async def go() -> Any:
        store = SqliteStore(server.data / "mailstead.sqlite3")
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def create_users(server: ServerProcess, *names: str) -> None:
    """Create users (password ``secret``) straight in the store, which is fast."""

    async def create(store: Any) -> None:
        for name in names:
            await store.create_user(name, cheap_hash())

    _run_store(server, create)


def append_messages(server: ServerProcess, user: str, messages: Iterable[bytes]) -> list[int]:
    from mailstead.store.api import NewMessage

    async def add(store: Any) -> list[int]:
        u = await store.get_user(user)
        mbox = await store.get_mailbox(u.id, "INBOX")
        if mbox is None:
            mbox = await store.create_mailbox(u.id, "INBOX")
        return list(await store.append(mbox.id, [NewMessage(m) for m in messages]))

    return _run_store(server, add)


def store_snapshot(server: ServerProcess, user: str, mailbox: str = "INBOX") -> dict[int, Any]:
    """uid -> (flags, octets) of one mailbox, read through the store API."""

    async def read(store: Any) -> dict[int, Any]:
        u = await store.get_user(user)
        mbox = await store.get_mailbox(u.id, mailbox)
        infos = await store.list_messages(mbox.id)
        data = await store.read_messages(mbox.id, [i.uid for i in infos])
        return {i.uid: (frozenset(i.flags), data.get(i.uid)) for i in infos}

    return _run_store(server, read)


_msg_counter = itertools.count(1)


def message(tag: str, body_size: int = 200, subject: str = "fuzz") -> bytes:
    """A small RFC 5322 message with CRLF line ends and a unique Message-ID."""
    n = next(_msg_counter)
    mid = f"<{tag}.{n}.{os.getpid()}@fuzz.test>"
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    body = (line * (body_size // len(line) + 1))[:body_size]
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    head = (
        f"From: Fuzz <fuzz@example.net>\r\nTo: someone@example.org\r\n"
        f"Subject: {subject} {n}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    return head + body


# --- raw connections ------------------------------------------------------------------------
def connect(port: int, timeout: float = SOCK_TIMEOUT) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class LineClient:
    """A blocking line reader over one socket; every read has a deadline."""

    def __init__(self, port: int, timeout: float = SOCK_TIMEOUT) -> None:
        self.sock = connect(port, timeout)
        self.timeout = timeout
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply in time; buffered {self.buf[-300:]!r}")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {self.buf[-300:]!r}")
        self.buf += chunk

    def line(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until(self, pred: Callable[[bytes], bool], timeout: float | None = None) -> list[bytes]:
        """Lines up to and including the first one ``pred`` accepts."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        while True:
            left = deadline - time.monotonic()
            out.append(self.line(max(left, 0.001)))
            if pred(out[-1]):
                return out

    # IMAP: a tagged command and its completion, literals kept inline.
    def imap(self, tag: str, text: bytes | str, timeout: float | None = None) -> list[bytes]:
        body = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + body + b"\r\n")
        return self.imap_collect(tag, timeout)

    def imap_collect(self, tag: str, timeout: float | None = None) -> list[bytes]:
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        t = tag.encode() + b" "
        while True:
            resp = self.line(max(deadline - time.monotonic(), 0.001))
            while (m := re.search(rb"\{(\d+)\}$", resp)) is not None:
                resp += b"\r\n" + self.read_exact(
                    int(m.group(1)), max(deadline - time.monotonic(), 0.001))
                resp += self.line(max(deadline - time.monotonic(), 0.001))
            out.append(resp)
            if resp.startswith(t):
                return out

    # POP3 / SMTP
    def cmd(self, text: bytes | str, timeout: float | None = None) -> bytes:
        body = text.encode() if isinstance(text, str) else text
        self.send(body + b"\r\n")
        return self.line(timeout)

    def smtp_reply(self, timeout: float | None = None) -> list[bytes]:
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = [self.line(max(deadline - time.monotonic(), 0.001))]
        while lines[-1][3:4] == b"-":
            lines.append(self.line(max(deadline - time.monotonic(), 0.001)))
        return lines

    def smtp(self, text: bytes | str, timeout: float | None = None) -> list[bytes]:
        body = text.encode() if isinstance(text, str) else text
        self.send(body + b"\r\n")
        return self.smtp_reply(timeout)

    def pop3_multi(self, timeout: float | None = None) -> list[bytes]:
        return self.until(lambda ln: ln == b".", timeout)

    def eof(self, timeout: float = 2.0) -> bool:
        """True when the peer closes (reading and keeping whatever it still sends)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sasl_plain(user: str, password: str = PASSWORD) -> str:
    """The base64 SASL PLAIN initial response for ``user``."""
    import base64

    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def imap_login(port: int, user: str, select: str | None = None) -> LineClient:
    c = LineClient(port)
    greeting = c.line()
    assert greeting.startswith(b"* OK"), greeting
    r = c.imap("L1", f"LOGIN {user} {PASSWORD}")
    assert r[-1].startswith(b"L1 OK"), r
    if select:
        r = c.imap("L2", f'SELECT "{select}"')
        assert r[-1].startswith(b"L2 OK"), r
    return c


def pop3_login(port: int, user: str) -> LineClient:
    c = LineClient(port)
    assert c.line().startswith(b"+OK")
    assert c.cmd(f"USER {user}").startswith(b"+OK")
    reply = c.cmd(f"PASS {PASSWORD}")
    assert reply.startswith(b"+OK"), reply
    return c


# --- is the server alive? -------------------------------------------------------------------
def alive_imap(port: int) -> None:
    with LineClient(port) as c:
        greeting = c.line()
        assert greeting.startswith(b"* OK"), greeting
        r = c.imap("Z1", "NOOP")
        assert r[-1].startswith(b"Z1 OK"), r


def alive_pop3(port: int, user: str | None = None) -> None:
    """Greeting, then CAPA (or, with ``user``, a login and NOOP: only TRANSACTION has NOOP)."""
    with LineClient(port) as c:
        greeting = c.line()
        assert greeting.startswith(b"+OK"), greeting
        if user is None:
            first = c.cmd("CAPA")
            assert first.startswith(b"+OK"), first
            c.pop3_multi()
        else:
            assert c.cmd(f"USER {user}").startswith(b"+OK")
            reply = c.cmd(f"PASS {PASSWORD}")
            assert reply.startswith(b"+OK"), reply
            reply = c.cmd("NOOP")
            assert reply.startswith(b"+OK"), reply
            assert c.cmd("QUIT").startswith(b"+OK")


def alive_smtp(port: int, lmtp: bool = False) -> None:
    with LineClient(port) as c:
        greeting = c.smtp_reply()
        assert greeting[0].startswith(b"220"), greeting
        hello = c.smtp(("LHLO" if lmtp else "EHLO") + " alive.test")
        assert hello[-1].startswith(b"250"), hello
        reply = c.smtp("NOOP")
        assert reply[-1].startswith(b"250"), reply
        c.send(b"QUIT\r\n")


def alive(server: ServerProcess, proto: str, pop3_user: str | None = None) -> None:
    """Assert that a fresh connection of ``proto`` gets a greeting and a working NOOP."""
    assert server.proc is not None and server.proc.poll() is None, (
        f"server process exited with {server.proc and server.proc.returncode}")
    port = server.port(proto)
    if proto == "imap":
        alive_imap(port)
    elif proto == "pop3":
        alive_pop3(port, pop3_user)
    else:
        alive_smtp(port, lmtp=proto == "lmtp")


# --- sending a fuzz stream -------------------------------------------------------------------
def send_stream(
    sock: socket.socket,
    chunks: Iterable[bytes],
    *,
    pause_every: int = 0,
) -> bool:
    """Send ``chunks`` one by one (``pause_every``: a 1 ms pause after every n-th chunk).

    Returns False when the server closed the connection or stopped reading (that can be
    legitimate, e.g. after LOGOUT or a BYE); the caller carries on.
    """
    try:
        for i, chunk in enumerate(chunks, 1):
            if chunk:
                sock.settimeout(2.0)
                sock.sendall(chunk)
            if pause_every and i % pause_every == 0:
                time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
        return False
    return True


def read_response(
    sock: socket.socket,
    marker: bytes | None,
    *,
    idle: float = 0.08,
    total: float = 1.5,
    limit: int = 8 * 1024 * 1024,
) -> bytes:
    """Read until ``marker`` shows up (a line start counts as preceded by LF), EOF,
    ``idle`` seconds without data, ``total`` seconds or ``limit`` octets."""
    got = bytearray(b"\n")
    deadline = time.monotonic() + total
    while len(got) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(idle, left))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        start = max(0, len(got) - len(marker or b""))
        got += chunk
        if marker is not None and got.find(marker, start) >= 0:
            break
    return bytes(got[1:])


def split_chunks(data: bytes, cuts: Iterable[float]) -> list[bytes]:
    """Split ``data`` at relative positions ``cuts`` (each in [0, 1])."""
    points = sorted({int(c * len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- logs, memory, counts ---------------------------------------------------------------------
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ (\w+) ")


def log_records(text: str) -> list[str]:
    """The records of a text-format server log (a record's traceback lines stay with it)."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if _RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return ["\n".join(r) for r in records]


class LogWatcher:
    """Reads the server log from where it stopped last time; reports new problem records."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.offset = server.log.stat().st_size if server.log.exists() else 0

    def new_text(self) -> str:
        if not self.server.log.exists():
            return ""
        with self.server.log.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        # Only whole lines: a record being written stays for the next call.
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", "replace")

    def new_problems(self) -> list[str]:
        return problems(self.new_text())


def problems(text: str) -> list[str]:
    """Log records at ERROR or CRITICAL level, or with a Traceback, or not from the logger
    at all (e.g. an interpreter crash on stderr), each cut to 60 lines."""
    out = []
    for record in log_records(text):
        m = _RECORD_START.match(record)
        level = m.group(1) if m else "?"
        bad = level in ("ERROR", "CRITICAL", "?") or "Traceback" in record
        if bad and record.strip():
            out.append("\n".join(record.splitlines()[:60]))
    return out


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and Private (RssAnon + RssShmem) of a process, in KiB.

    Private is the memory the process itself holds: VmRSS also counts the pages of files it
    maps, and the store's readers map the database, so reading a message grows VmRSS by
    page-cache pages that are neither the server's to hold nor lost to anyone."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"):
            out[key] = int(value.split()[0])
    out["Private"] = out.pop("RssAnon") + out.pop("RssShmem")
    return out


CASES: Counter[str] = Counter()  # per protocol
LABELS: Counter[str] = Counter()  # per test (protocol, state, generator)
MEMORY: dict[str, str] = {}
NOTES: list[str] = []


class _Summary:
    """A plugin registered at run time: prints the fuzz counts and memory figures at the end."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not (CASES or MEMORY or NOTES):
            return
        terminalreporter.section("mailstead robustness summary")
        if CASES:
            total = sum(CASES.values())
            parts = ", ".join(f"{k}={v}" for k, v in sorted(CASES.items()))
            terminalreporter.write_line(f"fuzz cases run: {total} ({parts})")
            parts = ", ".join(f"{k}={v}" for k, v in sorted(LABELS.items()))
            terminalreporter.write_line(f"  by test: {parts}")
        for key, value in MEMORY.items():
            terminalreporter.write_line(f"memory {key}: {value}")
        for note in NOTES:
            terminalreporter.write_line(note)


_summary = _Summary()


def register_summary(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(_summary):
        config.pluginmanager.register(_summary, "mailstead-robustness-summary")


def count_case(proto: str, label: str) -> None:
    CASES[proto] += 1
    LABELS[label] += 1


def note(text: str) -> None:
    NOTES.append(text)
    print(text, file=sys.stderr)
