"""Resolving login names and checking credentials against the store."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from ..config import is_loopback
from ..shared import SharedThrottle
from ..store.api import MailStore, User
from ..usernames import resolve_user_name
from .cache import LoginCache
from .passwords import PasswordHasher, password_too_long
from .throttle import LoginThrottle

log = logging.getLogger(__name__)


def local_part(login: str, domains: Collection[str]) -> str | None:
    """The user name a login or address means (``usernames.parse_user_name``'s rule).

    Returns None for an address in a domain we do not serve, or for a text that is no
    user name at all.
    """
    return resolve_user_name(login, domains)


class LoginRefused(Exception):
    """The login was not even tried: the address is blocked or the server is saturated.

    ``code`` says which ("blocked" or "saturated") for the event log and the metrics."""

    def __init__(self, message: str, code: str = "saturated") -> None:
        super().__init__(message)
        self.code = code


SATURATED = "Too many logins in progress; try again later"

# A password check's outcome: (right, a replacement hash, whether a hash was verified).
Verified = tuple[bool, "str | None", bool]


class LoginSlots:
    """At most ``limit`` password checks at once; more wait their turn (first come, first
    served) for up to ``wait`` seconds, at most ``queue_max`` of them, and are refused
    (``LoginRefused``) past either bound. A burst of logins queues instead of failing,
    while a flood still cannot pile up unbounded waiters."""

    def __init__(self, limit: int, *, wait: float = 5.0, queue_max: int = 1000) -> None:
        if limit < 1:
            raise ValueError("at least one login must be allowed at a time")
        self.limit = limit
        self.wait = wait
        self.queue_max = queue_max
        self.running = 0
        # Each waiter's future gets True when a slot is handed to it, False on timeout.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        if self.wait <= 0 or len(self._waiters) >= self.queue_max:
            raise LoginRefused(SATURATED)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.wait, self._expire, waiter)
        try:
            granted = await waiter
        except asyncio.CancelledError:
            # The session went away while waiting; a slot already handed over goes on.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()
        if not granted:
            raise LoginRefused(SATURATED)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    def release(self) -> None:
        """Hand the slot to the longest waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # ``running`` stays: the slot changes hands
                return
        self.running -= 1


@dataclass
class SharedCheck:
    """One password check that several logins wait for."""

    task: asyncio.Task[Verified]
    waiters: int = 0
    claimed: bool = False  # the outcome's rehash and cache entry were taken by a login


class Authenticator:
    """Checks a user name and password; throttles failures; upgrades old hashes; keeps
    verified logins in a ``LoginCache`` so a repeated login skips the password hash."""

    def __init__(
        self,
        store: MailStore,
        hasher: PasswordHasher,
        domains: Collection[str],
        *,
        throttle: LoginThrottle | None = None,
        throttle_loopback: bool = False,
        max_in_progress: int = 16,
        cache: LoginCache | None = None,
        login_queue_seconds: float = 5.0,
        max_logins_queued: int = 1000,
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.domains = domains
        self.throttle = throttle or LoginThrottle()
        self.throttle_loopback = throttle_loopback
        # In a worker process: failures are counted by the supervisor, which announces
        # blocks to every worker (``throttle.block_ip``), so ``blocked`` stays a local look.
        self.shared_throttle: SharedThrottle | None = None
        self.max_in_progress = max_in_progress
        self.cache = cache if cache is not None else LoginCache()
        self.slots = LoginSlots(
            max_in_progress, wait=login_queue_seconds, queue_max=max_logins_queued
        )
        # Password checks running now, by (user id, stored hash, password HMAC): a login
        # that would run the same check joins it instead (a reconnect storm brings a
        # phone's, a laptop's and a webmail's logins of one user at the same moment).
        self._checking: dict[tuple[int, str, bytes], SharedCheck] = {}

    async def find_user(self, login: str) -> User | None:
        name = local_part(login, self.domains)
        if name is None:
            return None
        return await self.store.get_user(name)

    async def check(self, login: str, password: str, ip: str = "") -> User | None:
        """The user when the password is right, else None after the throttling delay.

        A wrong user name costs the same as a wrong password (a dummy hash is verified).
        A password too long to be anyone's (``password_too_long``) is not hashed at all,
        for any user: it fails like a wrong one, with the same delay and throttle record.
        A password verified within the cache's TTL against the hash the user's row still
        carries is not hashed again (a cache hit); it counts as a success like any other.
        Raises ``LoginRefused`` without checking the password when ``ip`` is blocked after
        a burst of failures, or when the password checks already running and queued
        leave no slot within the login queue's wait.
        """
        # Loopback is exempt from per-IP counting unless configured: a local admin or
        # test client must not lock everyone on 127.0.0.1 out.
        by_ip = ip if ip and (self.throttle_loopback or not is_loopback(ip)) else ""
        if by_ip and self.throttle.blocked(by_ip):
            raise LoginRefused(
                "Too many failed logins from your address; try again later", "blocked"
            )
        user: User | None = None
        ok, new_hash, hashed = False, None, False
        if not password_too_long(password):
            # The row is read on every login, cached or not: a hit needs its current hash.
            user = await self.find_user(login) if len(login) <= 320 else None
            ok = user is not None and self.cache.verified(user, password)
            if not ok:
                ok, new_hash, hashed = await self._verify_once(user, password)
        if not ok or user is None:
            key = by_ip or f"unthrottled:{ip}"
            if self.shared_throttle is not None:  # counted over every worker process
                delay = await self.shared_throttle.failure(key, login)
            else:
                delay = self.throttle.failure(key, login)
            if not by_ip:
                delay = min(delay, self.throttle.base_delay * 2)
            await asyncio.sleep(delay)
            return None
        self.throttle.success(by_ip, login)
        if self.shared_throttle is not None:
            self.shared_throttle.success(by_ip, login)
        stored = user.password_hash
        if new_hash is not None:
            try:
                await self.store.set_password_hash(user.id, new_hash)
                stored = new_hash
            except Exception:  # an upgrade that fails must not fail the login
                log.warning("could not upgrade the password hash of %s", user.name)
        if hashed:
            self.cache.remember(user, password, stored)
        return user

    async def _verify_once(self, user: User | None, password: str) -> Verified:
        """``_verify``, shared by every login that asks the same check while it runs.

        The check is a task of its own: a client that goes away while others wait for the
        same check does not cancel it for them (the last one to go does). The first login
        to receive the outcome writes the rehash and the cache entry; the rest only use it.
        """
        if user is None:
            return await self._verify(user, password)
        key = (user.id, user.password_hash, self.cache.password_key(user.id, password))
        shared = self._checking.get(key)
        if shared is None:
            task = asyncio.get_running_loop().create_task(self._verify(user, password))
            shared = self._checking[key] = SharedCheck(task)
            task.add_done_callback(lambda _: self._checking.pop(key, None))
        shared.waiters += 1
        try:
            outcome = await asyncio.shield(shared.task)
        except asyncio.CancelledError:
            if shared.waiters == 1 and not shared.task.done():
                shared.task.cancel()  # nobody else wants this check any more
            raise
        finally:
            shared.waiters -= 1
        if shared.claimed:
            return outcome[0], None, False
        shared.claimed = True
        return outcome

    async def _verify(self, user: User | None, password: str) -> Verified:
        """(ok, replacement hash, whether a hash was verified) under a login slot."""
        await self.slots.acquire()
        try:
            # Another login of this user may have been verified while this one queued.
            if user is not None and self.cache.verified(user, password):
                return True, None, False
            ok, new_hash = await self.hasher.verify_async(
                password, user.password_hash if user else None
            )
            return ok, new_hash, True
        finally:
            self.slots.release()
