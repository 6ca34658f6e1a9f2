"""The one login policy of IMAP and POP3.

Every login of either protocol goes through ``ConnectionLogins.attempt``, which applies,
in this order:

* the authorization identity rule: a SASL authzid must name the user who authenticates
  (nobody may act as someone else here; RFC 4616 §2 leaves the decision to the server),
  checked before any password, so it reveals nothing about one;
* the password check with its throttling (``Authenticator``: a delay growing with the
  recent failures of the address and the user, a block after a burst);
* the failures per connection: the ``[auth] max_failures_per_connection``-th failure on
  one connection ends it;
* the sessions per user (``[limits] max_sessions_per_user``), counted over IMAP and POP3
  together. A slot is taken in the same step as the successful check returns, and only if
  the connection is still open: a client that went away while its password was being
  verified takes no slot, so none can leak (issue 12 #6).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass

from ..config import Config
from ..store.api import User
from .users import Authenticator, LoginRefused, local_part

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    FAILED = "failed"  # wrong credentials
    NOT_AUTHORIZED = "not authorized"  # an authzid naming someone else
    REFUSED = "refused"  # not even tried: address blocked, or too many checks at once
    TOO_MANY_SESSIONS = "too many sessions"
    GONE = "gone"  # the connection closed while the password was being checked


@dataclass(frozen=True, slots=True)
class LoginResult:
    outcome: Outcome
    user: User | None = None
    reason: str = ""  # why a REFUSED login was refused, fit for the client
    code: str = ""  # the same as a code: "blocked" or "saturated" (``LoginRefused.code``)
    disconnect: bool = False  # a failure that was this connection's last allowed one

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.FAILED, Outcome.NOT_AUTHORIZED)


class LoginPolicy:
    """Shared by every IMAP and POP3 connection of one server."""

    def __init__(
        self,
        auth: Authenticator,
        domains: Collection[str],
        *,
        max_failures_per_connection: int = 3,
        max_sessions_per_user: int = 50,
    ) -> None:
        self.auth = auth
        self.domains = domains
        self.max_failures = max_failures_per_connection
        self.max_sessions = max_sessions_per_user
        self._sessions: dict[int, int] = {}

    @classmethod
    def from_config(cls, config: Config, auth: Authenticator) -> LoginPolicy:
        return cls(
            auth,
            config.domains,
            max_failures_per_connection=config.auth.max_failures_per_connection,
            max_sessions_per_user=config.limits.max_sessions_per_user,
        )

    def connection(self, peer_host: str) -> ConnectionLogins:
        """The login state of one new connection from ``peer_host``."""
        return ConnectionLogins(self, peer_host)

    def may_act_as(self, authzid: str, authcid: str) -> bool:
        """The authorization identity rule: empty, or the authenticating user's own name."""
        if not authzid:
            return True
        a, b = local_part(authzid, self.domains), local_part(authcid, self.domains)
        return a is not None and b is not None and a.lower() == b.lower()

    def sessions_of(self, user_id: int) -> int:
        return self._sessions.get(user_id, 0)

    def _take_slot(self, user_id: int) -> bool:
        held = self._sessions.get(user_id, 0)
        if held >= self.max_sessions:
            return False
        self._sessions[user_id] = held + 1
        return True

    def _give_slot(self, user_id: int) -> None:
        held = self._sessions.get(user_id, 0) - 1
        if held > 0:
            self._sessions[user_id] = held
        else:
            self._sessions.pop(user_id, None)


class ConnectionLogins:
    """One connection's side of the policy: its failures, its session slot, its end."""

    def __init__(self, policy: LoginPolicy, peer_host: str) -> None:
        self.policy = policy
        self.peer_host = peer_host
        self.failures = 0
        self._slot: int | None = None  # the user id whose session slot this connection holds
        self._closed = False

    @property
    def holds_slot(self) -> bool:
        return self._slot is not None

    async def attempt(self, login: str, password: str, authzid: str = "") -> LoginResult:
        """Check one login; never raises for bad input (it is a failed login)."""
        policy = self.policy
        if self._closed:
            return LoginResult(Outcome.GONE)
        if not policy.may_act_as(authzid, login):
            return self._failure(Outcome.NOT_AUTHORIZED)
        try:
            user = await policy.auth.check(login, password, self.peer_host)
        except LoginRefused as exc:
            return LoginResult(Outcome.REFUSED, reason=str(exc), code=exc.code)
        # Nothing may await between here and taking the slot: connection_closed() runs
        # on the same loop, so either it ran already (and we see it) or it runs later
        # (and gives the slot back).
        if self._closed:
            return LoginResult(Outcome.GONE, user)
        if user is None:
            return self._failure(Outcome.FAILED)
        if self._slot is not None:  # a second login on one connection: keep the one slot
            self.release()
        if not policy._take_slot(user.id):
            return LoginResult(Outcome.TOO_MANY_SESSIONS, user)
        self._slot = user.id
        return LoginResult(Outcome.ACCEPTED, user)

    def _failure(self, outcome: Outcome) -> LoginResult:
        self.failures += 1
        return LoginResult(outcome, disconnect=self.failures >= self.policy.max_failures)

    def release(self) -> None:
        """Give the session slot back (the login did not lead to a session after all)."""
        if self._slot is not None:
            user_id, self._slot = self._slot, None
            self.policy._give_slot(user_id)

    def connection_closed(self) -> None:
        """The connection is gone: give the slot back, and take none later."""
        self._closed = True
        self.release()
