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
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..auth.policy import Outcome
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
from ..store.api import ChangeBatch, Expunged, FlagMode, NotFound, Octets, StoreError, User
from ..store.hub import Subscription
from .maildrop import Entry, Maildrop, NoSuchMessage
from .settings import POP3Settings, capabilities
from .wire import (
    CRLF,
    MAX_COMMAND_LINE,
    Command,
    CommandSyntaxError,
    Line,
    Overlong,
    err,
    multiline,
    multiline_parts,
    ok,
    parse_command,
    parse_number,
    top,
)

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.pop3")


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


class Channel(Protocol):
    """What a session needs from its connection (implemented by ``POP3Protocol``)."""

    @property
    def peer(self) -> str:
        """``host:port`` of the client, for logs."""

    @property
    def peer_host(self) -> str: ...

    @property
    def tls_active(self) -> bool: ...

    @property
    def tls_available(self) -> bool:
        """True when STLS could start TLS now."""

    def send(self, data: bytes) -> None: ...

    def send_parts(self, parts: list[bytes]) -> Awaitable[None] | None:
        """Send a response in pieces; a huge one returns an awaitable that sends it in
        chunks, waiting while the client is not reading."""

    def start_tls(self, reply: bytes) -> None:
        """Drop all buffered input, send ``reply`` in plaintext, then start TLS."""

    def close(self) -> None: ...

    def login_succeeded(self) -> None:
        """Authenticated: the login deadline no longer applies."""

    def queued_lines(self) -> Sequence[Line]:
        """Commands the client pipelined that have not been handled yet."""


class CommandError(Exception):
    """Answer ``-ERR [code] text`` and go on."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


# At most this many messages (and octets) read ahead of a client downloading in order; a
# new read starts when half is left, so the store stays ahead of the sending.
READ_AHEAD_MESSAGES = 128
READ_AHEAD_BYTES = 8 * 1024 * 1024
SEEN_DELAY = 0.05  # seconds the \Seen flags of RETRs wait, to be written together

AUTH, TRANS = frozenset({State.AUTHORIZATION}), frozenset({State.TRANSACTION})
BOTH = AUTH | TRANS
PLAINTEXT_REFUSED = "Plaintext authentication is only allowed over TLS: use STLS first"


Pending = Awaitable[None] | None  # what a handler returns: None when it is done


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


def _safe(name: str) -> str:
    """A client-chosen name fit for one log line."""
    return repr(name[:64])


class POP3Session:
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

    @property
    def login_allowed(self) -> bool:
        """Whether passwords may be sent on this connection now."""
        ch = self.channel
        return ch.tls_active or (
            self.settings.plaintext_on_loopback and is_loopback(ch.peer_host)
        )

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
        log.info("pop3 logout of %s from %s (%d deleted)", self._who(), self.channel.peer,
                 len(removed))
        self.channel.send(ok(f"Bye ({len(uids)} messages deleted)"))
        self.channel.close()

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
        self._sasl = None
        return self._login(step.authcid, step.password, step.authzid)

    async def _login(self, login: str, password: str, authzid: str = "") -> None:
        """USER/PASS and AUTH: the login policy (auth/policy.py) in POP3 words."""
        result = await self.logins.attempt(login, password, authzid)
        outcome = result.outcome
        if outcome is Outcome.GONE:
            return
        if outcome is Outcome.REFUSED:
            log.warning("pop3 login for %s from %s refused: %s", _safe(login),
                        self.channel.peer, result.reason)
            raise CommandError(result.reason, "SYS/TEMP")
        if result.failed:
            self._login_failed(login, disconnect=result.disconnect)
            return
        user = result.user
        assert user is not None
        if outcome is Outcome.TOO_MANY_SESSIONS:
            log.info("pop3 login of %s from %s refused: too many sessions", _safe(user.name),
                     self.channel.peer)
            raise CommandError("Too many sessions for this user", "IN-USE")
        try:
            await self._open_maildrop(user)
        except BaseException:
            self.logins.release()  # no session after all: its slot goes back
            raise

    async def _open_maildrop(self, user: User) -> None:
        delay = self.settings.login_delay
        if delay > 0:
            last = self._last_login.get(user.id)
            wait = 0.0 if last is None else last + delay - time.monotonic()
            if wait > 0:
                log.info("pop3 login of %s from %s refused: LOGIN-DELAY", _safe(user.name),
                         self.channel.peer)
                raise CommandError(f"Wait {int(wait) + 1} more seconds before logging in again",
                                   "LOGIN-DELAY")
        store = self.ctx.store
        if not store.try_lock_maildrop(user.id):
            self.ctx.count("pop3_in_use")
            log.info("pop3 login of %s from %s refused: maildrop in use", _safe(user.name),
                     self.channel.peer)
            raise CommandError("Maildrop already locked", "IN-USE")
        self._locked = user.id
        try:
            inbox = await store.get_mailbox(user.id, "INBOX")
            if inbox is None:
                raise NotFound("INBOX does not exist")
            infos = await store.list_messages(inbox.id)
        except NotFound:
            self.release()
            log.error("pop3 login of %s: INBOX does not exist", _safe(user.name))
            raise CommandError("Your INBOX does not exist", "SYS/PERM") from None
        except BaseException:
            self.release()
            raise
        self.user = user
        self.maildrop = Maildrop(inbox.id, inbox.uidvalidity, infos)
        # Messages expunged elsewhere (IMAP) must not be served from the read-ahead.
        self._watch = self.ctx.hub.subscribe(inbox.id, self._on_change)
        self.state = State.TRANSACTION
        self.channel.login_succeeded()
        self._last_login[user.id] = time.monotonic()
        self.ctx.count("logins", protocol="pop3", result="ok")
        count, size = self.maildrop.stat()
        log.info("pop3 login ok for %s from %s (%d messages)", _safe(user.name),
                 self.channel.peer, count)
        self.channel.send(ok(f"Maildrop locked and ready, {count} messages ({size} octets)"))

    def _login_failed(self, login: str, *, disconnect: bool) -> None:
        failures = self.logins.failures
        self.ctx.count("logins", protocol="pop3", result="failed")
        log.warning("pop3 login failed for %s from %s (failure %d)", _safe(login),
                    self.channel.peer, failures)
        # The Authenticator already waited (exponentially, per address and user).
        if disconnect:
            self.channel.send(err("Authentication failed; too many failures, goodbye", "AUTH"))
            self.channel.close()
            return
        # (An authzid naming someone else reads like bad credentials: POP3 has no code
        # for it, RFC 2449 §8.)
        raise CommandError("Authentication failed", "AUTH")

    # --- TRANSACTION -------------------------------------------------------------------
    @property
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def _who(self) -> str:
        return _safe(self.user.name) if self.user else "(nobody)"

    def _entry(self, text: str) -> Entry:
        try:
            return self._drop.get(text)
        except NoSuchMessage as exc:
            raise CommandError(str(exc)) from None

    def _stat(self, cmd: Command) -> Pending:
        count, size = self._drop.stat()
        self.channel.send(ok(f"{count} {size}"))
        return None

    def _list(self, cmd: Command) -> Pending:
        drop = self._drop
        if cmd.args:
            entry = self._entry(cmd.args[0])
            self.channel.send(ok(f"{entry.number} {entry.size}"))
            return None
        count, size = drop.stat()
        body = b"".join(b"%d %d\r\n" % (e.number, e.size) for e in drop.live())
        return self.channel.send_parts(
            [ok(f"{count} messages ({size} octets)"), *multiline_parts(body)])

    def _uidl(self, cmd: Command) -> Pending:
        drop = self._drop
        if cmd.args:
            entry = self._entry(cmd.args[0])
            self.channel.send(ok(f"{entry.number} {drop.unique_id(entry)}"))
            return None
        body = "".join(f"{e.number} {drop.unique_id(e)}\r\n" for e in drop.live())
        return self.channel.send_parts(
            [ok("Unique-id listing follows"), *multiline_parts(body.encode())])

    def _on_change(self, batch: ChangeBatch) -> None:
        for ev in batch.events:
            if isinstance(ev, Expunged):
                self._expunged.add(ev.uid)
                self._read_ahead.pop(ev.uid, None)

    def _read_ahead_of(self, entry: Entry) -> Octets | None:
        """The octets of ``entry`` if already read ahead (None: the store must be asked)."""
        if entry.uid in self._expunged:
            raise CommandError(f"Message {entry.number} no longer exists")
        return self._read_ahead.pop(entry.uid, None)

    async def _read(self, entry: Entry) -> Octets:
        """The octets of ``entry`` from the read-ahead under way or from the store."""
        data = None
        if self._prefetch is not None and entry.uid in self._prefetch_uids:
            await asyncio.shield(self._prefetch)  # the read already under way has it
            data = self._read_ahead.pop(entry.uid, None)
        if data is None:
            wanted = [entry.uid, *self._pipelined_uids()]
            found = await self.ctx.store.read_octets(self._drop.mailbox_id, wanted)
            data = found.pop(entry.uid, None)
            self._read_ahead.update(found)
        if data is None or entry.uid in self._expunged:
            raise CommandError(f"Message {entry.number} no longer exists")
        return data

    def _pipelined_uids(self) -> list[int]:
        """UIDs the client's queued RETR/TOP commands will want next.

        Reading them in one store call instead of one each keeps a pipelining client
        (fetchmail, our benchmark) from paying a thread round trip per message.
        """
        uids: list[int] = []
        budget = READ_AHEAD_BYTES
        entries = self._drop.entries
        for line in self.channel.queued_lines():
            if len(uids) >= READ_AHEAD_MESSAGES or budget <= 0:
                break
            if not isinstance(line, bytes):
                continue  # an over-long line is no RETR
            words = line.split()
            if len(words) < 2 or words[0].upper() not in (b"RETR", b"TOP"):
                continue
            n = parse_number(words[1].decode("ascii", "replace"))
            if n is None or not 1 <= n <= len(entries) or entries[n - 1].deleted:
                continue
            if entries[n - 1].uid not in self._read_ahead:
                uids.append(entries[n - 1].uid)
                budget -= entries[n - 1].size
        return uids

    def _read_on(self, number: int) -> None:
        """Clients download in number order: read the messages after ``number`` in the
        background while this one is sent, so the next RETRs never wait for the store."""
        if self._prefetch is not None or len(self._read_ahead) >= READ_AHEAD_MESSAGES // 2:
            return
        uids: list[int] = []
        budget = READ_AHEAD_BYTES - sum(len(o.data) for o in self._read_ahead.values())
        for entry in self._drop.entries[number:]:
            if len(uids) >= READ_AHEAD_MESSAGES or budget <= 0:
                break
            if not entry.deleted and entry.uid not in self._read_ahead:
                uids.append(entry.uid)
                budget -= entry.size
        if not uids:
            return
        self._prefetch_uids = set(uids)
        self._prefetch = self.ctx.loop.create_task(self._prefetch_run(uids))

    async def _prefetch_run(self, uids: list[int]) -> None:
        try:
            found = await self.ctx.store.read_octets(self._drop.mailbox_id, uids)
            for uid in self._expunged.intersection(found):
                del found[uid]
            self._read_ahead.update(found)
        except Exception as exc:  # a later RETR reads it again and reports any error
            log.debug("pop3 read-ahead failed: %s", exc)
        finally:
            self._prefetch = None
            self._prefetch_uids = set()

    def _with_octets(self, entry: Entry, send: Callable[[Octets], Pending]) -> Pending:
        """``send(octets of entry)`` now when they were read ahead, else after the read;
        either way the messages after it are read ahead meanwhile."""
        octets = self._read_ahead_of(entry)
        if octets is None:
            return self._read_then(entry, send)
        self._read_on(entry.number)
        return send(octets)

    async def _read_then(self, entry: Entry, send: Callable[[Octets], Pending]) -> None:
        octets = await self._read(entry)
        self._read_on(entry.number)
        rest = send(octets)
        if rest is not None:
            await rest

    def _retr(self, cmd: Command) -> Pending:
        entry = self._entry(cmd.args[0])
        return self._with_octets(entry, lambda octets: self._send_message(entry, octets))

    def _send_message(self, entry: Entry, octets: Octets) -> Pending:
        if self.settings.retr_sets_seen and not entry.seen:
            entry.seen = True
            self._seen_pending.append(entry.uid)
        data = octets.data
        return self.channel.send_parts(
            [ok(f"{len(data)} octets"), *multiline_parts(data, octets.dot_lines)])

    # --- \Seen flags of retrieved messages ------------------------------------------------
    # RETR only notes the UID; the flags are written in the background, so the next command
    # never waits for a flag transaction (and its fsync). A write waits SEEN_DELAY first:
    # a client downloading its mail then costs a few transactions instead of one per
    # burst, and IMAP sessions still see \Seen a moment after the RETR.

    @property
    def seen_busy(self) -> bool:
        """True while \\Seen flags are waiting to be written or being written."""
        return bool(self._seen_pending) or self._seen_task is not None

    def schedule_seen(self) -> None:
        """Write the pending \\Seen flags soon, in the background (no-op if under way)."""
        if self._seen_pending and self._seen_task is None:
            self._seen_now = asyncio.Event()
            self._seen_task = self.ctx.loop.create_task(self._write_seen())

    async def flush_seen(self) -> None:
        """Wait until every pending \\Seen flag is written (or has failed); never raises."""
        self.schedule_seen()
        self._seen_now.set()
        task = self._seen_task
        if task is not None:
            await asyncio.shield(task)

    async def _write_seen(self) -> None:
        try:
            try:
                await asyncio.wait_for(self._seen_now.wait(), SEEN_DELAY)
            except TimeoutError:
                pass
            while self._seen_pending and self.maildrop is not None:
                uids, self._seen_pending = self._seen_pending, []
                try:
                    await self.ctx.store.store_flags(
                        self.maildrop.mailbox_id, uids, FlagMode.ADD, ["\\Seen"]
                    )
                except Exception as exc:  # the messages went out; only the flags are lost
                    failed = set(uids)
                    for entry in self.maildrop.entries:
                        if entry.uid in failed:
                            entry.seen = False
                    log.warning("pop3 could not set \\Seen on %d messages of %s: %s",
                                len(uids), self._who(), exc)
        finally:
            self._seen_task = None

    def _top(self, cmd: Command) -> Pending:
        lines = parse_number(cmd.args[1])
        if lines is None:
            raise CommandError(f"Invalid line count {cmd.args[1][:20]!r}")
        return self._with_octets(self._entry(cmd.args[0]),
                                 lambda octets: self._send_top(octets, lines))

    def _send_top(self, octets: Octets, lines: int) -> Pending:
        # A message without dot lines has none in its top part either.
        dot_lines = None if octets.dot_lines else octets.dot_lines
        return self.channel.send_parts([ok("Top of message follows"),
                                        *multiline_parts(top(octets.data, lines), dot_lines)])

    def _dele(self, cmd: Command) -> Pending:
        entry = self._entry(cmd.args[0])
        entry.deleted = True
        self.channel.send(ok(f"Message {entry.number} deleted"))
        return None

    def _rset(self, cmd: Command) -> Pending:
        self._drop.reset()
        count, size = self._drop.stat()
        self.channel.send(ok(f"Maildrop has {count} messages ({size} octets)"))
        return None

    def _noop(self, cmd: Command) -> Pending:
        self.channel.send(ok())
        return None
