"""Password hashing and verification (passlib, provided by the ``libpass`` distribution).

argon2id is the default, at ``Argon2Params`` cost (OWASP's recommendation for an interactive
server unless configured otherwise); an argon2 hash made with other parameters (type, memory,
time cost or parallelism) is rehashed at the next successful login. bcrypt
(``$2a$``/``$2b$``/``$2y$``), sha512-crypt, sha256-crypt, argon2i and salted SHA-512
(``{SSHA512}``, passlib's ``ldap_salted_sha512``) hashes imported from other servers
(``mailstead user import-passwd``) are accepted and upgraded to argon2id at the next
successful login. There is deliberately no ``plaintext`` scheme: a stored string must never
verify as its own password.

Verification costs ~20 ms of CPU and 19 MiB at the default cost (~140 ms and 64 MiB at the
former m = 64 MiB, t = 3, p = 4), so the async helpers run it on a thread pool of its own,
sized to the cores: a password check never waits behind SEARCH matching or store reads in
asyncio's default executor, and no more checks run at once than the cores can work on.
Passwords longer than ``MAX_PASSWORD_OCTETS`` never verify (passlib raises
``PasswordSizeError`` past 4,096 characters; no password we store is that long:
``mailstead user`` accepts 1,024 characters).

bcrypt reads only the first 72 octets of a password, and bcrypt 5 raises instead of
truncating. Following passlib's guidance, ``default_scheme = "bcrypt"`` makes new hashes with
``bcrypt_sha256`` (the password is HMAC-SHA256'd first, so every octet counts and there is no
72-octet limit). A plain bcrypt hash (imported from another server) never verifies a password
over 72 octets: it is an ordinary failed login, with the same cost, not an error, and never a
match on the first 72 octets alone.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from passlib.context import CryptContext

SCHEMES = [
    "argon2", "bcrypt_sha256", "bcrypt", "sha512_crypt", "sha256_crypt", "ldap_salted_sha512",
]

# ``default_scheme`` (the configuration's word) → the passlib scheme new hashes get.
NEW_HASH_SCHEME = {"bcrypt": "bcrypt_sha256"}

# What bcrypt itself reads of a password.
BCRYPT_MAX_OCTETS = 72

# Octets of UTF-8; 1,024 characters (the CLI's limit) are at most 4,096 octets.
MAX_PASSWORD_OCTETS = 4096


def password_too_long(password: str) -> bool:
    """True when ``password`` cannot be any user's password, checked without hashing."""
    # More than 4 octets per character is impossible, so the length alone often answers.
    if len(password) * 4 <= MAX_PASSWORD_OCTETS:
        return False
    return len(password) > MAX_PASSWORD_OCTETS or (
        len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_OCTETS
    )


def default_threads() -> int:
    """Threads for password hashing: one per core this process may run on, at least 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, cores)


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost. The defaults are OWASP's recommendation for an interactive server
    (m = 19 MiB, t = 2, p = 1): a login stays cheap enough for webmail and reconnect storms."""

    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1

    def __post_init__(self) -> None:
        if self.time_cost < 1 or self.parallelism < 1:
            raise ValueError("argon2 time cost and parallelism must be at least 1")
        if self.memory_kib < 8 * self.parallelism:  # argon2's own lower bound
            raise ValueError("argon2 memory must be at least 8 KiB per lane of parallelism")


def make_context(default: str = "argon2", argon2: Argon2Params | None = None) -> CryptContext:
    params = argon2 or Argon2Params()
    default = NEW_HASH_SCHEME.get(default, default)
    # ``rounds`` also sets passlib's desired minimum and maximum, so ``needs_update`` (and
    # thus ``verify_and_update``) flags an argon2 hash of another time cost, as it does
    # one of another type, memory or parallelism.
    return CryptContext(
        schemes=SCHEMES,
        default=default,
        deprecated=[s for s in SCHEMES if s != default],
        argon2__type="ID",
        argon2__memory_cost=params.memory_kib,
        argon2__rounds=params.time_cost,
        argon2__parallelism=params.parallelism,
        # Never hash a truncated password with plain bcrypt (only reachable if it were the
        # default, which ``NEW_HASH_SCHEME`` prevents).
        bcrypt__truncate_error=True,
    )


def bcrypt_refuses(password: str, stored: str) -> bool:
    """True when ``stored`` is a plain bcrypt hash and ``password`` is longer than bcrypt
    reads: such a password must fail, not match on its first 72 octets (or raise)."""
    return stored.startswith(("$2a$", "$2b$", "$2y$", "$2x$", "$2$")) and (
        len(password.encode("utf-8", "surrogatepass")) > BCRYPT_MAX_OCTETS
    )


class PasswordHasher:
    """Hash, verify and upgrade passwords without blocking the event loop."""

    def __init__(
        self,
        default: str = "argon2",
        *,
        argon2: Argon2Params | None = None,
        threads: int | None = None,
    ) -> None:
        self.context = make_context(default, argon2)
        # Verified against when the user does not exist, so that a wrong user name
        # costs the same time as a wrong password.
        self._dummy = self.context.hash("mailstead-dummy-password")
        self.threads = threads if threads is not None else default_threads()
        if self.threads < 1:
            raise ValueError("a password hasher needs at least one thread")
        self._pool: ThreadPoolExecutor | None = None  # made at first use: CLI runs need none

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="password-hash")
        return self._pool

    def close(self) -> None:
        """Stop the hashing threads (idle ones exit at once, a running check finishes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def hash(self, password: str) -> str:
        return self.context.hash(password)

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, replacement hash or None). ``stored`` None still spends the time.

        An over-long password is refused before hashing (callers normally check
        ``password_too_long`` first, to skip even the thread hop)."""
        if password_too_long(password):
            return False, None
        if stored is not None and bcrypt_refuses(password, stored):
            self.context.verify(password, self._dummy)  # the same cost as a wrong password
            return False, None
        try:
            ok, new = self.context.verify_and_update(password, stored or self._dummy)
        except (ValueError, TypeError):  # an unknown or malformed stored hash
            self.context.verify(password, self._dummy)
            return False, None
        if stored is None:
            return False, None
        return ok, new

    async def verify_async(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self.verify, password, stored)

    async def hash_async(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self.hash, password)
