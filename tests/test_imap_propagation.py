"""Live propagation: every change reaches every session that has the mailbox selected.

Two and three raw IMAP sessions on one mailbox, with and without IDLE, against a real
server: deliveries, flag changes, expunges (deferred during FETCH/STORE/SEARCH, RFC 3501
§7.4.1), \\Recent to exactly one session, and sessions never disagreeing about UIDs.
"""

from __future__ import annotations

import random
import smtplib
import time

import pytest

from conftest import ServerProcess
from imap_session import Session


def deliver(server: ServerProcess, user: str, subject: str = "hi") -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("a@x.net", [f"{user}@example.org"],
                      f"Subject: {subject}\r\n\r\nbody {subject}\r\n".encode())


def append(s: Session, n: int) -> None:
    for i in range(n):
        s.ok(f"APPEND INBOX {{{len(f'Subject: m{i}') + 4}+}}\r\nSubject: m{i}\r\n\r\n")


@pytest.fixture
def sessions(server: ServerProcess, user: str):
    opened: list[Session] = []

    def open_session() -> Session:
        s = Session(server.port("imap"), user)
        opened.append(s)
        return s

    yield open_session
    for s in opened:
        s.close()


def test_idle_session_gets_exists_within_milliseconds_of_delivery(
    server: ServerProcess, user: str, sessions
) -> None:
    a = sessions()
    a.select()
    a.idle()
    deliver(server, user, "pushed")
    line, _ = a.wait_for(rb"^\* 1 EXISTS")
    assert line == b"* 1 EXISTS"
    assert a.wait_for(rb"RECENT")[0] == b"* 1 RECENT"
    a.done()


def test_flags_from_another_session_reach_idle_and_non_idle_sessions(
    server: ServerProcess, user: str, sessions
) -> None:
    a, b, c = sessions(), sessions(), sessions()
    append(a, 3)
    for s in (a, b, c):
        s.select()
    a.idle()
    untagged = b.ok("STORE 2 +FLAGS (\\Flagged $Forwarded)")
    # The storing session is answered once, with the new flags.
    assert [x for x in untagged if b"FETCH" in x] == [b"* 2 FETCH (FLAGS ($Forwarded \\Flagged))"]
    line, latency = a.wait_for(rb"FETCH")
    # A selected first, so the messages are \Recent in its session.
    assert line == b"* 2 FETCH (FLAGS ($Forwarded \\Flagged \\Recent))"
    assert latency < 1.0
    a.done()
    # The third session learns it with its next command.
    assert b"* 2 FETCH (FLAGS ($Forwarded \\Flagged))" in c.ok("NOOP")
    # And the storer hears nothing twice.
    assert not [x for x in b.ok("NOOP") if b"FETCH" in x]


def test_expunge_is_deferred_during_fetch_store_search(
    server: ServerProcess, user: str, sessions
) -> None:
    a, b = sessions(), sessions()
    append(a, 4)
    a.select()
    b.select()
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert b.ok("EXPUNGE") == [b"* 2 EXPUNGE"]
    # A may not hear of it while answering FETCH, STORE or SEARCH ...
    for cmd in ("FETCH 1:4 (UID)", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL"):
        untagged, _done = a.command(cmd)
        assert not [x for x in untagged if b"EXPUNGE" in x], (cmd, untagged)
    # ... and its sequence numbers stay valid meanwhile: 4 is still UID 4.
    untagged, _ = a.command("FETCH 4 (UID)")
    assert b"* 4 FETCH (UID 4)" in untagged
    # The expunged message no longer matches anything, but keeps its number.
    assert a.ok("SEARCH ALL")[-1] == b"* SEARCH 1 3 4"
    # A UID command may carry it, and so does NOOP.
    assert b"* 2 EXPUNGE" in a.ok("NOOP")
    assert a.ok("SEARCH ALL")[-1] == b"* SEARCH 1 2 3"
    assert a.uid_map() == b.uid_map() == [1, 3, 4]


def test_uid_fetch_may_carry_the_expunge(server: ServerProcess, user: str, sessions) -> None:
    a, b = sessions(), sessions()
    append(a, 3)
    a.select()
    b.select()
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    untagged = a.ok("UID FETCH 1:* (FLAGS)")
    assert b"* 1 EXPUNGE" in untagged
    assert untagged.index(b"* 1 EXPUNGE") == len(untagged) - 1


def test_fetch_of_a_message_expunged_elsewhere_says_expungeissued(
    server: ServerProcess, user: str, sessions
) -> None:
    a, b = sessions(), sessions()
    append(a, 2)
    a.select()
    b.select()
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    untagged, done = a.command("FETCH 2 (BODY.PEEK[])")
    assert b"NO [EXPUNGEISSUED]" in done
    assert not [x for x in untagged if b"EXPUNGE" in x and b"ISSUED" not in x]


def test_recent_goes_to_exactly_one_session(server: ServerProcess, user: str, sessions) -> None:
    a, b = sessions(), sessions()
    a.select()
    b.select()
    deliver(server, user, "r1")
    time.sleep(0.2)
    recents = []
    for s in (a, b):
        lines = s.ok("NOOP")
        assert b"* 1 EXISTS" in lines
        recents.append(b"* 1 RECENT" in lines)
    assert sorted(recents) == [False, True]
    # A later SELECT elsewhere does not see it as recent either.
    c = sessions()
    assert b"* 0 RECENT" in c.select()


def test_delivery_while_selected_appears_with_next_command(
    server: ServerProcess, user: str, sessions
) -> None:
    a = sessions()
    a.select()
    deliver(server, user, "one")
    deliver(server, user, "two")
    time.sleep(0.2)
    lines = a.ok("NOOP")
    assert b"* 2 EXISTS" in lines
    assert a.uid_map() == [1, 2]


def test_three_sessions_agree_after_random_changes(
    server: ServerProcess, user: str, sessions
) -> None:
    rng = random.Random(7)
    trio = [sessions() for _ in range(3)]
    append(trio[0], 12)
    for s in trio:
        s.select()
    for _ in range(30):
        s = rng.choice(trio)
        n = s.exists()
        op = rng.random()
        if op < 0.3 and n:
            s.ok(f"STORE {rng.randint(1, n)} +FLAGS (\\Deleted)")
            s.ok("EXPUNGE")
        elif op < 0.5:
            deliver(server, user, f"d{rng.randrange(1000)}")
        elif op < 0.8 and n:
            s.ok(f"STORE {rng.randint(1, n)}:{n} {rng.choice('+-')}FLAGS (\\Seen $x)")
        else:
            s.ok("FETCH 1:* (FLAGS)" if n else "NOOP")
    time.sleep(0.2)
    maps = [s.uid_map() for s in trio]
    assert maps[0] == maps[1] == maps[2]
    def without_recent(line: bytes) -> bytes:  # \Recent is per session by design
        return line.replace(b" \\Recent", b"").replace(b"\\Recent", b"")

    flags = [sorted(without_recent(x) for x in s.ok("FETCH 1:* (UID FLAGS)") if b"FETCH" in x)
             for s in trio if maps[0]]
    assert all(f == flags[0] for f in flags)


def test_idle_latency_of_expunge_from_another_session(
    server: ServerProcess, user: str, sessions
) -> None:
    a, b = sessions(), sessions()
    append(a, 3)
    a.select()
    b.select()
    a.idle()
    b.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    start = time.perf_counter()
    b.sock.sendall(b"x EXPUNGE\r\n")
    line, _ = a.wait_for(rb"EXPUNGE")
    latency = time.perf_counter() - start
    assert line == b"* 3 EXPUNGE"
    assert latency < 1.0  # generous bound; the real figure is in scripts/bench
    a.done()


def test_mail_imported_by_the_cli_beside_a_running_server_is_pushed(
    server: ServerProcess, user: str, sessions, tmp_path
) -> None:
    # ``mailstead import`` writes from a process of its own; the server notices the commit
    # (SQLite's data_version) and tells the sessions that have the mailbox selected.
    a, b = sessions(), sessions()
    append(a, 1)
    for s in (a, b):
        s.select()
    a.idle()
    src = tmp_path / "in.mbox"
    src.write_bytes(b"From a@x.net Thu Nov  5 09:03:01 2026\nSubject: one\n\nbody\n\n"
                    b"From a@x.net Thu Nov  5 09:04:01 2026\nSubject: two\nStatus: RO\n\nbody\n")
    res = server.cli("import", "mbox", str(src), "--user", user, "--mailbox", "INBOX")
    assert res.stdout.splitlines()[-1] == "imported 2, skipped 0 duplicates, 0 failed"
    assert a.wait_for(rb"^\* 3 EXISTS")[0] == b"* 3 EXISTS"
    a.done()
    untagged = b.ok("NOOP")
    assert b"* 3 EXISTS" in untagged
    assert b.uid_map() == a.uid_map()
    assert b"\\Seen" in b"".join(b.ok("FETCH 3 (FLAGS)"))  # Status: RO came along
