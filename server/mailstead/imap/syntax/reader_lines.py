"""What the ends of an IMAP command line say, for ``CommandReader`` (``reader.py``): the
tag and verb at its start and a literal marker at its end."""

from __future__ import annotations

from .tokens import TAG_CHARS

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
