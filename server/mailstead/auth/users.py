"""Resolving login names and checking credentials against the store."""

from __future__ import annotations

import logging

from ..store.api import MailStore, User
from .passwords import PasswordHasher

log = logging.getLogger(__name__)


def local_part(login: str, domains: list[str]) -> str | None:
    """The user name a login or address means: ``name`` or ``name@local-domain``.

    Returns None for an address in a domain we do not serve.
    """
    login = login.strip()
    if "@" not in login:
        return login
    name, _, domain = login.rpartition("@")
    if domain.lower() not in domains or not name:
        return None
    return name


class Authenticator:
    """Checks a user name and password; upgrades old hashes after a success."""

    def __init__(self, store: MailStore, hasher: PasswordHasher, domains: list[str]) -> None:
        self.store = store
        self.hasher = hasher
        self.domains = domains

    async def find_user(self, login: str) -> User | None:
        name = local_part(login, self.domains)
        if name is None:
            return None
        return await self.store.get_user(name)

    async def check(self, login: str, password: str) -> User | None:
        """The user when the password is right, else None (same cost either way)."""
        user = await self.find_user(login) if len(login) <= 320 else None
        ok, new_hash = await self.hasher.verify_async(
            password, user.password_hash if user else None
        )
        if not ok or user is None:
            return None
        if new_hash is not None:
            try:
                await self.store.set_password_hash(user.id, new_hash)
            except Exception:  # an upgrade that fails must not fail the login
                log.warning("could not upgrade the password hash of %s", user.name)
        return user
