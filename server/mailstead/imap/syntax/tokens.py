"""The token layer shared by every command parser (RFC 3501 §9).

:class:`Parser` is a cursor over one framed command (a :class:`~.reader.RawCommand`):
atoms, astrings, quoted strings, literals, numbers, parenthesised lists, mailbox names
and flags. A family parser (``syntax/fetch.py``, ``syntax/search.py``, ...) reads its
arguments with it and raises :class:`Fail` (through :meth:`Parser.fail`) on bad input;
``parse_command`` turns that into a :class:`ParseError`. Nothing here does I/O or knows
the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NoReturn

from ..utf7 import decode_mailbox_name

if TYPE_CHECKING:
    from .reader import Literal, RawCommand

MAX_NUMBER = 2**32 - 1  # RFC 3501 number / nz-number
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 number64, RFC 7162 mod-sequence-value

# Character classes (RFC 3501 §9)
CTL = frozenset(range(0x20)) | {0x7F}
ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | CTL
ATOM_CHARS = frozenset(range(0x01, 0x80)) - ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | frozenset(b"%*]")

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_FLAG_BY_LOWER = {flag.lower(): flag for flag in (*SYSTEM_FLAGS, "\\Recent")}


def canonical_system_flag(flag: str) -> str | None:
    """The canonical spelling of a system flag (``\\seen`` -> ``\\Seen``), else None."""
    return _SYSTEM_FLAG_BY_LOWER.get(flag.lower())


@dataclass(frozen=True, slots=True)
class Command:
    """Base of all parsed commands. ``tag`` is the client's tag, as bytes."""

    tag: bytes
    name: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command that could not be parsed: answer ``tag status [code] message``.

    ``status`` is ``"BAD"`` for syntax errors and ``"NO"`` where the syntax is fine
    but the request cannot be met (e.g. ``BADCHARSET``). ``tag`` is ``b"*"`` when the
    line had no usable tag.
    """

    tag: bytes
    message: str
    code: str | None = None
    status: str = "BAD"

    def response(self) -> bytes:
        code = b"[" + self.code.encode("ascii") + b"] " if self.code else b""
        text = self.message.encode("ascii", "replace")
        return self.tag + b" " + self.status.encode("ascii") + b" " + code + text + b"\r\n"


MAX_DEPTH = 64  # nested parentheses and NOT/OR in search programs
MAX_TOKENS = 10_000  # arguments in one command
MAX_ATOM = 1024  # command names, flags, options (not sequence sets)

SP = 0x20
DQUOTE = 0x22
LPAREN = 0x28
RPAREN = 0x29
BACKSLASH = 0x5C
_EIGHT_BIT = frozenset(range(0x80, 0x100))


def _run_re(chars: frozenset[int]) -> re.Pattern[bytes]:
    body = b"".join(re.escape(bytes((c,))) for c in sorted(chars))
    return re.compile(b"[" + body + b"]+")


ATOM_RE = _run_re(ATOM_CHARS)
# Mailbox names and other strings: 8-bit octets are accepted unquoted too, for
# UTF8=ACCEPT clients that do not bother quoting.
ASTRING_RE = _run_re(ASTRING_CHARS | _EIGHT_BIT)
LIST_RE = _run_re(LIST_CHARS | _EIGHT_BIT)
TAG_RE = _run_re(TAG_CHARS)
# A "word": anything up to a delimiter; sequence sets and search keys are read this
# way so that "*" and ":" come along and errors can quote the whole token.
WORD_RE = re.compile(rb'[^\x00-\x20\x7f()"{\\\]\[<]+')
_QUOTED_RE = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')


class UnusableName(str):
    """A mailbox name (or LIST pattern) that is good syntax but no name a mailbox can have.

    An astring that is neither valid modified UTF-7 nor valid UTF-8, or that holds a control
    character, is well-formed: RFC 3501 §7.1.3 keeps BAD for syntax errors, so the command
    is parsed to the end (later syntax errors are still BAD) and its handler answers NO
    (a LIST pattern of this kind matches nothing). The text is the octets as received
    (latin-1), for logs only; handlers must look at :attr:`reason` and never use it as a
    name, since it can spell a real mailbox (``&AOk`` is the name of ``&-AOk``).
    """

    reason: str

    def __new__(cls, raw: bytes, reason: str) -> UnusableName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.reason = reason
        return name


class Fail(Exception):
    """Raised by a parser to end parsing with a ParseError; parse_command catches it."""

    def __init__(self, message: str, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def show(token: bytes, limit: int = 40) -> str:
    """A token made safe to quote in a response text."""
    text = token[:limit].decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text + ("..." if len(token) > limit else "")


class Parser:
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
        raise Fail(message, code, status)

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
        rest = WORD_RE.match(self._buf, self._pos)
        shown = rest.group() if rest else self._buf[self._pos : self._pos + 1]
        self.fail(f"Invalid {what}: {show(shown)}")

    def sp(self, what: str) -> None:
        """The space before ``what``; complains about ``what`` if it is missing."""
        if self.peek() != SP:
            if self.at_end():
                self.fail(f"Missing {what}")
            self.fail(f"Expected a space before {what}")
        self._pos += 1
        if self.at_end():
            self.fail(f"Missing {what}")

    def try_sp(self) -> bool:
        if self.peek() == SP:
            self._pos += 1
            return True
        return False

    def params_follow(self, after: str) -> bool:
        """Whether an optional parenthesised parameter list comes next."""
        if self.at_end():
            return False
        if self.peek() != SP or self._pos + 1 >= len(self._buf) or (
            self._buf[self._pos + 1] != LPAREN
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
        if self.peek() != LPAREN:
            self.bad(what)
        self._pos += 1
        self.enter()

    def close(self, what: str) -> None:
        if self.peek() != RPAREN:
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
        if self.peek() == RPAREN and empty_ok:
            self.close(what)
            return
        item()
        while self.try_sp():
            item()
        self.close(what)

    # -- tokens -------------------------------------------------------------

    def atom(self, what: str) -> bytes:
        token = self.token(ATOM_RE, what)
        if len(token) > MAX_ATOM:
            self.fail(f"{what[:1].upper()}{what[1:]} too long")
        return token

    def keyword(self, what: str) -> str:
        return self.atom(what).decode("ascii").upper()

    def word(self, what: str) -> bytes:
        return self.token(WORD_RE, what)

    def peek_word(self) -> bytes:
        match = WORD_RE.match(self._buf, self._pos)
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
        if self.peek() == DQUOTE:
            return self.quoted(what)
        return self._text_literal(what)

    def astring(self, what: str, pattern: re.Pattern[bytes] = ASTRING_RE) -> bytes:
        self.count()
        if self.peek() == DQUOTE:
            return self.quoted(what)
        if self.literal_next():
            return self._text_literal(what)
        return self.token(pattern, what)

    def nstring(self, what: str) -> bytes | None:
        if self.peek() not in (DQUOTE, None) and self._buf[self._pos] in ATOM_CHARS:
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
            self.fail(f"Invalid {what}: {show(token)}")
        if len(token) > 20 or int(token) > maximum:
            self.fail(f"Invalid {what}: {show(token)} is too large")
        value = int(token)
        if nonzero and value == 0:
            self.fail(f"Invalid {what}: 0")
        return value

    def mailbox(self, what: str = "mailbox name") -> str:
        """A decoded mailbox name, or an :class:`UnusableName` when it cannot be one."""
        raw = self.astring(what)
        try:
            return decode_mailbox_name(raw)
        except ValueError as exc:
            return UnusableName(raw, f"Invalid {what}: {exc}")

    def list_mailbox(self, what: str, pattern: re.Pattern[bytes] = LIST_RE) -> str:
        """A decoded LIST reference or pattern, or an :class:`UnusableName`."""
        raw = self.astring(what, pattern)
        try:
            return decode_mailbox_name(raw, normalize_inbox=False)
        except ValueError as exc:
            return UnusableName(raw, f"Invalid {what}: {exc}")

    def flag(self) -> str:
        """A flag for STORE/APPEND: system flags canonicalised, keywords as atoms."""
        if self.peek() == BACKSLASH:
            self.expect(BACKSLASH, "")
            name = "\\" + self.atom("flag").decode("ascii")
            canonical = canonical_system_flag(name)
            if canonical == "\\Recent":
                self.fail("The \\Recent flag cannot be set by clients")
            if canonical is None:
                self.fail(f"Unknown system flag {show(name.encode())}")
            return canonical
        return self.atom("flag").decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        flags: list[str] = []
        self.items("flag list", lambda: flags.append(self.flag()), empty_ok=True)
        return tuple(flags)



# A family parser: reads a command's arguments after its name (``uid`` for UID forms).
CommandParser = Callable[[Parser, bytes, bool], Command]
