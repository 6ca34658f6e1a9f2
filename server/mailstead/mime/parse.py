"""MIME structure of a stored message, with byte offsets, for IMAP FETCH.

The stdlib ``email`` package parses headers well but cannot say *where* anything is, and
IMAP needs exact byte ranges (BODY[1.2], BODY[1.MIME], RFC822.SIZE of parts). So the
structure is found by our own scan over the raw bytes: header ends with one
``bytes.find(b"\\r\\n\\r\\n")`` and boundaries with ``bytes.find``, which keeps parsing
linear in the message size (times the nesting depth, which is capped).

Conventions (all offsets index the full message bytes):

* Messages are stored CRLF-normalised (see :func:`normalise_crlf`); the parser assumes it
  but stays in bounds and never raises on any other input either.
* A header block runs from ``header_start`` to ``header_end``, *including* the blank line
  that ends it. A message or part that starts with a blank line has an empty header:
  ``header_end == header_start + 2`` (just the blank line). One without any blank line is
  all header: ``header_end == body_start == body_end``.
* Envelope values and address display names are the raw (unfolded, not RFC 2047-decoded)
  header bytes, as IMAP ENVELOPE wants them.
* Text-valued MIME fields (types, parameters, dispositions) are ``str`` made from the raw
  bytes with ``utf-8``/``surrogateescape``, so 8-bit values survive exactly:
  ``value.encode("utf-8", "surrogateescape")`` gives the original bytes back. Type,
  subtype, parameter names and disposition types are ASCII-lower-cased; the transfer
  encoding is upper-cased.
* Parts that cannot be descended into are reported with a type that IMAP clients can
  handle as a leaf: a ``multipart/*`` without a usable boundary (no parameter, or no
  delimiter line in the body) is reported as ``text/plain`` so its raw text stays
  readable; a ``multipart/*`` or ``message/rfc822`` beyond the nesting cap
  (:data:`MAX_DEPTH`) or the part budget (:data:`MAX_PARTS`), and a ``message/rfc822``
  with a base64/quoted-printable encoding (forbidden by RFC 2046, and not parseable
  without decoding), become ``application/octet-stream``. The body offsets are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .headers import _envelope, _header_end, header_fields, header_units
from .model import Address, BodyPart, Envelope, ParsedMessage
from .structure import (
    _DEFAULT_TEXT,
    MAX_DEPTH,
    MAX_PARTS,
    _Budget,
    _count_lines,
    _parse_entity,
)

# The public API: what callers import from here, wherever it is defined.
__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Address",
    "BodyPart",
    "Envelope",
    "ParsedMessage",
    "has_dot_lines",
    "header_fields",
    "header_units",
    "normalise_crlf",
    "parse_message",
    "part_by_number",
]

_DOT_LINE = re.compile(rb"\n\.")


def has_dot_lines(data: bytes) -> bool:
    """Whether any line of ``data`` starts with ``.``: the lines a dot-terminated transfer
    (POP3 RETR, SMTP DATA) must stuff. Most mail has none, which spares the copy."""
    if data.startswith(b"."):
        return True
    if not isinstance(data, bytes):  # a file-backed view (store/sqlite/fileview.py)
        return data.find(b"\n.") >= 0
    # A regex search is several times faster than bytes.__contains__ for this needle.
    return _DOT_LINE.search(data) is not None


def normalise_crlf(raw: bytes) -> bytes:
    """Return ``raw`` with every bare LF and bare CR turned into CRLF.

    Existing CRLF pairs are kept, so the function is idempotent. Three C-level passes
    instead of a byte loop, because every delivered message goes through here.
    """
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _parse_strict(raw: bytes) -> ParsedMessage:
    root, fields = _parse_entity(raw, 0, len(raw), 0, _DEFAULT_TEXT, _Budget(MAX_PARTS - 1))
    return ParsedMessage(_envelope(fields), root)


def parse_message(raw: bytes) -> ParsedMessage:
    """Envelope and MIME structure of a (CRLF-normalised) message. Never raises."""
    try:
        return _parse_strict(raw)
    except Exception:
        # Last line of defence so one bad message cannot break delivery: the parser has no
        # known failure, but if one appears the message still gets a minimal, valid shape.
        end = len(raw)
        header_end = _header_end(raw, 0, end)
        root = BodyPart(
            "text", "plain", _DEFAULT_TEXT[2], None, None, "7BIT", end - header_end,
            _count_lines(raw, header_end, end), None, None, None, None,
            0, header_end, header_end, end, (), None,
        )  # fmt: skip
        empty = Envelope(None, None, (), (), (), (), (), (), None, None)
        return ParsedMessage(empty, root)


def part_by_number(root: BodyPart, numbers: Sequence[int]) -> BodyPart | None:
    """The part an IMAP section number (RFC 3501 §6.4.5) names, or None.

    ``root`` is the top-level message's body. An empty sequence gives ``root``. Part 1 of a
    non-multipart message (or encapsulated message) is its body itself; a number below a
    message/rfc822 part indexes the encapsulated message's body the same way. For
    ``n.HEADER``/``n.TEXT`` of a message/rfc822 part use ``part.parts[0]`` (the
    encapsulated message's root: its header and body offsets).
    """
    part = root
    for level, n in enumerate(numbers):
        if level == 0:
            body = root
        elif part.is_message:
            body = part.parts[0]
        elif part.is_multipart:
            body = part
        else:
            return None  # a leaf has no sub-parts
        siblings = body.parts if body.is_multipart else (body,)
        if not 1 <= n <= len(siblings):
            return None
        part = siblings[n - 1]
    return part
