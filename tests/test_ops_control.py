"""Operations on a running server: ``who`` and ``kick`` over the control socket, and
``mailbox create|delete|rename``, ``expunge`` and ``fetch`` on the store beside it."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import poplib
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, stored_messages
from mailstead.context import SessionRegistry
from mailstead.control import ControlServer, socket_path

TIMEOUT = 10


def run(srv: ServerProcess, *args: str, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return srv.cli(*args, input=input, check=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("ops")).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text(), srv.log_text()


def who(srv: ServerProcess) -> list[dict]:
    res = run(srv, "who", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_for(predicate, timeout: float = TIMEOUT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# --- who / kick -----------------------------------------------------------------------


def test_who_lists_sessions_and_kick_closes_a_users_sessions(live: ServerProcess) -> None:
    live.add_user("kim")
    live.add_user("lee")
    started = time.time()
    imap = imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT)
    imap.login("kim", "secret")
    other = imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT)
    other.login("lee@example.org", "secret")
    pop = poplib.POP3("127.0.0.1", live.port("pop3"), timeout=TIMEOUT)
    pop.user("kim")
    pop.pass_("secret")
    anonymous = socket.create_connection(("127.0.0.1", live.port("imap")), TIMEOUT)
    try:
        anonymous.recv(100)  # the greeting: the session is registered
        sessions = who(live)
        mine = sorted((s["user"], s["protocol"]) for s in sessions
                      if s["user"] in ("kim", "lee"))
        assert mine == [("kim", "imap"), ("kim", "pop3"), ("lee", "imap")]
        assert any(s["user"] is None for s in sessions)
        assert all(s["remote"] == "127.0.0.1" and s["tls"] is False for s in sessions)
        assert all(started - 5 <= s["since"] <= time.time() + 1 for s in sessions
                   if s["user"] in ("kim", "lee"))
        table = run(live, "who").stdout.splitlines()
        assert table[0].split() == ["USER", "PROTOCOL", "REMOTE", "TLS", "SINCE"]
        assert any(line.split()[:4] == ["kim", "pop3", "127.0.0.1", "no"] for line in table)

        res = run(live, "kick", "KIM@example.org")
        assert (res.returncode, res.stdout) == (0, "closed 2 session(s) of KIM\n"), res.stderr
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            for _ in range(3):  # the BYE, then a closed connection
                imap.noop()
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            for _ in range(3):
                pop.noop()
        assert wait_for(lambda: all(s["user"] != "kim" for s in who(live)))
        assert other.noop()[0] == "OK"  # lee's session was not touched
        res = run(live, "kick", "kim")
        assert (res.returncode, res.stdout) == (0, "kim has no open sessions\n")
    finally:
        anonymous.close()
        other.logout()
        for client in (imap, pop):
            try:
                client.sock.close()
            except OSError:
                pass


def test_user_del_ends_the_deleted_users_sessions(live: ServerProcess) -> None:
    live.add_user("max")
    pop = poplib.POP3("127.0.0.1", live.port("pop3"), timeout=TIMEOUT)
    pop.user("max")
    pop.pass_("secret")
    try:
        res = run(live, "user", "del", "max", "--yes")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["user max deleted", "closed 1 open session(s) of max"]
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            for _ in range(3):
                pop.stat()
    finally:
        pop.sock.close()


def test_the_control_socket_is_owner_only(live: ServerProcess) -> None:
    path = socket_path(live.data)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600


def test_bad_requests_get_an_error_and_the_channel_goes_on(live: ServerProcess) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(socket_path(live.data)))
        reader = sock.makefile("rb")
        for request, error in ((b"not json", "not JSON"), (b"[1]", "unknown command"),
                               (b'{"command": "reboot"}', "unknown command 'reboot'"),
                               (b'{"command": "kick"}', 'kick needs "user"')):
            sock.sendall(request + b"\n")
            reply = json.loads(reader.readline())
            assert reply["ok"] is False and error in reply["error"], reply
        sock.sendall(b'{"command": "who"}\n')
        assert json.loads(reader.readline())["ok"] is True
        try:  # one line far over the limit: the server closes the connection
            sock.sendall(b"x" * (1024 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending
        else:
            assert reader.read(1) == b""


def test_who_without_a_server_says_so(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    res = run(srv, "who")
    assert res.returncode == 1
    assert res.stderr.startswith(f"mailstead: no server is running on {srv.data}")


# A Python that any user may run (the test's own may live in root's home).
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0
                    or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root and a system python to connect as another user")
async def test_another_local_user_is_refused_even_through_an_open_socket() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ctl"))
    try:
        folder.chmod(0o755)
        control = ControlServer(SessionRegistry(), folder / "control.sock")
        assert await control.start()
        (folder / "control.sock").chmod(0o666)  # as a careless umask or chmod would leave it
        probe = ("import socket; s = socket.socket(socket.AF_UNIX); "
                 f"s.connect({str(folder / 'control.sock')!r}); "
                 "s.sendall(b'{\"command\": \"who\"}\\n'); print(s.makefile().readline())")
        proc = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, "-c", probe, user=65534, cwd="/", stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert json.loads(out) == {"ok": False, "error": "permission denied"}
        await control.stop()
        assert not (folder / "control.sock").exists()
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


# --- mailbox, expunge and fetch: on the store, beside the running server ----------------


def test_mailbox_create_rename_delete(live: ServerProcess) -> None:
    live.add_user("ned")
    res = run(live, "mailbox", "create", "ned", "Projects/2026")
    assert (res.returncode, res.stdout) == (0, "mailbox Projects/2026 of ned created\n")
    res = run(live, "mailbox", "create", "ned", "Projects/2026")
    assert res.returncode == 1 and "already has a mailbox Projects/2026" in res.stderr
    for bad, reason in (("inbox", "INBOX always exists"), ("a/../b", "'..' level"),
                        ("x\x01", "control characters")):
        res = run(live, "mailbox", "create", "ned", bad)
        assert res.returncode == 1 and reason in res.stderr, res.stderr
    with imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("ned", "secret")
        assert any(b'"Projects/2026"' in line for line in imap.lsub()[1])  # subscribed
        res = run(live, "mailbox", "rename", "ned", "Projects", "Work")
        assert (res.returncode, res.stdout) == (0, "mailbox Projects of ned renamed to Work\n")
        names = b"\n".join(imap.list()[1])
        assert b'"Work/2026"' in names and b"Projects" not in names
        res = run(live, "mailbox", "delete", "ned", "Work/2026", input="")
        assert res.returncode == 1 and "--yes" in res.stderr
        res = run(live, "mailbox", "delete", "ned", "Work/2026", "--yes")
        assert res.returncode == 0, res.stderr
        assert b"Work/2026" not in b"\n".join(imap.list()[1])
    for args, reason in ((("delete", "ned", "INBOX", "--yes"), "INBOX cannot be deleted"),
                         (("delete", "ned", "Nope", "--yes"), "ned has no mailbox Nope"),
                         (("rename", "ned", "Sent", "inbox"), "INBOX already exists"),
                         (("create", "ghost", "X"), "no such user: ghost")):
        res = run(live, "mailbox", *args)
        assert res.returncode == 1 and reason in res.stderr, (args, res.stderr)


def _append(imap: imaplib.IMAP4, when: str, subject: str) -> None:
    msg = f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n".encode()
    assert imap.append("INBOX", "", f'"{when}"', msg)[0] == "OK"


def test_expunge_before_a_date_is_announced_to_a_live_session(live: ServerProcess) -> None:
    live.add_user("ola")
    with imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("ola", "secret")
        _append(imap, "01-Jan-2020 10:00:00 +0000", "old1")
        _append(imap, "31-Dec-2022 23:59:59 +0000", "old2")
        _append(imap, "02-Jan-2024 00:00:00 +0000", "new")
        assert imap.select("INBOX")[1] == [b"3"]
        res = run(live, "expunge", "ola", "inbox", "--before", "2023-01-01", "--dry-run")
        assert res.stdout == ("would expunge 2 message(s) of ola's INBOX received before "
                              "2023-01-01T00:00:00+00:00\n")
        res = run(live, "expunge", "ola", "INBOX", "--before", "2023-01-01", input="")
        assert res.returncode == 1 and "--yes" in res.stderr
        res = run(live, "expunge", "ola", "INBOX", "--before", "2023-01-01", "--yes")
        assert res.returncode == 0 and res.stdout.startswith("expunged 2 message(s)")
        # The server notices the other process's commit and tells the selected session.
        expunged: list[bytes] = []

        def told() -> bool:
            imap.noop()
            expunged.extend(d for d in imap.response("EXPUNGE")[1] if d)
            return len(expunged) >= 2

        assert wait_for(told), expunged
        assert imap.uid("SEARCH", "ALL")[1] == [b"3"]
    res = run(live, "expunge", "ola", "INBOX", "--before", "yesterday")
    assert res.returncode == 2 and "is not a date" in res.stderr


def _append_from(imap: imaplib.IMAP4, sender: str, subject: str, flags: str = "") -> None:
    msg = (f"From: {sender}\r\nTo: x@example.org\r\nSubject: {subject}\r\n\r\n"
           f"body of {subject}\r\n").encode()
    assert imap.append("INBOX", flags, None, msg)[0] == "OK"


def test_expunge_by_an_imap_search_is_announced_to_a_live_session(
    live: ServerProcess,
) -> None:
    live.add_user("sue")
    with imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("sue", "secret")
        _append_from(imap, "Bob <bob@example.net>", "seen from bob", "(\\Seen)")
        _append_from(imap, "Bob <bob@example.net>", "unseen from bob")
        _append_from(imap, "Carol <carol@example.net>", "seen from carol", "(\\Seen)")
        _append_from(imap, "bobby@example.com", "hello there", "(\\Seen)")
        assert imap.select("INBOX")[1] == [b"4"]
        # The same matcher as SEARCH: FROM is a substring of the envelope's addresses.
        expected = imap.uid("SEARCH", "FROM", "bob", "SEEN")[1][0].split()
        assert expected == [b"1", b"4"]
        res = run(live, "expunge", "sue", "INBOX", "--search", "FROM bob SEEN", "--dry-run")
        assert res.returncode == 0, res.stderr
        assert res.stdout == "would expunge 2 message(s) of sue's INBOX matching FROM bob SEEN\n"
        res = run(live, "expunge", "sue", "INBOX", "--search", "FROM bob SEEN", input="")
        assert res.returncode == 1 and "--yes" in res.stderr
        res = run(live, "expunge", "sue", "INBOX", "--search", "FROM bob SEEN", "--yes")
        assert res.returncode == 0 and res.stdout.startswith("expunged 2 message(s)"), res
        expunged: list[bytes] = []

        def told() -> bool:
            imap.noop()
            expunged.extend(d for d in imap.response("EXPUNGE")[1] if d)
            return len(expunged) >= 2

        assert wait_for(told), expunged
        assert imap.uid("SEARCH", "ALL")[1] == [b"2 3"]
        res = run(live, "expunge", "sue", "INBOX", "--search", 'OR SUBJECT "carol" FROM nobody',
                  "--yes")
        assert res.returncode == 0 and res.stdout.startswith("expunged 1 message(s)"), res
    for query, reason in (("FROM", "bad search query 'FROM'"),
                          ("SINCE yesterday", "Invalid date"),
                          ("FLUFFY", "Unknown search key"),
                          ("", "the search query is empty")):
        res = run(live, "expunge", "sue", "INBOX", "--search", query, "--yes")
        assert res.returncode == 1 and reason in res.stderr, (query, res.stderr)
        assert "Traceback" not in res.stderr
    res = run(live, "expunge", "sue", "INBOX", "--search", "ALL", "--before", "2020-01-01")
    assert res.returncode == 2 and "not allowed with" in res.stderr
    assert [m.count(b"Subject: unseen from bob") for m in stored_messages(live, "sue")] == [1]


def test_fetch_writes_the_stored_octets(live: ServerProcess) -> None:
    live.add_user("pia")
    with imaplib.IMAP4("127.0.0.1", live.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("pia", "secret")
        _append(imap, "05-May-2025 12:00:00 +0200", "fetched")
    proc = subprocess.run(
        [sys.executable, "-m", "mailstead", "fetch", "pia", "INBOX", "--uid", "1",
         "-c", str(live.config)], capture_output=True, env=live.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == stored_messages(live, "pia")[0]
    assert proc.stdout.endswith(b"body fetched\r\n")
    res = run(live, "fetch", "pia", "INBOX", "--uid", "9")
    assert res.returncode == 1 and "pia's INBOX has no message with UID 9" in res.stderr
    res = run(live, "fetch", "pia", "Nope", "--uid", "1")
    assert res.returncode == 1 and "pia has no mailbox Nope" in res.stderr
