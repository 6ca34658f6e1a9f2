"""Issue 15 (defect 7): bcrypt reads 72 octets and bcrypt 5 raises past them.

New hashes under ``default_scheme = "bcrypt"`` are bcrypt_sha256 (no limit); a password over
72 octets against a plain bcrypt hash is an ordinary failed login, never a traceback."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import time
from pathlib import Path

import bcrypt
import pytest

from conftest import BASE_CONFIG, ServerProcess
from mailstead.auth.passwords import PasswordHasher
from mailstead.store.sqlite import SqliteStore

BCRYPT_CONFIG = BASE_CONFIG + '\n[auth]\ndefault_scheme = "bcrypt"\n'
LONG = "long-pass-" * 10  # 100 octets
OLD_SHORT = "s" * 72  # what an older server hashed with plain bcrypt


def test_bcrypt_default_hashes_long_passwords_whole() -> None:
    hasher = PasswordHasher("bcrypt")
    stored = hasher.hash(LONG)
    assert stored.startswith("$bcrypt-sha256$")
    assert hasher.verify(LONG, stored)[0]
    # Every octet counts: a password sharing the first 72 octets does not verify.
    assert not hasher.verify(LONG[:72] + "x" * 28, stored)[0]


def test_a_long_password_against_a_plain_bcrypt_hash_fails_without_raising() -> None:
    hasher = PasswordHasher("bcrypt")
    old = bcrypt.hashpw(OLD_SHORT.encode(), bcrypt.gensalt(4)).decode()
    # The first 72 octets match, yet a longer password is not that password.
    assert hasher.verify(OLD_SHORT + "more", old) == (False, None)
    assert hasher.verify(LONG, None) == (False, None)
    ok, upgraded = hasher.verify(OLD_SHORT, old)
    assert ok and upgraded is not None and upgraded.startswith("$bcrypt-sha256$")


def _set_hash(srv: ServerProcess, name: str, stored: str) -> None:
    async def run() -> None:
        store = SqliteStore(srv.data / "mailstead.sqlite3")
        await store.open()
        try:
            user = await store.get_user(name)
            assert user is not None
            await store.set_password_hash(user.id, stored)
        finally:
            await store.close()

    asyncio.run(run())


def _imap_login_fails(srv: ServerProcess, name: str, password: str) -> float:
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=20)
    start = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(name, password)
    elapsed = time.monotonic() - start
    assert imap.noop()[0] == "OK"  # an ordinary failure: the session goes on
    imap.logout()
    return elapsed


def _pop3_login_fails(srv: ServerProcess, name: str, password: str) -> float:
    pop = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=20)
    pop.user(name)
    start = time.monotonic()
    with pytest.raises(poplib.error_proto, match="-ERR"):
        pop.pass_(password)
    elapsed = time.monotonic() - start
    pop.quit()
    return elapsed


def test_bcrypt_server_takes_long_passwords_and_refuses_them_on_old_hashes(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path / "srv", BCRYPT_CONFIG)
    res = srv.cli("user", "add", "alice", "--password-stdin", input=LONG + "\n", check=False)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    srv.cli("user", "passwd", "alice", "--password-stdin", input=LONG + "!\n")
    srv.add_user("olduser", "placeholder")
    _set_hash(srv, "olduser", bcrypt.hashpw(OLD_SHORT.encode(), bcrypt.gensalt(4)).decode())
    srv.start()
    try:
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=20)
        imap.login("alice", LONG + "!")
        imap.logout()
        pop = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=20)
        pop.user("alice")
        pop.pass_(LONG + "!")
        pop.quit()
        for name in ("olduser", "nobody"):  # known (plain bcrypt hash) and unknown users
            assert _imap_login_fails(srv, name, OLD_SHORT + "more") >= 0.4
            assert _pop3_login_fails(srv, name, OLD_SHORT + "more") >= 0.4
    finally:
        assert srv.stop() == 0
    log = srv.log_text()
    assert "Traceback" not in log and "Internal server error" not in log, log
