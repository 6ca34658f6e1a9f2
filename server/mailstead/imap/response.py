"""What the server sends: tagged results and the primitives of response syntax.

:class:`Result` is a tagged completion (``tag OK [code] text``); handlers return one
or raise :class:`CommandFailed`. The primitives (RFC 3501 §9: strings, nstrings,
lists, literals) return bytes ready for the wire. Strings are sent quoted when they
can be (no CR, LF, NUL, 8-bit or over-long values), otherwise as a synchronising
literal, which a server may always send. This is the one module that formats them;
ENVELOPE/BODYSTRUCTURE (``structure.py``) and FETCH items are built from these.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

_QUOTABLE_MAX = 1024
_SPECIALS = frozenset(b'(){ %*"\\]')


# RFC 3501 §9: a literal is CHAR8, %x01-ff: no NUL, and §4.3 does not permit unencoded
# binary strings (RFC 9051 §4.3.1 likewise), except a literal8 answering BINARY[]
# (RFC 3516 §4.2). Stored messages may still hold NULs (mail is stored byte-exact), so a
# NUL is sent as 0x80, as Dovecot does: one octet for one, so lengths, partial offsets and
# RFC822.SIZE stay exact, and 0x80 is never part of valid UTF-8 or ASCII text.
NUL_REPLACEMENT = b"\x80"


def without_nul(data: bytes) -> bytes:
    """``data`` fit for a literal: NUL octets replaced (no copy when there are none)."""
    return data.replace(b"\0", NUL_REPLACEMENT) if b"\0" in data else data


def literal(data: bytes) -> bytes:
    """A literal: ``{n}CRLF`` followed by the octets, NUL octets replaced."""
    return b"{%d}\r\n" % len(data) + without_nul(data)


def literal8(data: bytes) -> bytes:
    """A literal8 (RFC 3516): ``~{n}CRLF`` and the octets exactly, NUL included."""
    return b"~{%d}\r\n" % len(data) + data


def string(value: str | bytes) -> bytes:
    """A quoted string, or a literal when the value cannot be quoted."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) > _QUOTABLE_MAX or any(b > 0x7E or b in (0, 10, 13) for b in data):
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: str | bytes | None) -> bytes:
    """``NIL`` for None, else a string."""
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when the value is a plain atom, else a string (used for mailbox names)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if data and all(0x20 < b < 0x7F and b not in _SPECIALS for b in data):
        return data
    return string(data)


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of already formatted items separated by spaces."""
    return b"(" + b" ".join(items) + b")"


def number(value: int) -> bytes:
    return b"%d" % value


def flag_list(flags: Iterable[str]) -> bytes:
    """A list of flags, as in ``* FLAGS`` and ``PERMANENTFLAGS``."""
    return plist(f.encode("utf-8") for f in flags)


@functools.lru_cache(maxsize=4096)
def message_flags(flags: frozenset[str], recent: bool) -> bytes:
    """A message's flag list as sent: the store shares one set per distinct flags, so a
    FETCH of 100,000 messages formats a handful (frozensets keep their hash)."""
    ordered = sorted(flags)
    if recent:
        ordered.append("\\Recent")
    return flag_list(ordered)


# A header field name as echoed in a FETCH response's section
# (``BODY[HEADER.FIELDS (...)]``): spelled back the way the client may write it, an
# atom when every octet is an astring char ("]" included), else quoted, else a literal.
_HEADER_ATOM_CHARS = frozenset(range(0x21, 0x7F)) - frozenset(b'(){%*"\\')


def section_header_name(value: str) -> bytes:
    data = value.encode("utf-8")
    if data and all(b in _HEADER_ATOM_CHARS for b in data):
        return data
    if len(data) <= _QUOTABLE_MAX and all(0 < b < 0x80 and b not in (10, 13) for b in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


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
