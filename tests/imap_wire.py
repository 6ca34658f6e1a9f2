"""A small raw IMAP client for transcript tests: exact bytes in, exact bytes out.

``IMAPWire`` sends tagged command lines and collects every response up to the tagged
completion. Each response is kept as the exact octets the server sent, CRLFs removed
only at the very end of a response; literals stay inline (``{5}\\r\\nhello``), so a test
can compare whole lines with ``==``. Every socket operation has a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from conftest import BASE_CONFIG, ServerProcess

TIMEOUT = 10.0
PASSWORD = "secret"

def _without_pop3(config: str) -> str:
    """``config`` with its [pop3] section replaced by one without listeners."""
    sections = re.split(r"(?m)^(?=\[)", config)
    kept = [sec for sec in sections if not sec.startswith("[pop3]")]
    return "".join(kept).rstrip("\n") + "\n\n[pop3]\nlisten = []\nlisten_tls = []\n"


# The shared config without POP3 listeners, so these tests do not depend on POP3.
NO_POP3_CONFIG = _without_pop3(BASE_CONFIG)


def start_server(root: Path) -> ServerProcess:
    """A server of its own with IMAP, SMTP and LMTP listeners only."""
    return ServerProcess(root, NO_POP3_CONFIG).start()


_names = itertools.count(1)
_cheap_hash: str | None = None


def new_user(server: ServerProcess, prefix: str = "w") -> str:
    """Create a user (password ``secret``) straight in the store, which is much faster
    than the CLI; the argon2 hash uses one pass so that each LOGIN stays cheap."""
    global _cheap_hash
    from mailstead.auth.passwords import make_context
    from mailstead.store.sqlite import SqliteStore

    if _cheap_hash is None:
        _cheap_hash = make_context().handler("argon2").using(rounds=1).hash(PASSWORD)
    name = f"{prefix}{os.getpid()}n{next(_names)}"

    async def create() -> None:
        store = SqliteStore(server.data / "mailstead.sqlite3")
        await store.open()
        try:
            await store.create_user(name, _cheap_hash or "")
        finally:
            await store.close()

    asyncio.run(create())
    return name


_LITERAL_END = re.compile(rb"\{(\d+)\}$")


@dataclass
class Reply:
    """The responses to one command: untagged (and ``+``) lines, then the tagged line."""

    tag: bytes
    untagged: list[bytes] = field(default_factory=list)
    tagged: bytes = b""

    @property
    def status(self) -> bytes:
        """``OK``, ``NO`` or ``BAD`` from the tagged line."""
        return self.tagged[len(self.tag) + 1 :].split(b" ", 1)[0]

    @property
    def text(self) -> bytes:
        """The tagged line after ``tag status ``."""
        return self.tagged[len(self.tag) + 1 :].split(b" ", 1)[1]

    @property
    def ok(self) -> bool:
        return self.status == b"OK"

    def lines(self, prefix: bytes) -> list[bytes]:
        """Untagged responses starting with ``prefix`` (e.g. ``b"* LIST "``)."""
        return [u for u in self.untagged if u.startswith(prefix)]

    def __str__(self) -> str:
        return "\n".join(x.decode("utf-8", "replace") for x in [*self.untagged, self.tagged])


def literals(response: bytes) -> list[bytes]:
    """The contents of the literals in one response, in order."""
    out = []
    pos = 0
    while True:
        m = re.compile(rb"\{(\d+)\}\r\n").search(response, pos)
        if m is None:
            return out
        n = int(m.group(1))
        out.append(response[m.end() : m.end() + n])
        pos = m.end() + n


class IMAPWire:
    """A line-level IMAP client over plain TCP or TLS on 127.0.0.1."""

    def __init__(
        self,
        port: int,
        *,
        tls: bool = False,
        cafile: Path | None = None,
        timeout: float = TIMEOUT,
        read_greeting: bool = True,
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.settimeout(timeout)
        self.sock: socket.socket = raw
        if tls:
            self.sock = self.tls_context(cafile).wrap_socket(raw, server_hostname="mail.test")
        self.buf = b""
        self.counter = 0
        self.greeting = self.response() if read_greeting else b""

    @staticmethod
    def tls_context(cafile: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    # --- low level ---------------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {self.buf!r}")
        self.buf += chunk

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self) -> bytes:
        """One CRLF-terminated line, CRLF removed."""
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self) -> bytes:
        """One whole response: a line, plus any literals and the lines that follow them."""
        out = self.line()
        while (m := _LITERAL_END.search(out)) is not None:
            out += b"\r\n" + self.read_exact(int(m.group(1)))
            out += self.line()
        return out

    def closed_by_peer(self) -> bool:
        """True when the server has closed the connection (after reading what is left)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def next_tag(self) -> bytes:
        self.counter += 1
        return b"A%03d" % self.counter

    # --- commands ----------------------------------------------------------------
    def collect(self, tag: bytes) -> Reply:
        """Read responses until the one tagged ``tag``."""
        reply = Reply(tag)
        while True:
            resp = self.response()
            if resp.startswith(tag + b" "):
                reply.tagged = resp
                return reply
            reply.untagged.append(resp)

    def cmd(self, text: bytes | str, tag: bytes | None = None) -> Reply:
        """Send ``tag text CRLF`` and collect the reply."""
        tag = tag or self.next_tag()
        body = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + body + b"\r\n")
        return self.collect(tag)

    def cmd_literal(self, head: bytes | str, data: bytes, tail: bytes | str = b"",
                    tag: bytes | None = None, *, plus: bool = False) -> Reply:
        """Send ``tag head {n}`` + data + tail; waits for ``+`` unless ``plus`` (LITERAL+).

        If the server answers the literal marker with a tagged response instead of ``+``,
        that is the reply (nothing more is sent).
        """
        tag = tag or self.next_tag()
        head_b = head.encode() if isinstance(head, str) else head
        tail_b = tail.encode() if isinstance(tail, str) else tail
        marker = b"{%d+}" % len(data) if plus else b"{%d}" % len(data)
        self.send(tag + b" " + head_b + b" " + marker + b"\r\n")
        if plus:
            self.send(data + tail_b + b"\r\n")
            return self.collect(tag)
        reply = Reply(tag)
        while True:
            resp = self.response()
            if resp.startswith(b"+"):
                break
            if resp.startswith(tag + b" "):
                reply.tagged = resp
                return reply
            reply.untagged.append(resp)
        self.send(data + tail_b + b"\r\n")
        rest = self.collect(tag)
        rest.untagged[:0] = reply.untagged
        return rest

    def login(self, user: str, password: str = "secret") -> Reply:
        reply = self.cmd(f"LOGIN {user} {password}")
        assert reply.ok, reply
        return reply

    def select(self, mailbox: str = "INBOX") -> Reply:
        reply = self.cmd(f'SELECT "{mailbox}"')
        assert reply.ok, reply
        return reply

    def append(self, mailbox: str, message: bytes, flags: str = "",
               date: str | None = None) -> Reply:
        head = f'APPEND "{mailbox}"'
        if flags:
            head += f" ({flags})"
        if date:
            head += f' "{date}"'
        reply = self.cmd_literal(head, message, plus=True)
        assert reply.ok, reply
        return reply

    def starttls(self, cafile: Path | None) -> Reply:
        reply = self.cmd("STARTTLS")
        assert reply.ok, reply
        assert self.buf == b"", self.buf
        self.sock = self.tls_context(cafile).wrap_socket(self.sock, server_hostname="mail.test")
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> IMAPWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- response parsing ----------------------------------------------------------------------
Value = bytes | None | list["Value"]


class _ValueParser:
    """Parses IMAP response data: atoms, quoted strings, literals, NIL and lists."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos : self.pos + 1] == b" ":
            self.pos += 1

    def value(self) -> Value:
        self.skip_space()
        ch = self.data[self.pos : self.pos + 1]
        if ch == b"(":
            self.pos += 1
            items: list[Value] = []
            while True:
                self.skip_space()
                if self.data[self.pos : self.pos + 1] == b")":
                    self.pos += 1
                    return items
                if self.pos >= len(self.data):
                    raise ValueError(f"unbalanced list in {self.data!r}")
                items.append(self.value())
        if ch == b'"':
            end = self.pos + 1
            out = bytearray()
            while self.data[end : end + 1] != b'"':
                if self.data[end : end + 1] == b"\\":
                    end += 1
                out += self.data[end : end + 1]
                end += 1
            self.pos = end + 1
            return bytes(out)
        if ch == b"{":
            close = self.data.index(b"}", self.pos)
            n = int(self.data[self.pos + 1 : close])
            start = close + 3  # "}\r\n"
            self.pos = start + n
            return self.data[start : start + n]
        start = self.pos
        depth = 0
        while self.pos < len(self.data):
            c = self.data[self.pos : self.pos + 1]
            if c == b"[":
                depth += 1
            elif c == b"]":
                depth -= 1
            elif depth == 0 and c in b" ()":
                break
            self.pos += 1
        atom = self.data[start : self.pos]
        if atom == b"":
            raise ValueError(f"empty atom at {start} in {self.data!r}")
        return None if atom.upper() == b"NIL" else atom


def parse_values(data: bytes) -> list[Value]:
    """All space-separated values of ``data``."""
    p = _ValueParser(data)
    out = []
    while True:
        p.skip_space()
        if p.pos >= len(data):
            return out
        out.append(p.value())


def parse_fetch(response: bytes) -> tuple[int, dict[bytes, Value]]:
    """``* n FETCH (name value ...)`` as (n, {NAME: value}); names upper-cased."""
    m = re.match(rb"\* (\d+) FETCH ", response)
    assert m is not None, response
    items = _ValueParser(response, m.end()).value()
    assert isinstance(items, list), response
    pairs = {}
    for i in range(0, len(items), 2):
        name = items[i]
        assert isinstance(name, bytes), response
        pairs[name.upper()] = items[i + 1]
    return int(m.group(1)), pairs


def parse_list(response: bytes) -> tuple[set[bytes], bytes | None, bytes]:
    """``* LIST (attrs) "delim" name`` (or LSUB) as (attrs, delimiter, name)."""
    m = re.match(rb"\* (LIST|LSUB) ", response)
    assert m is not None, response
    values = parse_values(response[m.end() :])
    attrs, delim, name = values[0], values[1], values[2]
    assert isinstance(attrs, list) and isinstance(name, bytes), response
    assert delim is None or isinstance(delim, bytes)
    return {a for a in attrs if isinstance(a, bytes)}, delim, name


def flags_of(value: Value) -> set[bytes]:
    assert isinstance(value, list), value
    return {f for f in value if isinstance(f, bytes)}


def apply_expunges(uids: list[int], untagged: list[bytes]) -> list[int]:
    """Replay ``* n EXPUNGE`` responses against a list of UIDs in sequence order."""
    left = list(uids)
    for line in untagged:
        m = re.fullmatch(rb"\* (\d+) EXPUNGE", line)
        if m:
            n = int(m.group(1))
            assert 1 <= n <= len(left), (line, left)
            del left[n - 1]
    return left
