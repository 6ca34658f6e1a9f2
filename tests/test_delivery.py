"""SMTP and LMTP delivery against a real server process, with smtplib and raw sockets."""

from __future__ import annotations

import smtplib
import socket
import threading
from email.message import EmailMessage

import pytest

from conftest import ServerProcess, stored_messages

inbox_messages = stored_messages


def body_of(stored: bytes) -> bytes:
    """Strip the trace headers we add (Return-Path, Delivered-To, Received)."""
    lines = stored.split(b"\r\n")
    i = 0
    while lines[i].startswith((b"Return-Path:", b"Delivered-To:", b"Received:", b"\t")):
        i += 1
    return b"\r\n".join(lines[i:])


def make_message(subject: str = "hello", body: str = "Hi there.\n") -> CRLFMessage:
    msg = CRLFMessage()
    msg["From"] = "alice@example.net"
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


class CRLFMessage(EmailMessage):
    """An EmailMessage whose bytes have CRLF line ends, as on the wire."""

    def as_bytes(self, *args, **kwargs) -> bytes:  # type: ignore[override]
        return super().as_bytes(*args, **kwargs).replace(b"\n", b"\r\n")


class RawSMTP:
    """A line-level SMTP/LMTP client, to send what smtplib refuses to send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> list[bytes]:
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def cmd(self, text: bytes) -> list[bytes]:
        self.send(text + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def test_smtp_delivery_stores_exact_message_with_trace_headers(
    server: ServerProcess, user: str
) -> None:
    msg = make_message()
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        refused = smtp.sendmail("alice@example.net", [f"{user}@example.org"], msg.as_bytes())
    assert refused == {}
    [stored] = inbox_messages(server, user)
    assert stored.startswith(b"Return-Path: <alice@example.net>\r\n")
    assert f"Delivered-To: {user}@example.org".encode() in stored
    assert b"Received: from " in stored and b"by mail.test (Mailstead) with ESMTP" in stored
    assert body_of(stored) == msg.as_bytes()


def test_plus_tag_and_mail_domain_deliver_to_the_user(server: ServerProcess, user: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("a@x.net", [f"{user}+lists@example.org"], make_message().as_bytes())
        smtp.sendmail("a@x.net", [f"{user.upper()}@MAIL.TEST"], make_message().as_bytes())
    assert len(inbox_messages(server, user)) == 2


def test_unknown_user_and_foreign_domain_are_refused(server: ServerProcess, user: str) -> None:
    c = RawSMTP(server.port("smtp"))
    assert c.cmd(b"EHLO client.test")[-1].startswith(b"250")
    assert c.cmd(b"MAIL FROM:<a@x.net>")[0].startswith(b"250")
    assert c.cmd(b"RCPT TO:<nobody@example.org>")[0].startswith(b"550 5.1.1")
    assert c.cmd(b"RCPT TO:<someone@gmail.com>")[0].startswith(b"550 5.7.1")
    assert c.cmd(f"RCPT TO:<{user}@elsewhere.org>".encode())[0].startswith(b"550 5.7.1")
    assert c.cmd(f"RCPT TO:<{user}@example.org>".encode())[0].startswith(b"250")
    c.cmd(b"QUIT")
    c.close()


def test_oversized_message_gets_552_534(server: ServerProcess, user: str) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100  # > 1 MB limit
    # Declared up front with SIZE (as smtplib does): refused at MAIL FROM.
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp, pytest.raises(
        smtplib.SMTPSenderRefused
    ) as err:
        smtp.sendmail("a@x.net", [f"{user}@example.org"], big)
    assert err.value.smtp_code == 552 and err.value.smtp_error.startswith(b"5.3.4")
    # Not declared: refused after the data, and the session goes on.
    c = RawSMTP(server.port("smtp"))
    c.cmd(b"EHLO x")
    assert c.cmd(b"MAIL FROM:<a@x.net>")[0].startswith(b"250")
    assert c.cmd(f"RCPT TO:<{user}@example.org>".encode())[0].startswith(b"250")
    assert c.cmd(b"DATA")[0].startswith(b"354")
    c.send(big + b".\r\n")
    assert c.reply()[0].startswith(b"552 5.3.4")
    assert c.cmd(b"NOOP")[0].startswith(b"250")
    c.close()
    assert inbox_messages(server, user) == []


def test_lmtp_answers_once_per_recipient(server: ServerProcess, user: str) -> None:
    other = user + "b"
    server.add_user(other)
    c = RawSMTP(server.port("lmtp"))
    assert c.greeting[0].startswith(b"220") and b"LMTP" in c.greeting[0]
    assert c.cmd(b"LHLO mta.test")[-1].startswith(b"250")
    assert c.cmd(b"MAIL FROM:<a@x.net>")[0].startswith(b"250")
    assert c.cmd(f"RCPT TO:<{user}@example.org>".encode())[0].startswith(b"250")
    assert c.cmd(b"RCPT TO:<ghost@example.org>")[0].startswith(b"550 5.1.1")
    assert c.cmd(f"RCPT TO:<{other}@example.org>".encode())[0].startswith(b"250")
    assert c.cmd(b"DATA")[0].startswith(b"354")
    c.send(b"Subject: lmtp\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
    replies = [c.line(), c.line()]
    assert all(r.startswith(b"250 2.0.0") for r in replies)
    c.cmd(b"QUIT")
    c.close()
    for name in (user, other):
        [stored] = inbox_messages(server, name)
        assert b"with LMTP" in stored
        assert body_of(stored) == b"Subject: lmtp\r\n\r\n.leading dot\r\nbody\r\n"


def test_bad_smtp_input_gets_errors_and_the_session_goes_on(
    server: ServerProcess, user: str
) -> None:
    c = RawSMTP(server.port("smtp"))
    assert c.cmd(b"\x00\xff garbage")[0][:1] == b"5"
    assert c.cmd(b"RCPT TO:<x@example.org>")[0][:3] in (b"503", b"502")
    assert c.cmd(b"EHLO x")[-1].startswith(b"250")
    assert c.cmd(b"RCPT TO:<x@example.org>")[0].startswith(b"503")
    assert c.cmd(b"DATA")[0].startswith(b"503")
    long_line = b"NOOP " + b"a" * 5000
    assert c.cmd(long_line)[0].startswith(b"500")
    assert c.cmd(b"NOOP")[0].startswith(b"250")
    c.cmd(b"QUIT")
    c.close()


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("8bit-headers", "Subject: caf\u00e9 \u00fcber\r\nFrom: J\u00f6rg <j@x.net>\r\n\r\nbody\r\n"
         .encode(), "Subject: caf\u00e9 \u00fcber\r\nFrom: J\u00f6rg <j@x.net>\r\n\r\nbody\r\n"
         .encode()),
        ("bare-lf", b"Subject: lf\nX: y\n\nline1\nline2",
         b"Subject: lf\r\nX: y\r\n\r\nline1\r\nline2\r\n"),
        ("bare-cr", b"Subject: cr\r\n\r\nline1\rline2\r\n",
         b"Subject: cr\r\n\r\nline1\r\nline2\r\n"),
        ("nul", b"Subject: nul\r\n\r\na\x00b\r\n", b"Subject: nul\r\n\r\na\x00b\r\n"),
        ("empty", b"", b""),
    ],
)
def test_odd_message_bytes_are_stored_normalised(
    server: ServerProcess, user: str, name: str, payload: bytes, expected: bytes
) -> None:
    c = RawSMTP(server.port("smtp"))
    c.cmd(b"EHLO x")
    assert c.cmd(b"MAIL FROM:<a@x.net> BODY=8BITMIME")[0].startswith(b"250")
    assert c.cmd(f"RCPT TO:<{user}@example.org>".encode())[0].startswith(b"250")
    assert c.cmd(b"DATA")[0].startswith(b"354")
    terminator = b".\r\n" if payload.endswith(b"\r\n") or not payload else b"\r\n.\r\n"
    c.send(payload + terminator)
    assert c.reply()[0].startswith(b"250")
    c.close()
    [stored] = inbox_messages(server, user)
    assert body_of(stored) == expected, name


def test_fifty_concurrent_deliveries_none_lost_or_duplicated(
    server: ServerProcess, user: str
) -> None:
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as smtp:
                smtp.sendmail("a@x.net", [f"{user}@example.org"],
                              make_message(subject=f"parallel {i}").as_bytes())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    subjects = sorted(
        line for m in inbox_messages(server, user) for line in m.split(b"\r\n")
        if line.startswith(b"Subject:")
    )
    assert subjects == sorted(f"Subject: parallel {i}".encode() for i in range(50))


def test_acknowledged_message_survives_sigkill(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    fresh_server.add_user("dora")
    msg = make_message(subject="durable", body="must survive\n" * 100)
    with smtplib.SMTP("127.0.0.1", fresh_server.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("a@x.net", ["dora@example.org"], msg.as_bytes())
        fresh_server.kill()  # SIGKILL straight after the 250
    fresh_server.start()
    [stored] = inbox_messages(fresh_server, "dora")
    assert body_of(stored) == msg.as_bytes()
    fresh_server.stop()


@pytest.mark.parametrize("arg", [
    "<bench@bench.test>", "<bench@bench.test> SIZE=100 BODY=8BITMIME", "<a.b+c@x.y>\tX",
    "<a@b>SIZE=1", "<a@b> (a comment) SIZE=1", "<>", " <a@b>", '<"q q"@b>', "<a..b@c>",
    "<.a@b>", "<a@[127.0.0.1]>", "<a@b", "a@b", "<@relay:a@b>", "<a@b.>", "<a@-b>",
])
def test_plain_address_shortcut_reads_mail_and_rcpt_as_the_stdlib_parser(arg: str) -> None:
    import asyncio

    from aiosmtpd.smtp import SMTP

    from mailstead.smtp.protocol import MailsteadSMTP

    loop = asyncio.new_event_loop()
    try:
        proto = MailsteadSMTP(object(), hostname="x", loop=loop)
        try:
            expected = SMTP._getaddr(proto, arg)
        except (IndexError, ValueError):
            expected = (None, None)
        assert proto._getaddr(arg) == expected
    finally:
        loop.close()


def test_delivery_after_the_inbox_was_deleted_outside_makes_a_new_one(
    server: ServerProcess, user: str
) -> None:
    """The listener remembers each user's INBOX id; one deleted by another process since
    (through the store: no protocol lets INBOX go) is looked up again, not a 451."""
    import asyncio

    from mailstead.store.sqlite import SqliteStore

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
            assert smtp.sendmail("a@x.net", [f"{user}@example.org"],
                                 make_message().as_bytes()) == {}

    async def delete_inbox() -> None:
        store = SqliteStore(server.data / "mailstead.sqlite3")
        await store.open()
        try:
            u = await store.get_user(user)
            assert u is not None
            await store.delete_mailbox(u.id, "INBOX")
        finally:
            await store.close()

    send()
    asyncio.run(delete_inbox())
    send()
    assert len(inbox_messages(server, user)) == 1
