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

from dataclasses import dataclass

from .tokens import TAG_CHARS, ParseError


@dataclass(frozen=True, slots=True)
class Literal:
    """The octets of one literal; ``binary`` for a ``~{n}`` literal8."""

    data: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command.

    ``lines`` holds the command text split at each literal, without CRLFs and with
    the ``{n}`` markers removed; ``literals[i]`` comes between ``lines[i]`` and
    ``lines[i + 1]``, so there is always one more line than literals. ``verb`` is the
    command name in upper case (``b"UID"`` for UID commands), for routing and limits.
    """

    tag: bytes
    lines: tuple[bytes, ...]
    literals: tuple[Literal, ...] = ()
    verb: bytes = b""

    @property
    def size(self) -> int:
        return sum(map(len, self.lines)) + sum(len(lit.data) for lit in self.literals)


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line read in :meth:`CommandReader.expect_line` mode, CRLF stripped.

    ``too_long`` means the line exceeded ``max_line`` and was discarded (``data`` is
    then empty); the session should fail the command that asked for the line.
    """

    data: bytes
    too_long: bool = False


@dataclass(frozen=True, slots=True)
class Continue:
    """Send ``+ text`` now: a synchronising literal was accepted."""

    text: str = "Ready for literal data"

    def response(self) -> bytes:
        return b"+ " + self.text.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Reject:
    """Send a tagged ``status [code] text`` and forget the command; it was never parsed."""

    tag: bytes
    text: str
    status: str = "BAD"
    code: str | None = None

    def response(self) -> bytes:
        return ParseError(self.tag, self.text, self.code, self.status).response()


@dataclass(frozen=True, slots=True)
class Fatal:
    """Input cannot be handled any more (too much sent while held): say BYE and close."""

    text: str


ReaderEvent = RawCommand | RawLine | Continue | Reject | Fatal

# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------

DEFAULT_HOLD_VERBS = frozenset({b"IDLE", b"AUTHENTICATE", b"STARTTLS"})
_TAIL_KEEP = 32  # enough of a discarded line's end to see a literal marker
_HEAD_KEEP = 256  # enough of a discarded line's start to find its tag
_MAX_LITERAL_DIGITS = 20


def _literal_marker(line: bytes) -> tuple[int, int, bool, bool] | None:
    """Find ``{n}``, ``{n+}`` or ``~{n}`` ending ``line``.

    Returns ``(marker start, size, synchronising, binary)``. A size too long to be a
    number is returned as a size no limit allows, so it is refused as too large
    rather than taken for a command line.
    """
    if not line.endswith(b"}"):
        return None
    brace = line.rfind(b"{")
    if brace < 0:
        return None
    digits = line[brace + 1 : -1]
    sync = not digits.endswith(b"+")
    if not sync:
        digits = digits[:-1]
    if not digits or not digits.isdigit():
        return None
    size = int(digits) if len(digits) <= _MAX_LITERAL_DIGITS else 2**64
    binary = brace > 0 and line[brace - 1] == ord("~")
    return (brace - 1 if binary else brace), size, sync, binary


def _line_tag(line: bytes) -> bytes:
    tag = line.split(b" ", 1)[0]
    if tag and len(tag) <= _HEAD_KEEP and all(c in TAG_CHARS for c in tag):
        return tag
    return b"*"


def _line_verb(line: bytes) -> bytes:
    words = line.split(b" ", 3)
    return words[1][:32].upper() if len(words) > 1 else b""


class CommandReader:
    """Incremental IMAP command framer (see the module docstring for the protocol).

    Limits, all in octets:

    ``max_line``
        one line of command text; longer lines are discarded up to their end, never
        buffered, and the command is rejected with BAD.
    ``max_literal``
        one APPEND literal (the message size limit); can be changed with
        :meth:`set_literal_limit`. Too large: ``NO [TOOBIG]`` for ``{n}`` (refused
        before the client sends it), ``BAD [TOOBIG]`` for ``{n+}``.
    ``max_other_literal``
        one literal in any other command (passwords, names, search strings).
    ``max_command``
        a whole command, text and literals together; also caps what is buffered
        while the reader is held.
    ``max_literals``
        literals in one command (each is an argument; MULTIAPPEND uses many).

    A non-synchronising literal over a limit cannot be refused before it arrives.
    RFC 7888 lets the server close the connection; Mailstead instead discards
    exactly its octets (without buffering them) and the rest of the command, then
    answers BAD, so one oversized message does not cost the client its session.
    """

    def __init__(
        self,
        *,
        max_line: int = 65536,
        max_literal: int = 64 * 1024 * 1024,
        max_other_literal: int = 1024 * 1024,
        max_command: int | None = None,
        max_literals: int = 1000,
        hold_verbs: frozenset[bytes] = DEFAULT_HOLD_VERBS,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_other_literal = max_other_literal
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
        # An over-long line being thrown away: its start and its last few octets.
        self._discarding_line = False
        self._head = b""
        self._tail = b""
        # The command being assembled.
        self._tag = b""
        self._verb = b""
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._size = 0
        # Set while the rest of a refused command is thrown away.
        self._reject: Reject | None = None

    # -- public interface ---------------------------------------------------

    @property
    def held(self) -> bool:
        """True while input is only buffered (after IDLE, AUTHENTICATE, STARTTLS, RawLine)."""
        return self._held

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def set_literal_limit(self, max_literal: int) -> None:
        """Change the APPEND literal limit (e.g. the APPENDLIMIT of the user)."""
        self.max_literal = max_literal

    def feed(self, data: bytes) -> list[ReaderEvent]:
        """Take more input; return every event it completes, in order."""
        if self._dead:
            return []
        self._buf += data
        if self._held:
            if len(self._buf) > self.max_command:
                self._dead = True
                self._buf.clear()
                return [Fatal("Too much input while a command was in progress")]
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
        while buf and not self._held and not self._dead:
            if self._reading_literal:
                take = min(self._lit_left, len(buf))
                self._lit += buf[:take]
                del buf[:take]
                self._lit_left -= take
                if self._lit_left == 0:
                    self._end_literal()
                continue
            if self._skip_left:
                take = min(self._skip_left, len(buf))
                del buf[:take]
                self._skip_left -= take
                continue
            newline = buf.find(b"\n", self._scan)
            if newline < 0:
                self._scan = len(buf)
                if self._discarding_line:
                    self._tail = (self._tail + bytes(buf))[-_TAIL_KEEP:]
                    buf.clear()
                    self._scan = 0
                elif len(buf) > self.max_line + 1:  # +1: a CR may still precede the LF
                    self._head = bytes(buf[:_HEAD_KEEP])
                    self._tail = bytes(buf[-_TAIL_KEEP:])
                    self._discarding_line = True
                    buf.clear()
                    self._scan = 0
                break
            end = newline - 1 if newline and buf[newline - 1] == 13 else newline
            line = bytes(buf[:end])
            del buf[: newline + 1]
            self._scan = 0
            if self._discarding_line:
                self._discarding_line = False
                self._overlong(self._head, (self._tail + line)[-_TAIL_KEEP:], events)
            elif len(line) > self.max_line:
                self._overlong(line[:_HEAD_KEEP], line[-_TAIL_KEEP:], events)
            else:
                self._line(line, events)
        return events

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

    def _overlong(self, head: bytes, tail: bytes, events: list[ReaderEvent]) -> None:
        if self._raw_line:
            self._raw_line = False
            self._held = True
            events.append(RawLine(b"", too_long=True))
            return
        if self._reject is None:
            tag = self._tag if self._lines else _line_tag(head)
            self._reject = Reject(tag, "Command line too long")
        self._reset_command()
        self._continue_discard(_literal_marker(tail), events)

    def _continue_discard(
        self, marker: tuple[int, int, bool, bool] | None, events: list[ReaderEvent]
    ) -> None:
        """A line of a refused command has ended: skip its literal or finish."""
        if marker is not None and not marker[2]:
            self._skip_left = marker[1]  # {n+}: the octets are coming anyway
            return
        # No literal, or a synchronising one the client will not send without our
        # "+": either way the command ends here.
        assert self._reject is not None
        events.append(self._reject)
        self._reject = None

    def _line(self, line: bytes, events: list[ReaderEvent]) -> None:
        if self._raw_line:
            self._raw_line = False
            self._held = True
            events.append(RawLine(line))
            return
        marker = _literal_marker(line)
        if self._reject is not None:
            self._continue_discard(marker, events)
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
        limit = self.max_literal if append else self.max_other_literal
        if size > limit:
            if append:
                # RFC 7889: NO [TOOBIG] when refused up front; a {n+} literal has
                # been sent regardless, which is a protocol violation: BAD.
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
        self._reject = reject
        self._continue_discard(marker, events)

