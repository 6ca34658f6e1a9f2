"""POP3 wire format, pure: command framing and parsing, response lines, multi-line bodies.

Nothing here does I/O. ``LineBuffer`` turns received octets into command lines (with a
length cap that discards an over-long line whole and reports it in its place), and
``multiline`` dot-stuffs a complete message body — per line of the whole message, so a
line that starts with ``.`` is stuffed wherever a network buffer boundary happens to fall.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..mime.parse import has_dot_lines

CRLF: Final = b"\r\n"
TERMINATOR: Final = b".\r\n"

# RFC 2449 §4 allows 255 octets per command line; be lenient with clients that send more.
MAX_COMMAND_LINE: Final = 1024
# SASL answers carry base64 blobs; they may be longer than commands.
MAX_AUTH_LINE: Final = 8192

_NUMBER = re.compile(rb"[0-9]{1,9}")
_KEYWORD = re.compile(r"[A-Za-z]{1,8}")


# An over-long line is answered when it passes the cap; one that goes on past this
# without ending closes the connection.
LINE_HARD_CAP: Final = 1024 * 1024


class Overlong:
    """Stands in the line stream for a line that exceeded the cap and was discarded.

    It is emitted as soon as the line passes the cap (the rest of the line is thrown away
    as it arrives); ``fatal`` marks a line that went on past ``LINE_HARD_CAP``: nothing
    more is read from that connection.
    """

    __slots__ = ("fatal", "length")

    def __init__(self, length: int, fatal: bool = False) -> None:
        self.length = length
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"Overlong({self.length}{', fatal' if self.fatal else ''})"


Line = bytes | Overlong


class LineBuffer:
    """Split a byte stream into lines ending in LF (CRLF or bare LF), CR stripped.

    A line longer than ``max_line`` octets (without its line ending) is not kept: one
    ``Overlong`` is emitted the moment it passes the cap, so the session answers it at
    once and in order with the lines around it, and its remaining octets are dropped as
    they arrive. Past ``hard_cap`` octets a fatal ``Overlong`` ends the input.
    """

    def __init__(self, max_line: int = MAX_AUTH_LINE, hard_cap: int = LINE_HARD_CAP) -> None:
        self.max_line = max_line
        self.hard_cap = max(hard_cap, 2 * max_line)
        self._buf = bytearray()
        self._discarding = 0  # octets dropped so far of an over-long line; 0 = not dropping
        self._dead = False

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        if self._dead:
            return out
        buf = self._buf
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:]
                if self._discarding:
                    self._discarding += len(rest)
                else:
                    buf += rest
                    if len(buf) > self.max_line + 1:  # +1: a CR may be waiting for its LF
                        self._discarding = len(buf)
                        buf.clear()
                        out.append(Overlong(self._discarding))
                self._check_cap(self._discarding, out)
                return out
            piece = data[start:nl]
            start = nl + 1
            if self._discarding:
                length, self._discarding = self._discarding + len(piece), 0
                if self._check_cap(length, out):
                    return out
                continue
            if buf:
                buf += piece
                line = bytes(buf)
                buf.clear()
            else:
                line = piece
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) <= self.max_line:
                out.append(line)
                continue
            out.append(Overlong(len(line)))
            if self._check_cap(len(line), out):
                return out

    def _check_cap(self, length: int, out: list[Line]) -> bool:
        if length <= self.hard_cap:
            return False
        self._dead = True
        self._buf.clear()
        self._discarding = 0
        out.append(Overlong(length, fatal=True))
        return True

    def clear(self) -> None:
        """Forget everything buffered (STLS: nothing sent in plaintext may survive)."""
        self._buf.clear()
        self._discarding = 0

    @property
    def pending(self) -> int:
        """Octets of an incomplete line held."""
        return len(self._buf)


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: the upper-cased keyword, its arguments, and the raw remainder."""

    name: str
    args: tuple[str, ...]
    rest: str  # everything after "KEYWORD " verbatim (PASS passwords may contain spaces)


class CommandSyntaxError(ValueError):
    """A line that is not a command at all (empty, or no keyword)."""


def parse_command(line: bytes) -> Command:
    """Split ``KEYWORD [arg ...]``; arguments are separated by runs of spaces.

    Text is decoded as UTF-8 (undecodable octets become U+FFFD: a password with them can
    only fail, never match something else).
    """
    text = line.decode("utf-8", "replace")
    keyword, _, rest = text.partition(" ")
    if not keyword:
        raise CommandSyntaxError("Empty command" if not text.strip() else "Missing command")
    if not _KEYWORD.fullmatch(keyword):
        raise CommandSyntaxError("Unknown command")
    return Command(keyword.upper(), tuple(rest.split()), rest)


def parse_number(text: str) -> int | None:
    """A message number or line count: ASCII digits only (no sign, no spaces)."""
    raw = text.encode("utf-8", "replace")
    if not _NUMBER.fullmatch(raw):
        return None
    return int(raw)


def ok(text: str = "") -> bytes:
    return b"+OK " + text.encode() + CRLF if text else b"+OK" + CRLF


def err(text: str, code: str | None = None) -> bytes:
    """``-ERR [CODE] text`` (RFC 2449 §8 response codes)."""
    prefix = f"[{code}] " if code else ""
    return b"-ERR " + (prefix + text).encode() + CRLF


def multiline_parts(data: bytes, dot_lines: bool | None = None) -> list[bytes]:
    """A multi-line body as pieces to write: dot-stuffed, CRLF added if missing, ``.CRLF``.

    Lines are CRLF-delimited (messages are stored CRLF-normalised); every line of the
    whole body that starts with ``.`` gets another ``.`` in front. An empty body is no
    lines at all. Returning pieces spares RETR a copy of every message. ``dot_lines``
    says whether any line starts with ``.`` when that is known (the store marks each
    message at delivery); None scans for them.
    """
    if not data:
        return [TERMINATOR]
    if dot_lines is None:
        dot_lines = has_dot_lines(data)
    if dot_lines:
        data = data.replace(b"\r\n.", b"\r\n..")
        if data.startswith(b"."):
            data = b"." + data
    if data.endswith(CRLF):
        return [data, TERMINATOR]
    return [data, CRLF, TERMINATOR]


def multiline(data: bytes) -> bytes:
    """``multiline_parts`` joined into one bytes object."""
    return b"".join(multiline_parts(data))


def unstuff(body: bytes) -> bytes:
    """Inverse of ``multiline`` for tests and clients: a complete body → message octets."""
    if not body.endswith(TERMINATOR):
        raise ValueError("body is not terminated by .CRLF")
    if body == TERMINATOR:
        return b""
    content = body[: -len(TERMINATOR)]
    if content.startswith(b".."):
        content = content[1:]
    return content.replace(b"\r\n..", b"\r\n.")


def top(message: bytes, lines: int) -> bytes:
    """RFC 1939 TOP: the header block, the blank line, then ``lines`` body lines."""
    if message.startswith(CRLF):
        head_end = 2
    else:
        sep = message.find(b"\r\n\r\n")
        if sep < 0:
            return message  # no body at all: everything is header
        head_end = sep + 4
    pos = head_end
    for _ in range(lines):
        if pos >= len(message):
            break
        nl = message.find(CRLF, pos)
        pos = len(message) if nl < 0 else nl + 2
    return message[:pos]
