"""IMAP command framing and parsing: bytes in, typed commands out.

Two layers, neither of which does I/O:

* :class:`CommandReader` frames the byte stream into whole commands, collecting
  literals (RFC 3501 ``{n}``, RFC 7888 ``{n+}``, RFC 3516 ``~{n}``) and enforcing
  size limits before anything is buffered.
* :func:`parse_command` turns one framed command into a :mod:`.commands` value or a
  :class:`~.commands.ParseError`.

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

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from .commands import (
    ASTRING_CHARS,
    ATOM_CHARS,
    FETCH_MACROS,
    FETCH_SIMPLE,
    LIST_CHARS,
    LIST_RETURN_OPTIONS,
    LIST_SELECTION_OPTIONS,
    MAX_NUMBER,
    MAX_NUMBER64,
    NEW_KEY_PARTS,
    SEARCH_RETURN_OPTIONS,
    SPECIAL_USES,
    STATUS_ITEMS,
    TAG_CHARS,
    AllKey,
    AndKey,
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    DateKey,
    Delete,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchSection,
    FlagKey,
    HeaderKey,
    Id,
    Idle,
    List,
    Login,
    Logout,
    ModSeqKey,
    Move,
    Namespace,
    Noop,
    NotKey,
    OrKey,
    ParseError,
    QResync,
    Rename,
    Search,
    SearchKey,
    Select,
    SequenceKey,
    SequenceSet,
    SizeKey,
    StartTLS,
    Status,
    Store,
    Subscribe,
    TextKey,
    Unselect,
    Unsubscribe,
    canonical_system_flag,
)
from .dates import parse_date, parse_datetime
from .utf7 import decode_mailbox_name

# ---------------------------------------------------------------------------
# Reader events
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

MAX_DEPTH = 64  # nested parentheses and NOT/OR in search programs
MAX_TOKENS = 10_000  # arguments in one command
MAX_ATOM = 1024  # command names, flags, options (not sequence sets)

_SP = 0x20
_DQUOTE = 0x22
_LPAREN = 0x28
_RPAREN = 0x29
_BACKSLASH = 0x5C
_EIGHT_BIT = frozenset(range(0x80, 0x100))


def _run_re(chars: frozenset[int]) -> re.Pattern[bytes]:
    body = b"".join(re.escape(bytes((c,))) for c in sorted(chars))
    return re.compile(b"[" + body + b"]+")


_ATOM_RE = _run_re(ATOM_CHARS)
# Mailbox names and other strings: 8-bit octets are accepted unquoted too, for
# UTF8=ACCEPT clients that do not bother quoting.
_ASTRING_RE = _run_re(ASTRING_CHARS | _EIGHT_BIT)
_LIST_RE = _run_re(LIST_CHARS | _EIGHT_BIT)
_TAG_RE = _run_re(TAG_CHARS)
# A "word": anything up to a delimiter; sequence sets and search keys are read this
# way so that "*" and ":" come along and errors can quote the whole token.
_WORD_RE = re.compile(rb'[^\x00-\x20\x7f()"{\\\]\[<]+')
_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_QUOTED_RE = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')
_PARTIAL_RE = re.compile(rb"<([0-9]{1,10})\.([0-9]{1,10})>")


class _Fail(Exception):
    def __init__(self, message: str, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def _show(token: bytes, limit: int = 40) -> str:
    """A token made safe to quote in a response text."""
    text = token[:limit].decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text + ("..." if len(token) > limit else "")


class _Parser:
    """A cursor over a RawCommand's lines, stepping into literals between them."""

    def __init__(self, raw: RawCommand, start: int = 0) -> None:
        self._lines = raw.lines or (b"",)
        self._literals = raw.literals
        self._seg = 0
        self._buf = self._lines[0]
        self._pos = start
        self._depth = 0
        self._tokens = 0

    # -- low level ----------------------------------------------------------

    def fail(self, message: str, code: str | None = None, status: str = "BAD") -> NoReturn:
        raise _Fail(message, code, status)

    def count(self) -> None:
        self._tokens += 1
        if self._tokens > MAX_TOKENS:
            self.fail("Too many arguments")

    def at_end(self) -> bool:
        return self._pos >= len(self._buf) and self._seg == len(self._lines) - 1

    def literal_next(self) -> bool:
        return self._pos >= len(self._buf) and self._seg < len(self._lines) - 1

    def peek(self) -> int | None:
        return self._buf[self._pos] if self._pos < len(self._buf) else None

    def match(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        """Consume ``pattern`` if it matches here."""
        found = pattern.match(self._buf, self._pos)
        if found is not None:
            self._pos = found.end()
        return found

    def run(self, pattern: re.Pattern[bytes]) -> bytes:
        """Consume a run of ``pattern`` (possibly empty)."""
        found = self.match(pattern)
        return found.group() if found else b""

    def token(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        """A non-empty run of ``pattern``, counted as an argument."""
        self.count()
        token = self.run(pattern)
        if not token:
            self.bad(what)
        return token

    def bad(self, what: str) -> NoReturn:
        if self.at_end():
            self.fail(f"Missing {what}")
        if self.literal_next():
            self.fail(f"Unexpected literal, expected {what}")
        rest = _WORD_RE.match(self._buf, self._pos)
        shown = rest.group() if rest else self._buf[self._pos : self._pos + 1]
        self.fail(f"Invalid {what}: {_show(shown)}")

    def sp(self, what: str) -> None:
        """The space before ``what``; complains about ``what`` if it is missing."""
        if self.peek() != _SP:
            if self.at_end():
                self.fail(f"Missing {what}")
            self.fail(f"Expected a space before {what}")
        self._pos += 1
        if self.at_end():
            self.fail(f"Missing {what}")

    def try_sp(self) -> bool:
        if self.peek() == _SP:
            self._pos += 1
            return True
        return False

    def params_follow(self, after: str) -> bool:
        """Whether an optional parenthesised parameter list comes next."""
        if self.at_end():
            return False
        if self.peek() != _SP or self._pos + 1 >= len(self._buf) or (
            self._buf[self._pos + 1] != _LPAREN
        ):
            self.fail(f"Unexpected argument after {after}")
        self._pos += 1
        return True

    def finish(self, after: str) -> None:
        if not self.at_end():
            self.fail(f"Unexpected argument after {after}")

    def expect(self, char: int, message: str) -> None:
        if self.peek() != char:
            self.fail(message)
        self._pos += 1

    def open(self, what: str) -> None:
        if self.peek() != _LPAREN:
            self.bad(what)
        self._pos += 1
        self.enter()

    def close(self, what: str) -> None:
        if self.peek() != _RPAREN:
            self.fail(f"Expected ')' to end {what}")
        self._pos += 1
        self.leave()

    def enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            self.fail("Too deeply nested")

    def leave(self) -> None:
        self._depth -= 1

    def items(self, what: str, item: Callable[[], object], *, empty_ok: bool) -> None:
        """``(item SP item ...)``, calling ``item`` for each; depth is tracked."""
        self.open(what)
        if self.peek() == _RPAREN and empty_ok:
            self.close(what)
            return
        item()
        while self.try_sp():
            item()
        self.close(what)

    # -- tokens -------------------------------------------------------------

    def atom(self, what: str) -> bytes:
        token = self.token(_ATOM_RE, what)
        if len(token) > MAX_ATOM:
            self.fail(f"{what[:1].upper()}{what[1:]} too long")
        return token

    def keyword(self, what: str) -> str:
        return self.atom(what).decode("ascii").upper()

    def word(self, what: str) -> bytes:
        return self.token(_WORD_RE, what)

    def peek_word(self) -> bytes:
        match = _WORD_RE.match(self._buf, self._pos)
        return match.group().upper() if match else b""

    def quoted(self, what: str) -> bytes:
        found = self.match(_QUOTED_RE)
        if found is None:
            self.fail(f"Invalid quoted string for {what}")
        return _UNESCAPE_RE.sub(rb"\1", found.group(1))

    def literal(self, what: str) -> Literal:
        if not self.literal_next():
            self.bad(what)
        lit = self._literals[self._seg]
        self._seg += 1
        self._buf = self._lines[self._seg]
        self._pos = 0
        return lit

    def _text_literal(self, what: str) -> bytes:
        lit = self.literal(what)
        if lit.binary:
            self.fail(f"A binary literal is not allowed for {what}")
        return lit.data

    def string(self, what: str) -> bytes:
        self.count()
        if self.peek() == _DQUOTE:
            return self.quoted(what)
        return self._text_literal(what)

    def astring(self, what: str, pattern: re.Pattern[bytes] = _ASTRING_RE) -> bytes:
        self.count()
        if self.peek() == _DQUOTE:
            return self.quoted(what)
        if self.literal_next():
            return self._text_literal(what)
        return self.token(pattern, what)

    def nstring(self, what: str) -> bytes | None:
        if self.peek() not in (_DQUOTE, None) and self._buf[self._pos] in ATOM_CHARS:
            if self.atom(what).upper() == b"NIL":
                return None
            self.fail(f"Invalid {what}: expected a string or NIL")
        return self.string(what)

    def text(self, what: str) -> str:
        data = self.astring(what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"Invalid UTF-8 in {what}")

    def number(self, what: str, *, maximum: int = MAX_NUMBER, nonzero: bool = False) -> int:
        token = self.word(what)
        if not token.isdigit():
            self.fail(f"Invalid {what}: {_show(token)}")
        if len(token) > 20 or int(token) > maximum:
            self.fail(f"Invalid {what}: {_show(token)} is too large")
        value = int(token)
        if nonzero and value == 0:
            self.fail(f"Invalid {what}: 0")
        return value

    def seqset(self, what: str = "sequence set") -> SequenceSet:
        token = self.word(what)
        try:
            return SequenceSet.parse(token)
        except ValueError as exc:
            self.fail(str(exc))

    def mailbox(self, what: str = "mailbox name") -> str:
        raw = self.astring(what)
        try:
            return decode_mailbox_name(raw)
        except ValueError as exc:
            self.fail(f"Invalid {what}: {exc}")

    def list_mailbox(self, what: str, pattern: re.Pattern[bytes] = _LIST_RE) -> str:
        raw = self.astring(what, pattern)
        try:
            return decode_mailbox_name(raw, normalize_inbox=False)
        except ValueError as exc:
            self.fail(f"Invalid {what}: {exc}")

    def flag(self) -> str:
        """A flag for STORE/APPEND: system flags canonicalised, keywords as atoms."""
        if self.peek() == _BACKSLASH:
            self.expect(_BACKSLASH, "")
            name = "\\" + self.atom("flag").decode("ascii")
            canonical = canonical_system_flag(name)
            if canonical == "\\Recent":
                self.fail("The \\Recent flag cannot be set by clients")
            if canonical is None:
                self.fail(f"Unknown system flag {_show(name.encode())}")
            return canonical
        return self.atom("flag").decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        flags: list[str] = []
        self.items("flag list", lambda: flags.append(self.flag()), empty_ok=True)
        return tuple(flags)


# ---------------------------------------------------------------------------
# Command grammar
# ---------------------------------------------------------------------------

_CommandParser = Callable[[_Parser, bytes, bool], Command]
_NO_ARGS: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (
        Capability, Noop, Logout, StartTLS, Check, Close, Idle, Namespace, Unselect,
    )
}
_UID_COMMANDS = ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE")
_SPECIAL_USE_BY_LOWER = {use.lower(): use for use in SPECIAL_USES}


def _parse_authenticate(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("authentication mechanism")
    mechanism = p.keyword("authentication mechanism")
    initial = None
    if p.try_sp():
        token = p.word("initial response")  # not atom(): GSSAPI tokens exceed MAX_ATOM
        if token == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(token, validate=True)
            except binascii.Error:
                p.fail("Invalid base64 in initial response")
    p.finish("initial response" if initial is not None else "mechanism")
    return Authenticate(tag, mechanism, initial)


def _parse_login(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("user name")
    user = p.astring("user name")
    p.sp("password")
    password = p.astring("password")
    p.finish("password")
    return Login(tag, user, password)


def _parse_qresync(p: _Parser) -> QResync:
    p.open("QRESYNC parameters")
    uidvalidity = p.number("UIDVALIDITY", nonzero=True)
    p.sp("mod-sequence")
    modseq = p.number("mod-sequence", maximum=MAX_NUMBER64)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if p.try_sp() and p.peek() != _LPAREN:
        known = p.seqset("known UIDs")
        p.try_sp()
    if p.peek() == _LPAREN:
        p.open("sequence match data")
        seqs = p.seqset("known sequence set")
        p.sp("known UID set")
        uids = p.seqset("known UID set")
        p.close("sequence match data")
        match = (seqs, uids)
    p.close("QRESYNC parameters")
    return QResync(uidvalidity, modseq, known, match)


def _parse_select(p: _Parser, tag: bytes, readonly: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    condstore = False
    qresync: QResync | None = None
    if p.params_follow("mailbox name"):

        def param() -> None:
            nonlocal condstore, qresync
            name = p.keyword("SELECT parameter")
            if name == "CONDSTORE":
                condstore = True
            elif name == "QRESYNC":
                p.sp("QRESYNC parameters")
                qresync = _parse_qresync(p)
            else:
                p.fail(f"Unknown SELECT parameter {_show(name.encode())}")

        p.items("SELECT parameters", param, empty_ok=False)
    p.finish("mailbox name" if not (condstore or qresync) else "SELECT parameters")
    return Select(tag, mailbox, readonly, condstore, qresync)


def _parse_create(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    uses: list[str] = []
    if p.params_follow("mailbox name"):

        def use_attr() -> None:
            p.expect(_BACKSLASH, "Invalid special-use attribute")
            attr = "\\" + p.atom("special-use attribute").decode("ascii")
            known = _SPECIAL_USE_BY_LOWER.get(attr.lower())
            if known is None:
                p.fail(
                    f"Unsupported special-use attribute {_show(attr.encode())}",
                    code="USEATTR",
                    status="NO",
                )
            uses.append(known)

        def param() -> None:
            name = p.keyword("CREATE parameter")
            if name != "USE":
                p.fail(f"Unknown CREATE parameter {_show(name.encode())}")
            p.sp("special-use attributes")
            # RFC 6154 §6: "(" [use-attr *(SP use-attr)] ")" may be empty.
            p.items("special-use attributes", use_attr, empty_ok=True)

        p.items("CREATE parameters", param, empty_ok=False)
    p.finish("CREATE parameters")
    return Create(tag, mailbox, tuple(uses))


def _one_mailbox(cls: type[Delete | Subscribe | Unsubscribe]) -> _CommandParser:
    def parse(p: _Parser, tag: bytes, uid: bool) -> Command:
        p.sp("mailbox name")
        mailbox = p.mailbox()
        p.finish("mailbox name")
        return cls(tag, mailbox)

    return parse


def _parse_rename(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    old = p.mailbox()
    p.sp("new mailbox name")
    new = p.mailbox("new mailbox name")
    p.finish("new mailbox name")
    return Rename(tag, old, new)


def _status_items(p: _Parser) -> tuple[str, ...]:
    items: list[str] = []

    def item() -> None:
        name = p.keyword("status item")
        if name not in STATUS_ITEMS:
            p.fail(f"Unknown status item {_show(name.encode())}")
        items.append(name)

    p.items("status items", item, empty_ok=False)
    return tuple(items)


def _parse_list(p: _Parser, tag: bytes, lsub: bool) -> Command:
    p.sp("reference name")
    extended = False
    selection: list[str] = []
    if not lsub and p.peek() == _LPAREN:
        extended = True

        def select_opt() -> None:
            name = p.keyword("selection option")
            if name not in LIST_SELECTION_OPTIONS:
                p.fail(f"Unknown LIST selection option {_show(name.encode())}")
            selection.append(name)

        p.items("selection options", select_opt, empty_ok=True)
        if selection and set(selection) <= {"RECURSIVEMATCH", "REMOTE"} and (
            "RECURSIVEMATCH" in selection
        ):
            p.fail("RECURSIVEMATCH needs another selection option")
        p.sp("reference name")
    reference = p.list_mailbox("reference name", _ASTRING_RE)
    p.sp("mailbox pattern")
    patterns: list[str] = []
    if not lsub and p.peek() == _LPAREN:
        extended = True
        p.items(
            "mailbox patterns",
            lambda: patterns.append(p.list_mailbox("mailbox pattern")),
            empty_ok=False,
        )
    else:
        patterns.append(p.list_mailbox("mailbox pattern"))
    returns: list[str] = []
    status: tuple[str, ...] | None = None
    if not lsub and p.try_sp():
        extended = True
        if p.keyword("RETURN") != "RETURN":
            p.fail("Expected RETURN after the mailbox pattern")
        p.sp("return options")

        def return_opt() -> None:
            nonlocal status
            name = p.keyword("return option")
            if name not in LIST_RETURN_OPTIONS:
                p.fail(f"Unknown LIST return option {_show(name.encode())}")
            if name == "STATUS":
                p.sp("status items")
                status = _status_items(p)
            returns.append(name)

        p.items("return options", return_opt, empty_ok=True)
    p.finish("mailbox pattern" if not returns else "return options")
    return List(
        tag, reference, tuple(patterns), tuple(selection), tuple(returns), status, lsub, extended
    )


def _parse_status(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    p.sp("status items")
    items = _status_items(p)
    p.finish("status items")
    return Status(tag, mailbox, items)


def _parse_append(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    messages: list[AppendMessage] = []
    while True:
        # Each message: [flag-list SP] [date-time SP] literal (MULTIAPPEND repeats).
        p.sp("message literal")
        flags: tuple[str, ...] = ()
        when = None
        if p.peek() == _LPAREN:
            flags = p.flag_list()
            p.sp("message literal")
        if p.peek() == _DQUOTE:
            text = p.quoted("date-time")
            try:
                when = parse_datetime(text)
            except ValueError as exc:
                p.fail(str(exc))
            p.sp("message literal")
        lit = p.literal("message literal")
        messages.append(AppendMessage(lit.data, flags, when, lit.binary))
        if p.at_end():
            break
    return Append(tag, mailbox, tuple(messages))


def _parse_expunge(p: _Parser, tag: bytes, uid: bool) -> Command:
    if not uid:
        p.finish("EXPUNGE")
        return Expunge(tag)
    p.sp("UID set")
    uids = p.seqset("UID set")
    p.finish("UID set")
    return Expunge(tag, uids)


def _copy_or_move(cls: type[Copy | Move]) -> _CommandParser:
    def parse(p: _Parser, tag: bytes, uid: bool) -> Command:
        p.sp("sequence set")
        seqset = p.seqset()
        p.sp("mailbox name")
        mailbox = p.mailbox()
        p.finish("mailbox name")
        return cls(tag, seqset, mailbox, uid)

    return parse


# -- FETCH ------------------------------------------------------------------


def _parse_section(p: _Parser, *, binary: bool) -> FetchSection:
    p.expect(ord("["), "Expected '[' to start a section")
    parts: list[int] = []
    text: str | None = None
    headers: list[str] = []
    spec = p.run(_FETCH_NAME_RE)
    if spec:
        pieces = spec.split(b".")
        if any(not piece for piece in pieces):
            p.fail(f"Invalid section: {_show(spec)}")
        i = 0
        while i < len(pieces) and pieces[i].isdigit():
            if len(pieces[i]) > 10 or not 0 < int(pieces[i]) <= MAX_NUMBER:
                p.fail(f"Invalid section part number: {_show(pieces[i])}")
            parts.append(int(pieces[i]))
            i += 1
        if i < len(pieces):
            text = b".".join(pieces[i:]).decode("ascii").upper()
            if binary or text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT",
                                      "MIME"):
                p.fail(f"Invalid section: {_show(spec)}")
            if text == "MIME" and not parts:
                p.fail("MIME section needs a part number")
            if text.startswith("HEADER.FIELDS"):
                p.sp("header field names")

                def header() -> None:
                    try:
                        headers.append(p.astring("header field name").decode("ascii"))
                    except UnicodeDecodeError:
                        p.fail("Invalid header field name")

                p.items("header field names", header, empty_ok=False)
    p.expect(ord("]"), "Expected ']' to end the section")
    return FetchSection(tuple(parts), text, tuple(headers))


def _parse_partial(p: _Parser) -> tuple[int, int] | None:
    if p.peek() != ord("<"):
        return None
    found = p.match(_PARTIAL_RE)
    if found is None:
        p.fail("Invalid partial range, expected <origin.count>")
    origin, count = int(found.group(1)), int(found.group(2))
    if origin > MAX_NUMBER or not 0 < count <= MAX_NUMBER:
        p.fail("Invalid partial range")
    return origin, count


def _fetch_attribute(p: _Parser) -> FetchAttribute:
    token = p.token(_FETCH_NAME_RE, "fetch attribute")
    name = token.decode("ascii").upper()
    has_section = p.peek() == ord("[")
    if name in FETCH_SIMPLE and not (name == "BODY" and has_section):
        return FetchAttribute(name)
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        if not has_section:
            p.fail(f"{name} needs a section")
        base, peek = name.removesuffix(".PEEK"), name.endswith(".PEEK")
        section = _parse_section(p, binary=base != "BODY")
        partial = None if base == "BINARY.SIZE" else _parse_partial(p)
        return FetchAttribute(base, section, partial, peek)
    p.fail(f"Unknown fetch attribute {_show(token)}")


def _parse_fetch(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("sequence set")
    seqset = p.seqset()
    p.sp("fetch attributes")
    attrs: list[FetchAttribute] = []
    macro = p.peek_word().decode("ascii", "replace")
    if macro in FETCH_MACROS:
        p.word("fetch attributes")
        attrs.extend(FETCH_MACROS[macro])
    elif p.peek() == _LPAREN:
        p.items("fetch attributes", lambda: attrs.append(_fetch_attribute(p)), empty_ok=False)
    else:
        attrs.append(_fetch_attribute(p))
    changedsince: int | None = None
    vanished = False
    if p.params_follow("fetch attributes"):

        def modifier() -> None:
            nonlocal changedsince, vanished
            name = p.keyword("fetch modifier")
            if name == "CHANGEDSINCE":
                p.sp("mod-sequence")
                changedsince = p.number("mod-sequence", maximum=MAX_NUMBER64)
            elif name == "VANISHED":
                vanished = True
            else:
                p.fail(f"Unknown FETCH modifier {_show(name.encode())}")

        p.items("fetch modifiers", modifier, empty_ok=False)
    p.finish("fetch attributes")
    if vanished and not uid:
        p.fail("VANISHED is only allowed with UID FETCH")
    if vanished and changedsince is None:
        p.fail("VANISHED needs CHANGEDSINCE")
    return Fetch(tag, seqset, tuple(attrs), uid, changedsince, vanished)


# -- STORE ------------------------------------------------------------------


def _parse_store(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("sequence set")
    seqset = p.seqset()
    p.sp("store item")
    unchangedsince: int | None = None
    if p.peek() == _LPAREN:

        def modifier() -> None:
            nonlocal unchangedsince
            name = p.keyword("store modifier")
            if name != "UNCHANGEDSINCE":
                p.fail(f"Unknown STORE modifier {_show(name.encode())}")
            p.sp("mod-sequence")
            unchangedsince = p.number("mod-sequence", maximum=MAX_NUMBER64)

        p.items("store modifiers", modifier, empty_ok=False)
        p.sp("store item")
    item = p.atom("store item").decode("ascii").upper()
    mode = item[0] if item[:1] in ("+", "-") else ""
    base = item[len(mode) :]
    if base not in ("FLAGS", "FLAGS.SILENT"):
        p.fail(f"Invalid store item: {_show(item.encode())}")
    p.sp("flags")
    if p.peek() == _LPAREN:
        flags = p.flag_list()
    else:
        flag_items = [p.flag()]
        while p.try_sp():
            flag_items.append(p.flag())
        flags = tuple(flag_items)
    p.finish("flags")
    return Store(tag, seqset, mode, base == "FLAGS.SILENT", flags, uid, unchangedsince)


# -- SEARCH -----------------------------------------------------------------

_SEARCH_CHARSETS = ("UTF-8", "US-ASCII")
_SEARCH_FLAGS: dict[bytes, SearchKey] = {
    b"ALL": AllKey(),
    b"ANSWERED": FlagKey("\\Answered"),
    b"DELETED": FlagKey("\\Deleted"),
    b"DRAFT": FlagKey("\\Draft"),
    b"FLAGGED": FlagKey("\\Flagged"),
    b"SEEN": FlagKey("\\Seen"),
    b"RECENT": FlagKey("\\Recent"),
    b"UNANSWERED": FlagKey("\\Answered", present=False),
    b"UNDELETED": FlagKey("\\Deleted", present=False),
    b"UNDRAFT": FlagKey("\\Draft", present=False),
    b"UNFLAGGED": FlagKey("\\Flagged", present=False),
    b"UNSEEN": FlagKey("\\Seen", present=False),
    b"OLD": FlagKey("\\Recent", present=False),
    b"NEW": AndKey(NEW_KEY_PARTS),
}
_SEARCH_DATES = {
    b"BEFORE": ("BEFORE", False), b"ON": ("ON", False), b"SINCE": ("SINCE", False),
    b"SENTBEFORE": ("BEFORE", True), b"SENTON": ("ON", True), b"SENTSINCE": ("SINCE", True),
}


def _search_key(p: _Parser) -> SearchKey:
    p.enter()
    try:
        return _search_key_inner(p)
    finally:
        p.leave()


def _search_key_inner(p: _Parser) -> SearchKey:
    if p.peek() == _LPAREN:
        keys: list[SearchKey] = []
        p.open("search key")
        keys.append(_search_key(p))
        while p.try_sp():
            keys.append(_search_key(p))
        p.close("search group")
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    token = p.word("search key")
    if token[:1].isdigit() or token[:1] in (b"*", b"$"):
        try:
            return SequenceKey(SequenceSet.parse(token))
        except ValueError as exc:
            p.fail(str(exc))
    name = token.upper()
    if name in _SEARCH_FLAGS:
        return _SEARCH_FLAGS[name]
    if name in (b"BCC", b"CC", b"FROM", b"SUBJECT", b"TO"):
        p.sp(f"{name.decode()} string")
        return HeaderKey(name.decode().lower(), p.text(f"{name.decode()} string"))
    if name in (b"BODY", b"TEXT"):
        p.sp(f"{name.decode()} string")
        return TextKey(name.decode(), p.text(f"{name.decode()} string"))
    if name == b"HEADER":
        p.sp("header field name")
        header = p.text("header field name").lower()
        p.sp("header value")
        return HeaderKey(header, p.text("header value"))
    if name in (b"KEYWORD", b"UNKEYWORD"):
        p.sp("keyword")
        keyword = p.atom("keyword").decode("ascii")
        return FlagKey(keyword, present=name == b"KEYWORD")
    if name in _SEARCH_DATES:
        op, sent = _SEARCH_DATES[name]
        p.sp("date")
        raw = p.quoted("date") if p.peek() == _DQUOTE else p.word("date")
        try:
            return DateKey(op, parse_date(raw), sent)
        except ValueError:
            p.fail(f"Invalid date: {_show(raw)}, expected d-Mon-yyyy")
    if name in (b"LARGER", b"SMALLER"):
        p.sp("size")
        return SizeKey(name.decode(), p.number("size", maximum=MAX_NUMBER64))
    if name == b"UID":
        p.sp("UID set")
        return SequenceKey(p.seqset("UID set"), uid=True)
    if name == b"NOT":
        p.sp("search key")
        return NotKey(_search_key(p))
    if name == b"OR":
        p.sp("search key")
        left = _search_key(p)
        p.sp("search key")
        return OrKey(left, _search_key(p))
    if name == b"MODSEQ":
        p.sp("mod-sequence")
        entry: str | None = None
        entry_type: str | None = None
        if p.peek() == _DQUOTE:
            try:
                entry = p.quoted("entry name").decode("ascii")
            except UnicodeDecodeError:
                p.fail("Invalid MODSEQ entry name")
            p.sp("entry type")
            entry_type = p.atom("entry type").decode("ascii").lower()
            if entry_type not in ("priv", "shared", "all"):
                p.fail(f"Invalid MODSEQ entry type: {_show(entry_type.encode())}")
            p.sp("mod-sequence")
        return ModSeqKey(p.number("mod-sequence", maximum=MAX_NUMBER64), entry, entry_type)
    p.fail(f"Unknown search key {_show(token)}")


def _parse_search(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("search criteria")
    returns: tuple[str, ...] | None = None
    charset: str | None = None
    if p.peek_word() == b"RETURN":
        p.word("RETURN")
        p.sp("return options")
        options: list[str] = []

        def option() -> None:
            name = p.keyword("return option")
            if name == "SAVE":
                p.fail("SEARCHRES (RETURN SAVE) is not supported")
            if name not in SEARCH_RETURN_OPTIONS:
                p.fail(f"Unknown SEARCH return option {_show(name.encode())}")
            options.append(name)

        p.items("return options", option, empty_ok=True)
        returns = tuple(options) or ("ALL",)
        p.sp("search criteria")
    if p.peek_word() == b"CHARSET":
        p.word("CHARSET")
        p.sp("charset")
        charset = p.astring("charset").decode("ascii", "replace").upper()
        if charset not in _SEARCH_CHARSETS:
            p.fail(
                f"Unsupported charset {_show(charset.encode())}",
                code="BADCHARSET (" + " ".join(_SEARCH_CHARSETS) + ")",
                status="NO",
            )
        p.sp("search criteria")
    keys = [_search_key(p)]
    while p.try_sp():
        keys.append(_search_key(p))
    p.finish("search criteria")
    criteria = keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    return Search(tag, criteria, charset, uid, returns)


# -- the rest ---------------------------------------------------------------


def _parse_id(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("ID parameters")
    if p.peek() != _LPAREN:
        if p.atom("ID parameters").upper() != b"NIL":
            p.fail("Invalid ID parameters: expected a list or NIL")
        p.finish("ID parameters")
        return Id(tag, None)
    params: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = p.string("ID field name").decode("utf-8", "replace")
        p.sp("ID field value")
        value = p.nstring("ID field value")
        params.append((key, None if value is None else value.decode("utf-8", "replace")))

    p.items("ID parameters", pair, empty_ok=True)
    p.finish("ID parameters")
    return Id(tag, tuple(params))


def _parse_enable(p: _Parser, tag: bytes, uid: bool) -> Command:
    p.sp("capability")
    caps = [p.keyword("capability")]
    while p.try_sp():
        caps.append(p.keyword("capability"))
    p.finish("capabilities")
    return Enable(tag, tuple(caps))


_PARSERS: dict[str, _CommandParser] = {
    "AUTHENTICATE": _parse_authenticate,
    "LOGIN": _parse_login,
    "SELECT": lambda p, tag, uid: _parse_select(p, tag, False),
    "EXAMINE": lambda p, tag, uid: _parse_select(p, tag, True),
    "CREATE": _parse_create,
    "DELETE": _one_mailbox(Delete),
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "RENAME": _parse_rename,
    "LIST": lambda p, tag, uid: _parse_list(p, tag, False),
    "LSUB": lambda p, tag, uid: _parse_list(p, tag, True),
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "EXPUNGE": _parse_expunge,
    "SEARCH": _parse_search,
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _copy_or_move(Copy),
    "MOVE": _copy_or_move(Move),
    "ID": _parse_id,
    "ENABLE": _parse_enable,
}


def _parse(p: _Parser, tag: bytes) -> Command:
    p.sp("command")
    verb = p.keyword("command")
    uid = False
    if verb == "UID":
        p.sp("UID command")
        sub = p.keyword("UID command")
        if sub not in _UID_COMMANDS:
            p.fail(f"Unknown command UID {_show(sub.encode())}")
        verb, uid = sub, True
    if verb in _NO_ARGS:
        p.finish(verb)
        return _NO_ARGS[verb](tag)
    parser = _PARSERS.get(verb)
    if parser is None:
        p.fail(f"Unknown command {_show(verb.encode())}")
    return parser(p, tag, uid)


def _frame(data: bytes) -> RawCommand | ParseError:
    """Frame a single command given as bytes (literals inline) with a throwaway reader."""
    if not data.endswith(b"\n"):
        data += b"\r\n"
    size = len(data)
    reader = CommandReader(
        max_line=size, max_literal=size, max_other_literal=size, max_command=size
    )
    events = reader.feed(data)
    commands = [e for e in events if isinstance(e, RawCommand)]
    if len(commands) != 1 or reader.buffered or any(isinstance(e, Reject) for e in events):
        return ParseError(b"*", "Expected exactly one complete command")
    return commands[0]


def parse_command(raw: RawCommand | bytes) -> Command | ParseError:
    """Parse one framed command (or the bytes of one, literals inline) into a Command.

    Never raises for bad input: every problem becomes a :class:`ParseError` with the
    command's tag (``*`` if it had none), a message for the client, and for
    requests that are well formed but unsupported, status ``NO`` and a response code.
    """
    if not isinstance(raw, RawCommand):
        framed = _frame(bytes(raw))
        if isinstance(framed, ParseError):
            return framed
        raw = framed
    first = raw.lines[0] if raw.lines else b""
    match = _TAG_RE.match(first)
    if match is None or (match.end() < len(first) and first[match.end()] != _SP):
        return ParseError(b"*", "Missing or invalid tag")
    tag = match.group()
    parser = _Parser(raw, start=match.end())
    try:
        return _parse(parser, tag)
    except _Fail as exc:
        return ParseError(tag, exc.message, exc.code, exc.status)


__all__ = [
    "DEFAULT_HOLD_VERBS",
    "CommandReader",
    "Continue",
    "Fatal",
    "Literal",
    "RawCommand",
    "RawLine",
    "ReaderEvent",
    "Reject",
    "parse_command",
]
