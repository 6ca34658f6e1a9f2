"""The verified-login cache, argon2 cost and rehashing, and the login queue (issue 13 #2).

Everything runs against the real SQLite store in a temporary folder; password checks are
counted on a real ``PasswordHasher`` (with cheap argon2 parameters to stay fast)."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import threading
from collections.abc import Callable, Iterator

import pytest
from passlib.hash import bcrypt

from conftest import ServerProcess
from mailstead.auth.cache import LoginCache
from mailstead.auth.passwords import Argon2Params, PasswordHasher
from mailstead.auth.throttle import LoginThrottle
from mailstead.auth.users import Authenticator, LoginRefused
from mailstead.store.sqlite import SqliteStore

CHEAP = Argon2Params(memory_kib=1024, time_cost=1, parallelism=1)
DOMAINS = ["example.org"]


class CountingHasher(PasswordHasher):
    """A real hasher that counts the password checks it runs, and how many at once."""

    def __init__(self, argon2: Argon2Params = CHEAP, threads: int = 4) -> None:
        super().__init__("argon2", argon2=argon2, threads=threads)
        self.verified: list[str | None] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        with self._lock:
            self.verified.append(stored)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return super().verify(password, stored)
        finally:
            with self._lock:
                self.running -= 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hasher() -> Iterator[CountingHasher]:
    h = CountingHasher()
    yield h
    h.close()


def authenticator(store: SqliteStore, hasher: PasswordHasher, **kw: object) -> Authenticator:
    kw.setdefault("throttle", LoginThrottle(base_delay=0.0, max_delay=0.0))
    return Authenticator(store, hasher, DOMAINS, **kw)  # type: ignore[arg-type]


async def test_a_repeated_login_is_served_from_the_cache(store, hasher) -> None:
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher)
    assert (await auth.check("bob", "right", "10.0.0.1")).name == "bob"
    assert len(hasher.verified) == 1
    for login in ("bob", "bob@example.org", "bob"):  # any name of the same user
        user = await auth.check(login, "right", "10.0.0.2")
        assert user is not None and user.name == "bob"
    assert len(hasher.verified) == 1  # no further hashing


async def test_a_wrong_password_is_never_served_from_the_cache(store, hasher) -> None:
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher)
    assert await auth.check("bob", "right") is not None
    for wrong in ("wrong", "Right", "right ", ""):
        assert await auth.check("bob", wrong) is None
    assert len(hasher.verified) == 5  # every wrong one was fully checked
    assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == 5  # and the right one still hits
    # Another user with the same password has an entry of their own.
    await store.create_user("carol", hasher.hash("right"))
    assert await auth.check("carol", "right") is not None
    assert len(hasher.verified) == 6


async def test_a_password_change_in_the_store_invalidates(store, hasher) -> None:
    """As ``mailstead user passwd`` does it, from another process: only the row changes."""
    user = await store.create_user("bob", hasher.hash("old"))
    auth = authenticator(store, hasher)
    assert await auth.check("bob", "old") is not None
    await store.set_password_hash(user.id, hasher.hash("new"))
    assert await auth.check("bob", "old") is None
    assert len(hasher.verified) == 2  # a miss: checked against the new hash
    assert hasher.verified[-1] != hasher.verified[0]
    assert await auth.check("bob", "new") is not None
    assert await auth.check("bob", "new") is not None
    assert len(hasher.verified) == 3
    # Even set back to the old password, the old entry does not come back (new salt).
    await store.set_password_hash(user.id, hasher.hash("old"))
    assert await auth.check("bob", "old") is not None
    assert len(hasher.verified) == 4


async def test_deleting_the_user_invalidates(store, hasher) -> None:
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher)
    assert await auth.check("bob", "right") is not None
    assert await store.delete_user("bob")
    assert await auth.check("bob", "right") is None
    assert hasher.verified[-1] is None  # the dummy hash, as for any unknown user
    # Re-created with the same name and password: a new row, so a full check first.
    await store.create_user("bob", hasher.hash("right"))
    checks = len(hasher.verified)
    assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == checks + 1


async def test_entries_expire_after_the_ttl(store, hasher) -> None:
    clock = FakeClock()
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher, cache=LoginCache(ttl=60, size=10, clock=clock))
    assert await auth.check("bob", "right") is not None
    clock.now += 59
    assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == 1
    clock.now += 1.5  # 60.5 s after the check: a hit did not extend the entry
    assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == 2
    clock.now += 30
    assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == 2


async def test_the_cache_keeps_the_most_recently_used_users(store, hasher) -> None:
    for name in ("u1", "u2", "u3"):
        await store.create_user(name, hasher.hash("pw"))
    cache = LoginCache(ttl=300, size=2)
    auth = authenticator(store, hasher, cache=cache)
    assert await auth.check("u1", "pw") and await auth.check("u2", "pw")
    assert await auth.check("u1", "pw")  # a hit: u1 is now the most recent
    assert len(hasher.verified) == 2
    assert await auth.check("u3", "pw")  # evicts u2, the least recently used
    assert len(cache) == 2
    assert await auth.check("u1", "pw") and await auth.check("u3", "pw")
    assert len(hasher.verified) == 3
    assert await auth.check("u2", "pw")
    assert len(hasher.verified) == 4
    assert len(cache) == 2


async def test_failures_are_not_cached(store, hasher) -> None:
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher)
    for _ in range(3):
        assert await auth.check("bob", "wrong") is None
        assert await auth.check("nobody", "right") is None
    assert len(hasher.verified) == 6
    assert len(auth.cache) == 0


async def test_a_zero_ttl_disables_the_cache(store, hasher) -> None:
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher, cache=LoginCache(ttl=0))
    for _ in range(3):
        assert await auth.check("bob", "right") is not None
    assert len(hasher.verified) == 3
    assert len(auth.cache) == 0


async def test_the_cache_holds_an_hmac_under_a_key_of_its_own(store, hasher) -> None:
    user = await store.create_user("bob", hasher.hash("s3cret-password"))
    one, two = LoginCache(), LoginCache()
    assert one._key != two._key and len(one._key) == 32
    one.remember(user, "s3cret-password", user.password_hash)
    assert one.verified(user, "s3cret-password")
    # The same pair is not known to another instance (another process): no shared key.
    assert not two.verified(user, "s3cret-password")
    assert one._mac(user.id, "s3cret-password") != two._mac(user.id, "s3cret-password")
    entry = one._entries[user.id]
    assert b"s3cret-password" not in entry.password_mac
    assert "s3cret-password" not in repr(entry)
    assert len(entry.password_mac) == 32  # SHA-256


async def test_a_cache_hit_is_a_success_for_the_throttle(store, hasher) -> None:
    """A hit clears the user's failures like any good login, and an address blocked
    after a burst of failures is refused before the cache is even consulted."""
    throttle = LoginThrottle(base_delay=0.0, max_delay=0.0, burst=3, block=60)
    await store.create_user("bob", hasher.hash("right"))
    auth = authenticator(store, hasher, throttle=throttle)
    assert await auth.check("bob", "right", "10.0.0.1") is not None
    for _ in range(2):
        assert await auth.check("bob", "wrong", "10.0.0.2") is None
    assert len(throttle._users["bob"].failures) == 2
    assert await auth.check("bob", "right", "10.0.0.3") is not None  # a hit
    assert "bob" not in throttle._users
    assert await auth.check("bob", "wrong", "10.0.0.2") is None  # third: blocked
    checks = len(hasher.verified)
    with pytest.raises(LoginRefused):
        await auth.check("bob", "right", "10.0.0.2")
    assert len(hasher.verified) == checks


async def test_older_argon2_parameters_are_rehashed_at_login(store) -> None:
    old_hasher = PasswordHasher(argon2=Argon2Params(2048, 2, 2))
    old_time_cost = PasswordHasher(argon2=Argon2Params(1024, 2, 1))
    hasher = CountingHasher(CHEAP)
    try:
        stored = {
            "memory": old_hasher.hash("pw"),
            "time": old_time_cost.hash("pw"),  # differs only in the time cost
            "bcrypt": bcrypt.using(rounds=4).hash("pw"),
            "current": hasher.hash("pw"),
        }
        for name, value in stored.items():
            await store.create_user(name, value)
        auth = authenticator(store, hasher)
        for name, value in stored.items():
            assert await auth.check(name, "pw") is not None
            row = await store.get_user(name)
            assert row is not None
            if name == "current":
                assert row.password_hash == value
            else:
                assert row.password_hash != value
                assert row.password_hash.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
            # The next login hits the cache: it remembered the upgraded hash.
            checks = len(hasher.verified)
            assert await auth.check(name, "pw") is not None
            assert len(hasher.verified) == checks
        assert len(hasher.verified) == 4
    finally:
        hasher.close()


def test_the_default_argon2_cost_is_owasps() -> None:
    stored = PasswordHasher().hash("pw")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    with pytest.raises(ValueError):
        Argon2Params(memory_kib=8, time_cost=1, parallelism=4)


async def test_a_burst_of_first_logins_queues_instead_of_failing(store, hasher) -> None:
    """200 different users at once, two password checks at a time: all get in."""
    stored = hasher.hash("pw")  # one hash for all: creating 200 stays quick
    for i in range(200):
        await store.create_user(f"user{i}", stored)
    auth = authenticator(store, hasher, max_in_progress=2)
    users = await asyncio.gather(*(auth.check(f"user{i}", "pw") for i in range(200)))
    assert [u.name for u in users if u is not None] == [f"user{i}" for i in range(200)]
    assert len(hasher.verified) == 200
    assert hasher.most_at_once <= 2
    assert auth.slots.running == 0 and auth.slots.queued == 0


class GatedHasher(CountingHasher):
    """Password checks wait for ``gate``, so a test holds slots as long as it likes."""

    def __init__(self) -> None:
        super().__init__(CHEAP, threads=8)
        self.gate = threading.Event()

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        self.gate.wait(60)  # the test always opens it; long, so a stalled loop cannot
        # make a held check finish by itself and free its slot early
        return super().verify(password, stored)


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_the_login_queue_is_bounded_in_length_and_time(store) -> None:
    hasher = GatedHasher()
    try:
        for name in ("bob", "ann", "cid", "dan"):  # different users: no shared check
            await store.create_user(name, hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=1, login_queue_seconds=1.0,
                             max_logins_queued=2)
        # One at a time: each check reads the user on a store thread first, and those reads
        # may finish in any order, so the first task is made to hold the slot before the
        # others queue behind it.
        running = [asyncio.create_task(auth.check("bob", "pw"))]
        await _until(lambda: auth.slots.running == 1)
        running += [asyncio.create_task(auth.check(name, "pw")) for name in ("ann", "cid")]
        await _until(lambda: auth.slots.queued == 2)
        assert auth.slots.running == 1
        with pytest.raises(LoginRefused, match="Too many logins in progress"):
            await auth.check("dan", "pw")  # the queue is full: refused at once
        loop = asyncio.get_running_loop()
        start = loop.time()
        queued = await asyncio.gather(*running[1:], return_exceptions=True)
        waited = loop.time() - start
        # The queued two gave up after the wait, with the refusal of old.
        assert all(isinstance(r, LoginRefused) for r in queued), queued
        assert 0.2 <= waited < 5
        assert auth.slots.queued == 0
        hasher.gate.set()
        user = await running[0]  # the running one still gets its answer
        assert user is not None and user.name == "bob"
        assert auth.slots.running == 0
    finally:
        hasher.gate.set()
        hasher.close()


async def test_a_queued_login_that_is_cancelled_leaves_no_slot_behind(store) -> None:
    hasher = GatedHasher()
    try:
        await store.create_user("bob", hasher.hash("pw"))
        await store.create_user("ann", hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=1, login_queue_seconds=5)
        first = asyncio.create_task(auth.check("bob", "pw"))
        queued = asyncio.create_task(auth.check("ann", "pw"))
        await asyncio.sleep(0.05)
        assert auth.slots.queued == 1
        queued.cancel()  # the client hung up while waiting
        await _until(lambda: auth.slots.queued == 0)  # its check (a task) is cancelled too
        hasher.gate.set()
        assert (await first) is not None
        assert auth.slots.running == 0
        # With the slot free again a login goes straight through (and hits the cache).
        assert await auth.check("bob", "pw") is not None
    finally:
        hasher.gate.set()
        hasher.close()


async def test_a_zero_queue_wait_refuses_at_once_as_before(store) -> None:
    hasher = GatedHasher()
    try:
        await store.create_user("bob", hasher.hash("pw"))
        await store.create_user("ann", hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=1, login_queue_seconds=0)
        first = asyncio.create_task(auth.check("bob", "pw"))
        await asyncio.sleep(0.05)
        with pytest.raises(LoginRefused):
            await auth.check("ann", "pw")
        hasher.gate.set()
        assert await first is not None
    finally:
        hasher.gate.set()
        hasher.close()


async def test_logins_waiting_for_a_slot_use_a_check_made_meanwhile(store) -> None:
    """The webmail burst: many logins of one user at once need one password check
    each only until the first has been verified."""
    hasher = GatedHasher()
    try:
        await store.create_user("bob", hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=1)
        tasks = [asyncio.create_task(auth.check("bob", "pw")) for _ in range(20)]
        await asyncio.sleep(0.05)
        hasher.gate.set()
        assert all(u is not None for u in await asyncio.gather(*tasks))
        assert len(hasher.verified) == 1
    finally:
        hasher.gate.set()
        hasher.close()


async def test_logins_of_one_user_at_once_share_one_password_check(store) -> None:
    """The reconnect storm: a user's logins that arrive while the first one's check runs
    (with free slots, so none of them queues) join that check instead of hashing again."""
    hasher = GatedHasher()
    try:
        await store.create_user("bob", hasher.hash("pw"))
        await store.create_user("ann", hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=16)
        bob = [asyncio.create_task(auth.check("bob", "pw")) for _ in range(10)]
        wrong = [asyncio.create_task(auth.check("bob", "guess")) for _ in range(3)]
        ann = asyncio.create_task(auth.check("ann", "pw"))
        await _until(lambda: len(auth._checking) == 3)  # bob/pw, bob/guess, ann/pw
        hasher.gate.set()
        assert all(u is not None and u.name == "bob" for u in await asyncio.gather(*bob))
        assert await asyncio.gather(*wrong) == [None, None, None]
        assert (await ann) is not None
        assert len(hasher.verified) == 3
        assert auth._checking == {} and auth.slots.running == 0
        # The shared check was cached: a later login of bob hashes nothing.
        assert await auth.check("bob", "pw") is not None
        assert len(hasher.verified) == 3
    finally:
        hasher.gate.set()
        hasher.close()


async def test_a_login_that_goes_away_does_not_cancel_the_shared_check(store) -> None:
    hasher = GatedHasher()
    try:
        await store.create_user("bob", hasher.hash("pw"))
        auth = authenticator(store, hasher, max_in_progress=4)
        first = asyncio.create_task(auth.check("bob", "pw"))
        await _until(lambda: len(auth._checking) == 1)
        second = asyncio.create_task(auth.check("bob", "pw"))
        await asyncio.sleep(0.01)
        first.cancel()  # the first client hung up during its check
        hasher.gate.set()
        assert (await second) is not None
        assert len(hasher.verified) == 1
    finally:
        hasher.gate.set()
        hasher.close()


def test_user_passwd_and_del_in_another_process_end_cached_logins(
    fresh_server: ServerProcess,
) -> None:
    """The real thing: a running server, the CLI changing the store beside it."""
    srv = fresh_server
    srv.add_user("bob", "first-password")
    srv.start()

    def imap_login(password: str) -> bool:
        with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=20) as client:
            try:
                client.login("bob", password)
            except imaplib.IMAP4.error:
                return False
            client.logout()
            return True

    def pop3_login(password: str) -> bool:
        client = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=20)
        try:
            client.user("bob")
            client.pass_(password)
        except poplib.error_proto:
            return False
        finally:
            client.quit()
        return True

    assert imap_login("first-password") and imap_login("first-password")
    assert pop3_login("first-password")  # the same cache serves POP3
    srv.cli("user", "passwd", "bob", "--password-stdin", input="second-password\n")
    assert not imap_login("first-password")
    assert not pop3_login("first-password")
    assert imap_login("second-password") and pop3_login("second-password")
    srv.cli("user", "del", "bob", "--yes")
    assert not imap_login("second-password")
    assert not pop3_login("second-password")
    srv.stop()
    assert "Traceback" not in srv.log_text()
