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

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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

# Nesting deeper than this is not parsed: it only occurs in hostile mail, and each level
# costs a rescan of its bytes.
MAX_DEPTH = 32
# A 1 MB message can hold ~200 000 empty parts; storing and sending a structure that big
# helps nobody, so parsing stops splitting once this many parts exist.
MAX_PARTS = 10_000

_CRLF = b"\r\n"
_WSP = b" \t"
_DOT_LINE = re.compile(rb"\n\.")


def has_dot_lines(data: bytes) -> bool:
    """Whether any line of ``data`` starts with ``.``: the lines a dot-terminated transfer
    (POP3 RETR, SMTP DATA) must stuff. Most mail has none, which spares the copy."""
    # A regex search is several times faster than bytes.__contains__ for this needle.
    return data.startswith(b".") or _DOT_LINE.search(data) is not None


def normalise_crlf(raw: bytes) -> bytes:
    """Return ``raw`` with every bare LF and bare CR turned into CRLF.

    Existing CRLF pairs are kept, so the function is idempotent. Three C-level passes
    instead of a byte loop, because every delivered message goes through here.
    """
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True, slots=True)
class Address:
    """One IMAP address structure (RFC 3501 §7.4.2).

    A group start is ``(None, None, b"group name", None)`` and a group end is all None.
    """

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


@dataclass(frozen=True, slots=True)
class Envelope:
    date: bytes | None
    subject: bytes | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: bytes | None
    message_id: bytes | None


@dataclass(frozen=True, slots=True)
class BodyPart:
    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    id: bytes | None
    description: bytes | None
    encoding: str
    size: int
    lines: int | None
    md5: bytes | None
    disposition: tuple[str, tuple[tuple[str, str], ...]] | None
    language: tuple[str, ...] | None
    location: bytes | None
    header_start: int
    header_end: int
    body_start: int
    body_end: int
    parts: tuple[BodyPart, ...]
    envelope: Envelope | None

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart" and bool(self.parts)

    @property
    def is_message(self) -> bool:
        """True for a message/rfc822 part whose encapsulated message was parsed."""
        return (
            self.type == "message"
            and self.subtype == "rfc822"
            and self.envelope is not None
            and len(self.parts) == 1
        )

    def param(self, name: str) -> str | None:
        """The first Content-Type parameter called ``name`` (case-insensitive)."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    envelope: Envelope
    root: BodyPart

    def to_json(self) -> str:
        """Compact JSON (positional arrays, bytes as latin-1 text) for the message store."""
        return json.dumps(
            [1, _env_to_obj(self.envelope), _part_to_obj(self.root)], separators=(",", ":")
        )

    @classmethod
    def from_json(cls, s: str) -> ParsedMessage:
        """Inverse of :meth:`to_json`; raises ValueError on anything it did not write."""
        try:
            version, env, root = json.loads(s)
            if version != 1:
                raise ValueError(f"unknown parsed-message format {version!r}")
            return cls(_env_from_obj(env), _part_from_obj(root))
        except ValueError:
            raise
        except Exception as exc:  # wrong shapes surface as TypeError/IndexError etc.
            raise ValueError(f"malformed parsed-message JSON: {exc}") from exc


# --------------------------------------------------------------------------- JSON codec
# Bytes go through latin-1, which maps every byte to one code point and back losslessly.


def _b2j(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _j2b(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _addrs_to_obj(addrs: tuple[Address, ...]) -> list[list[str | None]]:
    return [[_b2j(a.name), _b2j(a.adl), _b2j(a.mailbox), _b2j(a.host)] for a in addrs]


def _addrs_from_obj(obj: list[list[str | None]]) -> tuple[Address, ...]:
    return tuple(Address(_j2b(n), _j2b(a), _j2b(m), _j2b(h)) for n, a, m, h in obj)


def _env_to_obj(env: Envelope) -> list[Any]:
    return [
        _b2j(env.date), _b2j(env.subject),
        _addrs_to_obj(env.from_), _addrs_to_obj(env.sender), _addrs_to_obj(env.reply_to),
        _addrs_to_obj(env.to), _addrs_to_obj(env.cc), _addrs_to_obj(env.bcc),
        _b2j(env.in_reply_to), _b2j(env.message_id),
    ]  # fmt: skip


def _env_from_obj(obj: list[Any]) -> Envelope:
    date, subject, frm, sender, reply_to, to, cc, bcc, irt, mid = obj
    return Envelope(
        _j2b(date), _j2b(subject),
        _addrs_from_obj(frm), _addrs_from_obj(sender), _addrs_from_obj(reply_to),
        _addrs_from_obj(to), _addrs_from_obj(cc), _addrs_from_obj(bcc),
        _j2b(irt), _j2b(mid),
    )  # fmt: skip


def _part_to_obj(p: BodyPart) -> list[Any]:
    # str fields may hold lone surrogates (surrogateescape); json escapes them as \udcXX
    # and reads them back unchanged.
    disp = (
        None if p.disposition is None else [p.disposition[0], [list(kv) for kv in p.disposition[1]]]
    )
    return [
        p.type, p.subtype, [list(kv) for kv in p.params], _b2j(p.id), _b2j(p.description),
        p.encoding, p.size, p.lines, _b2j(p.md5), disp,
        None if p.language is None else list(p.language), _b2j(p.location),
        p.header_start, p.header_end, p.body_start, p.body_end,
        [_part_to_obj(c) for c in p.parts],
        None if p.envelope is None else _env_to_obj(p.envelope),
    ]  # fmt: skip


def _part_from_obj(o: list[Any]) -> BodyPart:
    (type_, subtype, params, id_, desc, enc, size, lines, md5, disp, lang, loc,
     hs, he, bs, be, parts, env) = o  # fmt: skip
    return BodyPart(
        type=type_,
        subtype=subtype,
        params=tuple((k, v) for k, v in params),
        id=_j2b(id_),
        description=_j2b(desc),
        encoding=enc,
        size=size,
        lines=lines,
        md5=_j2b(md5),
        disposition=None if disp is None else (disp[0], tuple((k, v) for k, v in disp[1])),
        language=None if lang is None else tuple(lang),
        location=_j2b(loc),
        header_start=hs,
        header_end=he,
        body_start=bs,
        body_end=be,
        parts=tuple(_part_from_obj(c) for c in parts),
        envelope=None if env is None else _env_from_obj(env),
    )


# --------------------------------------------------------------------------- header blocks

# RFC 5322 ftext; obsolete whitespace before the colon is allowed and stripped.
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def header_units(header_block: bytes) -> list[tuple[bytes | None, bytes]]:
    """Split a header block into fields: ``(lower-cased name or None, exact bytes)``.

    Each unit is one header line plus its continuation lines, always ending in CRLF (one is
    added to an unterminated last line). Lines that are not a valid ``name:`` line (and
    leading continuation lines) become units with name None, so no byte is lost. Stops at
    the first empty line, so passing a whole message is harmless.
    """
    lines = header_block.split(_CRLF)
    # lines[-1] is whatever follows the last CRLF: an unterminated line, or b"".
    last = lines.pop()
    if last:
        lines.append(last)
    units: list[tuple[bytes | None, list[bytes]]] = []
    for line in lines:
        if not line:
            break  # the blank line ending the header
        if line[0] in _WSP and units:
            units[-1][1].append(line)
            continue
        name: bytes | None = None
        colon = line.find(b":")
        if colon > 0:
            candidate = line[:colon].rstrip(_WSP)
            if _FIELD_NAME.fullmatch(candidate):
                name = candidate.lower()
        units.append((name, [line]))
    return [(name, _CRLF.join(chunk) + _CRLF) for name, chunk in units]


def _field_value(unit: bytes) -> bytes:
    """Unfolded value of a header unit: text after the colon, CRLFs removed, WSP-trimmed.

    Removing every CRLF is exactly unfolding, since inside a unit each CRLF but the last is
    followed by a continuation line's leading whitespace.
    """
    return unit[unit.find(b":") + 1 :].replace(_CRLF, b"").strip(_WSP)


# The only fields the structure needs; skipping the rest (Received: chains, DKIM) saves
# most of the per-field work at delivery time.
_STRUCTURE_FIELDS = frozenset({
    b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
    b"in-reply-to", b"message-id", b"content-type", b"content-transfer-encoding",
    b"content-id", b"content-description", b"content-md5", b"content-disposition",
    b"content-language", b"content-location",
})  # fmt: skip


def _field_map(header_block: bytes) -> dict[bytes, bytes]:
    """First occurrence of each structure field, unfolded (the first one is what counts)."""
    fields: dict[bytes, bytes] = {}
    for name, unit in header_units(header_block):
        if name in _STRUCTURE_FIELDS and name not in fields:
            fields[name] = _field_value(unit)
    return fields


@functools.lru_cache(maxsize=128)
def _wanted_names(names: tuple[bytes | str, ...]) -> frozenset[bytes]:
    return frozenset(
        (n.encode("latin-1") if isinstance(n, str) else bytes(n)).lower() for n in names
    )


def header_fields(header_block: bytes, names: Iterable[bytes], *, exclude: bool) -> bytes:
    """BODY[HEADER.FIELDS (...)] / HEADER.FIELDS.NOT: matching (or non-matching) fields.

    Whole fields with their continuation lines, byte-exact and in original order, followed
    by the blank line (RFC 3501 includes it). Name matching is ASCII case-insensitive.
    With ``exclude=True`` unparseable lines are returned too, as they match no name.
    """
    wanted = _wanted_names(tuple(names))
    out = [unit for name, unit in header_units(header_block) if (name in wanted) != exclude]
    out.append(_CRLF)
    return b"".join(out)


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset just after the blank line ending the header at ``start``, or ``end``."""
    if raw.startswith(_CRLF, start, end):
        return start + 2
    k = raw.find(b"\r\n\r\n", start, end)
    return end if k < 0 else k + 4


# --------------------------------------------------------------------------- addresses

_QS, _DL, _SPECIAL, _ATOM, _COMMENT, _ANGLE = range(6)
# Every byte except "(" starts exactly one alternative, and the quoted-string and
# domain-literal forms also match when unterminated, so a match always makes progress.
# "." is an atom character here: it keeps "John Q. Public" and "a.b@c.d" simple.
_ADDR_TOKEN = re.compile(
    rb"(?P<ws>[ \t\r\n]+)"
    rb'|(?P<qs>"(?:[^"\\]|\\.)*(?:"|\\?\Z))'
    rb"|(?P<dl>\[(?:[^\]\\]|\\.)*(?:\]|\\?\Z))"
    rb"|(?P<sp>[<>@,;:])"
    rb'|(?P<atom>[^ \t\r\n(<>@,;:"\[]+)',
    re.S,
)
_KIND = {"qs": _QS, "dl": _DL, "sp": _SPECIAL, "atom": _ATOM}
_COMMENT_STOP = re.compile(rb"[()\\]")
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)

_Token = tuple[int, Any]  # (kind, bytes) or (_ANGLE, list of tokens)
_GROUP_END = Address(None, None, None, None)
# Like Dovecot, fill in what the header left out: a NIL host would mean "group start".
_MISSING_MAILBOX = b"MISSING_MAILBOX"
_MISSING_DOMAIN = b"MISSING_DOMAIN"


def _scan_comment(v: bytes, i: int) -> tuple[int, bytes]:
    """Comment starting at ``v[i] == "("``: (offset after it, its inner text)."""
    depth = 0
    j = i
    while True:
        m = _COMMENT_STOP.search(v, j)
        if m is None:
            return len(v), v[i + 1 :]  # unterminated: runs to the end
        j = m.start()
        c = v[j]
        if c == 0x5C:  # backslash quotes the next byte, even a paren
            j += 2
            continue
        depth += 1 if c == 0x28 else -1
        j += 1
        if depth == 0:
            return j, v[i + 1 : j - 1]


def _address_tokens(v: bytes) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(v)
    while i < n:
        if v[i] == 0x28:
            i, text = _scan_comment(v, i)
            tokens.append((_COMMENT, text))
            continue
        m = _ADDR_TOKEN.match(v, i)
        if m is None:  # cannot happen (see _ADDR_TOKEN), but never loop forever
            tokens.append((_ATOM, v[i : i + 1]))
            i += 1
            continue
        if m.lastgroup != "ws":
            tokens.append((_KIND[m.lastgroup or "atom"], m.group()))
        i = m.end()
    return tokens


def _unquote(qs: bytes) -> bytes:
    inner = qs[1:-1] if len(qs) >= 2 and qs.endswith(b'"') else qs[1:]
    return _QUOTED_PAIR.sub(rb"\1", inner)


def _phrase(tokens: Iterable[_Token]) -> bytes | None:
    """Display name: words with quotes removed, joined by single spaces (as Dovecot)."""
    words = [_unquote(t) if k == _QS else t for k, t in tokens if k not in (_COMMENT, _ANGLE)]
    name = b" ".join(words)
    return name or None


def _first_comment(tokens: Iterable[_Token]) -> bytes | None:
    for kind, text in tokens:
        if kind == _COMMENT:
            name = _QUOTED_PAIR.sub(rb"\1", text).strip(_WSP)
            return name or None
    return None


def _addr_spec(tokens: list[_Token]) -> tuple[bytes, bytes]:
    """(mailbox, host) of ``local@domain`` tokens; the last "@" separates them."""
    words = [t for k, t in tokens if k != _COMMENT]
    at = len(words) - 1
    while at >= 0 and words[at] != b"@":
        at -= 1
    if at < 0:
        return b"".join(words) or _MISSING_MAILBOX, _MISSING_DOMAIN
    return b"".join(words[:at]) or _MISSING_MAILBOX, b"".join(words[at + 1 :]) or _MISSING_DOMAIN


def _mailbox(seg: list[_Token]) -> Address | None:
    """One mailbox (name-addr or addr-spec) from its tokens; None for an empty element."""
    for idx, (kind, inner) in enumerate(seg):
        if kind == _ANGLE:
            name = _phrase(seg[:idx]) or _first_comment(seg)
            content = [t for t in inner if t[0] != _COMMENT]
            if not content:
                return Address(name, None, b"", b"")  # "<>", the null address
            adl = None
            colons = [i for i, t in enumerate(content) if t == (_SPECIAL, b":")]
            if colons:  # obsolete source route: <@a,@b:user@host>
                adl = b"".join(t for _, t in content[: colons[-1]]) or None
                content = content[colons[-1] + 1 :]
            mailbox, host = _addr_spec(content)
            return Address(name, adl, mailbox, host)
    if not any(kind != _COMMENT for kind, _ in seg):
        return None
    mailbox, host = _addr_spec(seg)
    return Address(_first_comment(seg), None, mailbox, host)


def _parse_addresses(value: bytes | None) -> tuple[Address, ...]:
    """RFC 5322 address-list (with groups) into IMAP address structures, leniently.

    Own tokenizer rather than ``email.utils.getaddresses``: that flattens groups (IMAP must
    report them), drops source routes and mangles backslash-quoting.
    """
    if not value:
        return ()
    tokens = _address_tokens(value)
    out: list[Address] = []
    seg: list[_Token] = []
    in_group = False

    def flush() -> None:
        addr = _mailbox(seg)
        if addr is not None:
            out.append(addr)
        seg.clear()

    i, n = 0, len(tokens)
    while i < n:
        kind, text = tokens[i]
        i += 1
        if kind != _SPECIAL:
            seg.append((kind, text))
        elif text == b"<":
            inner: list[_Token] = []
            while i < n and tokens[i] != (_SPECIAL, b">"):
                inner.append(tokens[i])
                i += 1
            i += 1  # skip ">" (or step past the end when unterminated)
            seg.append((_ANGLE, inner))
        elif text == b",":
            flush()
        elif text == b":" and not in_group:
            out.append(Address(None, None, _phrase(seg) or b"", None))
            seg.clear()
            in_group = True
        elif text == b";":
            flush()
            if in_group:
                out.append(_GROUP_END)
                in_group = False
        elif text == b"@":
            seg.append((kind, text))
        # a stray ">" or a nested ":" carries no meaning and is dropped
    flush()
    if in_group:  # unterminated group: close it so clients see balanced markers
        out.append(_GROUP_END)
    return tuple(out)


def _envelope(fields: dict[bytes, bytes]) -> Envelope:
    get = fields.get
    from_ = _parse_addresses(get(b"from"))
    # RFC 3501 §7.4.2: the server defaults sender and reply-to to from.
    sender = _parse_addresses(get(b"sender")) or from_
    reply_to = _parse_addresses(get(b"reply-to")) or from_
    return Envelope(
        date=get(b"date"),
        subject=get(b"subject"),
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        to=_parse_addresses(get(b"to")),
        cc=_parse_addresses(get(b"cc")),
        bcc=_parse_addresses(get(b"bcc")),
        in_reply_to=get(b"in-reply-to"),
        message_id=get(b"message-id"),
    )


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

_PADDING = re.compile(rb"[ \t]*(?:\r\n|\Z)")


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
    m = _PADDING.match(raw, j, end)
    if m is None:
        return None
    return m.end(), False


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
