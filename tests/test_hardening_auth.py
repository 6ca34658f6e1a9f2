"""Logins under abuse (issue 12 #5, #8): over-long passwords fail like wrong ones, and
password checks run on their own threads, so a busy default executor cannot stall them."""

from __future__ import annotations

import asyncio
import imaplib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ServerProcess
from mailstead.auth.passwords import MAX_PASSWORD_OCTETS, PasswordHasher, password_too_long
from mailstead.auth.throttle import LoginThrottle
from mailstead.auth.users import Authenticator
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore

# Cheap argon2 parameters keep these tests fast; the pool does not care what it runs.
FAST = PasswordHasher("argon2")
FAST.context = FAST.context.copy(argon2__rounds=1, argon2__memory_cost=1024)


def test_password_too_long_counts_octets() -> None:
    assert not password_too_long("a" * MAX_PASSWORD_OCTETS)
    assert password_too_long("a" * (MAX_PASSWORD_OCTETS + 1))
    assert not password_too_long("€" * 1024)  # 3,072 octets: within the CLI's 1,024 chars
    assert password_too_long("€" * 1400)  # 4,200 octets in only 1,400 characters
    assert password_too_long("\ud800" * 2000)  # a lone surrogate must not raise either


def test_verify_refuses_an_over_long_password_without_raising() -> None:
    stored = FAST.hash("right")
    for pw in ("x" * 5000, "x" * 100_000):
        assert FAST.verify(pw, stored) == (False, None)
        assert FAST.verify(pw, None) == (False, None)  # the dummy-hash path raised before


async def _with_store(tmp_path: Path, fn):  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "m.sqlite3", ChangeHub())
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def test_an_over_long_password_is_an_ordinary_failed_login(tmp_path: Path) -> None:
    """No exception, the failure delay, and a throttle record (the address gets blocked
    after a burst), for a known and an unknown user alike."""
    throttle = LoginThrottle(base_delay=0.05, max_delay=0.2, burst=3, block=60)

    async def run(store: SqliteStore) -> None:
        await store.create_user("bob", FAST.hash("right"))
        auth = Authenticator(store, FAST, ["example.org"], throttle=throttle)
        for login in ("bob", "bob@example.org", "nobody"):
            assert not throttle.blocked("10.9.8.7")
            start = time.monotonic()
            assert await auth.check(login, "p" * 5000, "10.9.8.7") is None
            assert time.monotonic() - start >= 0.05  # the usual failure delay
        assert throttle.blocked("10.9.8.7")  # three failures recorded: blocked
        # The right password still works from another address.
        user = await auth.check("bob", "right", "10.9.8.8")
        assert user is not None and user.name == "bob"

    asyncio.run(_with_store(tmp_path, run))


def test_a_saturated_default_executor_does_not_delay_a_password_check() -> None:
    """Six 3-second jobs on a 2-thread default executor (what six slow SEARCHes do) must
    not hold up a password check: it runs on the hasher's own pool."""
    hasher = PasswordHasher("argon2", threads=2)
    hasher.context = FAST.context
    stored = hasher.hash("pw")

    async def run() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(2))
        blockers = [loop.run_in_executor(None, time.sleep, 3) for _ in range(6)]
        await asyncio.sleep(0.05)  # the default executor is busy now
        start = time.monotonic()
        ok, _ = await hasher.verify_async("pw", stored)
        took = time.monotonic() - start
        assert ok
        for b in blockers:
            b.cancel()
        return took

    try:
        took = asyncio.run(run())
    finally:
        hasher.close()
    assert took < 2.0, f"the password check waited {took:.1f} s behind the default executor"


def test_the_hashing_pool_is_bounded() -> None:
    hasher = PasswordHasher("argon2", threads=3)
    hasher.context = FAST.context
    stored = hasher.hash("pw")

    async def run() -> int:
        results = await asyncio.gather(*(hasher.verify_async("pw", stored) for _ in range(12)))
        assert all(ok for ok, _ in results)
        assert hasher._pool is not None
        return len(hasher._pool._threads)

    try:
        assert asyncio.run(run()) <= 3
    finally:
        hasher.close()
    with pytest.raises(ValueError):
        PasswordHasher("argon2", threads=0)


def test_imap_answers_an_over_long_password_as_a_failed_login(
    server: ServerProcess, user: str
) -> None:
    long_password = "p" * 5000
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=20)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(user, long_password)
    assert imap.noop()[0] == "OK"  # the session goes on
    imap.login(user, "secret")
    imap.logout()
    # (POP3 cannot carry such a password: its command lines and SASL blobs are shorter.)
    log = server.log_text()
    assert "PasswordSizeError" not in log and "Internal server error" not in log
