"""IMAPSession: the per-connection state machine that joins the syntax, the handlers
and the store.

The protocol (``protocol.py``) feeds it bytes; the reader (``syntax/reader.py``) frames
them, ``syntax.parse_command`` types them, and the session runs commands one at a time
in arrival order (pipelined commands are answered in order even though the store is
asynchronous) through the handler table (``handlers.HANDLERS``), writes untagged and
tagged responses through an ``Output``, and reports the selected mailbox's pending
changes when RFC 3501 allows (``session_updates.py``: before a tagged response, and pushed
under IDLE). It implements ``session_api.Session``, the protocol the handlers are written
against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..auth.policy import ConnectionLogins, Outcome
from ..config import is_loopback
from ..connection import InputBudget
from ..eventlog import Event, SessionEvents
from ..store.api import LimitExceeded, StorageFull, StoreError, User
from .handlers import HANDLERS
from .response import CommandFailed, Result, bad, no, ok
from .selected import SelectedMailbox
from .session_api import NOT_AUTHENTICATED, Link, Output, State
from .session_updates import MailboxUpdates
from .syntax import parse_command
from .syntax.fetch import Fetch
from .syntax.reader import (
    LITERAL_MINUS_MAX,
    CommandReader,
    Continue,
    Fatal,
    RawCommand,
    RawLine,
    Reject,
)
from .syntax.search import Search
from .syntax.store import Store
from .syntax.tokens import Command, ParseError

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.imap")


# Pipelined commands waiting to run; past this (or [limits] max_queued_input_bytes of
# them) we stop reading from the client.
MAX_QUEUED_COMMANDS = 256
# Before login every literal is small (passwords, user names): LITERAL- (RFC 7888 §5)
# is advertised, and no larger literal is read.
PREAUTH_LITERAL = LITERAL_MINUS_MAX
# After login: literals other than APPEND's (names, search strings).
MAX_OTHER_LITERAL = 1024 * 1024


# FETCH, STORE and SEARCH must not be answered with EXPUNGE (RFC 3501 §7.4.1);
# their UID forms may be.
_NO_EXPUNGE = (Fetch, Store, Search)


class IMAPSession(MailboxUpdates):
    """State and command loop of one IMAP connection."""

    def __init__(
        self,
        ctx: ServerContext,
        out: Output,
        *,
        peer: str,
        tls_active: bool,
        link: Link | None = None,
        events: SessionEvents | None = None,
    ) -> None:
        self.ctx = ctx
        self.link = link
        self.events = events or SessionEvents("imap", peer, tls=tls_active, count=ctx.count)
        self.out = out
        self.peer = peer
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.user: User | None = None
        self.selected: SelectedMailbox | None = None
        self._subscription: Any = None
        self.condstore = False
        self.idling = False
        services = ctx.connections
        self.logins: ConnectionLogins = services.logins.connection(peer)
        self.reader = CommandReader(
            max_line=ctx.config.limits.max_line_length, max_literal=PREAUTH_LITERAL,
            max_other_literal=PREAUTH_LITERAL, max_nonsync_literal=LITERAL_MINUS_MAX,
        )
        self._queue: deque[tuple[Any, int]] = deque()  # (reader event, its octets)
        self.input = InputBudget(
            out, max_items=MAX_QUEUED_COMMANDS, max_bytes=services.settings.max_queued_input
        )
        self._task: asyncio.Task[None] | None = None
        self._line_waiter: asyncio.Future[RawLine] | None = None
        self._shutdown_reason: str | None = None
        self._push_scheduled = False
        self.busy = False

    # --- capabilities --------------------------------------------------------------
    @property
    def plaintext_ok(self) -> bool:
        return self.tls_active or (
            self.ctx.config.auth.plaintext_on_loopback and is_loopback(self.peer)
        )

    def capabilities(self) -> list[str]:
        # LITERAL- before login: only small literals are accepted then (RFC 7888 §5).
        literal = "LITERAL-" if self.state is State.NOT_AUTHENTICATED else "LITERAL+"
        caps = ["IMAP4rev1", literal, "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.ctx.tls is not None and not self.tls_active:
                caps.append("STARTTLS")
            if self.plaintext_ok:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
            return caps
        return [
            *caps,
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "CHILDREN",
            "ESEARCH",
            "CONDSTORE",
            f"APPENDLIMIT={self.ctx.config.limits.max_message_size}",
        ]

    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        return f"* OK [CAPABILITY {caps}] Mailstead {__version__} ready\r\n".encode()

    # --- input ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> bool:
        """Take octets from the client; True when they framed something (activity)."""
        events = self.reader.feed(data)
        self.accept(events)
        return bool(events) or self.reader.reading_literal

    def accept(self, events: list[Any]) -> None:
        """Queue reader events; continuation requests and awaited lines act at once."""
        budget = self.input
        for ev in events:
            if isinstance(ev, Continue):
                self.out.write(ev.response())
            elif isinstance(ev, RawLine) and self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                if not waiter.done():
                    waiter.set_result(ev)
            elif isinstance(ev, Fatal):
                # Nothing more is read; what was queued is dropped with the connection.
                self._queue.clear()
                budget.clear()
                self._queue.append((ev, 0))
                self.out.pause_reading()
            else:
                size = ev.size if isinstance(ev, RawCommand) else 0
                self._queue.append((ev, size))
                budget.queued(size)
        self._check_input()
        if self._queue and (self._task is None or self._task.done()):
            self._task = self.ctx.loop.create_task(self._run())

    def _check_input(self) -> None:
        busy = self.busy or bool(self._queue)
        self.input.check(busy=busy, framing=self.reader.pending)

    def discard_pending_input(self) -> None:
        """Drop what was read but not yet run (plaintext pipelined behind STARTTLS)."""
        self.reader.discard_buffer()
        self._queue.clear()
        self.input.clear()

    async def read_line(self) -> RawLine:
        """The next raw line (IDLE's DONE, an AUTHENTICATE response)."""
        fut: asyncio.Future[RawLine] = self.ctx.loop.create_future()
        self._line_waiter = fut
        self.accept(self.reader.expect_line())
        return await fut

    async def _run(self) -> None:
        while self._queue and not self.out.closed:
            ev, size = self._queue.popleft()
            self.input.taken(size)
            self.busy = True
            try:
                await self._dispatch(ev)
            except Exception:
                log.exception("IMAP session %s: internal error", self.peer)
                self.out.write(b"* BYE Internal server error\r\n")
                self.close()
                return
            finally:
                self.busy = False
            self._check_input()
            await self.out.drain()
            if self._shutdown_reason is not None:
                self._say_bye(self._shutdown_reason)
                return

    async def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, Reject):
            self.out.write(ev.response())
            return
        if isinstance(ev, Fatal):
            self.out.write(f"* BYE {ev.text}\r\n".encode())
            self.close()
            return
        if isinstance(ev, RawLine):
            self.out.write(b"* BAD Unexpected continuation line\r\n")
            return
        if not isinstance(ev, RawCommand):
            return
        cmd = parse_command(ev)
        if isinstance(cmd, ParseError):
            self.out.write(cmd.response())
            self._resume_reader(ev)
            return
        await self.execute(cmd)
        self._resume_reader(ev)

    def _resume_reader(self, ev: RawCommand) -> None:
        if self.reader.held and not self.out.closed:
            self.accept(self.reader.resume())

    async def execute(self, cmd: Command) -> None:
        entry = HANDLERS.get(type(cmd))
        if entry is None:
            self.out.write(bad(f"{cmd.name} is not supported").line(cmd.tag))
            return
        handler, states = entry
        if self.state not in states:
            self.out.write(bad(self._state_error(states)).line(cmd.tag))
            return
        name = cmd.name
        self.ctx.count("commands", protocol="imap", command=name)
        started = time.perf_counter()
        try:
            result = await handler(self, cmd)
        except CommandFailed as exc:
            result = exc.result
        except StorageFull:
            log.error("IMAP %s %s failed: the mail store is full", self.peer, name)
            result = no("The mail store is full; nothing was changed", "OVERQUOTA")
        except LimitExceeded as exc:
            result = no(f"Limit reached: {exc}", "LIMIT")
        except StoreError as exc:
            log.warning("IMAP %s %s failed: %s", self.peer, name, exc)
            result = no(f"{exc}", "SERVERBUG")
        self.ctx.observe("command", time.perf_counter() - started, protocol="imap", command=name)
        if self.out.closed or result is None:
            return
        if self.selected is not None:
            allow = not isinstance(cmd, _NO_EXPUNGE) or bool(getattr(cmd, "uid", False))
            await self.send_updates(allow_expunge=allow)
        if not self.out.closed:
            self.out.write(result.line(cmd.tag))

    def _state_error(self, states: frozenset[State]) -> str:
        if states == NOT_AUTHENTICATED:
            return "Already authenticated"
        if State.SELECTED in states and State.AUTHENTICATED not in states:
            return "No mailbox selected"
        return "Not authenticated: log in first"

    # --- output helpers (the mailbox's changes: session_updates.py) --------------
    def send(self, line: bytes) -> None:
        self.out.write(line + b"\r\n")

    # --- lifecycle -------------------------------------------------------------------
    def select(self, view: SelectedMailbox, subscription: Any) -> None:
        self.unselect()
        self.selected = view
        self._subscription = subscription
        view.notify = self.on_mailbox_change
        self.state = State.SELECTED

    def unselect(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def close(self) -> None:
        self.state = State.LOGOUT
        self.unselect()
        self.out.close()

    def shutdown(self, reason: str) -> None:
        """Asked by the daemon to leave: after the running command, or now if idle."""
        self._shutdown_reason = reason
        if (not self.busy and not self._queue) or self.idling:
            self._say_bye(reason)

    def _say_bye(self, reason: str) -> None:
        if not self.out.closed:
            self.out.write(f"* BYE {reason}\r\n".encode())
        self.close()

    def leave_now(self, reason: str) -> None:
        """Say BYE and close at once, even in the middle of a command (login timeout)."""
        self._queue.clear()
        self.input.clear()
        self._say_bye(reason)

    def start_tls(self) -> None:
        assert self.link is not None, "STARTTLS needs a connection"
        self.link.begin_tls()
        self.tls_active = True

    def connection_lost(self) -> None:
        self.state = State.LOGOUT
        self.unselect()
        self.logins.connection_closed()  # the session slot goes back, also mid-login
        if self._line_waiter is not None and not self._line_waiter.done():
            self._line_waiter.cancel()

    # --- authentication --------------------------------------------------------------
    async def login(self, login: str, password: str, authzid: str = "",
                    mech: str = "LOGIN") -> Result | None:
        """LOGIN and AUTHENTICATE: the login policy (auth/policy.py) in IMAP words."""
        if not self.plaintext_ok:
            return no("Plaintext authentication requires TLS", "PRIVACYREQUIRED")
        result = await self.logins.attempt(login, password, authzid)
        outcome = result.outcome
        if outcome is Outcome.GONE or self.out.closed:
            return None
        events = self.events
        if outcome is Outcome.REFUSED:
            if result.code == "blocked":
                events.emit(Event.BLOCKED, "failed_logins", user=login[:100], mech=mech)
            else:
                events.emit(Event.REFUSED, "login_queue_full", user=login[:100], mech=mech)
            return no(result.reason, "UNAVAILABLE")
        if result.failed:
            self.ctx.count("logins", protocol="imap", result="failed")
            events.emit(Event.LOGIN_FAILED, result.outcome.name.lower(), user=login[:100],
                        mech=mech)
            if result.disconnect:
                # The tagged NO goes out first, then the BYE (see _run).
                self._shutdown_reason = "Too many failed logins"
            if outcome is Outcome.NOT_AUTHORIZED:
                return no("Not authorized to act as that user", "AUTHORIZATIONFAILED")
            return no("Authentication failed", "AUTHENTICATIONFAILED")
        user = result.user
        assert user is not None
        if outcome is Outcome.TOO_MANY_SESSIONS:
            events.emit(Event.REFUSED, "sessions_per_user", user=user.name, mech=mech)
            return no("Too many sessions for this user", "LIMIT")
        self.user = user
        self.state = State.AUTHENTICATED
        self.reader.set_limits(max_literal=self.ctx.config.limits.max_message_size,
                               max_other_literal=MAX_OTHER_LITERAL, max_nonsync_literal=None)
        if self.link is not None:
            self.link.login_succeeded()
        self.ctx.count("logins", protocol="imap", result="ok")
        events.user, events.mech = user.name, mech
        events.emit(Event.LOGIN)
        return ok("Logged in", "CAPABILITY " + " ".join(self.capabilities()))
