"""Password hashing and verification (passlib, provided by the ``libpass`` distribution).

argon2id is the default; bcrypt (``$2a$``/``$2b$``/``$2y$``), sha512-crypt, sha256-crypt,
argon2i and salted SHA-512 (``{SSHA512}``, passlib's ``ldap_salted_sha512``) hashes imported
from other servers (``mailstead user import-passwd``) are accepted and upgraded to argon2id at
the next successful login. There is deliberately no ``plaintext`` scheme: a stored string
must never verify as its own password.
Verification costs ~100 ms of CPU, so the async helpers run it in a thread.
"""

from __future__ import annotations

import asyncio

from passlib.context import CryptContext

SCHEMES = ["argon2", "bcrypt", "sha512_crypt", "sha256_crypt", "ldap_salted_sha512"]


def make_context(default: str = "argon2") -> CryptContext:
    return CryptContext(
        schemes=SCHEMES,
        default=default,
        deprecated=[s for s in SCHEMES if s != default],
        argon2__type="ID",
    )


class PasswordHasher:
    """Hash, verify and upgrade passwords without blocking the event loop."""

    def __init__(self, default: str = "argon2") -> None:
        self.context = make_context(default)
        # Verified against when the user does not exist, so that a wrong user name
        # costs the same time as a wrong password.
        self._dummy = self.context.hash("mailstead-dummy-password")

    def hash(self, password: str) -> str:
        return self.context.hash(password)

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, replacement hash or None). ``stored`` None still spends the time."""
        try:
            ok, new = self.context.verify_and_update(password, stored or self._dummy)
        except (ValueError, TypeError):  # an unknown or malformed stored hash
            self.context.verify(password, self._dummy)
            return False, None
        if stored is None:
            return False, None
        return ok, new

    async def verify_async(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        return await asyncio.to_thread(self.verify, password, stored)

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.hash, password)
