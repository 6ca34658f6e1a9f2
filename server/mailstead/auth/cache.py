"""A cache of verified logins, like Dovecot's auth cache, so repeated logins skip argon2.

Webmail logs in once per page and phones reconnect constantly; each full check costs a
password hash. After a successful check the cache remembers, per user id:

- an HMAC-SHA256 of the password under a random key made for this cache (so per process):
  never the password, and useless outside this process's memory;
- the stored password hash the password was verified against;
- when the entry expires (``ttl`` seconds after the check; a hit does not extend it).

A lookup is given the user row the login just read from the store. It is a hit only when
that row still carries the same stored hash: ``mailstead user passwd`` and ``user del`` run
in another process and cannot reach this memory, but they change (or remove) the row, so a
changed password is a miss (and a full check) and a deleted user never gets this far.
Failed checks are never stored. The cache is bounded: least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..store.api import User


@dataclass(frozen=True, slots=True)
class _Entry:
    password_mac: bytes
    stored_hash: str
    expires: float


class LoginCache:
    """Verified (user, password) pairs for ``ttl`` seconds, at most ``size`` users.

    ``ttl`` 0 (or ``size`` 0) disables the cache: nothing is stored, every lookup misses."""

    def __init__(
        self,
        ttl: float = 300.0,
        size: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or size < 0:
            raise ValueError("login cache ttl and size must not be negative")
        self.ttl = ttl
        self.size = size
        self._clock = clock
        # Per instance, so per process: a MAC seen elsewhere (a core dump of another
        # worker, say) says nothing here, and a restart forgets every entry.
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    def __len__(self) -> int:
        return len(self._entries)

    def _mac(self, user_id: int, password: str) -> bytes:
        # The user id is part of the message, so two users with one password do not
        # share a MAC. surrogatepass: a lone surrogate must not raise (it just never hits).
        message = b"%d\0" % user_id + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def password_key(self, user_id: int, password: str) -> bytes:
        """The HMAC this cache would keep for ``password``: lets logins of one user with one
        password be recognised as the same check without holding the password."""
        return self._mac(user_id, password)

    def verified(self, user: User, password: str) -> bool:
        """True when ``password`` was verified for ``user`` against the hash the row
        still carries, within the TTL."""
        if not self.enabled:
            return False
        entry = self._entries.get(user.id)
        if entry is None:
            return False
        if entry.expires <= self._clock() or entry.stored_hash != user.password_hash:
            # Expired, or the password was changed (or the user re-created) since.
            del self._entries[user.id]
            return False
        if not hmac.compare_digest(entry.password_mac, self._mac(user.id, password)):
            # A wrong password (or another of the user's clients with an old one): the
            # entry stays, so a guesser cannot make the real user pay a full check.
            return False
        self._entries.move_to_end(user.id)
        return True

    def remember(self, user: User, password: str, stored_hash: str) -> None:
        """Record a successful full check of ``password`` against ``stored_hash`` (the
        hash now in the store: the row's, or its upgrade written at this login)."""
        if not self.enabled:
            return
        self._entries[user.id] = _Entry(
            self._mac(user.id, password), stored_hash, self._clock() + self.ttl
        )
        self._entries.move_to_end(user.id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, user_id: int) -> None:
        """Drop the user's entry (a password change made in this process)."""
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._entries.clear()
