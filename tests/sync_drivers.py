"""The client side of the model-based sync test: one IMAP or POP3 connection each.

``ImapDriver`` is an in-process IMAP connection (the real ``IMAPFactory`` protocol on a
``RecordingTransport``) whose every response goes through its ``SessionModel``; commands
are sent without waiting, so several sessions' commands genuinely overlap on the loop.
``Pop3Driver`` runs USER/PASS, UIDL, DELE, RETR and QUIT (or a drop) on the same context.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from typing import TYPE_CHECKING

from imap_harness import PASSWORD
from imap_model import Cmd, SessionModel, SilentStore, Violation, tolerate
from memory_transport import MemoryConnection
from sync_world import RecordingTransport, ResponseReader, Selection

if TYPE_CHECKING:
    from sync_run import Run

_UIDL = re.compile(rb"(\d+) \d+\.(\d+)$")  # "n uidvalidity.uid" (pop3/maildrop.py)


class RawPOP3(MemoryConnection):
    """A POP3 connection that hands back every status line, ``-ERR`` included (the
    harness's ``pop3_harness.MemoryPOP3`` raises on ``-ERR``, as poplib does)."""

    def __init__(self, run: Run) -> None:
        super().__init__(run.world.pop3_factory.buildProtocol(None), peer="127.0.0.1")

    async def cmd(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return await self.line()

    async def multiline(self, text: str) -> tuple[bytes, list[bytes]]:
        status = await self.cmd(text)
        lines: list[bytes] = []
        if status.startswith(b"+OK"):
            while (line := await self.line()) != b".":
                lines.append(line[1:] if line.startswith(b"..") else line)
        return status, lines

    async def login(self, user: str) -> bytes:
        """USER/PASS after the greeting: the PASS reply."""
        self.greeting = await self.line()
        reply = await self.cmd(f"USER {user}")
        return reply if not reply.startswith(b"+OK") else await self.cmd(f"PASS {PASSWORD}")


class ImapDriver:
    """One IMAP connection of the program."""

    def __init__(self, run: Run, index: int, user: str, generation: int) -> None:
        self.run = run
        self.index = index
        self.user = user
        self.name = f"s{index}" if generation == 0 else f"s{index}.{generation}"
        self.transport = RecordingTransport(run.mirror, run.wake)
        self.model = SessionModel(
            self.name, on_recent=lambda m, box, uid: run.ledger.shown(user, m, box, uid))
        self.reader = ResponseReader()
        self.greeted = False
        self._tags = itertools.count(1)
        self.sent_version = 0
        self.selection: Selection | None = None
        self.probe = False  # the running command is a \Recent probe of a barrier
        self.gone = False
        self.proto = run.world.factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)

    @property
    def origin(self) -> object:
        return self.proto.session

    @property
    def busy(self) -> bool:
        return self.model.cmd is not None

    @property
    def idling(self) -> bool:
        return self.model.cmd is not None and self.model.cmd.verb == "IDLE"

    def fail(self, kind: str, response: str, expected: str) -> Violation:
        return self.model.fail(kind, response, expected)

    # --- responses -----------------------------------------------------------------------
    def pump(self) -> None:
        if self.transport.chunks:
            chunks, self.transport.chunks = self.transport.chunks, []
            self.reader.feed(chunks)
        while (item := self.reader.next()) is not None:
            self._dispatch(*item)

    def _dispatch(self, line: bytes, moment: object) -> None:
        model = self.model
        if not self.greeted:
            self.greeted = True
            model.note("S:", line)
            return
        if line.startswith(b"+"):
            model.continuation(line)
            return
        if line.startswith(b"* "):
            model.untagged(line)
            if model.bye and (model.cmd is None or model.cmd.verb != "LOGOUT"):
                raise model.fail("unexpected-bye", line, "the server keeps the session")
            return
        cmd = model.cmd
        ok = cmd is not None and line[len(cmd.tag) + 1:].startswith(b"OK")
        if cmd is not None and cmd.verb in ("UNSELECT", "CLOSE", "LOGOUT") and ok:
            self.close_selection()
        selected = model.selected
        truth = None
        if selected is not None:
            truth = self.run.mirror.truths_between(  # type: ignore[attr-defined]
                self.run.mailbox_id(self.user, selected), moment.version, moment.upto)
        done = model.tagged(line, truth)
        if done.cmd.verb in ("SELECT", "EXAMINE") and done.status != "OK":
            self.close_selection()
        self.run.completed(self, done, moment)  # type: ignore[arg-type]
        self.probe = False

    # --- commands ------------------------------------------------------------------------
    def close_selection(self) -> None:
        if self.selection is not None:
            self.selection.freeze(self.run.mirror.version)
            self.selection = None

    def send(self, verb: str, text: str, *, mailbox: str | None = None,
             silent: SilentStore | None = None, literal: bytes | None = None) -> Cmd:
        assert not self.busy, (self.name, self.model.cmd)
        tag = b"S%dT%d" % (self.index, next(self._tags))
        cmd = Cmd(tag, verb, text, mailbox, silent)
        if verb in ("SELECT", "EXAMINE"):
            assert mailbox is not None
            self.close_selection()
            self.selection = self.run.ledger.open(Selection(
                self.name, self.user, mailbox, verb == "SELECT", self.run.mirror.version,
                self.model))
        self.model.begin(cmd)
        self.done_sent = False
        self.sent_version = self.run.mirror.version
        data = tag + b" " + text.encode() + b"\r\n"
        if literal is not None:
            data += literal + b"\r\n"
        self.proto.dataReceived(data)
        return cmd

    def send_done(self) -> None:
        if self.done_sent:
            return
        self.done_sent = True
        self.model.note("C:", "DONE")
        self.proto.dataReceived(b"DONE\r\n")

    def drop(self) -> None:
        if not self.gone:
            self.gone = True
            self.close_selection()
            self.proto.connectionLost(None)


class Pop3Driver:
    """The POP3 side of one user: at most one session at a time, as the lock demands."""

    def __init__(self, run: Run, user: str) -> None:
        self.run = run
        self.user = user
        self.name = f"pop3-{user}"
        self.client: RawPOP3 | None = None
        self.numbers: dict[int, int | None] = {}  # message number → UID (from UIDL)
        self.deleted: dict[int, int | None] = {}  # DELE'd numbers → UID
        self.quitting: object | None = None  # the POP3 session whose QUIT was sent
        self.transcript: deque[str] = deque(maxlen=40)

    @property
    def origin(self) -> object:
        return self.client.proto.session if self.client is not None else None

    def fail(self, kind: str, response: bytes | str, expected: str) -> Violation:
        text = response.decode(errors="replace") if isinstance(response, bytes) else response
        return Violation(kind, self.name, text, expected, list(self.transcript))

    async def _cmd(self, text: str, multiline: bool = False) -> tuple[bytes, list[bytes]]:
        assert self.client is not None
        self.transcript.append(f"C: {text}")
        try:
            if multiline:
                status, lines = await self.client.multiline(text)
            else:
                status, lines = await self.client.cmd(text), []
        except (AssertionError, ConnectionError) as exc:
            raise self.fail("pop3-no-response", str(exc)[:300], f"an answer to {text}") from None
        self.transcript.append(f"S: {status.decode(errors='replace')}"
                               + (f" (+{len(lines)} lines)" if lines else ""))
        return status, lines

    async def login(self) -> None:
        self.client = RawPOP3(self.run)
        self.transcript.append(f"C: USER {self.user} / PASS")
        reply = await self.client.login(self.user)
        self.transcript.append(f"S: {reply.decode(errors='replace')}")
        if not reply.startswith(b"+OK"):
            raise self.fail("pop3-login", reply, "+OK: no other POP3 session holds the lock")
        status, lines = await self._cmd("UIDL", multiline=True)
        if not status.startswith(b"+OK"):
            raise self.fail("pop3-uidl", status, "+OK")
        self.numbers = {}
        for line in lines:
            m = _UIDL.match(line)
            if m is not None:
                self.numbers[int(m.group(1))] = int(m.group(2))
        self.deleted = {}

    def _pick(self, r: int) -> int | None:
        left = [n for n in self.numbers if n not in self.deleted]
        return left[r % len(left)] if left else None

    async def dele(self, r: int) -> None:
        n = self._pick(r)
        if n is None:
            return
        status, _ = await self._cmd(f"DELE {n}")
        if not status.startswith(b"+OK"):
            raise self.fail("pop3-dele", status, "+OK: DELE only marks the message")
        self.deleted[n] = self.numbers[n]

    async def retr(self, r: int) -> None:
        n = self._pick(r)
        if n is None:
            return
        status, _ = await self._cmd(f"RETR {n}", multiline=True)
        # The message may have been expunged over IMAP since login: -ERR is then fine.
        if not status.startswith((b"+OK", b"-ERR")):
            raise self.fail("pop3-retr", status, "+OK or -ERR")

    async def quit(self) -> None:
        assert self.client is not None
        self.quitting = self.origin
        status, _ = await self._cmd("QUIT")
        if not status.startswith(b"+OK"):
            raise self.fail("pop3-quit", status, "+OK after the deletions were committed")
        inbox = self.run.mailbox_id(self.user, "INBOX")
        still = [u for u in self.deleted.values()
                 if u is not None and u in self.run.mirror.flags[inbox]]
        if still:
            tolerate(self.fail("pop3-quit-not-applied", status, f"UIDs {still} deleted by the "
                            "time QUIT answers +OK (RFC 1939 §6)"))
        self._retire()

    def drop(self) -> None:
        """Gone without QUIT: whatever it marked must stay (RFC 1939 §6)."""
        if self.client is not None:
            self.transcript.append("C: (connection dropped)")
            self._retire()

    def _retire(self) -> None:
        assert self.client is not None
        session = self.client.proto.session
        self.run.retired[id(session)] = (session, self.name)
        self.client.drop()
        self.client = None
        self.numbers, self.deleted = {}, {}
