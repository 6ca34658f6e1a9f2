"""Migration in and out: Maildir++, mbox and Dovecot passwd-file (issue 6).

Unit tests call the importers and exporters on a store in a temp folder; end-to-end tests
run ``mailstead import|export|user import-passwd`` as a subprocess and check the result
over IMAP on the shared server.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import io
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from passlib import hash as ph

from conftest import ServerProcess
from mailstead.auth.passwords import PasswordHasher
from mailstead.migrate import MailboxImporter, check_message
from mailstead.migrate.maildir import (
    folder_dirname,
    folder_name,
    import_maildir,
    parse_info,
)
from mailstead.migrate.maildir_export import export_maildir
from mailstead.migrate.mbox import (
    export_mbox,
    import_mbox,
    iter_mbox,
    mbox_entry,
    parse_from_line,
    take_meta,
)
from mailstead.migrate.passwd import LineError, parse_line
from mailstead.migrate.progress import Progress, Reporter
from mailstead.mime.parse import normalise_crlf
from mailstead.store.sqlite import SqliteStore

LIMIT = 100_000
LETTERS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
           "S": "\\Seen", "T": "\\Deleted"}


# --------------------------------------------------------------------------- helpers
def quiet() -> Reporter:
    return Reporter(stream=io.StringIO(), out=io.StringIO())


def msg(subject: str, body: str = "Hello.\n", extra: str = "") -> bytes:
    return (f"From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: {subject}\n"
            f"Date: Thu, 05 Nov 2026 09:03:01 +0100\n{extra}\n{body}").encode()


def put(path: Path, data: bytes, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def make_maildir(root: Path) -> None:
    """A Dovecot-style Maildir++ with folders, flags, keywords and awkward messages."""
    for d in ("cur", "new", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    t = 1_780_000_000
    put(root / "cur" / f"{t}.M1P1.old:2,S", msg("seen"), t)
    put(root / "cur" / f"{t + 1}.M2P1.old:2,FRS", msg("answered", ">From the past\nFrom x\n"),
        t + 1)
    put(root / "cur" / f"{t + 2}.M3P1.old:2,DPT", msg("draft fwd deleted"), t + 2)
    put(root / "cur" / f"{t + 3}.M4P1.old:2,", msg("no final newline", "tail"), t + 3)
    put(root / "new" / f"{t + 4}.M5P1.old", msg("brand new"), t + 4)
    (root / "dovecot-keywords").write_text("0 $Junk\n1 work\n")
    put(root / "cur" / f"{t + 5}.M6P1.old:2,Sab", msg("with keywords"), t + 5)
    # Folders: Sent exists already, Archive/2026 is nested, été is modified UTF-7 on disk,
    # and a.b has a '.' in a level (listescape \2e).
    put(root / ".Sent" / "cur" / f"{t + 6}.M7P1.old:2,S", msg("sent one"), t + 6)
    arch = root / ".Archive.2026"
    (arch / "dovecot-keywords").parent.mkdir(parents=True, exist_ok=True)
    (arch / "dovecot-keywords").write_text("0 project-x\n")
    (arch / "maildirfolder").touch()
    put(arch / "cur" / f"{t + 7}.M8P1.old:2,Fa", msg("archived"), t + 7)
    put(arch / "cur" / f"{t + 8}.M9P1.old:2,RS", msg("archived 2"), t + 8)
    put(root / ".&AOk-t&AOk-" / "cur" / f"{t + 9}.M10P1.old:2,S", msg("été"), t + 9)
    put(root / ".a\\2eb" / "cur" / f"{t + 10}.M11P1.old:2,S", msg("dotted"), t + 10)


def read_maildir(root: Path) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    """An independent reader: folder dir name → sorted (bytes, flag names, mtime)."""
    out: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
    dirs = [root] + [p for p in root.iterdir() if p.name.startswith(".") and p.is_dir()]
    for d in dirs:
        kw = {}
        if (d / "dovecot-keywords").exists():
            for line in (d / "dovecot-keywords").read_text().splitlines():
                n, word = line.split(" ", 1)
                kw[chr(ord("a") + int(n))] = word
        items = []
        for sub in ("cur", "new"):
            for f in (d / sub).iterdir() if (d / sub).exists() else ():
                info = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
                flags = frozenset(LETTERS.get(c) or kw[c] for c in info)
                if sub == "new":
                    flags = flags - {"\\Seen"}
                items.append((f.read_bytes(), flags, int(f.stat().st_mtime)))
        if items:
            out["INBOX" if d == root else d.name] = sorted(items, key=lambda x: x[0])
    return out


async def contents(store: SqliteStore, user: str, mailbox: str
                   ) -> list[tuple[bytes, frozenset[str], int]]:
    u = await store.get_user(user)
    box = await store.get_mailbox(u.id, mailbox)
    assert box is not None, mailbox
    infos = await store.list_messages(box.id)
    blobs = await store.read_messages(box.id, [i.uid for i in infos])
    return [(blobs[i.uid], i.flags, int(i.internaldate.timestamp())) for i in infos]


# --------------------------------------------------------------------------- names, parsing
def test_folder_names_round_trip() -> None:
    assert folder_name(b".Archive.2026") == "Archive/2026"
    assert folder_name(b".&AOk-t&AOk-") == "été"
    assert folder_name(b".R&D") == "R&D"  # not modified UTF-7: taken literally
    assert folder_name(".Bücher".encode()) == "Bücher"  # Dovecot with UTF-8 names
    assert folder_name(b".a\\2eb") == "a.b"  # listescape
    assert folder_name(b".inbox.sub") == "INBOX/sub"
    with pytest.raises(ValueError):
        folder_name(b".a..b")
    for name in ("Archive/2026", "été", "a.b", "~home", "back\\slash", "Tom & Jerry",
                 "日本語/メール"):
        assert folder_name(folder_dirname(name).encode()) == name
    assert folder_dirname("Archive/2026") == ".Archive.2026"
    assert parse_info("123.M1P2.host,S=5:2,FRab") == ("123.M1P2.host,S=5", "FRab")
    assert parse_info("123.M1P2.host") == ("123.M1P2.host", "")
    assert parse_info("123.x!2,S") == ("123.x", "S")


def test_check_message_rejects_garbage() -> None:
    assert check_message(b"Subject: x\n\nbody") is None
    assert check_message(b"From someone Thu Nov  5 09:03:01 2026\nSubject: x\n\n") is None
    assert "empty" in (check_message(b"\n \n") or "")
    assert "not an email" in (check_message(b"\x89PNG\r\n\x1a\n\0\0") or "")
    assert "not an email" in (check_message(b"just some text\n") or "")
    assert "NUL" in (check_message(b"Subject: a\0b\n\nbody") or "")
    assert check_message(b"Subject: ok\n\nbinary \0 body is fine") is None


def test_progress_draws_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    p = Progress(10, stream=out, interval=0)
    p.update(5)
    assert out.getvalue().startswith("\r5/10 messages (50%), ")
    assert "msg/s" in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\r")
    plain = io.StringIO()
    p = Progress(10, stream=plain, interval=0)
    p.update(5)
    p.close()
    assert plain.getvalue() == ""
    rep = Reporter(stream=plain, out=io.StringIO())
    rep.fail("/x/y", "broken")
    assert plain.getvalue() == "mailstead: /x/y: broken\n"


# --------------------------------------------------------------------------- Maildir
async def test_maildir_round_trip_is_byte_exact(store: SqliteStore, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_maildir(src)
    await store.create_user("bob", "x")
    rep = quiet()
    await import_maildir(store, "bob", src, LIMIT, rep)
    assert (rep.imported, rep.skipped, rep.failed) == (11, 0, 0)
    created = rep.out.getvalue()  # type: ignore[attr-defined]
    assert "created mailbox Archive/2026" in created and "created mailbox été" in created
    assert "created mailbox Sent" not in created

    inbox = await contents(store, "bob", "INBOX")
    by_subject = {data.split(b"Subject: ")[1].split(b"\r\n")[0]: (flags, when)
                  for data, flags, when in inbox}
    assert by_subject[b"answered"][0] == {"\\Flagged", "\\Answered", "\\Seen"}
    assert by_subject[b"draft fwd deleted"][0] == {"\\Draft", "$Forwarded", "\\Deleted"}
    assert by_subject[b"with keywords"][0] == {"\\Seen", "$Junk", "work"}
    assert by_subject[b"brand new"][0] == frozenset()  # new/: unseen
    assert by_subject[b"seen"][1] == 1_780_000_000  # INTERNALDATE = mtime
    assert all(b"\n" not in data.replace(b"\r\n", b"") for data, _, _ in inbox)
    u = await store.get_user("bob")
    names = {b.name for b in await store.list_mailboxes(u.id)}
    assert {"Archive/2026", "été", "a.b", "Sent"} <= names
    assert {"Archive/2026", "été", "a.b"} <= set(await store.list_subscriptions(u.id))
    status = await store.mailbox_status((await store.get_mailbox(u.id, "INBOX")).id)
    assert status.recent == 2  # cur/ messages before the new/ one are old

    rep = quiet()
    folders = await export_maildir(store, "bob", out, rep)
    assert rep.imported == 11 and rep.failed == 0 and folders == len(names)
    assert read_maildir(out) == read_maildir(src)
    assert (out / ".Archive.2026" / "maildirfolder").exists()
    assert (out / ".Drafts" / "cur").is_dir()  # empty mailboxes are exported too

    # The export imports back into another user as the same mail, in the same UID order.
    await store.create_user("carol", "x")
    await import_maildir(store, "carol", out, LIMIT, quiet())
    for mailbox in ("INBOX", "Sent", "Archive/2026", "été", "a.b"):
        assert await contents(store, "carol", mailbox) == await contents(store, "bob", mailbox)


async def test_maildir_export_crlf_keeps_stored_octets(store: SqliteStore,
                                                       tmp_path: Path) -> None:
    src = tmp_path / "src"
    put(src / "cur" / "1.a:2,S", b"Subject: lf\n\nbare\rcr and lf\n", 1_700_000_000)
    (src / "new").mkdir()
    await store.create_user("bob", "x")
    await import_maildir(store, "bob", src, LIMIT, quiet())
    await export_maildir(store, "bob", tmp_path / "out", quiet(), eol="crlf")
    [f] = (tmp_path / "out" / "cur").iterdir()
    [(stored, _, _)] = await contents(store, "bob", "INBOX")
    assert f.read_bytes() == stored == b"Subject: lf\r\n\r\nbare\r\ncr and lf\r\n"
    assert f.name.endswith(f",S={len(stored)},W={len(stored)}:2,S")
    rep = quiet()
    with pytest.raises(Exception, match="not empty"):
        await export_maildir(store, "bob", tmp_path / "out", rep)


async def test_maildir_uidlist_order_and_idempotent_rerun(store: SqliteStore,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "new").mkdir(parents=True)
    names = [f"{1_700_000_000 + n}.M{n}P1.host" for n in range(4)]
    for n, name in enumerate(names):
        put(src / "cur" / f"{name}:2,S", msg(f"m{n}"), 1_700_000_000 + n)
    # Dovecot's UIDs say the order is 2, 0, 3, 1 (a file not listed goes last).
    (src / "dovecot-uidlist").write_text(
        "3 V123 N9 Gabc\n"
        f"5 :{names[2]}:2,S\n7 W100 :{names[0]}:2,\n8 :{names[3]}\n"
    )
    await store.create_user("bob", "x")
    await import_maildir(store, "bob", src, LIMIT, quiet())
    subjects = [d.split(b"Subject: ")[1][:2] for d, _, _ in await contents(store, "bob", "INBOX")]
    assert subjects == [b"m2", b"m0", b"m3", b"m1"]

    # Re-run: everything is a duplicate. A new message and a second identical copy of an
    # existing one are imported (copies are counted, not just remembered) ...
    put(src / "cur" / "1800000000.new:2,", msg("m4"), 1_800_000_000)
    put(src / "cur" / "1800000001.copy:2,", msg("m0"), 1_800_000_001)
    rep = quiet()
    await import_maildir(store, "bob", src, LIMIT, rep)
    assert (rep.imported, rep.skipped, rep.failed) == (2, 4, 0)
    # ... and the next run skips all six.
    rep = quiet()
    await import_maildir(store, "bob", src, LIMIT, rep)
    assert (rep.imported, rep.skipped, rep.failed) == (0, 6, 0)
    assert len(await contents(store, "bob", "INBOX")) == 6


async def test_duplicate_key_ignores_line_endings(store: SqliteStore) -> None:
    user = await store.create_user("bob", "x")
    box = await store.get_mailbox(user.id, "INBOX")
    from mailstead.store.api import NewMessage

    await store.append(box.id, [NewMessage(normalise_crlf(msg("a")))])
    imp = MailboxImporter(store, box, quiet())
    await imp.prepare()
    assert imp.is_duplicate(normalise_crlf(msg("a").replace(b"\n", b"\r\n")))
    assert not imp.is_duplicate(normalise_crlf(msg("a")))  # only one copy was there


def test_cli_maildir_corrupt_files_are_reported_and_the_rest_imported(
    server: ServerProcess, user: str, tmp_path: Path
) -> None:
    src = tmp_path / "md"
    t = 1_780_000_000
    put(src / "cur" / f"{t}.good1:2,S", msg("good 1"), t)
    put(src / "cur" / f"{t + 1}.garbage:2,S", b"\x7fELF\x02\x01\x01\0\0\0binary", t + 1)
    put(src / "cur" / f"{t + 2}.empty:2,", b"", t + 2)
    put(src / "cur" / f"{t + 3}.huge:2,", msg("huge", "x" * 1_000_100), t + 3)
    (src / "cur" / f"{t + 4}.unreadable:2,").mkdir()  # reading a directory fails, even as root
    put(src / "new" / f"{t + 5}.good2", msg("good 2"), t + 5)
    put(src / ".Lists.python" / "cur" / f"{t + 6}.good3:2,S", msg("good 3"), t + 6)

    res = server.cli("import", "maildir", str(src), "--user", user, check=False)
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "imported 3, skipped 0 duplicates, 4 failed"
    assert "created mailbox Lists/python" in res.stdout
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 4, res.stderr
    assert all(line.startswith(f"mailstead: {src}/cur/") for line in errors)
    text = res.stderr
    assert ".garbage:2,S: not an email message" in text
    assert ".empty:2,: empty message" in text
    assert ".huge:2,: message of 1000" in text and "max_message_size" in text
    assert ".unreadable:2,: cannot read: Is a directory" in text
    assert "\r" not in text  # no progress line when stderr is not a terminal

    # Idempotent: a second run skips the three and reports the same four failures.
    res = server.cli("import", "maildir", str(src), "--user", user, check=False)
    assert res.returncode == 1
    assert res.stdout.strip().splitlines()[-1] == "imported 0, skipped 3 duplicates, 4 failed"

    # A clean source exits 0; a bad path is one line and exit 1.
    good = tmp_path / "good"
    put(good / "cur" / "1.x:2,S", msg("good 1"), t)
    res = server.cli("import", "maildir", str(good), "--user", user)
    assert res.stdout.strip() == "imported 0, skipped 1 duplicates, 0 failed"
    res = server.cli("import", "maildir", str(tmp_path / "nope"), "--user", user, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "not a directory" in res.stderr
    res = server.cli("import", "maildir", str(good), "--user", "nobody-here", check=False)
    assert res.returncode == 1 and res.stderr == "mailstead: no such user: nobody-here\n"


def test_cli_import_into_running_server_is_visible_over_imap(
    server: ServerProcess, user: str, tmp_path: Path
) -> None:
    src = tmp_path / "md"
    make_maildir(src)
    res = server.cli("import", "maildir", str(src), "--user", user)
    assert res.stdout.strip().endswith("imported 11, skipped 0 duplicates, 0 failed")
    with imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10) as m:
        assert m.login(user, "secret")[0] == "OK"
        typ, data = m.select("INBOX")
        assert (typ, data) == ("OK", [b"6"])
        typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert typ == "OK"
        fetched = [item for item in data if isinstance(item, tuple)]
        bodies = {b for _, b in fetched}
        assert normalise_crlf(msg("with keywords")) in bodies
        assert normalise_crlf(msg("answered", ">From the past\nFrom x\n")) in bodies
        heads = b" ".join(h for h, _ in fetched)
        assert b"$Junk" in heads and b"work" in heads and b"$Forwarded" in heads
        typ, data = m.select('"Archive/2026"')
        assert (typ, data) == ("OK", [b"2"])
        typ, data = m.fetch("1", "(FLAGS)")
        assert b"project-x" in data[0] and b"\\Flagged" in data[0]
        typ, data = m.select('"&AOk-t&AOk-"')
        assert (typ, data) == ("OK", [b"1"])


# --------------------------------------------------------------------------- mbox
MBOX = (
    b"From alice@example.net Thu Nov  5 08:03:01 2026\n"
    b"Return-Path: <alice@example.net>\n"
    b"From: alice@example.net\n"
    b"Subject: one\n"
    b"Status: RO\n"
    b"X-Status: AF\n"
    b"X-Keywords: $Forwarded work\n"
    b"\n"
    b"Hello\n"
    b">From the start\n"
    b">>From quoted once\n"
    b"From here on the writer forgot to escape\n"
    b" From not at the start\n"
    b"\n"
    b"From MAILER-DAEMON Fri Nov  6 10:00:00 2026\n"
    b"From: bob@example.net\n"
    b"Subject: two\n"
    b"Status: O\n"
    b"\n"
    b"Bye\n"
    b"\n"
)


async def test_mbox_round_trip_and_unescaping(store: SqliteStore, tmp_path: Path) -> None:
    src = tmp_path / "in.mbox"
    src.write_bytes(MBOX)
    await store.create_user("bob", "x")
    rep = quiet()
    await import_mbox(store, "bob", src, "old/mail", LIMIT, rep)
    assert (rep.imported, rep.skipped, rep.failed) == (2, 0, 0)
    [(one, flags1, when1), (two, flags2, when2)] = await contents(store, "bob", "old/mail")
    assert one == (b"Return-Path: <alice@example.net>\r\nFrom: alice@example.net\r\n"
                   b"Subject: one\r\n\r\nHello\r\nFrom the start\r\n>From quoted once\r\n"
                   b"From here on the writer forgot to escape\r\n From not at the start\r\n")
    assert flags1 == {"\\Seen", "\\Answered", "\\Flagged", "$Forwarded", "work"}
    assert when1 == int(datetime(2026, 11, 5, 8, 3, 1, tzinfo=UTC).timestamp())
    assert two == b"From: bob@example.net\r\nSubject: two\r\n\r\nBye\r\n"
    assert flags2 == frozenset()
    assert when2 == int(datetime(2026, 11, 6, 10, 0, 0, tzinfo=UTC).timestamp())
    u = await store.get_user("bob")
    box = await store.get_mailbox(u.id, "old/mail")
    assert (await store.mailbox_status(box.id)).recent == 0  # both were Status: O

    out = tmp_path / "out.mbox"
    rep = quiet()
    await export_mbox(store, "bob", "old/mail", out, rep)
    assert rep.imported == 2
    # Byte-identical except the unescaped 'From ' line, which is now quoted.
    assert out.read_bytes() == MBOX.replace(b"\nFrom here", b"\n>From here")
    with pytest.raises(Exception, match="--force"):
        await export_mbox(store, "bob", "old/mail", out, quiet())

    # Re-importing the export (or the original) into the same mailbox adds nothing.
    for path in (out, src):
        rep = quiet()
        await import_mbox(store, "bob", path, "old/mail", LIMIT, rep)
        assert (rep.imported, rep.skipped) == (0, 2)


async def test_mbox_dates_recent_and_corrupt_messages(store: SqliteStore,
                                                      tmp_path: Path) -> None:
    src = tmp_path / "in.mbox"
    big = b"x" * 2000
    src.write_bytes(
        b"From a Thu Nov  5 09:03:01 2026\nSubject: old\nStatus: O\n\nx\n\n"
        b"From b Fri Nov  6 10:00:00 2026 +0200\nSubject: zoned\n\nx\n\n"
        b"From c garbage-date\n\x00\x01\x02binary junk\n\n"
        b"From d Sat Nov  7 10:00:00 2026\nSubject: big\n\n" + big + b"\n\n"
        b"From e@x.y\nSubject: no from date\nDate: Sun, 08 Nov 2026 12:00:00 -0500\n\nx\n"
    )
    await store.create_user("bob", "x")
    rep = quiet()
    await import_mbox(store, "bob", src, "inbox", 1000, rep)
    assert (rep.imported, rep.skipped, rep.failed) == (3, 0, 2)
    errors = rep.stream.getvalue().splitlines()  # type: ignore[attr-defined]
    assert errors == [
        f"mailstead: {src}: message 3 (line 12): not an email message (it does not start "
        "with a header field)",
        f"mailstead: {src}: message 4 (line 15): message of 2015 bytes is over the limit of "
        "1000 ([limits] max_message_size)",
    ]
    got = await contents(store, "bob", "INBOX")
    assert [w for _, _, w in got] == [
        int(datetime(2026, 11, 5, 9, 3, 1, tzinfo=UTC).timestamp()),
        int(datetime(2026, 11, 6, 8, 0, 0, tzinfo=UTC).timestamp()),
        int(datetime(2026, 11, 8, 17, 0, 0, tzinfo=UTC).timestamp()),
    ]
    u = await store.get_user("bob")
    box = await store.get_mailbox(u.id, "INBOX")
    assert (await store.mailbox_status(box.id)).recent == 2  # only the first was "O"

    not_mbox = tmp_path / "not.mbox"
    not_mbox.write_bytes(b"Subject: hello\n\nI am a single message\n")
    with pytest.raises(Exception, match="not an mbox file"):
        await import_mbox(store, "bob", not_mbox, "INBOX", 1000, quiet())


def test_from_line_dates() -> None:
    assert parse_from_line(b"From x Thu Nov  5 09:03:01 2026") == datetime(
        2026, 11, 5, 9, 3, 1, tzinfo=UTC)
    assert parse_from_line(b"From x Thu Nov 5 09:03 2026") == datetime(
        2026, 11, 5, 9, 3, tzinfo=UTC)
    assert parse_from_line(b"From  Thu Nov  5 09:03:01 2026 remote from uucp") is not None
    assert parse_from_line(b"From x Thu Feb 30 09:03:01 2026") is None
    assert parse_from_line(b"From here on, things changed") is None


_LINES = st.lists(
    st.one_of(
        st.sampled_from(["", "From x", ">From y", ">>From z", "From a Thu Nov  5 09:03:01 2026",
                         " From", "Status: RO", "plain text", ">", "From"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(_LINES, min_size=1, max_size=3),
       final_newline=st.booleans())
def test_mbox_entry_reads_back_exactly(bodies: list[list[str]], final_newline: bool) -> None:
    when = datetime(2026, 11, 5, 9, 3, 1, tzinfo=UTC)
    originals = []
    for n, lines in enumerate(bodies):
        data = f"Subject: m{n}\r\n\r\n".encode() + "\r\n".join(lines).encode()
        if final_newline or not lines:
            data += b"\r\n"
        originals.append(data)
    for eol in ("lf", "crlf"):
        stream = io.BytesIO(b"".join(mbox_entry(d, frozenset({"\\Seen"}), when, eol)
                                     for d in originals))
        entries = list(iter_mbox(stream, LIMIT))
        assert len(entries) == len(originals)
        for entry, original in zip(entries, originals, strict=True):
            data, meta = take_meta(normalise_crlf(entry.data or b""))
            # mbox cannot keep a missing final line break: the message gains one.
            assert data == (original if original.endswith(b"\r\n") else original + b"\r\n")
            assert meta.status == "RO"
            assert parse_from_line(entry.from_line) == when


def test_cli_mbox_import_export_exit_status(server: ServerProcess, user: str,
                                            tmp_path: Path) -> None:
    src = tmp_path / "in.mbox"
    src.write_bytes(MBOX + b"From x Thu Nov  5 09:03:01 2026\nnot a header line\n\n")
    res = server.cli("import", "mbox", str(src), "--user", user, "--mailbox", "Old", check=False)
    assert res.returncode == 1
    assert res.stdout.splitlines() == ["created mailbox Old",
                                       "imported 2, skipped 0 duplicates, 1 failed"]
    assert res.stderr == (f"mailstead: {src}: message 3 (line 22): not an email message "
                          "(it does not start with a header field)\n")
    out = tmp_path / "out.mbox"
    res = server.cli("export", "mbox", str(out), "--user", user, "--mailbox", "Old")
    assert res.stdout == f"exported 2 messages to {out}\n"
    assert out.read_bytes() == MBOX.replace(b"\nFrom here", b"\n>From here")
    res = server.cli("export", "mbox", str(out), "--user", user, "--mailbox", "Nope",
                     check=False)
    assert (res.returncode, res.stderr) == (1, "mailstead: no such mailbox: Nope\n")
    res = server.cli("export", "maildir", str(tmp_path / "md"), "--user", user)
    assert res.stdout.startswith("exported 2 messages in ")
    assert len(list((tmp_path / "md" / ".Old" / "cur").iterdir())) == 2


# --------------------------------------------------------------------------- passwd-file
def ssha512(password: str, salt: bytes) -> bytes:
    return hashlib.sha512(password.encode() + salt).digest() + salt


@pytest.fixture(scope="module")
def hashes() -> dict[str, tuple[str, str]]:
    """scheme label → (passwd-file password field, password). Cheap parameters, real formats."""
    raw = ssha512("ssha-pw", b"salt")
    return {
        "bcrypt2y": ("{BLF-CRYPT}" + bcrypt.hashpw(b"blf-pw", bcrypt.gensalt(4)).decode()
                     .replace("$2b$", "$2y$", 1), "blf-pw"),
        "sha512": ("{SHA512-CRYPT}" + ph.sha512_crypt.using(rounds=5000).hash("sha512 pw"),
                   "sha512 pw"),
        "sha256": ("{SHA256-CRYPT}" + ph.sha256_crypt.using(rounds=5000).hash("sha256-pw"),
                   "sha256-pw"),
        "argon2id": ("{ARGON2ID}" + ph.argon2.using(type="ID", rounds=1, memory_cost=1024)
                     .hash("argon-id-pw"), "argon-id-pw"),
        "argon2i": ("{ARGON2I}" + ph.argon2.using(type="I", rounds=1, memory_cost=1024)
                    .hash("argon-i-pw"), "argon-i-pw"),
        "ssha512": ("{SSHA512}" + base64.b64encode(raw).decode(), "ssha-pw"),
        "ssha512hex": ("{SSHA512.HEX}" + ssha512("hex-pw", b"s4lt").hex(), "hex-pw"),
        "bare6": (ph.sha512_crypt.using(rounds=5000).hash("bare-pw"), "bare-pw"),
        "bare2y": (bcrypt.hashpw(b"bare-blf", bcrypt.gensalt(4)).decode()
                   .replace("$2b$", "$2y$", 1), "bare-blf"),
        "crypt": ("{CRYPT}" + ph.sha256_crypt.using(rounds=5000).hash("crypt-pw"), "crypt-pw"),
        "plain": ("{PLAIN}plain text pw", "plain text pw"),
    }


def test_parse_passwd_lines(hashes: dict[str, tuple[str, str]]) -> None:
    domains = ["example.org"]
    hasher = PasswordHasher()
    for label, (field, password) in hashes.items():
        if label == "plain":
            continue
        entry = parse_line(1, f"{label}:{field}:1000:1000::/home/{label}::", domains)
        assert entry is not None and entry.name == label and entry.cleartext is None
        assert entry.stored is not None
        ok, new = hasher.verify(password, entry.stored)
        assert ok and new is not None and new.startswith("$argon2id$"), label
        assert hasher.verify("wrong", entry.stored) == (False, None)
        # A stored hash must never verify as its own password.
        assert hasher.verify(entry.stored, entry.stored)[0] is False
        assert hasher.verify(field, entry.stored)[0] is False
    ssha = parse_line(1, "x:" + hashes["ssha512hex"][0], domains)
    assert ssha is not None and ssha.stored is not None and ssha.stored.startswith("{SSHA512}")
    entry = parse_line(3, "Bob@Example.ORG:{PLAIN}pw with spaces :::", domains)
    assert entry is not None and (entry.name, entry.cleartext) == ("Bob", "pw with spaces ")
    assert parse_line(4, "# comment", domains) is None
    assert parse_line(5, "   ", domains) is None
    bad = {
        "u@elsewhere.net:{PLAIN}x": "domain elsewhere.net is not one of this server's",
        "u:{MD5-CRYPT}$1$abc$def": "unsupported password scheme {MD5-CRYPT}",
        "u:{SHA512-CRYPT}secret": "must start with $6$",
        "u:{SHA512-CRYPT}$6$saltonly": "no checksum",
        "u:{BLF-CRYPT}$2x$04$abcdefghijklmnopqrstuu": "must start with",
        "u:{ARGON2ID}$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA": "$argon2id$",
        "u:{SSHA512}not base64!": "not base64",
        "u:{SSHA512}" + base64.b64encode(b"short").decode(): "invalid {SSHA512}",
        "u:plaintext-password": "no {SCHEME} prefix",
        "u:{PLAIN}": "empty password",
        "u:": "empty password field",
        "u": "no ':'",
        ":{PLAIN}x": "empty user name",
    }
    for line, reason in bad.items():
        with pytest.raises(LineError, match=None) as info:
            parse_line(9, line, domains)
        assert reason in str(info.value), (line, str(info.value))
        secret = line.partition(":")[2]
        assert len(secret) < 8 or secret not in str(info.value)  # never echo the hash


def _login(port: int, name: str, password: str) -> bool:
    with imaplib.IMAP4("127.0.0.1", port, timeout=15) as m:
        try:
            m.login(name, password)
        except imaplib.IMAP4.error:
            return False
        m.logout()
        return True


def _stored_hash(server: ServerProcess, name: str) -> str:
    db = sqlite3.connect(f"file:{server.data / 'mailstead.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)
                          ).fetchone()[0]
    finally:
        db.close()


def test_cli_import_passwd_then_imap_login(server: ServerProcess, tmp_path: Path,
                                           hashes: dict[str, tuple[str, str]]) -> None:
    tag = f"p{os.getpid()}"
    users = {f"{tag}{label}": value for label, value in hashes.items()}
    lines = [f"{name}@example.org:{field}:1000:1000::/home/{name}::userdb_quota_rule=*:1G"
             if label == "sha512" else f"{name}:{field}:1000:1000::/home/{name}::"
             for (name, (field, _)), label in zip(users.items(), hashes, strict=True)]
    lines += ["# a comment", "", f"{tag}bad:{{MD5-CRYPT}}$1$abc$def:1000:1000::::",
              f"{tag}other@elsewhere.net:{{PLAIN}}x::::::"]
    passwd = tmp_path / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    res = server.cli("user", "import-passwd", str(passwd), check=False)
    assert res.returncode == 1
    out = res.stdout.splitlines()
    assert f"users: created {len(users)}, updated 0, unchanged 0, 2 failed" in out
    assert ("1 cleartext password(s) ({PLAIN}) were hashed with argon2; no password was "
            "stored in cleartext") in out
    assert f"created user {tag}bcrypt2y (BLF-CRYPT)" in out
    err = res.stderr.splitlines()
    assert err == [
        f"mailstead: {passwd}:{len(users) + 3}: user {tag}bad: unsupported password scheme "
        "{MD5-CRYPT}; set a new password with 'mailstead user passwd'",
        f"mailstead: {passwd}:{len(users) + 4}: user {tag}other@elsewhere.net: domain "
        "elsewhere.net is not one of this server's domains ([server] domains)",
    ]
    before = {name: _stored_hash(server, name) for name in users}
    assert before[f"{tag}plain"].startswith("$argon2id$") and "plain" not in before[f"{tag}plain"]
    assert before[f"{tag}ssha512"] == hashes["ssha512"][0]
    assert before[f"{tag}bcrypt2y"].startswith("$2y$")

    port = server.port("imap")

    def check(item: tuple[str, tuple[str, str]]) -> tuple[str, bool, bool, bool]:
        name, (_, password) = item
        return (name, _login(port, name, password), _login(port, name, password + "x"),
                _login(port, name, before[name]))

    # Failed logins are delayed by the server's throttle, so the users are tried at once.
    with ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(check, users.items()))
    for name, ok, wrong_ok, hash_ok in results:
        assert (ok, wrong_ok, hash_ok) == (True, False, False), name
        after = _stored_hash(server, name)
        assert after.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), (name, after)
        if not name.endswith("plain"):
            assert after != before[name]

    # Re-run: users whose hash is in the file again are updated back to it (the file
    # wins), the {PLAIN} one still verifies and stays unchanged.
    res = server.cli("user", "import-passwd", str(passwd), check=False)
    assert f"users: created 0, updated {len(users) - 1}, unchanged 1, 2 failed" in res.stdout
    assert f"updated the password of existing user {tag}sha256 (SHA256-CRYPT)" in res.stdout
    assert _login(port, f"{tag}sha256", "sha256-pw")


def test_imported_hash_never_verifies_as_itself() -> None:
    hasher = PasswordHasher()
    for stored in ("{SSHA512}" + base64.b64encode(ssha512("pw", b"salt")).decode(),
                   ph.sha512_crypt.using(rounds=5000).hash("pw"),
                   bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")):
        assert hasher.verify("pw", stored)[0]
        assert not hasher.verify(stored, stored)[0]
    with pytest.raises(LineError):
        parse_line(1, "u:{PLAINTEXT}pw", [])
