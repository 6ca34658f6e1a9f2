"""The TRANSACTION state of a POP3 session: STAT, LIST, UIDL, RETR, TOP, DELE, RSET,
NOOP, with the read-ahead of messages and the delayed \\Seen writes of RETR."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..store.api import ChangeBatch, Expunged, FlagMode, User
from ..store.reads_api import Octets
from .maildrop import Entry, Maildrop, NoSuchMessage
from .session_api import Channel, CommandError, Pending, _safe
from .settings import POP3Settings
from .wire import Command, multiline_parts, ok, parse_number, top

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.pop3")

# At most this many messages (and octets) read ahead of a client downloading in order; a
# new read starts when half is left, so the store stays ahead of the sending.
READ_AHEAD_MESSAGES = 128
READ_AHEAD_BYTES = 8 * 1024 * 1024
SEEN_DELAY = 0.05  # seconds the \Seen flags of RETRs wait, to be written together


class TransactionCommands:
    """The TRANSACTION commands of ``POP3Session`` (a mixin: the state is the session's)."""

    ctx: ServerContext
    settings: POP3Settings
    channel: Channel
    user: User | None
    maildrop: Maildrop | None
    _read_ahead: dict[int, Octets]
    _prefetch: asyncio.Task[None] | None
    _prefetch_uids: set[int]
    _expunged: set[int]
    _seen_pending: list[int]
    _seen_task: asyncio.Task[None] | None
    _seen_now: asyncio.Event

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
