"""The POP3 state machine (RFC 1939, RFC 2449, RFC 2595 STLS, RFC 5034 AUTH).

A ``POP3Session`` receives one line at a time from its connection, strictly in order, and
answers through a ``Channel``; it knows nothing about Twisted. ``handle_now`` answers a
command at once when it needs no store call, and otherwise returns the rest of its work as
an awaitable that must complete before the next line is handed in, so pipelined commands
are answered in order while the common ones cost no task switch. Every failure becomes an
``-ERR`` and the session goes on; unexpected ones are logged and answered
``-ERR [SYS/TEMP]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth.sasl import SaslExchange
from ..eventlog import Event
from ..store.api import StoreError, User
from ..store.hub import Subscription
from ..store.reads_api import Octets
from .auth import AuthorizationCommands
from .maildrop import Maildrop
from .session_api import Channel, CommandError, Pending, State
from .settings import POP3Settings, capabilities
from .transaction import TransactionCommands
from .wire import (
    CRLF,
    MAX_COMMAND_LINE,
    Command,
    CommandSyntaxError,
    Line,
    Overlong,
    err,
    multiline,
    ok,
    parse_command,
)

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.pop3")


AUTH, TRANS = frozenset({State.AUTHORIZATION}), frozenset({State.TRANSACTION})
BOTH = AUTH | TRANS


@dataclass(frozen=True, slots=True)
class _Spec:
    method: str
    states: frozenset[State]
    min_args: int
    max_args: int


_COMMANDS: dict[str, _Spec] = {
    "CAPA": _Spec("_capa", BOTH, 0, 0),
    "QUIT": _Spec("_quit", BOTH, 0, 0),
    "USER": _Spec("_user", AUTH, 1, 1),
    "PASS": _Spec("_pass", AUTH, 1, 1_000),  # the password is the rest of the line
    "AUTH": _Spec("_auth", AUTH, 0, 2),
    "STLS": _Spec("_stls", AUTH, 0, 0),
    "STAT": _Spec("_stat", TRANS, 0, 0),
    "LIST": _Spec("_list", TRANS, 0, 1),
    "UIDL": _Spec("_uidl", TRANS, 0, 1),
    "RETR": _Spec("_retr", TRANS, 1, 1),
    "TOP": _Spec("_top", TRANS, 2, 2),
    "DELE": _Spec("_dele", TRANS, 1, 1),
    "RSET": _Spec("_rset", TRANS, 0, 0),
    "NOOP": _Spec("_noop", TRANS, 0, 0),
}


class POP3Session(AuthorizationCommands, TransactionCommands):
    """One client's POP3 conversation, from greeting to QUIT or disconnect."""

    def __init__(
        self,
        ctx: ServerContext,
        settings: POP3Settings,
        channel: Channel,
        last_login: dict[int, float] | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.channel = channel
        self.state = State.AUTHORIZATION
        self.user: User | None = None
        self.maildrop: Maildrop | None = None
        self.logins = ctx.connections.logins.connection(channel.peer_host)
        self._last_login = last_login if last_login is not None else {}
        self._pending_user: str | None = None
        self._sasl: SaslExchange | None = None
        self._locked: int | None = None  # user id whose maildrop lock we hold
        self._seen_pending: list[int] = []  # UIDs retrieved whose \Seen is not yet stored
        self._seen_task: asyncio.Task[None] | None = None
        self._seen_now = asyncio.Event()  # set: write the pending flags without waiting
        self._read_ahead: dict[int, Octets] = {}  # uid -> octets of RETR/TOP to come
        self._prefetch: asyncio.Task[None] | None = None  # reading the next messages
        self._prefetch_uids: set[int] = set()
        self._expunged: set[int] = set()  # UIDs removed by others during this session
        self._watch: Subscription | None = None

    # --- entry points ------------------------------------------------------------------
    def greeting(self) -> bytes:
        return ok(f"{self.settings.hostname} Mailstead POP3 server ready")

    async def handle(self, line: Line) -> None:
        """Process one received line completely; never raises."""
        rest = self.handle_now(line)
        if rest is not None:
            await rest

    def handle_now(self, line: Line) -> Pending:
        """Answer ``line`` now if that needs no store call, and return None. Otherwise
        return an awaitable doing the rest; await it before handing in the next line.
        Neither this nor the awaitable raises: failures are answered ``-ERR``."""
        try:
            rest = self._sasl_answer(line) if self._sasl is not None else self._command(line)
        except Exception as exc:
            self._failed(exc)
            return None
        return None if rest is None else self._guarded(rest)

    async def _guarded(self, rest: Awaitable[None]) -> None:
        try:
            await rest
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, CommandError):
            self.channel.send(err(exc.text, exc.code))
        elif isinstance(exc, StoreError):
            log.error("pop3 store error for %s: %s", self.channel.peer, exc)
            self.channel.send(err("Temporary server failure, try again later", "SYS/TEMP"))
        else:
            log.error("pop3 command failed for %s", self.channel.peer, exc_info=exc)
            self.channel.send(err("Internal server error, try again later", "SYS/TEMP"))

    def connection_lost(self) -> None:
        """The client is gone: the session slot goes back now, also in mid-login."""
        self.logins.connection_closed()

    def release(self) -> None:
        """Give the maildrop lock back; safe to call any number of times."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._locked is not None:
            user_id, self._locked = self._locked, None
            self.ctx.store.unlock_maildrop(user_id)

    # --- dispatch ----------------------------------------------------------------------
    def _command(self, line: Line) -> Pending:
        # AUTH may carry a long initial response; it gets the SASL line cap (LineBuffer's).
        if isinstance(line, Overlong) and line.fatal:
            log.warning("pop3 line of over %d octets from %s: closing", line.length,
                        self.channel.peer)
            self.channel.send(err("Line too long, closing connection"))
            self.channel.close()
            return None
        if isinstance(line, Overlong) or (
            len(line) > MAX_COMMAND_LINE and line[:5].upper() != b"AUTH "
        ):
            self._pending_user = None
            raise CommandError("Line too long")
        try:
            cmd = parse_command(line)
        except CommandSyntaxError as exc:
            self._pending_user = None
            raise CommandError(str(exc)) from None
        spec = _COMMANDS.get(cmd.name)
        if cmd.name != "PASS":
            self._pending_user = None  # PASS must follow USER immediately (RFC 1939 §7)
        if spec is None:
            raise CommandError(f"Unknown command {cmd.name}")
        if self.state not in spec.states:
            if self.state is State.TRANSACTION:
                raise CommandError(f"{cmd.name} is not valid after login")
            raise CommandError(f"{cmd.name} is only valid after login")
        if len(cmd.args) < spec.min_args:
            raise CommandError(f"Missing argument to {cmd.name}")
        if len(cmd.args) > spec.max_args:
            raise CommandError(f"Too many arguments to {cmd.name}")
        handler: Callable[[Command], Pending] = getattr(self, spec.method)
        self.ctx.count("commands", protocol="pop3", command=cmd.name)
        started = time.perf_counter()
        try:
            rest = handler(cmd)
        except BaseException:
            self.ctx.observe("command", time.perf_counter() - started,
                             protocol="pop3", command=cmd.name)
            raise
        if rest is None:
            self.ctx.observe("command", time.perf_counter() - started,
                             protocol="pop3", command=cmd.name)
            return None
        return self._timed(rest, cmd.name, started)

    async def _timed(self, rest: Awaitable[None], name: str, started: float) -> None:
        try:
            await rest
        finally:
            self.ctx.observe("command", time.perf_counter() - started,
                             protocol="pop3", command=name)

    # --- any state ---------------------------------------------------------------------
    def _capa(self, cmd: Command) -> Pending:
        ch = self.channel
        caps = capabilities(
            self.settings,
            login_allowed=self.login_allowed,
            stls=self.state is State.AUTHORIZATION and ch.tls_available and not ch.tls_active,
        )
        ch.send(ok("Capability list follows") + multiline(CRLF.join(c.encode() for c in caps)))
        return None

    def _quit(self, cmd: Command) -> Pending:
        self.channel.events.emit(Event.LOGOUT)
        if self.state is State.AUTHORIZATION:
            self.channel.send(ok("Bye"))
            self.channel.close()
            return None
        return self._update()

    async def _update(self) -> None:
        """RFC 1939 §6: apply the deletions in one transaction, then say goodbye."""
        assert self.maildrop is not None
        self.state = State.UPDATE
        uids = self.maildrop.deleted_uids()
        gone = set(uids)
        self._seen_pending = [uid for uid in self._seen_pending if uid not in gone]
        await self.flush_seen()
        removed: list[int] = []
        if uids:
            try:
                removed = await self.ctx.store.expunge(self.maildrop.mailbox_id, uids)
            except Exception as exc:
                log.error("pop3 QUIT of %s could not delete %d messages: %s",
                          self._who(), len(uids), exc)
                self.release()
                self.channel.send(err("Could not delete messages; none were deleted",
                                      "SYS/TEMP"))
                self.channel.close()
                return
        self.ctx.count("pop3_deleted", len(removed))
        self.release()
        self.channel.send(ok(f"Bye ({len(uids)} messages deleted)"))
        self.channel.close()
