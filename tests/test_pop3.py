"""POP3 end to end: poplib, raw sockets, fetchmail and curl against a real server process.

The servers here have IMAP disabled so these tests do not depend on the IMAP listener.
Users and messages are created through the store API from this process (byte-exact
contents, no SMTP trace headers), except where SMTP delivery itself is the point.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import ServerProcess
from mailstead.auth.passwords import PasswordHasher
from mailstead.store.api import Mailbox, MessageInfo, NewMessage
from mailstead.store.sqlite import SqliteStore

# The POP3 benchmark client is a script (scripts/bench_pop3.py), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_pop3 import bench_pop3

T = TypeVar("T")
PASSWORD = "secret pass-7Qx"  # with a space: PASS takes the rest of the line

POP3_CONFIG = """
[server]
hostname = "mail.test"
data_dir = "data"
domains = ["example.org", "mail.test"]
shutdown_grace = 5

[imap]
listen = []
listen_tls = []

[pop3]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
{pop3_extra}

[smtp]
listen = ["127.0.0.1:0"]

[lmtp]
listen = []

[auth]
plaintext_on_loopback = {plaintext}
"""
STRICT_EXTRA = 'retr_sets_seen = false\nexpire = "30"\nlogin_delay = 60'

CAPA_PLAIN = [
    "TOP", "USER", "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
    "UIDL", "EXPIRE NEVER", "STLS", "IMPLEMENTATION Mailstead",
]


# --- helpers ---------------------------------------------------------------------------
class StoreThread:
    """The server's store opened from this process, on a private loop in a thread."""

    _hash: str | None = None

    def __init__(self, db: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = SqliteStore(db)
        self.run(self.store.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def add_user(self, name: str) -> str:
        if StoreThread._hash is None:
            StoreThread._hash = PasswordHasher("argon2").hash(PASSWORD)
        self.run(self.store.create_user(name, StoreThread._hash))
        return name

    def inbox(self, user: str) -> Mailbox:
        async def get() -> Mailbox:
            u = await self.store.get_user(user)
            assert u is not None
            mbox = await self.store.get_mailbox(u.id, "INBOX")
            assert mbox is not None
            return mbox

        return self.run(get())

    def append(self, user: str, *messages: bytes) -> list[int]:
        mbox = self.inbox(user)
        return self.run(self.store.append(mbox.id, [NewMessage(m) for m in messages]))

    def infos(self, user: str) -> list[MessageInfo]:
        return self.run(self.store.list_messages(self.inbox(user).id))

    def read(self, user: str, uid: int) -> bytes:
        data = self.run(self.store.read_message(self.inbox(user).id, uid))
        assert data is not None
        return data


class RawPOP3:
    """A line-level POP3 client that sends exactly what it is told."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = (
            tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        )
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by server")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def raw_body(self) -> bytes:
        """A multi-line body exactly as sent: stuffed lines with CRLF, then ".CRLF"."""
        out = []
        while True:
            line = self.line()
            out.append(line + b"\r\n")
            if line == b".":
                return b"".join(out)

    def lines(self) -> list[bytes]:
        """A multi-line body as (still stuffed) lines, without the terminator."""
        return self.raw_body().split(b"\r\n")[:-2]

    def cmd(self, text: str | bytes) -> bytes:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def multi(self, text: str) -> tuple[bytes, list[bytes]]:
        status = self.cmd(text)
        assert status.startswith(b"+OK"), status
        return status, self.lines()

    def starttls(self, ctx: ssl.SSLContext) -> None:
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def login(self, user: str, password: str = PASSWORD) -> bytes:
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        return self.cmd(f"PASS {password}")

    def at_eof(self, timeout: float = 10) -> bool:
        self.sock.settimeout(timeout)
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

    def close(self) -> None:
        self.sock.close()


def unstuff(raw_body: bytes) -> bytes:
    """Independent of the server's code: drop the terminator and one leading dot per line."""
    assert raw_body.endswith(b"\r\n.\r\n") or raw_body == b".\r\n"
    if raw_body == b".\r\n":
        return b""
    lines = raw_body[:-5].split(b"\r\n")
    return b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: a@example.net\r\nTo: b@example.org\r\nSubject: {subject}\r\n\r\n"
            .encode() + body)


def tls_context(server: ServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data / "tls" / "ca.pem"))


def pop3_login(server: ServerProcess, user: str, *, tls: bool = False) -> poplib.POP3:
    if tls:
        client: poplib.POP3 = poplib.POP3_SSL(
            "127.0.0.1", server.port("pop3", tls=True), context=tls_context(server), timeout=10
        )
    else:
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def raw_login(server: ServerProcess, user: str, wait: float = 5.0) -> RawPOP3:
    """Log in, retrying while a just-dropped session of the user still holds the lock."""
    deadline = time.monotonic() + wait
    while True:
        c = RawPOP3(server.port("pop3"))
        reply = c.login(user)
        if reply.startswith(b"+OK"):
            return c
        c.close()
        assert b"[IN-USE]" in reply and time.monotonic() < deadline, reply
        time.sleep(0.05)


_names = itertools.count(1)


def new_name() -> str:
    return f"p{os.getpid()}n{next(_names)}"


# --- fixtures --------------------------------------------------------------------------
def _server(root: Path, extra: str = "", plaintext: str = "true") -> ServerProcess:
    text = POP3_CONFIG.format(pop3_extra=extra, plaintext=plaintext)
    return ServerProcess(root, text).start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = _server(tmp_path_factory.mktemp("pop3"))
    yield server
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log
    assert PASSWORD not in log
    assert base64.b64encode(PASSWORD.encode()).decode()[:12] not in log


@pytest.fixture(scope="module")
def store(srv: ServerProcess) -> Iterator[StoreThread]:
    st = StoreThread(srv.data / "mailstead.sqlite3")
    yield st
    st.close()


@pytest.fixture
def user(store: StoreThread) -> str:
    return store.add_user(new_name())


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No plaintext logins even on loopback; RETR keeps \\Unseen; EXPIRE/LOGIN-DELAY set."""
    server = _server(tmp_path_factory.mktemp("pop3strict"), STRICT_EXTRA, "false")
    yield server
    server.stop()
    assert "Traceback" not in server.log_text()


@pytest.fixture(scope="module")
def strict_store(strict: ServerProcess) -> Iterator[StoreThread]:
    st = StoreThread(strict.data / "mailstead.sqlite3")
    yield st
    st.close()


# --- capabilities and the basic transaction ---------------------------------------------
def test_greeting_and_capa_list_exactly_what_works(srv: ServerProcess, user: str) -> None:
    c = RawPOP3(srv.port("pop3"))
    assert c.greeting.startswith(b"+OK ") and b"<" not in c.greeting  # no APOP timestamp
    _, caps = c.multi("CAPA")
    assert [x.decode() for x in caps] == CAPA_PLAIN
    assert c.login(user).startswith(b"+OK")
    _, caps = c.multi("capa")
    assert [x.decode() for x in caps] == [x for x in CAPA_PLAIN if x != "STLS"]
    assert c.cmd("QUIT").startswith(b"+OK")
    assert c.at_eof()


def test_full_transaction_with_poplib(srv: ServerProcess, store: StoreThread, user: str) -> None:
    msgs = [message(f"m{i}", b"line %d\r\n" % i * (i + 1)) for i in range(3)]
    uids = store.append(user, *msgs)
    mbox = store.inbox(user)
    p = pop3_login(srv, user)
    total = sum(map(len, msgs))
    assert p.stat() == (3, total)
    status, listing, _ = p.list()
    assert status == f"+OK 3 messages ({total} octets)".encode()
    assert listing == [f"{i + 1} {len(m)}".encode() for i, m in enumerate(msgs)]
    assert p.list(2) == f"+OK 2 {len(msgs[1])}".encode()
    uidl = [f"{i + 1} {mbox.uidvalidity}.{uid}".encode() for i, uid in enumerate(uids)]
    assert p.uidl()[1] == uidl
    assert p.uidl(3) == b"+OK " + uidl[2]
    status, lines, _octets = p.retr(1)
    assert status == f"+OK {len(msgs[0])} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == msgs[0]
    assert p.noop() == b"+OK"
    assert p.dele(2).startswith(b"+OK")
    assert p.stat() == (2, total - len(msgs[1]))
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.retr(2)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.list(2)
    assert [ln.split()[0] for ln in p.list()[1]] == [b"1", b"3"]
    assert p.rset().startswith(b"+OK Maildrop has 3 messages")
    assert p.stat() == (3, total)
    p.dele(3)
    assert p.quit().startswith(b"+OK")
    assert [i.uid for i in store.infos(user)] == uids[:2]


def test_uidl_is_stable_across_sessions_and_flags(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    store.append(user, message("a"), message("b"))
    p = pop3_login(srv, user)
    first = p.uidl()[1]
    p.retr(1)  # changes flags
    p.quit()
    p = pop3_login(srv, user)
    assert p.uidl()[1] == first
    p.quit()
    for line in first:
        uid = line.split()[1]
        assert 1 <= len(uid) <= 70 and all(0x21 <= ch <= 0x7E for ch in uid)


def test_errors_answer_err_and_the_session_goes_on(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    store.append(user, message("one"), message("two"))
    c = RawPOP3(srv.port("pop3"))
    before_login = {
        "STAT": b"-ERR STAT is only valid after login",
        "RETR 1": b"-ERR RETR is only valid after login",
        "NOOP": b"-ERR NOOP is only valid after login",
        "PASS x": b"-ERR Send USER first",
        "USER": b"-ERR Missing argument to USER",
        "USER a b": b"-ERR Too many arguments to USER",
        "APOP a 0123456789abcdef0123456789abcdef": b"-ERR Unknown command APOP",
        "XYZZY": b"-ERR Unknown command XYZZY",
        "": b"-ERR Empty command",
        "   ": b"-ERR Empty command",
        "1234": b"-ERR Unknown command",
        "CAPA extra": b"-ERR Too many arguments to CAPA",
    }
    for command, reply in before_login.items():
        assert c.cmd(command) == reply, command
    # USER then something else: PASS no longer applies
    assert c.cmd(f"USER {user}").startswith(b"+OK")
    assert c.cmd("NOOP").startswith(b"-ERR")
    assert c.cmd(f"PASS {PASSWORD}") == b"-ERR Send USER first"
    assert c.login(user).startswith(b"+OK")
    after_login = {
        "USER x": b"-ERR USER is not valid after login",
        "PASS x": b"-ERR PASS is not valid after login",
        "STLS": b"-ERR STLS is not valid after login",
        "AUTH PLAIN": b"-ERR AUTH is not valid after login",
        "RETR": b"-ERR Missing argument to RETR",
        "RETR 1 2": b"-ERR Too many arguments to RETR",
        "RETR x": b"-ERR Invalid message number 'x'",
        "RETR -1": b"-ERR Invalid message number '-1'",
        "RETR +1": b"-ERR Invalid message number '+1'",
        "RETR 1.0": b"-ERR Invalid message number '1.0'",
        "RETR \u0661": "-ERR Invalid message number '\u0661'".encode(),
        "RETR 0": b"-ERR No such message 0",
        "RETR 3": b"-ERR No such message 3",
        "RETR 99999999999999999999": b"-ERR Invalid message number '99999999999999999999'",
        "LIST 3": b"-ERR No such message 3",
        "UIDL 0": b"-ERR No such message 0",
        "DELE 7": b"-ERR No such message 7",
        "TOP 1": b"-ERR Missing argument to TOP",
        "TOP 1 x": b"-ERR Invalid line count 'x'",
        "TOP 1 -1": b"-ERR Invalid line count '-1'",
        "TOP 9 0": b"-ERR No such message 9",
        "STAT 1": b"-ERR Too many arguments to STAT",
        "NOOP x": b"-ERR Too many arguments to NOOP",
        "QUIT now": b"-ERR Too many arguments to QUIT",
        "\x00\xff": b"-ERR Unknown command",
    }
    for command, reply in after_login.items():
        assert c.cmd(command) == reply, command
    assert c.cmd("DELE 1") == b"+OK Message 1 deleted"
    assert c.cmd("DELE 1") == b"-ERR Message 1 already deleted"
    assert c.cmd("TOP 1 0") == b"-ERR Message 1 already deleted"
    assert c.cmd("UIDL 1") == b"-ERR Message 1 already deleted"
    # over-long lines: a command line over 1024 octets, and one over the 8k line cap
    assert c.cmd("NOOP " + "x" * 2000) == b"-ERR Line too long"
    assert c.cmd(b"NOOP " + b"y" * 100_000) == b"-ERR Line too long"
    assert c.cmd("noop") == b"+OK"
    assert c.cmd("STAT") == f"+OK 1 {len(message('two'))}".encode()
    assert c.cmd("RSET").startswith(b"+OK")
    assert c.cmd("QUIT").startswith(b"+OK")
    assert len(store.infos(user)) == 2


def test_pipelined_commands_are_answered_in_order(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    msgs = [message(f"pipe {i}", b".dot\r\n" * i) for i in range(1, 6)]
    store.append(user, *msgs)
    c = RawPOP3(srv.port("pop3"))
    script = [f"USER {user}", f"PASS {PASSWORD}", "STAT", "LIST", "BOGUS"]
    script += [f"RETR {i}" for i in range(1, 6)] + ["DELE 1", "STAT", "UIDL", "RSET"]
    script += [f"TOP {i} 1" for i in range(5, 0, -1)] + ["DELE 5", "QUIT"]
    c.send("".join(s + "\r\n" for s in script).encode())
    assert c.line().startswith(b"+OK")  # USER
    assert c.line().startswith(b"+OK Maildrop locked")
    assert c.line() == f"+OK 5 {sum(map(len, msgs))}".encode()
    assert c.line().startswith(b"+OK 5 messages")
    assert len(c.lines()) == 5
    assert c.line() == b"-ERR Unknown command BOGUS"
    for m in msgs:
        assert c.line() == f"+OK {len(m)} octets".encode()
        assert unstuff(c.raw_body()) == m
    assert c.line() == b"+OK Message 1 deleted"
    assert c.line().startswith(b"+OK 4 ")
    assert c.line().startswith(b"+OK") and len(c.lines()) == 4
    assert c.line().startswith(b"+OK Maildrop has 5")
    for _i in range(5, 0, -1):
        assert c.line().startswith(b"+OK")
        assert c.lines()[-1] == b"..dot"
    assert c.line() == b"+OK Message 5 deleted"
    assert c.line().startswith(b"+OK Bye")
    assert c.at_eof()
    assert len(store.infos(user)) == 4


# --- the maildrop ------------------------------------------------------------------------
def test_second_login_gets_in_use_and_may_retry(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    store.append(user, message("x"))
    first = pop3_login(srv, user)
    c = RawPOP3(srv.port("pop3"))
    assert c.login(user) == b"-ERR [IN-USE] Maildrop already locked"
    assert c.cmd("STAT") == b"-ERR STAT is only valid after login"  # still AUTHORIZATION
    assert first.quit().startswith(b"+OK")
    assert c.login(user).startswith(b"+OK Maildrop locked and ready, 1 messages")
    c.cmd("QUIT")


def test_snapshot_is_fixed_at_login(srv: ServerProcess, store: StoreThread, user: str) -> None:
    store.append(user, message("before"))
    p = pop3_login(srv, user)
    assert p.stat()[0] == 1
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("a@x.net", [f"{user}@example.org"], message("during"))
    assert len(store.infos(user)) == 2
    assert p.stat()[0] == 1
    assert len(p.uidl()[1]) == 1
    with pytest.raises(poplib.error_proto, match="No such message 2"):
        p.retr(2)
    p.quit()
    p = pop3_login(srv, user)
    assert p.stat()[0] == 2
    _status, lines, _ = p.retr(2)
    assert b"Subject: during" in lines
    p.quit()


def test_quit_deletes_and_a_dropped_connection_deletes_nothing(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    uids = store.append(user, *(message(f"d{i}") for i in range(4)))
    c = raw_login(srv, user)
    assert c.cmd("DELE 1").startswith(b"+OK") and c.cmd("DELE 2").startswith(b"+OK")
    c.close()  # no QUIT
    c = raw_login(srv, user)  # the lock was released by the drop
    assert c.cmd("STAT").startswith(b"+OK 4 ")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    assert [i.uid for i in store.infos(user)] == uids
    c = raw_login(srv, user)
    for n in (1, 3):
        assert c.cmd(f"DELE {n}").startswith(b"+OK")
    assert c.cmd("QUIT") == b"+OK Bye (2 messages deleted)"
    assert c.at_eof()
    assert [i.uid for i in store.infos(user)] == [uids[1], uids[3]]
    # QUIT in AUTHORIZATION just says goodbye
    c = RawPOP3(srv.port("pop3"))
    assert c.cmd("QUIT") == b"+OK Bye"
    assert c.at_eof()


def test_retr_sets_seen_and_top_does_not(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    body = b"".join(b"body line %d\r\n" % i for i in range(1, 11))
    msg = message("seen", body)
    uids = store.append(user, msg, message("other"))
    p = pop3_login(srv, user)
    _status, lines, _ = p.top(1, 0)
    assert b"\r\n".join(lines) + b"\r\n" == msg[: msg.index(b"\r\n\r\n") + 4]
    assert p.top(1, 3)[1][-3:] == [b"body line 1", b"body line 2", b"body line 3"]
    assert b"\r\n".join(p.top(1, 1000)[1]) + b"\r\n" == msg
    assert all("\\Seen" not in i.flags for i in store.infos(user))
    p.retr(2)
    p.retr(2)
    p.quit()
    flags = {i.uid: i.flags for i in store.infos(user)}
    assert "\\Seen" not in flags[uids[0]] and "\\Seen" in flags[uids[1]]


def test_retr_of_message_expunged_behind_the_session(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    uids = store.append(user, *(message(f"e{i}") for i in range(3)))
    c = raw_login(srv, user)
    store.run(store.store.expunge(store.inbox(user).id, [uids[1]]))  # as IMAP would
    assert c.cmd("RETR 2") == b"-ERR Message 2 no longer exists"
    assert c.cmd("TOP 2 0") == b"-ERR Message 2 no longer exists"
    assert c.cmd("RETR 1").startswith(b"+OK")
    assert unstuff(c.raw_body()) == message("e0")
    for n in (1, 2, 3):
        assert c.cmd(f"DELE {n}").startswith(b"+OK")
    assert c.cmd("QUIT").startswith(b"+OK Bye")
    assert store.infos(user) == []


# --- wire format ------------------------------------------------------------------------
BOUNDARIES = [1, 2, 3, 1021, 1022, 1023, 1024, 1025, 4094, 4095, 4096, 4097, 4098,
              8190, 8191, 8192, 8193, 8194, 16384, 32767, 32768, 65532, 65533, 65534,
              65535, 65536, 65537, 65538, 131071, 131072, 131073]
DOT_LINES = [b".", b"..", b"...", b".x", b"..y", b". z", b".\t", b"..."]


def dotty(shift: int) -> bytes:
    """A message with lines starting with "." at (and around) buffer boundaries.

    ``shift`` dot-lines at the top move every later offset of the stuffed output too.
    """
    out = bytearray(b"Subject: dots %d\r\n\r\n" % shift + b".\r\n" * shift)
    for target, dot in zip(BOUNDARIES, itertools.cycle(DOT_LINES), strict=False):
        gap = target - len(out)
        if gap < 0 or gap == 1:
            continue
        while gap:
            n = min(gap, 900)
            if gap - n == 1:
                n -= 1
            out += b"f" * (n - 2) + b"\r\n"
            gap -= n
        out += dot + b"\r\n"
    return bytes(out + b".last\r\n")


def test_dot_stuffing_is_byte_exact_across_buffer_boundaries(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    odd = [
        b".starts with a dot\r\n\r\n.\r\n..\r\n",
        b"Subject: no final newline\r\n\r\n.last line",
        b"Subject: dot without newline\r\n\r\n.",
        b"",
        b"Subject: x\r\n\r\n" + b".\r\n" * 5000,
    ]
    msgs = [dotty(s) for s in (0, 1, 2, 5)] + odd
    uids = store.append(user, *msgs)
    c = raw_login(srv, user)
    status, listing = c.multi("LIST")
    for n, (uid, msg) in enumerate(zip(uids, msgs, strict=True), start=1):
        stored = store.read(user, uid)
        assert stored == msg
        assert listing[n - 1] == f"{n} {len(stored)}".encode()
        status = c.cmd(f"RETR {n}")
        raw = c.raw_body()
        assert status == f"+OK {len(stored)} octets".encode()
        expected = stored if stored.endswith(b"\r\n") or not stored else stored + b"\r\n"
        assert unstuff(raw) == expected, n
        # every line starting with "." went out stuffed; no other line changed
        for line in raw.split(b"\r\n")[:-2]:
            assert not line.startswith(b".") or line.startswith(b".."), line[:20]
    c.cmd("QUIT")
    p = pop3_login(srv, user)  # poplib un-stuffs and agrees
    for n, msg in enumerate(msgs[:4], start=1):
        _, lines, _ = p.retr(n)
        assert b"\r\n".join(lines) + b"\r\n" == msg
    p.quit()


def test_list_size_equals_retr_octets_for_smtp_delivered_mail(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    bodies = ["short\n", "lf only\nlines\n.dot\n", "x" * 900 + "\n" + ".y\n" * 100]
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
        for i, body in enumerate(bodies):
            smtp.sendmail("a@x.net", [f"{user}@example.org"],
                          f"Subject: s{i}\n\n{body}")  # str: smtplib sends CRLF
    c = raw_login(srv, user)
    _, listing = c.multi("LIST")
    for i, (n, size) in enumerate(line.split() for line in listing):
        assert c.cmd(f"RETR {int(n)}") == b"+OK " + size + b" octets"
        content = unstuff(c.raw_body())
        assert len(content) == int(size)
        assert content == store.read(user, store.infos(user)[i].uid)
    c.cmd("QUIT")


# --- TLS ----------------------------------------------------------------------------------
def test_stls_upgrades_and_discards_pipelined_plaintext(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    store.append(user, message("tls"))
    ctx = tls_context(srv)
    c = RawPOP3(srv.port("pop3"))
    # An injected command behind STLS must not survive into the TLS session.
    c.send(f"STLS\r\nUSER {user}\r\n".encode())
    assert c.line() == b"+OK Begin TLS negotiation"
    c.starttls(ctx)
    assert c.cmd(f"PASS {PASSWORD}") == b"-ERR Send USER first"
    _, caps = c.multi("CAPA")
    assert [x.decode() for x in caps] == [x for x in CAPA_PLAIN if x != "STLS"]
    assert c.cmd("STLS") == b"-ERR TLS is already active"
    assert c.login(user).startswith(b"+OK")
    assert c.cmd("RETR 1").startswith(b"+OK")
    assert unstuff(c.raw_body()) == message("tls")
    assert c.cmd("QUIT").startswith(b"+OK")

    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    assert p.stls(ctx).startswith(b"+OK")
    p.user(user)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.quit()


def test_pop3s_on_the_tls_port(srv: ServerProcess, store: StoreThread, user: str) -> None:
    store.append(user, message("pop3s"))
    c = RawPOP3(srv.port("pop3", tls=True), tls=tls_context(srv))
    assert c.greeting.startswith(b"+OK")
    _, caps = c.multi("CAPA")
    assert [x.decode() for x in caps] == [x for x in CAPA_PLAIN if x != "STLS"]
    assert c.cmd("STLS") == b"-ERR TLS is already active"
    c.close()
    p = pop3_login(srv, user, tls=True)
    assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == message("pop3s")
    p.quit()


def test_pipelined_retrs_of_large_and_small_mail_over_tls_are_byte_exact(
    srv: ServerProcess, store: StoreThread, user: str
) -> None:
    # Over 64 KiB a message goes out in chunks paced by the transport; TLS re-registers
    # that pacing after STLS. Small ones are answered at once, between and after them.
    big = message("big", b"".join(b".%07d a line that starts with a dot\r\n" % i
                                  for i in range(80_000)))
    mails = [message("small 1"), big, message("small 2", b".\r\n..\r\n"), big]
    for mail in mails:
        store.append(user, mail)
    for stls in (True, False):
        if stls:
            c = RawPOP3(srv.port("pop3"))
            assert c.cmd("STLS").startswith(b"+OK")
            c.starttls(tls_context(srv))
        else:
            c = RawPOP3(srv.port("pop3", tls=True), tls=tls_context(srv))
            assert c.greeting.startswith(b"+OK")
        assert c.login(user).startswith(b"+OK")
        c.send(b"".join(b"RETR %d\r\nNOOP\r\n" % n for n in range(1, 5)) + b"TOP 2 1\r\n")
        for mail in mails:
            assert c.line() == b"+OK %d octets" % len(mail)
            assert unstuff(c.raw_body()) == mail
            assert c.line() == b"+OK"
        assert c.line().startswith(b"+OK")
        head = big[: big.index(b"\r\n\r\n") + 4]
        assert unstuff(c.raw_body()) == head + b".0000000 a line that starts with a dot\r\n"
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.at_eof()


# --- authentication -------------------------------------------------------------------------
def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def test_auth_plain_and_login(srv: ServerProcess, user: str) -> None:
    c = RawPOP3(srv.port("pop3"))
    assert c.multi("AUTH")[1] == [b"PLAIN", b"LOGIN"]
    assert c.cmd("AUTH CRAM-MD5") == b"-ERR Unsupported SASL mechanism 'CRAM-MD5'"
    assert c.cmd("AUTH PLAIN not*base64") == b"-ERR Invalid base64 in SASL response"
    assert c.cmd(f"AUTH PLAIN {b64('no-nuls')}").startswith(b"-ERR SASL PLAIN message must")
    # PLAIN without initial response, then cancelled
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd("*") == b"-ERR Authentication cancelled"
    # LOGIN, cancelled at the password
    assert c.cmd("AUTH LOGIN") == b"+ " + b64("Username:").encode()
    assert c.cmd(b64(user)) == b"+ " + b64("Password:").encode()
    assert c.cmd("*") == b"-ERR Authentication cancelled"
    # an authzid naming someone else is refused like bad credentials
    blob = b64(f"postmaster\0{user}\0{PASSWORD}")
    assert c.cmd(f"AUTH PLAIN {blob}") == b"-ERR [AUTH] Authentication failed"
    # PLAIN with initial response and the user's own address as authzid
    blob = b64(f"{user}@example.org\0{user}\0{PASSWORD}")
    assert c.cmd(f"auth plain {blob}").startswith(b"+OK Maildrop locked")
    assert c.cmd("QUIT").startswith(b"+OK")

    c = RawPOP3(srv.port("pop3"))
    assert c.cmd(f"AUTH LOGIN {b64(user)}") == b"+ " + b64("Password:").encode()
    assert c.cmd(b64(PASSWORD)).startswith(b"+OK Maildrop locked")
    c.cmd("QUIT")

    c = RawPOP3(srv.port("pop3"))
    assert c.cmd("AUTH PLAIN") == b"+ "
    assert c.cmd(b64(f"\0{user}\0{PASSWORD}")).startswith(b"+OK")
    c.cmd("QUIT")


def test_bad_credentials_are_delayed_and_the_third_closes(
    srv: ServerProcess, user: str
) -> None:
    c = RawPOP3(srv.port("pop3"))
    t0 = time.monotonic()
    assert c.login(user, "wrong") == b"-ERR [AUTH] Authentication failed"
    assert time.monotonic() - t0 >= 0.45
    blob = b64("\0nobody-here\0" + PASSWORD)
    assert c.cmd(f"AUTH PLAIN {blob}") == b"-ERR [AUTH] Authentication failed"
    assert c.login(user, "wrong again").startswith(b"-ERR [AUTH]")
    assert c.at_eof()
    # 0.5 s + 0.5 s (another user name) + 1 s (this user's second failure): loopback is
    # throttled per user only, see auth/throttle.py and test_security.py.
    assert time.monotonic() - t0 >= 1.9
    log = srv.log_text()
    # The one connection's failures (the server is shared with other tests).
    failed = [x for x in log.splitlines() if " pop3 login_failed " in x]
    session = next(x for x in failed if f" user={user} " in x).split("session_id=")[1].split()[0]
    failed = [x for x in failed if f"session_id={session} " in x]
    assert all("remote=127.0.0.1:" in x for x in failed)
    assert [(x.split(" user=")[1].split()[0], x.split(" mech=")[1].split()[0])
            for x in failed] == [(user, "USER"), ("nobody-here", "PLAIN"), (user, "USER")]
    assert "wrong again" not in log


# --- configuration variants (plaintext refused, RETR without \Seen, LOGIN-DELAY) --------------
def test_strict_server_refuses_plaintext_before_stls(
    strict: ServerProcess, strict_store: StoreThread
) -> None:
    user = strict_store.add_user(new_name())
    uids = strict_store.append(user, message("strict"))
    c = RawPOP3(strict.port("pop3"))
    _, caps = c.multi("CAPA")
    assert [x.decode() for x in caps] == [
        "TOP", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UIDL", "EXPIRE 30",
        "LOGIN-DELAY 60", "STLS", "IMPLEMENTATION Mailstead",
    ]
    refused = b"-ERR [AUTH] Plaintext authentication is only allowed over TLS: use STLS first"
    assert c.cmd(f"USER {user}") == refused
    assert c.cmd("AUTH PLAIN " + b64(f"\0{user}\0{PASSWORD}")) == refused
    assert c.multi("AUTH")[1] == []
    assert c.cmd("STLS").startswith(b"+OK")
    c.starttls(tls_context(strict))
    _, caps = c.multi("CAPA")
    assert "USER" in [x.decode() for x in caps] and b"STLS" not in caps
    assert c.login(user).startswith(b"+OK")
    assert c.cmd("RETR 1").startswith(b"+OK")
    c.raw_body()
    assert c.cmd("QUIT").startswith(b"+OK")
    assert "\\Seen" not in strict_store.infos(user)[0].flags  # retr_sets_seen = false
    assert strict_store.infos(user)[0].uid == uids[0]
    # LOGIN-DELAY 60: the next login within a minute is refused with the response code
    c = RawPOP3(strict.port("pop3", tls=True), tls=tls_context(strict))
    reply = c.login(user)
    assert re.fullmatch(rb"-ERR \[LOGIN-DELAY\] Wait \d+ more seconds before logging in again",
                        reply), reply
    c.close()


def test_shutdown_says_goodbye_and_applies_no_deletions(tmp_path: Path) -> None:
    server = _server(tmp_path / "srv")
    st = StoreThread(server.data / "mailstead.sqlite3")
    try:
        user = st.add_user("shut")
        st.append(user, message("keep me"))
        c = RawPOP3(server.port("pop3"))
        assert c.login(user).startswith(b"+OK")
        assert c.cmd("DELE 1").startswith(b"+OK")
        idle = RawPOP3(server.port("pop3"))
        # a TLS client that never reads again must not hold up the stop
        deaf = RawPOP3(server.port("pop3", tls=True), tls=tls_context(server))
        assert deaf.multi("CAPA")[0].startswith(b"+OK")
        assert server.stop() == 0
        assert "sessions did not close in" not in server.log_text()  # within the grace
        assert c.line() == b"-ERR [SYS/TEMP] Server shutting down"
        assert c.at_eof()
        assert idle.line() == b"-ERR [SYS/TEMP] Server shutting down"
        assert len(st.infos(user)) == 1
        assert "Traceback" not in server.log_text()
    finally:
        st.close()
        server.kill()


# --- real clients ---------------------------------------------------------------------------
@pytest.mark.realclient
@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_keep_then_fetch_and_delete(
    srv: ServerProcess, store: StoreThread, user: str, tmp_path: Path
) -> None:
    msgs = [message(f"fm-{i}", b".leading dot\r\nplain\r\n") for i in range(3)]
    store.append(user, *msgs)
    home = tmp_path / "home"
    home.mkdir()
    mbox = tmp_path / "mbox"
    rc = home / ".fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {srv.port('pop3')} protocol pop3 auth password\n"
        f"  user \"{user}\" password \"{PASSWORD}\" sslproto ''\n"
        f"  mda \"cat >> {mbox}\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home)}

    def fetchmail(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["fetchmail", "-f", str(rc), "-i", str(home / ".fetchids"), "--nosyslog", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )

    res = fetchmail("--keep")
    assert res.returncode == 0, res.stderr
    assert mbox.read_bytes().count(b"Subject: fm-") == 3
    assert mbox.read_bytes().count(b"\n.leading dot") == 3
    assert len(store.infos(user)) == 3
    res = fetchmail("--all")
    assert res.returncode == 0, res.stderr
    assert mbox.read_bytes().count(b"Subject: fm-") == 6
    assert store.infos(user) == []


@pytest.mark.realclient
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_lists_and_retrieves(srv: ServerProcess, store: StoreThread, user: str) -> None:
    msgs = [message("curl one", b".dotted\r\n..two\r\n"), message("curl two")]
    store.append(user, *msgs)
    url = f"pop3://127.0.0.1:{srv.port('pop3')}/"

    def curl(path: str) -> bytes:
        res = subprocess.run(
            ["curl", "-s", "-S", "--max-time", "20", url + path, "-u", f"{user}:{PASSWORD}"],
            capture_output=True, timeout=30,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    assert curl("") == b"".join(f"{i} {len(m)}\r\n".encode() for i, m in enumerate(msgs, 1))
    assert curl("1") == msgs[0]
    assert curl("2") == msgs[1]


# --- benchmark ------------------------------------------------------------------------------
def test_bench_pop3_retrieves_everything(srv: ServerProcess, store: StoreThread) -> None:
    user = store.add_user(new_name())
    msgs = [message(f"b{i}", b".x\r\n" * i) for i in range(20)]
    store.append(user, *msgs)
    result = asyncio.run(bench_pop3("127.0.0.1", srv.port("pop3"), user, PASSWORD, 0))
    assert result["messages"] == 20 and result["retrieved"] == 20
    assert result["uidl_entries"] == 20
    assert result["maildrop_octets"] == sum(map(len, msgs))
    assert result["retr_msgs_per_s"] > 0
    assert len(store.infos(user)) == 20
