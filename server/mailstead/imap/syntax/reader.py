"""IMAP command framing: the byte stream in, whole commands out (no I/O, no parsing).

:class:`CommandReader` frames the byte stream into whole commands, collecting literals
(RFC 3501 ``{n}``, RFC 7888 ``{n+}``, RFC 3516 ``~{n}``) and enforcing size limits
before anything is buffered. ``syntax.parse_command`` then turns one framed command
into a typed command or a :class:`~.tokens.ParseError`.

Driving the reader from a protocol::

    for event in reader.feed(data):   # queue these; handle them in order
        RawCommand -> parse_command(event), run it
        Continue   -> send b"+ " + text + CRLF now (the client waits for it)
        Reject     -> send event.response(); the command is gone
        RawLine    -> an IDLE "DONE" or an AUTHENTICATE response line
        Fatal      -> send "* BYE", close the connection

After a RawCommand whose verb is in ``hold_verbs`` (IDLE, AUTHENTICATE, STARTTLS)
the reader stops interpreting input: further bytes are only buffered. The session
then calls :meth:`CommandReader.expect_line` (the next line is a RawLine; the reader
holds again after it) or :meth:`CommandReader.resume` (back to commands); both return
the events the buffered input yields. After STARTTLS, :meth:`CommandReader.discard_buffer`
drops plaintext the client pipelined behind the command, which must never be run
inside the TLS session (CVE-2011-0411 style injection).
"""

from __future__ import annotations

from .reader_events import Continue, Fatal, Literal, RawCommand, RawLine, ReaderEvent, Reject
from .reader_lines import _HEAD_KEEP, _line_tag, _line_verb, _literal_marker

__all__ = [
    "CommandReader", "Continue", "Fatal", "Literal", "RawCommand", "RawLine", "ReaderEvent",
    "Reject",
]


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------

DEFAULT_HOLD_VERBS = frozenset({b"IDLE", b"AUTHENTICATE", b"STARTTLS"})
# RFC 7888 §5: a server advertising LITERAL- accepts non-synchronising literals up to
# this size only.
LITERAL_MINUS_MAX = 4096
# Octets of a refused command's {n+} literals thrown away before the connection is
# closed instead: a client announcing gigabytes is not read to the end.
DISCARD_BUDGET = 64 * 1024
# An over-long line is answered at max_line; past this (or 2 x max_line) it is fatal.
MIN_LINE_HARD_CAP = 1024 * 1024
_TAIL_KEEP = 32  # enough of a discarded line's end to see a literal marker


class CommandReader:
    """Incremental IMAP command framer (see the module docstring for the protocol).

    Limits, all in octets:

    ``max_line``
        one line of command text. A longer line is answered ``BAD`` as soon as it
        passes the limit (it is discarded up to its end, never buffered); one that goes
        on past ``line_hard_cap`` is ``Fatal``.
    ``max_literal``
        one APPEND literal (the message size limit). Too large: ``NO [TOOBIG]`` for
        ``{n}`` (refused before the client sends it), ``BAD [TOOBIG]`` for ``{n+}``.
    ``max_other_literal``
        one literal in any other command (passwords, names, search strings).
    ``max_nonsync_literal``
        None, or the largest ``{n+}`` accepted (LITERAL-, RFC 7888 §5, before login):
        a larger one is refused ``BAD [TOOBIG]``.
    ``max_command``
        a whole command, text and literals together; also caps what is buffered
        while the reader is held.
    ``max_literals``
        literals in one command (each is an argument; MULTIAPPEND uses many).

    A refused command is answered at once, when the refusal is known, and the rest of
    it is dropped: the octets of its non-synchronising literals (which the client sends
    without waiting) are thrown away as they arrive, up to ``DISCARD_BUDGET`` for the
    command; a client that sends more gets ``Fatal`` (RFC 7888 §4 lets the server close
    the connection rather than read an oversized literal).
    """

    def __init__(
        self,
        *,
        max_line: int = 65536,
        max_literal: int = 64 * 1024 * 1024,
        max_other_literal: int = 1024 * 1024,
        max_command: int | None = None,
        max_literals: int = 1000,
        max_nonsync_literal: int | None = None,
        hold_verbs: frozenset[bytes] = DEFAULT_HOLD_VERBS,
    ) -> None:
        self.max_line = max_line
        self.line_hard_cap = max(MIN_LINE_HARD_CAP, 2 * max_line)
        self._fixed_max_command = max_command
        self.max_literal = max_literal
        self.max_other_literal = max_other_literal
        self.max_nonsync_literal = max_nonsync_literal
        self.max_command = max_command if max_command is not None else max_literal + 4 * max_line
        self.max_literals = max_literals
        self.hold_verbs = hold_verbs

        self._buf = bytearray()
        self._scan = 0  # where to resume looking for LF in _buf
        self._held = False
        self._raw_line = False
        self._dead = False
        # Literal being read (_lit_left > 0) or skipped (_skip_left > 0).
        self._lit = bytearray()
        self._lit_left = 0
        self._lit_binary = False
        self._reading_literal = False
        self._skip_left = 0
        self._skip_budget = 0
        # An over-long line being thrown away: its start, its last few octets, its size.
        self._discarding_line = False
        self._discarding_raw = False  # ... an expect_line() line, answered already
        self._discarded = 0
        self._head = b""
        self._tail = b""
        # The command being assembled.
        self._tag = b""
        self._verb = b""
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._size = 0
        # Set while the rest of a refused (and answered) command is thrown away.
        self._dropping = False

    # -- public interface ---------------------------------------------------

    @property
    def held(self) -> bool:
        """True while input is only buffered (after IDLE, AUTHENTICATE, STARTTLS, RawLine)."""
        return self._held

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending(self) -> int:
        """Octets held for commands not yet complete: buffered input, partial command."""
        framed = sum(map(len, self._lines)) + sum(len(lit.data) for lit in self._literals)
        return len(self._buf) + len(self._lit) + framed

    @property
    def discarding(self) -> bool:
        """True while received octets are thrown away (an over-long line, a refused
        literal) or ignored (after ``Fatal``): input that is no activity."""
        return self._discarding_line or self._skip_left > 0 or self._dead

    @property
    def reading_literal(self) -> bool:
        return self._reading_literal

    def set_literal_limit(self, max_literal: int) -> None:
        """Change the APPEND literal limit (e.g. the APPENDLIMIT of the user)."""
        self.set_limits(max_literal=max_literal, max_other_literal=self.max_other_literal,
                        max_nonsync_literal=self.max_nonsync_literal)

    def set_limits(
        self, *, max_literal: int, max_other_literal: int, max_nonsync_literal: int | None
    ) -> None:
        """Change the literal limits (after login they grow)."""
        self.max_literal = max_literal
        self.max_other_literal = max_other_literal
        self.max_nonsync_literal = max_nonsync_literal
        if self._fixed_max_command is None:
            self.max_command = max_literal + 4 * self.max_line

    def feed(self, data: bytes) -> list[ReaderEvent]:
        """Take more input; return every event it completes, in order."""
        if self._dead:
            return []
        self._buf += data
        if self._held and not self._discarding_line:
            if len(self._buf) > self.max_command:
                events: list[ReaderEvent] = []
                self._die(events, "Too much input while a command was in progress")
                return events
            return []
        return self._drain()

    def expect_line(self) -> list[ReaderEvent]:
        """Read the next line as a RawLine (IDLE's DONE, an AUTHENTICATE response)."""
        self._held = False
        self._raw_line = True
        return self._drain()

    def resume(self) -> list[ReaderEvent]:
        """Go back to reading commands after a hold."""
        self._held = False
        self._raw_line = False
        return self._drain()

    def discard_buffer(self) -> None:
        """Drop input received but not yet processed (use after STARTTLS)."""
        self._buf.clear()
        self._scan = 0

    # -- the state machine --------------------------------------------------

    def _drain(self) -> list[ReaderEvent]:
        events: list[ReaderEvent] = []
        buf = self._buf
        while buf and not self._dead and (self._discarding_line or not self._held):
            if self._reading_literal:
                take = min(self._lit_left, len(buf))
                self._lit += buf[:take]
                del buf[:take]
                self._lit_left -= take
                if self._lit_left == 0:
                    self._end_literal()
                continue
            if self._skip_left:
                if self._skip_budget <= 0:
                    self._die(events, "[TOOBIG] Too much data sent for a refused command")
                    break
                take = min(self._skip_left, self._skip_budget, len(buf))
                del buf[:take]
                self._skip_left -= take
                self._skip_budget -= take
                continue
            newline = buf.find(b"\n", self._scan)
            if newline < 0:
                self._scan = len(buf)
                if self._discarding_line:
                    self._discarded += len(buf)
                    self._tail = (self._tail + bytes(buf[-_TAIL_KEEP:]))[-_TAIL_KEEP:]
                    buf.clear()
                    self._scan = 0
                elif len(buf) > self.max_line + 1:  # +1: a CR may still precede the LF
                    self._head = bytes(buf[:_HEAD_KEEP])
                    self._tail = bytes(buf[-_TAIL_KEEP:])
                    self._discarded = len(buf)
                    self._discarding_line = True
                    buf.clear()
                    self._scan = 0
                    self._line_too_long(events)
                if self._discarding_line and self._discarded > self.line_hard_cap:
                    self._die(events, "Command line too long")
                break
            end = newline - 1 if newline and buf[newline - 1] == 13 else newline
            line = bytes(buf[:end])
            del buf[: newline + 1]
            self._scan = 0
            if self._discarding_line:
                self._discarding_line = False
                if self._discarded + len(line) > self.line_hard_cap:
                    self._die(events, "Command line too long")
                    break
                self._end_overlong((self._tail + line)[-_TAIL_KEEP:], events)
            elif len(line) > self.max_line:
                self._head = line[:_HEAD_KEEP]
                self._line_too_long(events)
                if len(line) > self.line_hard_cap:
                    self._die(events, "Command line too long")
                    break
                self._end_overlong(line[-_TAIL_KEEP:], events)
            else:
                self._line(line, events)
        return events

    def _die(self, events: list[ReaderEvent], text: str) -> None:
        self._dead = True
        self._buf.clear()
        self._scan = 0
        events.append(Fatal(text))

    def _end_literal(self) -> None:
        self._literals.append(Literal(bytes(self._lit), self._lit_binary))
        self._lit = bytearray()
        self._reading_literal = False

    def _reset_command(self) -> None:
        self._tag = b""
        self._verb = b""
        self._lines = []
        self._literals = []
        self._size = 0

    def _line_too_long(self, events: list[ReaderEvent]) -> None:
        """A line has just passed ``max_line``: answer it now."""
        if self._raw_line:
            self._raw_line = False
            self._held = True
            self._discarding_raw = True
            events.append(RawLine(b"", too_long=True))
            return
        if not self._dropping:
            tag = self._tag if self._lines else _line_tag(self._head)
            events.append(Reject(tag, "Command line too long"))
            self._start_dropping()
        self._reset_command()

    def _end_overlong(self, tail: bytes, events: list[ReaderEvent]) -> None:
        """The over-long line has ended: skip its literal, or end the command."""
        if self._discarding_raw:
            self._discarding_raw = False
            return
        self._continue_discard(_literal_marker(tail))

    def _start_dropping(self) -> None:
        self._dropping = True
        self._skip_budget = DISCARD_BUDGET

    def _continue_discard(self, marker: tuple[int, int, bool, bool] | None) -> None:
        """A line of a refused command has ended: skip its literal or finish."""
        if marker is not None and not marker[2]:
            self._skip_left = marker[1]  # {n+}: the octets are coming anyway
            return
        # No literal, or a synchronising one the client will not send without our
        # "+": either way the command ends here.
        self._dropping = False

    def _line(self, line: bytes, events: list[ReaderEvent]) -> None:
        if self._raw_line:
            self._raw_line = False
            self._held = True
            events.append(RawLine(line))
            return
        marker = _literal_marker(line)
        if self._dropping:
            self._continue_discard(marker)
            return
        if not self._lines:
            if not line.strip():
                return  # blank lines between commands are harmless; ignore them
            self._tag = _line_tag(line)
            self._verb = _line_verb(line)
        self._size += len(line) + 2
        if marker is None:
            self._lines.append(line)
            if self._size > self.max_command:
                code = "TOOBIG" if self._verb == b"APPEND" else None
                self._refuse(Reject(self._tag, "Command too large", code=code), None, events)
                return
            events.append(
                RawCommand(self._tag, tuple(self._lines), tuple(self._literals), self._verb)
            )
            if self._verb in self.hold_verbs:
                self._held = True
            self._reset_command()
            return
        start, size, sync, binary = marker
        reject = self._check_literal(size, sync)
        if reject is not None:
            self._refuse(reject, marker, events)
            return
        self._lines.append(line[:start])
        self._size += size
        if sync:
            events.append(Continue())
        self._reading_literal = True
        self._lit_left = size
        self._lit_binary = binary
        if size == 0:
            self._end_literal()

    def _check_literal(self, size: int, sync: bool) -> Reject | None:
        append = self._verb == b"APPEND"
        if not sync and self.max_nonsync_literal is not None and size > self.max_nonsync_literal:
            return Reject(self._tag, f"Non-synchronizing literals over "
                          f"{self.max_nonsync_literal} octets need a continuation (LITERAL-)",
                          "BAD", "TOOBIG")
        limit = self.max_literal if append else self.max_other_literal
        if size > limit:
            if append:
                # RFC 7889: NO [TOOBIG] when refused up front; a {n+} literal is being
                # sent regardless, which is a protocol violation: BAD.
                return Reject(self._tag, "Message too large", "NO" if sync else "BAD", "TOOBIG")
            return Reject(self._tag, "Literal too large")
        if len(self._literals) >= self.max_literals:
            return Reject(self._tag, "Too many literals in one command")
        if self._size + size > self.max_command:
            return Reject(self._tag, "Command too large", code="TOOBIG" if append else None)
        return None

    def _refuse(
        self,
        reject: Reject,
        marker: tuple[int, int, bool, bool] | None,
        events: list[ReaderEvent],
    ) -> None:
        self._reset_command()
        events.append(reject)
        self._start_dropping()
        self._continue_discard(marker)
