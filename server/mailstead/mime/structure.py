"""The MIME structure scan: Content-* fields and the recursive split of a raw message
into body parts with byte offsets (see ``parse.py`` for the conventions)."""

from __future__ import annotations

import re

from .headers import _CRLF, _QUOTED_PAIR, _WSP, _envelope, _field_map, _header_end
from .model import BodyPart, Envelope

# Nesting deeper than this is not parsed: it only occurs in hostile mail, and each level
# costs a rescan of its bytes.
MAX_DEPTH = 32
# A 1 MB message can hold ~200 000 empty parts; storing and sending a structure that big
# helps nobody, so parsing stops splitting once this many parts exist.
MAX_PARTS = 10_000


# --------------------------------------------------------------------------- MIME fields

_TOKEN_CHARS = rb"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rb"[ \t]*(" + _TOKEN_CHARS + rb")[ \t]*/[ \t]*(" + _TOKEN_CHARS + rb")")
_DISPOSITION = re.compile(rb"[ \t]*(" + _TOKEN_CHARS + rb")")
# Lenient: a parameter name is anything up to "=", the value a quoted string (possibly
# unterminated) or everything up to the next ";".
_PARAM = re.compile(
    rb'[ \t]*([^ \t=;"]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)(?:"|\\?\Z)|([^;]*))', re.S
)
_CONTINUATION = re.compile(r"(.+?)\*(\d{1,3})(\*?)", re.S)
# Old mailers write "charset=us-ascii (Plain text)"; the comment is not part of the value.
_TRAILING_COMMENT = re.compile(rb"[ \t]*\([^()]*\)[ \t]*\Z")

_Params = tuple[tuple[str, str], ...]
_DEFAULT_TEXT = ("text", "plain", (("charset", "us-ascii"),))
_DEFAULT_DIGEST = ("message", "rfc822", ())
_OPAQUE = ("application", "octet-stream")
_PLAIN_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY"})


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _lower(b: bytes) -> str:
    return _s(b.lower())  # bytes.lower() only touches ASCII letters


def _parse_params(value: bytes, pos: int) -> _Params:
    """``; name=value`` pairs after ``pos``, RFC 2231 continuations joined.

    ``name*0=a; name*1=b`` becomes ``name=ab``; when a segment is extended (``name*0*``)
    the result is ``name*`` with the raw ``charset'lang'%xx`` value, left for the reader to
    decode, as Dovecot does. The joined parameter sits where its first segment was.
    """
    # None as a value marks the slot of a continued parameter, filled in at the end.
    params: list[tuple[str, str | None]] = []
    pending: dict[str, list[tuple[int, bool, str]]] = {}
    while True:
        semi = value.find(b";", pos)
        if semi < 0:
            break
        pos = semi + 1
        m = _PARAM.match(value, pos)
        if m is None:
            continue  # garbage between semicolons
        pos = m.end()
        raw_name, quoted, plain = m.groups()
        if quoted is not None:
            val = _QUOTED_PAIR.sub(rb"\1", quoted)
        else:
            val = _TRAILING_COMMENT.sub(b"", plain).strip(_WSP)
        name = _lower(raw_name)
        cont = _CONTINUATION.fullmatch(name)
        if cont is None:
            params.append((name, _s(val)))
            continue
        base = cont.group(1)
        if base not in pending:
            pending[base] = []
            params.append((base, None))
        pending[base].append((int(cont.group(2)), bool(cont.group(3)), _s(val)))
    result: list[tuple[str, str]] = []
    for name, text in params:
        if text is not None:
            result.append((name, text))
            continue
        segments = sorted(pending[name], key=lambda seg: seg[0])
        extended = any(ext for _, ext, _ in segments)
        result.append((name + "*" if extended else name, "".join(v for _, _, v in segments)))
    return tuple(result)


def _content_type(
    value: bytes | None, default: tuple[str, str, _Params]
) -> tuple[str, str, _Params]:
    if value is None:
        return default
    m = _MEDIA_TYPE.match(value)
    if m is None:
        # RFC 2045 §5.2: an invalid Content-Type means text/plain; us-ascii.
        return _DEFAULT_TEXT
    return _lower(m.group(1)), _lower(m.group(2)), _parse_params(value, m.end())


def _disposition(value: bytes | None) -> tuple[str, _Params] | None:
    if value is None:
        return None
    m = _DISPOSITION.match(value)
    if m is None:
        return None
    return _lower(m.group(1)), _parse_params(value, m.end())


def _language(value: bytes | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    value = re.sub(rb"\([^)]*\)", b"", value)  # tags may carry comments
    tags = tuple(_s(t.strip(b" \t")) for t in value.split(b",") if t.strip(b" \t"))
    return tags or None


def _encoding(value: bytes | None) -> str:
    if value is None:
        return "7BIT"
    m = _DISPOSITION.match(value)  # one token, comments or junk after it ignored
    return _s(m.group(1).upper()) if m else "7BIT"


def _count_lines(raw: bytes, start: int, end: int) -> int:
    """Text lines in raw[start:end]; an unterminated last line counts too."""
    if end <= start:
        return 0
    n = raw.count(b"\n", start, end)
    return n if raw[end - 1] == 0x0A else n + 1


# --------------------------------------------------------------------------- structure


class _Budget:
    """Parts still allowed for this message (shared across the recursion).

    Parts are charged when their ranges are found, before any of them is parsed, so
    siblings waiting their turn cannot push the total past the limit.
    """

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _delimiter_at(raw: bytes, j: int, end: int) -> tuple[int, bool] | None:
    """Validate what follows ``--boundary`` at ``j``: (offset after the line, is_close).

    A delimiter line is ``--boundary--`` (close) or ``--boundary`` plus optional transport
    padding and CRLF; anything else (``--boundaryX``) is ordinary content, which also keeps
    an inner boundary that extends an outer one from splitting the outer multipart.
    """
    if raw.startswith(b"--", j, end):
        return end, True
    # Transport padding ([ \t]*) then CRLF or the end of the range. Read in slices, not
    # with a regex over raw: the store may hand a file-backed view without the buffer
    # protocol (store/sqlite/fileview.py) instead of bytes.
    while j < end:
        window = raw[j : min(end, j + 64)]
        blank = len(window) - len(window.lstrip(b" \t"))
        j += blank
        if blank < len(window):  # something else at j: it must be the CRLF
            return (j + 2, False) if raw.startswith(_CRLF, j, end) else None
    return end, False


def _find_delimiter(raw: bytes, pos: int, end: int, delim: bytes) -> tuple[int, int, bool] | None:
    """Next ``CRLF--boundary`` line from ``pos``: (start of its CRLF, line end, is_close)."""
    while True:
        k = raw.find(delim, pos, end)
        if k < 0:
            return None
        found = _delimiter_at(raw, k + len(delim), end)
        if found is not None:
            return k, found[0], found[1]
        pos = k + 1


def _split_multipart(
    raw: bytes, start: int, end: int, boundary: bytes, limit: int
) -> list[tuple[int, int]]:
    """Byte ranges of the body parts of a multipart body, preamble and epilogue excluded.

    Each range stops before the CRLF that precedes the next delimiter (RFC 2046 gives that
    CRLF to the delimiter). A missing close delimiter ends the last part at ``end``. At most
    ``limit`` ranges; when hit, the last one absorbs the rest of the body.
    """
    dash = b"--" + boundary
    delim = _CRLF + dash
    first: tuple[int, int, bool] | None = None
    if raw.startswith(dash, start, end):  # no preamble: the body opens with the delimiter
        found = _delimiter_at(raw, start + len(dash), end)
        if found is not None:
            first = (start, found[0], found[1])
    if first is None:
        first = _find_delimiter(raw, start, end, delim)
    if first is None or first[2]:
        return []
    ranges: list[tuple[int, int]] = []
    k, part_start = first[0], first[1]
    while True:
        if len(ranges) + 1 >= limit:
            ranges.append((part_start, end))
            break
        # The next delimiter's CRLF may be the previous line's own CRLF (an empty part).
        nxt = _find_delimiter(raw, max(part_start - 2, k + 1), end, delim)
        if nxt is None:
            ranges.append((part_start, end))  # unterminated multipart
            break
        k, line_end, close = nxt
        ranges.append((part_start, max(part_start, k)))
        if close:
            break
        part_start = line_end
    return ranges


def _parse_entity(
    raw: bytes,
    start: int,
    end: int,
    depth: int,
    default: tuple[str, str, _Params],
    budget: _Budget,
) -> tuple[BodyPart, dict[bytes, bytes]]:
    """Parse the entity (header + body) in raw[start:end]; also return its header fields.

    The caller has already charged this entity to ``budget``.
    """
    header_end = _header_end(raw, start, end)
    fields = _field_map(raw[start:header_end])
    type_, subtype, params = _content_type(fields.get(b"content-type"), default)
    if type_ == "text" and not params:
        params = _DEFAULT_TEXT[2]  # RFC 2045 §5.2 charset default; Dovecot shows it too
    encoding = _encoding(fields.get(b"content-transfer-encoding"))
    body_start = header_end
    children: tuple[BodyPart, ...] = ()
    envelope: Envelope | None = None
    room = depth < MAX_DEPTH and budget.left > 0

    if type_ == "multipart":
        boundary = next((v for k, v in params if k == "boundary"), "")
        ranges: list[tuple[int, int]] = []
        if room and boundary:
            ranges = _split_multipart(
                raw, body_start, end, boundary.encode("utf-8", "surrogateescape"), budget.left
            )
        if ranges:
            budget.left -= len(ranges)
            # RFC 2046 §5.1.5: inside multipart/digest the default type is message/rfc822.
            child_default = _DEFAULT_DIGEST if subtype == "digest" else _DEFAULT_TEXT
            children = tuple(
                _parse_entity(raw, ps, pe, depth + 1, child_default, budget)[0] for ps, pe in ranges
            )
        elif room:
            type_, subtype = "text", "plain"  # no usable boundary: show the raw text
            params = _DEFAULT_TEXT[2]
        else:
            type_, subtype = _OPAQUE
    elif type_ == "message" and subtype == "rfc822":
        if room and encoding in _PLAIN_ENCODINGS:
            budget.left -= 1
            inner, inner_fields = _parse_entity(
                raw, body_start, end, depth + 1, _DEFAULT_TEXT, budget
            )
            children = (inner,)
            envelope = _envelope(inner_fields)
        else:
            type_, subtype = _OPAQUE

    lines = None
    if type_ == "text" or envelope is not None:
        lines = _count_lines(raw, body_start, end)
    part = BodyPart(
        type=type_,
        subtype=subtype,
        params=params,
        id=fields.get(b"content-id"),
        description=fields.get(b"content-description"),
        encoding=encoding,
        size=end - body_start,
        lines=lines,
        md5=fields.get(b"content-md5"),
        disposition=_disposition(fields.get(b"content-disposition")),
        language=_language(fields.get(b"content-language")),
        location=fields.get(b"content-location"),
        header_start=start,
        header_end=header_end,
        body_start=body_start,
        body_end=end,
        parts=children,
        envelope=envelope,
    )
    return part, fields
