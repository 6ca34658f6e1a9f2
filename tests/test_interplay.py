"""IMAP and POP3 on one store: every POP3 change reaches IMAP at once, and both agree.

POP3 QUIT's deletions arrive as EXPUNGE in an idling IMAP session within milliseconds,
RETR's \\Seen as FETCH (FLAGS), UIDL and IMAP UID name the same message, LIST sizes are
IMAP's RFC822.SIZE, RETR is BODY[], and the POP3 lock never blocks IMAP.
"""

from __future__ import annotations

import poplib
import re
import smtplib
import time

import pytest

from conftest import ServerProcess
from imap_session import Session


def deliver(server: ServerProcess, user: str, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        for i in range(n):
            body = f"Subject: m{i}\r\n\r\n.dot line {i}\r\nbody {i}\r\n".encode()
            smtp.sendmail("a@x.net", [f"{user}@example.org"], body)


def pop3(server: ServerProcess, user: str) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    p.user(user)
    p.pass_("secret")
    return p


@pytest.fixture
def imap(server: ServerProcess, user: str):
    s = Session(server.port("imap"), user)
    yield s
    s.close()


def uid_fetch(s: Session, items: str) -> dict[int, bytes]:
    out = {}
    for line in s.ok(f"UID FETCH 1:* ({items})"):
        m = re.match(rb"\* \d+ FETCH \(.*?UID (\d+)", line, re.S)
        if m:
            out[int(m.group(1))] = line
    return out


def test_pop3_quit_expunges_in_idle_imap_within_milliseconds(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 4)
    imap.select()
    imap.idle()
    p = pop3(server, user)
    p.dele(1)
    p.dele(3)
    start = time.perf_counter()
    p.quit()
    first, _ = imap.wait_for(rb"EXPUNGE")
    latency = time.perf_counter() - start
    second, _ = imap.wait_for(rb"EXPUNGE")
    assert (first, second) == (b"* 3 EXPUNGE", b"* 1 EXPUNGE")
    assert latency < 0.5  # generous: measured in milliseconds, see the closing note
    imap.done()
    assert imap.uid_map() == [2, 4]


def test_pop3_retr_sets_seen_visible_to_idle_imap_and_top_does_not(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 2)
    imap.select()
    imap.idle()
    p = pop3(server, user)
    p.top(2, 0)
    p.retr(1)
    line, latency = imap.wait_for(rb"FETCH")
    assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\\Seen( \\Recent)?\)\)", line), line
    assert latency < 2.0
    p.quit()
    imap.done()
    flags = uid_fetch(imap, "FLAGS")
    assert b"\\Seen" not in flags[2]


def test_uidl_and_imap_uid_name_the_same_message_with_the_same_bytes(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 3)
    select = imap.select()
    uidvalidity = int(next(re.search(rb"UIDVALIDITY (\d+)", x).group(1)
                           for x in select if b"UIDVALIDITY" in x))
    # A message removed over IMAP first, so numbers and UIDs differ.
    imap.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    imap.ok("EXPUNGE")
    p = pop3(server, user)
    _, listing, _ = p.uidl()
    _, sizes, _ = p.list()
    bodies = uid_fetch(imap, "RFC822.SIZE BODY.PEEK[]")
    for entry, size_entry in zip(listing, sizes, strict=True):
        number, uidl = entry.split()
        assert size_entry.split()[0] == number
        validity, _, uid = uidl.decode().partition(".")
        assert int(validity) == uidvalidity
        imap_line = bodies[int(uid)]
        literal = imap_line[imap_line.index(b"}\r\n") + 3 : imap_line.rindex(b")")]
        _, lines, _octets = p.retr(int(number))
        retr = b"\r\n".join(lines) + b"\r\n"
        assert retr == literal  # poplib removed the dot-stuffing; bytes are equal
        assert int(size_entry.split()[1]) == len(literal)
        assert f"RFC822.SIZE {len(literal)}".encode() in imap_line
    p.quit()


def test_pop3_lock_does_not_block_imap_and_second_pop3_gets_in_use(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 1)
    p = pop3(server, user)
    second = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    second.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("secret")
    second.close()
    imap.select()
    imap.ok("STORE 1 +FLAGS (\\Flagged)")
    assert imap.ok("FETCH 1 (FLAGS)")[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged")
    p.quit()


def test_imap_expunge_during_pop3_session(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 3)
    p = pop3(server, user)
    imap.select()
    imap.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    imap.ok("EXPUNGE")
    with pytest.raises(poplib.error_proto, match="no longer exists"):
        p.retr(2)
    p.dele(3)
    p.quit()
    imap.ok("NOOP")
    assert imap.uid_map() == [1]


def test_dropped_pop3_connection_deletes_nothing_imap_sees_all(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 2)
    p = pop3(server, user)
    p.dele(1)
    p.close()  # drop the connection without QUIT
    time.sleep(0.2)
    imap.select()
    assert imap.uid_map() == [1, 2]
    # The lock was released with the connection.
    pop3(server, user).quit()


def test_message_read_ahead_then_expunged_over_imap_is_not_served(
    server: ServerProcess, user: str, imap: Session
) -> None:
    deliver(server, user, 4)
    p = pop3(server, user)
    p.retr(1)  # the server reads 2..4 ahead in the background
    time.sleep(0.2)
    imap.select()
    imap.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    imap.ok("EXPUNGE")
    p.retr(2)
    with pytest.raises(poplib.error_proto, match="no longer exists"):
        p.retr(3)
    p.retr(4)
    p.quit()
