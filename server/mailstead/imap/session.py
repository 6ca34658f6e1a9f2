"""IMAPSession: the per-connection state machine that joins the codec and the store.

The protocol (``protocol.py``) feeds it framed events; it runs commands one at a time
in arrival order (pipelined commands are answered in order even though the store is
asynchronous), writes untagged and tagged responses through an ``Output``, and reports
the selected mailbox's pending changes when RFC 3501 allows.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..auth.sasl import (
    MECHANISMS,
    SaslCancelled,
    SaslError,
    SaslExchange,
    decode_response,
    encode_base64,
)
from ..auth.users import LoginRefused, local_part
from ..config import is_loopback
from ..net import ConnectionLimiter
from ..store.api import LimitExceeded, StorageFull, StoreError, User
from . import commands as c
from .codec import CommandReader, Continue, Fatal, RawCommand, RawLine, Reject, parse_command
from .selected import RecentTracker, SelectedMailbox

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.imap")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# Pipelined commands waiting to run; past this we stop reading from the client.
MAX_QUEUED_COMMANDS = 256
RESUME_QUEUED_COMMANDS = 32


class Output(Protocol):
    """Where a session's bytes go (the Twisted protocol implements it)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def start_tls(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    @property
    def closed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Result:
    """A tagged completion: ``tag status [code] text``."""

    status: str = "OK"
    text: str = "Completed"
    code: str | None = None

    def line(self, tag: bytes) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return tag + f" {self.status} {code}{self.text}\r\n".encode("utf-8", "replace")


def ok(text: str = "Completed", code: str | None = None) -> Result:
    return Result("OK", text, code)


def no(text: str, code: str | None = None) -> Result:
    return Result("NO", text, code)


def bad(text: str, code: str | None = None) -> Result:
    return Result("BAD", text, code)


class CommandFailed(Exception):
    """Raised inside a handler to end the command with this result."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.text)
        self.result = result


# A handler returns its tagged result, or None when it already answered (LOGOUT, STARTTLS).
Handler = Callable[["IMAPSession", Any], Awaitable[Result | None]]

_ANY = frozenset(State) - {State.LOGOUT}
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})

# FETCH, STORE and SEARCH must not be answered with EXPUNGE (RFC 3501 §7.4.1);
# their UID forms may be.
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search)


class IMAPSession:
    """State and command loop of one IMAP connection."""

    def __init__(
        self,
        ctx: ServerContext,
        out: Output,
        *,
        peer: str,
        tls_active: bool,
        recent_tracker: RecentTracker,
    ) -> None:
        self.ctx = ctx
        self.recent_tracker = recent_tracker
        self.out = out
        self.peer = peer
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.user: User | None = None
        self.selected: SelectedMailbox | None = None
        self._subscription: Any = None
        self.condstore = False
        self.idling = False
        self.failed_logins = 0
        limits = ctx.config["limits"]
        self.reader = CommandReader(
            max_line=limits["max_line_length"], max_literal=limits["max_message_size"]
        )
        self._queue: deque[Any] = deque()
        self._task: asyncio.Task[None] | None = None
        self._line_waiter: asyncio.Future[RawLine] | None = None
        self._shutdown_reason: str | None = None
        self._user_slot: ConnectionLimiter | None = None
        self._reading_paused = False
        self.busy = False

    # --- capabilities --------------------------------------------------------------
    @property
    def plaintext_ok(self) -> bool:
        return self.tls_active or (
            self.ctx.config["auth"]["plaintext_on_loopback"] and is_loopback(self.peer)
        )

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
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
            f"APPENDLIMIT={self.ctx.config['limits']['max_message_size']}",
        ]

    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        return f"* OK [CAPABILITY {caps}] Mailstead {__version__} ready\r\n".encode()

    # --- input ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.accept(self.reader.feed(data))

    def accept(self, events: list[Any]) -> None:
        """Queue reader events; continuation requests and awaited lines act at once."""
        for ev in events:
            if isinstance(ev, Continue):
                self.out.write(ev.response())
            elif isinstance(ev, RawLine) and self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                if not waiter.done():
                    waiter.set_result(ev)
            else:
                self._queue.append(ev)
        if len(self._queue) > MAX_QUEUED_COMMANDS and not self._reading_paused:
            self._reading_paused = True
            self.out.pause_reading()
        if self._queue and (self._task is None or self._task.done()):
            self._task = self.ctx.loop.create_task(self._run())

    async def read_line(self) -> RawLine:
        """The next raw line (IDLE's DONE, an AUTHENTICATE response)."""
        fut: asyncio.Future[RawLine] = self.ctx.loop.create_future()
        self._line_waiter = fut
        self.accept(self.reader.expect_line())
        return await fut

    async def _run(self) -> None:
        while self._queue and not self.out.closed:
            ev = self._queue.popleft()
            if self._reading_paused and len(self._queue) <= RESUME_QUEUED_COMMANDS:
                self._reading_paused = False
                self.out.resume_reading()
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
        if isinstance(cmd, c.ParseError):
            self.out.write(cmd.response())
            self._resume_reader(ev)
            return
        await self.execute(cmd)
        self._resume_reader(ev)

    def _resume_reader(self, ev: RawCommand) -> None:
        if self.reader.held and not self.out.closed:
            self.accept(self.reader.resume())

    async def execute(self, cmd: c.Command) -> None:
        entry = HANDLERS.get(type(cmd))
        if entry is None:
            self.out.write(bad(f"{cmd.name} is not supported").line(cmd.tag))
            return
        handler, states = entry
        if self.state not in states:
            self.out.write(bad(self._state_error(states)).line(cmd.tag))
            return
        name = cmd.name
        self.ctx.count(f"imap_command_{name.lower()}")
        started = time.perf_counter()
        try:
            result = await handler(self, cmd)
        except CommandFailed as exc:
            result = exc.result
        except StorageFull:
            log.error("IMAP %s %s failed: the mail store is full", self.peer, name)
            result = no("The mail store is full; nothing was changed", "SERVERBUG")
        except LimitExceeded as exc:
            result = no(f"Limit reached: {exc}", "LIMIT")
        except StoreError as exc:
            log.warning("IMAP %s %s failed: %s", self.peer, name, exc)
            result = no(f"{exc}", "SERVERBUG")
        self.ctx.observe("imap_command", time.perf_counter() - started, name)
        if self.out.closed or result is None:
            return
        if self.selected is not None:
            allow = not isinstance(cmd, _NO_EXPUNGE) or bool(getattr(cmd, "uid", False))
            self.send_updates(allow_expunge=allow)
        if not self.out.closed:
            self.out.write(result.line(cmd.tag))

    def _state_error(self, states: frozenset[State]) -> str:
        if states == _NOT_AUTH:
            return "Already authenticated"
        if State.SELECTED in states and State.AUTHENTICATED not in states:
            return "No mailbox selected"
        return "Not authenticated: log in first"

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run store work that nobody waits for (e.g. recording \\Recent) and log failures."""

        async def run() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("IMAP %s background store call failed: %s", self.peer, exc)

        self.ctx.loop.create_task(run())

    # --- output helpers --------------------------------------------------------------
    def send(self, line: bytes) -> None:
        self.out.write(line + b"\r\n")

    def send_updates(self, *, allow_expunge: bool) -> None:
        view = self.selected
        if view is None:
            return
        updates = view.drain(allow_expunge=allow_expunge)
        for line in updates.lines:
            self.send(line)
        if updates.gone:
            self.out.write(b"* BYE Selected mailbox was deleted, have to disconnect\r\n")
            self.close()

    def on_mailbox_change(self) -> None:
        """Hub callback: push at once while idling, else wait for the next command."""
        if self.idling and not self.out.closed:
            self.send_updates(allow_expunge=True)

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

    def connection_lost(self) -> None:
        self.state = State.LOGOUT
        self.unselect()
        if self._user_slot is not None and self.user is not None:
            self._user_slot.release(str(self.user.id))
            self._user_slot = None
        if self._line_waiter is not None and not self._line_waiter.done():
            self._line_waiter.cancel()

    # --- authentication --------------------------------------------------------------
    async def login_failed(self, login: str) -> None:
        """Count and log a failed login (the Authenticator already delayed it); too many
        and the session ends."""
        self.failed_logins += 1
        self.ctx.count("imap_logins_failed")
        log.info("IMAP login failed for %r from %s", login[:100], self.peer)
        if self.failed_logins >= 5:
            self.out.write(b"* BYE Too many failed logins\r\n")
            self.close()

    async def login(self, login: str, password: str) -> Result:
        if not self.plaintext_ok:
            return no("Plaintext authentication requires TLS", "PRIVACYREQUIRED")
        try:
            user = await self.ctx.auth.check(login, password, self.peer)
        except LoginRefused as exc:
            log.info("IMAP login for %r from %s refused: %s", login[:100], self.peer, exc)
            return no(str(exc), "UNAVAILABLE")
        if user is None:
            await self.login_failed(login)
            return no("Authentication failed", "AUTHENTICATIONFAILED")
        limiter = self.ctx.shared.setdefault("user_sessions", ConnectionLimiter())
        if not limiter.acquire(str(user.id), self.ctx.config["limits"]["max_sessions_per_user"]):
            log.info("IMAP login %s from %s refused: too many sessions", user.name, self.peer)
            return no("Too many sessions for this user", "LIMIT")
        self._user_slot = limiter
        self.user = user
        self.state = State.AUTHENTICATED
        self.ctx.count("imap_logins_ok")
        log.info("IMAP login %s from %s", user.name, self.peer)
        return ok("Logged in", "CAPABILITY " + " ".join(self.capabilities()))


# --- handlers for any state ------------------------------------------------------------
async def h_capability(s: IMAPSession, cmd: c.Capability) -> Result:
    s.send(b"* CAPABILITY " + " ".join(s.capabilities()).encode())
    return ok("Capability completed")


async def h_noop(s: IMAPSession, cmd: c.Noop) -> Result:
    return ok("NOOP completed")


async def h_logout(s: IMAPSession, cmd: c.Logout) -> Result | None:
    s.send(b"* BYE Logging out")
    s.out.write(ok("Logout completed").line(cmd.tag))
    s.close()
    return None


async def h_id(s: IMAPSession, cmd: c.Id) -> Result:
    s.send(b'* ID ("name" "Mailstead" "version" "' + __version__.encode() + b'")')
    return ok("ID completed")


async def h_starttls(s: IMAPSession, cmd: c.StartTLS) -> Result | None:
    if s.ctx.tls is None:
        return no("TLS is not available")
    if s.tls_active:
        return bad("TLS is already active")
    s.out.write(ok("Begin TLS negotiation now").line(cmd.tag))
    # Anything the client pipelined after STARTTLS was sent in the clear: drop it.
    s.reader.discard_buffer()
    s._queue.clear()
    s.out.start_tls()
    s.tls_active = True
    return None


async def h_login(s: IMAPSession, cmd: c.Login) -> Result:
    try:
        login = cmd.user.decode("utf-8")
        password = cmd.password.decode("utf-8")
    except UnicodeDecodeError:
        return bad("User name and password must be UTF-8")
    return await s.login(login, password)


async def h_authenticate(s: IMAPSession, cmd: c.Authenticate) -> Result:
    if cmd.mechanism.upper() not in MECHANISMS:
        return no(f"Unsupported mechanism {cmd.mechanism[:20]}", "CANNOT")
    if not s.plaintext_ok:
        return no("Plaintext authentication requires TLS", "PRIVACYREQUIRED")
    try:
        exchange = SaslExchange.start(cmd.mechanism, cmd.initial_response)
        while isinstance(step := exchange.next_step(), bytes):
            s.out.write(b"+ " + encode_base64(step) + b"\r\n")
            line = await s.read_line()
            if line.too_long:
                return bad("Authentication response too long")
            exchange.feed(decode_response(line.data))
    except SaslCancelled:
        return bad("Authentication cancelled")
    except SaslError as exc:
        return bad(f"Invalid authentication data: {exc}")
    if step.authzid and not _same_user(step.authzid, step.authcid, s.ctx.config.domains):
        # Nobody may act as another user here (RFC 4616 §2: authorization is ours to deny).
        await s.login_failed(step.authcid)
        return no("Not authorized to act as that user", "AUTHORIZATIONFAILED")
    return await s.login(step.authcid, step.password)


def _same_user(authzid: str, authcid: str, domains: list[str]) -> bool:
    a, b = local_part(authzid, domains), local_part(authcid, domains)
    return a is not None and b is not None and a.lower() == b.lower()


async def h_enable(s: IMAPSession, cmd: c.Enable) -> Result:
    enabled = []
    for cap in cmd.capabilities:
        if cap.upper() == "CONDSTORE" and not s.condstore:
            s.condstore = True
            if s.selected is not None:
                s.selected.condstore = True
            enabled.append("CONDSTORE")
    s.send(b"* ENABLED" + b"".join(b" " + e.encode() for e in enabled))
    return ok("ENABLE completed")


async def h_namespace(s: IMAPSession, cmd: c.Namespace) -> Result:
    s.send(b'* NAMESPACE (("" "/")) NIL NIL')
    return ok("NAMESPACE completed")


async def h_idle(s: IMAPSession, cmd: c.Idle) -> Result:
    s.out.write(b"+ idling\r\n")
    s.idling = True
    try:
        s.send_updates(allow_expunge=True)
        await s.out.drain()
        line = await s.read_line()
    finally:
        s.idling = False
    if line.data.rstrip(b"\r\n").upper() != b"DONE":
        return bad("Expected DONE to end IDLE")
    return ok("IDLE terminated")


HANDLERS: dict[type, tuple[Handler, frozenset[State]]] = {
    c.Capability: (h_capability, _ANY),
    c.Noop: (h_noop, _ANY),
    c.Logout: (h_logout, _ANY),
    c.Id: (h_id, _ANY),
    c.StartTLS: (h_starttls, _NOT_AUTH),
    c.Login: (h_login, _NOT_AUTH),
    c.Authenticate: (h_authenticate, _NOT_AUTH),
    c.Enable: (h_enable, _AUTH),
    c.Namespace: (h_namespace, _AUTH),
    c.Idle: (h_idle, _AUTH),
}


def register(cls: type, states: frozenset[State]) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[cls] = (fn, states)
        return fn

    return deco


AUTH_STATES = _AUTH
SELECTED_STATES = _SELECTED
