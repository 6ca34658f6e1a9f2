"""Resolving login names and checking credentials against the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from ..config import is_loopback
from ..store.api import MailStore, User
from ..usernames import resolve_user_name
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
    """The login was not even tried: the address is blocked or the server is saturated."""


class Authenticator:
    """Checks a user name and password; throttles failures; upgrades old hashes."""

    def __init__(
        self,
        store: MailStore,
        hasher: PasswordHasher,
        domains: Collection[str],
        *,
        throttle: LoginThrottle | None = None,
        throttle_loopback: bool = False,
        max_in_progress: int = 16,
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.domains = domains
        self.throttle = throttle or LoginThrottle()
        self.throttle_loopback = throttle_loopback
        self.max_in_progress = max_in_progress
        self._in_progress = 0

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
        Raises ``LoginRefused`` without checking anything when ``ip`` is blocked after a
        burst of failures, or when too many password checks are already running.
        """
        # Loopback is exempt from per-IP counting unless configured: a local admin or
        # test client must not lock everyone on 127.0.0.1 out.
        by_ip = ip if ip and (self.throttle_loopback or not is_loopback(ip)) else ""
        if by_ip and self.throttle.blocked(by_ip):
            raise LoginRefused("Too many failed logins from your address; try again later")
        if self._in_progress >= self.max_in_progress:
            raise LoginRefused("Too many logins in progress; try again later")
        user: User | None = None
        ok, new_hash = False, None
        if not password_too_long(password):
            self._in_progress += 1
            try:
                user = await self.find_user(login) if len(login) <= 320 else None
                ok, new_hash = await self.hasher.verify_async(
                    password, user.password_hash if user else None
                )
            finally:
                self._in_progress -= 1
        if not ok or user is None:
            delay = self.throttle.failure(by_ip or f"unthrottled:{ip}", login)
            if not by_ip:
                delay = min(delay, self.throttle.base_delay * 2)
            await asyncio.sleep(delay)
            return None
        self.throttle.success(by_ip, login)
        if new_hash is not None:
            try:
                await self.store.set_password_hash(user.id, new_hash)
            except Exception:  # an upgrade that fails must not fail the login
                log.warning("could not upgrade the password hash of %s", user.name)
        return user
