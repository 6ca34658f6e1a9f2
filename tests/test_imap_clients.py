"""End-to-end flows with Python's imaplib and with IMAPClient, over plain, STARTTLS and TLS."""

from __future__ import annotations

import email
import imaplib
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import imapclient
import imapclient.imapclient as ic
import pytest
from imapclient import IMAPClient

from conftest import ServerProcess, stored_messages
from imap_wire import new_user, start_server

TIMEOUT = 10


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("imapclients"))
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()


@pytest.fixture(scope="module")
def tls_context(srv: ServerProcess) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))
    return ctx


@pytest.fixture
def acct(srv: ServerProcess) -> str:
    return new_user(srv)


def make_message(subject: str, body: str = "Hello.\n", sender: str = "alice@example.net"
                 ) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg["Date"] = "Thu, 05 Nov 2026 09:03:01 +0100"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


# --- imaplib --------------------------------------------------------------------------------
def test_imaplib_plain_session(srv: ServerProcess, acct: str) -> None:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT) as m:
        assert "IMAP4REV1" in m.capabilities and "STARTTLS" in m.capabilities
        typ, data = m.login(acct, "secret")
        assert typ == "OK"
        typ, data = m.capability()
        assert typ == "OK" and b"UIDPLUS" in data[0].split()
        typ, data = m.list()
        assert typ == "OK" and b'(\\HasNoChildren) "/" "INBOX"' in data
        assert m.create("Projects/2026")[0] == "OK"
        first = make_message("first")
        when = imaplib.Time2Internaldate(datetime(2026, 11, 5, 9, 3, 1,
                                                  tzinfo=timezone(timedelta(hours=1))))
        typ, data = m.append("INBOX", r"(\Flagged)", when, first)
        assert typ == "OK" and data[0] is not None and data[0].startswith(b"[APPENDUID ")
        m.append("INBOX", "", None, make_message("second", "pizza party\n"))
        typ, data = m.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        assert m.search(None, "UNSEEN")[1] == [b"1 2"]
        assert m.search(None, "BODY", "pizza")[1] == [b"2"]
        typ, data = m.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        head, body = data[0]
        assert isinstance(head, bytes) and body == first
        assert b'INTERNALDATE " 5-Nov-2026 09:03:01 +0100"' in head
        assert b"RFC822.SIZE %d" % len(first) in head and b"\\Flagged" in head
        typ, data = m.fetch("2", "(RFC822)")
        parsed = email.message_from_bytes(data[0][1])
        assert parsed["Subject"] == "second"
        assert m.search(None, "SEEN")[1] == [b"2"]
        assert m.store("1", "+FLAGS", r"(\Deleted $Forwarded)")[0] == "OK"
        typ, data = m.copy("2", "Projects/2026")
        assert typ == "OK" and data[0].startswith(b"[COPYUID ")
        typ, data = m.uid("MOVE", "2", "Projects/2026")
        assert typ == "OK"
        typ, data = m.expunge()  # imaplib also returns the EXPUNGE the MOVE caused
        assert (typ, data) == ("OK", [b"2", b"1"])
        assert m.select("INBOX")[1] == [b"0"]
        typ, data = m.status("Projects/2026", "(MESSAGES UNSEEN)")
        assert data == [b'"Projects/2026" (MESSAGES 2 UNSEEN 0)']
        assert m.rename("Projects/2026", "Archive/2026")[0] == "OK"
        assert m.subscribe("Archive/2026")[0] == "OK"
        typ, data = m.lsub('""', "Archive/*")
        assert data == [b'() "/" "Archive/2026"']
        assert m.close()[0] == "OK"
        assert m.delete("Archive/2026")[0] == "OK"
        assert m.logout()[0] == "BYE"


def test_imaplib_bad_login_and_errors(srv: ServerProcess, acct: str) -> None:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT) as m:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(acct, "wrong")
        m.login(acct, "secret")
        typ, data = m.select("nosuch")
        assert typ == "NO" and b"NONEXISTENT" in data[0]
        typ, data = m.append("nosuch", "", None, make_message("x"))
        assert typ == "NO" and b"TRYCREATE" in data[0]
        with pytest.raises(imaplib.IMAP4.error):
            m.xatom("FROBNICATE")
        assert m.noop()[0] == "OK"


def test_imaplib_authenticate_plain(srv: ServerProcess, acct: str) -> None:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT) as m:
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{acct}\0secret".encode())
        assert typ == "OK" and m.state == "AUTH"
        assert m.select()[0] == "OK"


def test_imaplib_starttls(srv: ServerProcess, acct: str, tls_context: ssl.SSLContext) -> None:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT) as m:
        typ, _ = m.starttls(ssl_context=tls_context)
        assert typ == "OK"
        assert "STARTTLS" not in m.capabilities
        assert isinstance(m.sock, ssl.SSLSocket)
        m.login(acct, "secret")
        assert m.select()[0] == "OK"


def test_imaplib_implicit_tls(srv: ServerProcess, acct: str,
                              tls_context: ssl.SSLContext) -> None:
    with imaplib.IMAP4_SSL("127.0.0.1", srv.port("imap", tls=True), ssl_context=tls_context,
                           timeout=TIMEOUT) as m:
        assert "STARTTLS" not in m.capabilities
        m.login(acct, "secret")
        m.append("INBOX", "", None, make_message("over tls"))
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: over tls\r\n\r\n"
        typ, data = m.store("1", "+FLAGS", r"(\Seen)")
        assert typ == "NO"  # EXAMINE is read-only
    # An untrusted CA is refused by a verifying client.
    strict = ssl.create_default_context()
    with pytest.raises(ssl.SSLError):
        imaplib.IMAP4_SSL("127.0.0.1", srv.port("imap", tls=True), ssl_context=strict,
                          timeout=TIMEOUT)


# --- IMAPClient -----------------------------------------------------------------------------
@pytest.fixture
def client(srv: ServerProcess, acct: str) -> Iterator[IMAPClient]:
    c = IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=TIMEOUT)
    c.login(acct, "secret")
    yield c
    try:
        c.logout()
    except (imapclient.exceptions.IMAPClientError, OSError):
        pass


def test_imapclient_folders(client: IMAPClient) -> None:
    caps = client.capabilities()
    for cap in (b"IMAP4REV1", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"IDLE", b"NAMESPACE"):
        assert cap in caps
    names = [name for _, _, name in client.list_folders()]
    assert names[0] == "INBOX" and "Sent" in names
    assert client.find_special_folder(ic.SENT) == "Sent"
    assert client.find_special_folder(ic.TRASH) == "Trash"
    client.create_folder("Äpfel/Birnen")  # IMAPClient speaks modified UTF-7 for us
    folders = {name: flags for flags, _, name in client.list_folders()}
    # CREATE makes the missing parent too (RFC 3501 §6.3.3), so it is a real mailbox.
    assert folders["Äpfel"] == (b"\\HasChildren",)
    assert folders["Äpfel/Birnen"] == (b"\\HasNoChildren",)
    assert client.folder_exists("Äpfel/Birnen") and not client.folder_exists("Birnen")
    client.rename_folder("Äpfel/Birnen", "Früchte")
    assert client.folder_exists("Früchte") and not client.folder_exists("Äpfel/Birnen")
    client.subscribe_folder("Früchte")
    assert "Früchte" in [name for _, _, name in client.list_sub_folders()]
    client.unsubscribe_folder("Früchte")
    assert "Früchte" not in [name for _, _, name in client.list_sub_folders()]
    assert client.folder_status("Früchte", ["MESSAGES", "UIDNEXT"]) == {
        b"MESSAGES": 0, b"UIDNEXT": 1}
    client.delete_folder("Früchte")
    assert not client.folder_exists("Früchte")
    ns = client.namespace()
    assert ns.personal == (("", "/"),) and ns.other is None and ns.shared is None
    [ident] = client.id_({"name": "pytest"})
    assert dict(zip(ident[::2], ident[1::2], strict=True))[b"name"] == b"Mailstead"
    with pytest.raises(imapclient.exceptions.IMAPClientError):
        client.select_folder("nosuch")


def test_imapclient_messages(client: IMAPClient, srv: ServerProcess, acct: str) -> None:
    when = datetime(2026, 11, 5, 9, 3, 1, tzinfo=timezone(timedelta(hours=1)))
    raw = make_message("Grüße aus Köln", "Schöne Grüße\n")
    resp = client.append("INBOX", raw, flags=(b"$Forwarded",), msg_time=when)
    assert resp.startswith(b"[APPENDUID ")
    client.append("INBOX", make_message("plain", "pizza\n", "dave@example.com"))
    info = client.select_folder("INBOX")
    assert info[b"EXISTS"] == 2 and info[b"RECENT"] == 2 and info[b"UIDNEXT"] == 3
    assert b"\\*" in info[b"PERMANENTFLAGS"] and info[b"READ-WRITE"]
    assert client.search(["SUBJECT", "Köln"], charset="UTF-8") == [1]
    assert client.search(["BODY", "Schöne"], charset="UTF-8") == [1]
    assert client.search(["FROM", "dave"]) == [2]
    assert client.search(["UNSEEN"]) == [1, 2]
    data = client.fetch([1, 2], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
                                 "BODYSTRUCTURE", "BODY.PEEK[]"])
    first = data[1]
    assert set(first[b"FLAGS"]) == {b"$Forwarded", b"\\Recent"}
    # IMAPClient turns INTERNALDATE into a naive datetime in the local time zone.
    assert first[b"INTERNALDATE"] == when.astimezone().replace(tzinfo=None)
    assert first[b"RFC822.SIZE"] == len(raw) and first[b"BODY[]"] == raw
    env = first[b"ENVELOPE"]
    assert env.subject == email.message_from_bytes(raw)["Subject"].encode()  # as sent
    assert env.subject.startswith(b"=?utf-8?")
    assert env.from_[0].mailbox == b"alice" and env.from_[0].host == b"example.net"
    assert first[b"BODYSTRUCTURE"].is_multipart is False
    assert stored_messages(srv, acct)[0] == raw
    client.add_flags([1], [ic.SEEN, b"$Junk"])
    assert set(client.get_flags([1])[1]) >= {b"\\Seen", b"$Junk", b"$Forwarded"}
    client.remove_flags([1], [b"$Junk"])
    client.set_flags([2], [ic.FLAGGED])
    assert set(client.get_flags([2])[2]) == {b"\\Flagged", b"\\Recent"}
    assert client.search(["FLAGGED"]) == [2]
    assert client.search(["KEYWORD", "$Forwarded", "SEEN"]) == [1]
    client.create_folder("Kept")
    client.copy([1], "Kept")
    client.move([2], "Kept")
    assert client.search("ALL") == [1]
    client.delete_messages([1])
    client.uid_expunge([1])
    assert client.search("ALL") == []
    assert client.folder_status("Kept", ["MESSAGES"]) == {b"MESSAGES": 2}
    info = client.select_folder("Kept", readonly=True)
    assert info[b"READ-ONLY"] and info[b"EXISTS"] == 2
    assert client.unselect_folder()


def test_imapclient_idle_check(client: IMAPClient, srv: ServerProcess, acct: str) -> None:
    client.select_folder("INBOX")
    client.idle()
    other = IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=TIMEOUT)
    other.login(acct, "secret")

    def deliver() -> None:
        time.sleep(0.2)
        other.append("INBOX", make_message("pushed"))

    t = threading.Thread(target=deliver)
    t.start()
    try:
        events: list[tuple[object, ...]] = []
        deadline = time.monotonic() + TIMEOUT
        while (1, b"EXISTS") not in events and time.monotonic() < deadline:
            events += client.idle_check(timeout=1)
        assert (1, b"EXISTS") in events
        text, _ = client.idle_done()
        assert isinstance(text, bytes)
    finally:
        t.join(TIMEOUT)
        other.logout()
    assert client.search(["SUBJECT", "pushed"]) == [1]


def test_imapclient_implicit_tls_and_starttls(srv: ServerProcess, acct: str,
                                             tls_context: ssl.SSLContext) -> None:
    with IMAPClient("127.0.0.1", port=srv.port("imap", tls=True), ssl=True,
                    ssl_context=tls_context, timeout=TIMEOUT) as c:
        c.login(acct, "secret")
        assert b"STARTTLS" not in c.capabilities()
        c.append("INBOX", make_message("tls"))
        c.select_folder("INBOX")
        assert c.search(["SUBJECT", "tls"]) == [1]
        c.logout()
    with IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=TIMEOUT) as c:
        c.starttls(tls_context)
        assert isinstance(c._imap.sock, ssl.SSLSocket)
        c.login(acct, "secret")
        assert c.folder_status("INBOX", ["MESSAGES"]) == {b"MESSAGES": 1}
        c.logout()


def test_imapclient_plain_login_with_sasl(srv: ServerProcess, acct: str) -> None:
    with IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=TIMEOUT) as c:
        c.plain_login(acct, "secret")
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
        c.logout()
    with IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=TIMEOUT) as c, \
            pytest.raises(imapclient.exceptions.LoginError):
        c.login(acct, "wrong")


def test_server_closes_the_connection_after_logout(srv: ServerProcess, acct: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT)
    m.login(acct, "secret")
    sock = m.sock.dup()
    assert m.logout()[0] == "BYE"
    sock.settimeout(TIMEOUT)
    try:
        assert sock.recv(100) == b""  # EOF from the server
    finally:
        sock.close()
