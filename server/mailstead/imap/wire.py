"""Primitives of IMAP response syntax (RFC 3501 §9): strings, nstrings, lists.

Every formatter returns bytes ready for the wire. Strings are sent quoted when they
can be (no CR, LF, NUL, 8-bit or over-long values), otherwise as a synchronising
literal, which a server may always send.
"""

from __future__ import annotations

from collections.abc import Iterable

_QUOTABLE_MAX = 1024
_SPECIALS = frozenset(b'(){ %*"\\]')


def literal(data: bytes) -> bytes:
    """A literal: ``{n}CRLF`` followed by the octets."""
    return b"{%d}\r\n" % len(data) + data


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
