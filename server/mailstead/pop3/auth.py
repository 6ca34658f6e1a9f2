"""The AUTHORIZATION state of a POP3 session: USER/PASS, STLS, AUTH (SASL) and what a
login does (the maildrop lock and snapshot)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..auth.policy import ConnectionLogins, Outcome
from ..auth.sasl import (
    MECHANISMS,
    SaslCancelled,
    SaslError,
    SaslExchange,
    decode_initial_response,
    decode_response,
    encode_base64,
)
from ..config import is_loopback
from ..eventlog import Event
from ..store.api import ChangeBatch, NotFound, User
from ..store.hub import Subscription
from .maildrop import Maildrop
from .session_api import Channel, CommandError, Pending, State, _safe
from .settings import POP3Settings
from .wire import CRLF, Command, Line, Overlong, err, multiline, ok

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.pop3")

PLAINTEXT_REFUSED = "Plaintext authentication is only allowed over TLS: use STLS first"


class AuthorizationCommands:
    """The AUTHORIZATION commands of ``POP3Session`` (a mixin: the state is the session's)."""

    ctx: ServerContext
    settings: POP3Settings
    channel: Channel
    state: State
    user: User | None
    maildrop: Maildrop | None
    logins: ConnectionLogins
    _last_login: dict[int, float]
    _pending_user: str | None
    _sasl: SaslExchange | None
    _locked: int | None
    _watch: Subscription | None

    if TYPE_CHECKING:  # defined by POP3Session and TransactionCommands
        def _command(self, line: Line) -> Pending: ...
        def release(self) -> None: ...
        def _on_change(self, batch: ChangeBatch) -> None: ...

    @property
    def login_allowed(self) -> bool:
        """Whether passwords may be sent on this connection now."""
        ch = self.channel
        return ch.tls_active or (
            self.settings.plaintext_on_loopback and is_loopback(ch.peer_host)
        )

    # --- AUTHORIZATION -----------------------------------------------------------------
    def _require_login_allowed(self) -> None:
        if not self.login_allowed:
            raise CommandError(PLAINTEXT_REFUSED, "AUTH")

    def _user(self, cmd: Command) -> Pending:
        self._require_login_allowed()
        self._pending_user = cmd.args[0]
        self.channel.send(ok("Send your password"))
        return None

    def _pass(self, cmd: Command) -> Pending:
        login, self._pending_user = self._pending_user, None
        self._require_login_allowed()
        if login is None:
            raise CommandError("Send USER first")
        return self._login(login, cmd.rest)

    def _stls(self, cmd: Command) -> Pending:
        if self.channel.tls_active:
            raise CommandError("TLS is already active")
        if not self.channel.tls_available:
            raise CommandError("TLS is not available")
        self.channel.start_tls(ok("Begin TLS negotiation"))
        return None

    def _auth(self, cmd: Command) -> Pending:
        if not cmd.args:  # the RFC 1734-era mechanism listing many clients still probe
            mechs = MECHANISMS if self.login_allowed else ()
            body = CRLF.join(m.encode() for m in mechs)
            self.channel.send(ok("Supported SASL mechanisms") + multiline(body))
            return None
        self._require_login_allowed()
        try:
            initial = decode_initial_response(cmd.args[1]) if len(cmd.args) > 1 else None
            self._sasl = SaslExchange.start(cmd.args[0], initial)
        except SaslError as exc:
            raise CommandError(str(exc)) from None
        return self._sasl_step()

    def _sasl_answer(self, line: Line) -> Pending:
        if isinstance(line, Overlong):
            self._sasl = None
            if line.fatal:
                return self._command(line)
            raise CommandError("Line too long; authentication aborted")
        assert self._sasl is not None
        try:
            self._sasl.feed(decode_response(line))
        except SaslCancelled:
            self._sasl = None
            raise CommandError("Authentication cancelled") from None
        except SaslError as exc:
            self._sasl = None
            raise CommandError(str(exc)) from None
        return self._sasl_step()

    def _sasl_step(self) -> Pending:
        assert self._sasl is not None
        try:
            step = self._sasl.next_step()
        except SaslError as exc:
            self._sasl = None
            raise CommandError(str(exc)) from None
        if isinstance(step, bytes):
            self.channel.send(b"+ " + encode_base64(step) + CRLF)
            return None
        mech, self._sasl = self._sasl.mechanism.upper(), None
        return self._login(step.authcid, step.password, step.authzid, mech)

    async def _login(self, login: str, password: str, authzid: str = "",
                     mech: str = "USER") -> None:
        """USER/PASS and AUTH: the login policy (auth/policy.py) in POP3 words."""
        result = await self.logins.attempt(login, password, authzid)
        outcome = result.outcome
        if outcome is Outcome.GONE:
            return
        events = self.channel.events
        if outcome is Outcome.REFUSED:
            if result.code == "blocked":
                events.emit(Event.BLOCKED, "failed_logins", user=login[:100], mech=mech)
            else:
                events.emit(Event.REFUSED, "login_queue_full", user=login[:100], mech=mech)
            raise CommandError(result.reason, "SYS/TEMP")
        if result.failed:
            events.emit(Event.LOGIN_FAILED, outcome.name.lower(), user=login[:100], mech=mech)
            self._login_failed(login, disconnect=result.disconnect)
            return
        user = result.user
        assert user is not None
        if outcome is Outcome.TOO_MANY_SESSIONS:
            events.emit(Event.REFUSED, "sessions_per_user", user=user.name, mech=mech)
            raise CommandError("Too many sessions for this user", "IN-USE")
        try:
            await self._open_maildrop(user, mech)
        except BaseException:
            self.logins.release()  # no session after all: its slot goes back
            raise

    async def _open_maildrop(self, user: User, mech: str) -> None:
        events = self.channel.events
        delay = self.settings.login_delay
        if delay > 0:
            last = self._last_login.get(user.id)
            wait = 0.0 if last is None else last + delay - time.monotonic()
            if wait > 0:
                events.emit(Event.REFUSED, "login_delay", user=user.name, mech=mech)
                raise CommandError(f"Wait {int(wait) + 1} more seconds before logging in again",
                                   "LOGIN-DELAY")
        store = self.ctx.store
        if not store.try_lock_maildrop(user.id):
            self.ctx.count("pop3_in_use")
            events.emit(Event.REFUSED, "maildrop_in_use", user=user.name, mech=mech)
            raise CommandError("Maildrop already locked", "IN-USE")
        self._locked = user.id
        try:
            inbox = await store.get_mailbox(user.id, "INBOX")
            if inbox is None:
                raise NotFound("INBOX does not exist")
            rows = await store.list_maildrop(inbox.id)
        except NotFound:
            self.release()
            log.error("pop3 login of %s: INBOX does not exist", _safe(user.name))
            raise CommandError("Your INBOX does not exist", "SYS/PERM") from None
        except BaseException:
            self.release()
            raise
        self.user = user
        self.maildrop = Maildrop.of_rows(inbox.id, inbox.uidvalidity, rows)
        # Messages expunged elsewhere (IMAP) must not be served from the read-ahead.
        self._watch = self.ctx.hub.subscribe(inbox.id, self._on_change)
        self.state = State.TRANSACTION
        self.channel.login_succeeded()
        self._last_login[user.id] = time.monotonic()
        self.ctx.count("logins", protocol="pop3", result="ok")
        count, size = self.maildrop.stat()
        events.user, events.mech = user.name, mech
        events.emit(Event.LOGIN, detail=f"{count} messages")
        self.channel.send(ok(f"Maildrop locked and ready, {count} messages ({size} octets)"))

    def _login_failed(self, login: str, *, disconnect: bool) -> None:
        self.ctx.count("logins", protocol="pop3", result="failed")
        # The Authenticator already waited (exponentially, per address and user).
        if disconnect:
            self.channel.send(err("Authentication failed; too many failures, goodbye", "AUTH"))
            self.channel.close()
            return
        # (An authzid naming someone else reads like bad credentials: POP3 has no code
        # for it, RFC 2449 §8.)
        raise CommandError("Authentication failed", "AUTH")
