"""IMAP over real sockets: what the in-process harness cannot show.

The command transcripts live in ``test_imap_commands`` (in process). Here: implicit TLS and
STARTTLS (a handshake needs a real TLS transport), the kernel closing the socket after
LOGOUT, and one path through the daemon's own wiring, where the SMTP, POP3 and IMAP
listeners share one store and one change hub.
"""

from __future__ import annotations

import poplib
import re
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from imap_session import Session
from imap_wire import IMAPWire, Reply, new_user

Connect = Callable[..., IMAPWire]
TEXT = rb"[^\r\n]*"  # a human-readable response text


def tagged(reply: Reply, status: bytes, code: bytes | None = None) -> None:
    """The tagged line is ``tag status [code] text``."""
    head = reply.tag + b" " + status + b" "
    if code is not None:
        head += b"[" + code + b"]"
    assert reply.tagged.startswith(head), reply.tagged
    assert re.fullmatch(re.escape(head) + TEXT, reply.tagged), reply.tagged


def caps_of(line: bytes) -> list[bytes]:
    return line.split()


@pytest.fixture(scope="module")
def ca(server: ServerProcess) -> Path:
    return server.data / "tls" / "ca.pem"


@pytest.fixture
def connect(server: ServerProcess, ca: Path) -> Iterator[Connect]:
    opened: list[IMAPWire] = []

    def open_(login: str | None = None, *, tls: bool = False) -> IMAPWire:
        c = IMAPWire(server.port("imap", tls), tls=tls, cafile=ca)
        opened.append(c)
        if login is not None:
            c.login(login)
        return c

    yield open_
    for c in opened:
        c.close()


@pytest.fixture
def acct(server: ServerProcess) -> str:
    return new_user(server)


# --- TLS ------------------------------------------------------------------------------------
def test_capability_on_implicit_tls_has_no_starttls(connect: Connect, acct: str) -> None:
    c = connect(tls=True)
    assert b"STARTTLS" not in c.greeting
    [line] = c.cmd("CAPABILITY").untagged
    assert b"STARTTLS" not in caps_of(line) and b"AUTH=PLAIN" in caps_of(line)
    c.login(acct)
    tagged(c.cmd("NOOP"), b"OK")


def test_starttls_then_login_over_tls(connect: Connect, ca: Path, acct: str) -> None:
    c = connect()
    reply = c.starttls(ca)
    assert reply.untagged == []
    tagged(reply, b"OK")
    [line] = c.cmd("CAPABILITY").untagged
    assert b"STARTTLS" not in caps_of(line) and b"AUTH=PLAIN" in caps_of(line)
    tagged(c.cmd("STARTTLS"), b"BAD")
    c.login(acct)
    tagged(c.cmd("SELECT INBOX"), b"OK", b"READ-WRITE")


def test_starttls_ignores_bytes_pipelined_behind_it(connect: Connect, ca: Path,
                                                    acct: str) -> None:
    c = connect()
    c.send(f"S1 STARTTLS\r\nS2 LOGIN {acct} secret\r\nS3 CAPABILITY\r\n".encode())
    assert re.fullmatch(rb"S1 OK" + TEXT, c.response())
    assert c.buf == b""
    c.sock = c.tls_context(ca).wrap_socket(c.sock, server_hostname="mail.test")
    reply = c.cmd("NOOP", tag=b"T1")
    assert reply.untagged == [], "the pipelined plaintext commands must not run"
    tagged(reply, b"OK")
    tagged(c.cmd("SELECT INBOX", tag=b"T2"), b"BAD")  # the injected LOGIN did not happen
    c.login(acct)


# --- the socket itself ----------------------------------------------------------------------
def test_logout_closes_the_socket(connect: Connect, acct: str) -> None:
    # In process, test_imap_commands sees the server ask its transport to close; here the
    # client reads end-of-file (RFC 3501 §6.1.3: the server closes after BYE).
    for login in (None, acct):
        c = connect(login)
        reply = c.cmd("LOGOUT")
        assert reply.untagged[0].startswith(b"* BYE")
        tagged(reply, b"OK")
        assert c.closed_by_peer()


# --- the daemon's wiring ----------------------------------------------------------------------
def test_smtp_delivery_and_pop3_quit_reach_an_idle_imap_session(server: ServerProcess) -> None:
    user = new_user(server)
    imap = Session(server.port("imap"), user)
    try:
        imap.select()
        imap.idle()
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
            smtp.sendmail("a@x.net", [f"{user}@example.org"], b"Subject: s\r\n\r\nbody\r\n")
        assert imap.wait_for(rb"^\* 1 EXISTS")[0] == b"* 1 EXISTS"
        p = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
        p.user(user)
        p.pass_("secret")
        p.dele(1)
        p.quit()
        assert imap.wait_for(rb"EXPUNGE")[0] == b"* 1 EXPUNGE"
        imap.done()
        assert imap.uid_map() == []
    finally:
        imap.close()
