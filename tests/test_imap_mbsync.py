"""mbsync (isync) against the server: full sync, incremental sync, and changes made locally.

Skipped when ``mbsync`` is not installed (``apt-get install isync``).
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from imap_wire import new_user, start_server

pytestmark = [
    pytest.mark.realclient,
    pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed"),
]

TIMEOUT = 10
FOLDERS = {"INBOX": 3, "Sent": 2, "Archive": 1, "Projects/2026": 2}


def isync_version() -> tuple[int, ...]:
    out = subprocess.run(["mbsync", "--version"], capture_output=True, text=True,
                         timeout=TIMEOUT).stdout
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    assert m, out
    return tuple(int(x) for x in m.groups() if x is not None)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("mbsync"))
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()


def message(folder: str, n: int) -> bytes:
    return (f"From: alice@example.net\r\nTo: bob@example.org\r\nSubject: {folder} #{n}\r\n"
            f"Message-ID: <{folder.replace('/', '.')}.{n}@example.net>\r\n"
            f"Date: Thu, 05 Nov 2026 09:03:01 +0100\r\n\r\nbody {n}\r\n").encode()


def imap(srv: ServerProcess, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=TIMEOUT)
    m.login(user, "secret")
    return m


def server_counts(srv: ServerProcess, user: str) -> dict[str, int]:
    m = imap(srv, user)
    try:
        out = {}
        typ, lines = m.list()
        assert typ == "OK"
        for line in lines:
            assert isinstance(line, bytes)
            flags, name = re.fullmatch(rb'\(([^)]*)\) "/" "?([^"]*)"?', line).groups()
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            typ, data = m.status(f'"{name.decode()}"', "(MESSAGES)")
            assert typ == "OK", data
            out[name.decode()] = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        return out
    finally:
        m.logout()


def server_flags(srv: ServerProcess, user: str, folder: str) -> dict[bytes, set[bytes]]:
    """Message-ID → flags of every message in a folder."""
    m = imap(srv, user)
    try:
        typ, data = m.select(f'"{folder}"')
        assert typ == "OK", data
        if data == [b"0"]:
            return {}
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags, item
            mid = item[1].split(b":", 1)[1].strip()
            out[mid] = set(flags.group(1).split()) - {b"\\Recent"}
        return out
    finally:
        m.logout()


def maildir_files(root: Path, folder: str) -> list[Path]:
    box = root / folder
    return sorted(p for sub in ("cur", "new") for p in (box / sub).glob("*") if p.is_file())


def local_counts(root: Path) -> dict[str, int]:
    out = {}
    for cur in root.rglob("cur"):
        folder = cur.parent.relative_to(root).as_posix()
        out[folder] = len(maildir_files(root, folder))
    return out


def subject_of(path: Path) -> bytes:
    m = re.search(rb"^Subject: ([^\r\n]*)", path.read_bytes(), re.MULTILINE)
    assert m, path
    return m.group(1)


def maildir_flags(path: Path) -> str:
    return path.name.rsplit(":2,", 1)[1] if ":2," in path.name else ""


class Mbsync:
    def __init__(self, home: Path, port: int, user: str) -> None:
        self.home = home
        self.mail = home / "Mail"
        self.mail.mkdir(parents=True)
        version = isync_version()
        # isync 1.4 renamed Master/Slave to Far/Near, 1.5 SSLType to TLSType.
        far, near = ("Far", "Near") if version >= (1, 4) else ("Master", "Slave")
        tls = "TLSType" if version >= (1, 5) else "SSLType"
        self.rc = home / ".mbsyncrc"
        self.rc.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {port}
User {user}
Pass secret
{tls} None
AuthMechs LOGIN
Timeout {TIMEOUT}

IMAPStore remote
Account test

MaildirStore local
Path {self.mail}/
Inbox {self.mail}/INBOX
SubFolders Verbatim

Channel sync
{far} :remote:
{near} :local:
Patterns *
Create Both
Expunge Both
Sync All
SyncState *
""")

    def run(self) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CONFIG_HOME")}
        env["HOME"] = str(self.home)
        res = subprocess.run(["mbsync", "-c", str(self.rc), "-a"], capture_output=True,
                             text=True, env=env, timeout=60)
        output = res.stdout + res.stderr
        assert res.returncode == 0, output
        return output


@pytest.fixture
def setup(srv: ServerProcess, tmp_path: Path) -> tuple[str, Mbsync]:
    user = new_user(srv, "mb")
    m = imap(srv, user)
    try:
        assert m.create("Projects/2026")[0] == "OK"
        for folder, count in FOLDERS.items():
            for n in range(1, count + 1):
                flags = r"(\Seen)" if n == 1 else ""
                typ, data = m.append(f'"{folder}"', flags, None, message(folder, n))
                assert typ == "OK", data
    finally:
        m.logout()
    return user, Mbsync(tmp_path / "home", srv.port("imap"), user)


def test_mbsync_full_then_incremental_sync(srv: ServerProcess,
                                          setup: tuple[str, Mbsync]) -> None:
    user, mb = setup
    mb.run()
    remote = server_counts(srv, user)
    for folder, count in FOLDERS.items():
        assert remote[folder] == count
    local = local_counts(mb.mail)
    assert local == remote, mb.mail
    # \Seen came along as the Maildir "S" flag
    seen = [p for p in maildir_files(mb.mail, "INBOX") if "S" in maildir_flags(p)]
    assert len(seen) == 1

    # New messages and flag changes on the server, then an incremental run.
    m = imap(srv, user)
    try:
        m.append("INBOX", "", None, message("INBOX", 4))
        m.append("INBOX", "", None, message("INBOX", 5))
        m.append('"Projects/2026"', "", None, message("Projects/2026", 3))
        m.select("INBOX")
        m.store("2", "+FLAGS", r"(\Flagged)")
        m.store("3", "+FLAGS", r"(\Seen \Answered)")
    finally:
        m.logout()
    mb.run()
    remote = server_counts(srv, user)
    assert remote["INBOX"] == 5 and remote["Projects/2026"] == 3
    assert local_counts(mb.mail) == remote
    flags = sorted(maildir_flags(p) for p in maildir_files(mb.mail, "INBOX"))
    assert flags == ["", "", "F", "RS", "S"]


def test_mbsync_pushes_local_changes_back(srv: ServerProcess,
                                        setup: tuple[str, Mbsync]) -> None:
    user, mb = setup
    mb.run()
    inbox = maildir_files(mb.mail, "INBOX")
    assert len(inbox) == 3
    # Delete one message, flag another, and file a new message in a new local folder.
    by_subject = {subject_of(p): p for p in inbox}
    by_subject[b"INBOX #2"].unlink()
    flagged = by_subject[b"INBOX #3"]
    base = flagged.name.split(":2,", 1)[0]
    flags = "".join(sorted(maildir_flags(flagged) + "F"))
    flagged.rename(flagged.parent.parent / "cur" / f"{base}:2,{flags}")
    local_new = mb.mail / "LocalOnly"
    for sub in ("cur", "new", "tmp"):
        (local_new / sub).mkdir(parents=True)
    (local_new / "new" / "1762333381.1.localhost").write_bytes(message("LocalOnly", 1))
    mb.run()

    remote = server_counts(srv, user)
    assert remote["INBOX"] == 2, "the locally deleted message is expunged on the server"
    assert remote["LocalOnly"] == 1, "Create Both makes the new folder on the server"
    flags = server_flags(srv, user, "INBOX")
    assert set(flags) == {b"<INBOX.1@example.net>", b"<INBOX.3@example.net>"}
    assert flags[b"<INBOX.3@example.net>"] == {b"\\Flagged"}
    assert flags[b"<INBOX.1@example.net>"] == {b"\\Seen"}
    assert local_counts(mb.mail) == remote
    # A further run changes nothing.
    mb.run()
    assert server_counts(srv, user) == remote == local_counts(mb.mail)
