"""Header blocks of a raw message: fields byte-exact, the fields the structure needs, and
the addresses and envelope (RFC 5322 / RFC 3501 §7.4.2) parsed from them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from .model import Address, Envelope

_CRLF = b"\r\n"
_WSP = b" \t"


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
