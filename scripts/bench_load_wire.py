"""IMAP responses for ``scripts/bench load``: read them off a stream, parse them.

The reader returns one whole response (its literals inline, as ``{n}\\r\\n`` + n octets, the
way they arrive). The parser turns it into a ``Tagged``, ``Untagged`` or ``Continuation`` and
raises ``ParseError`` for anything RFC 3501 / 9051 does not allow, because the state checker
counts such responses as violations: a client cannot act on a response it cannot read.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_LITERAL = 256 * 1024 * 1024
LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
LITERAL_HEAD = re.compile(rb"\{(\d+)\+?\}\r\n")
# Atom characters, and "]" (resp-specials are allowed in an astring); "[" opens a section.
ATOM_RUN = re.compile(rb'[^\x00-\x20\x7f()"{\[]+')
# The most common response, ``* n FETCH (UID u FLAGS (...))`` in either order, read by one
# regular expression; anything else (or any doubt) goes to the full parser, which gives the
# same result (tested).
_FLAGS = rb'\(((?:[^\x00-\x20\x7f()"{\[\]]+(?: [^\x00-\x20\x7f()"{\[\]]+)*)?)\)'
_NZ = rb"([1-9][0-9]{0,9})"
FAST_FETCH = re.compile(rb"\* " + _NZ + rb" FETCH \((?:UID " + _NZ + rb" FLAGS " + _FLAGS
                        + rb"|FLAGS " + _FLAGS + rb"(?: UID " + _NZ + rb")?)\)\r\n\Z")
STATUS_NAMES = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
NUMBERED_KINDS = frozenset({"EXISTS", "EXPUNGE", "RECENT", "FETCH"})
LISTED_KINDS = frozenset({"FLAGS", "LIST", "LSUB", "STATUS", "ESEARCH", "NAMESPACE", "ID"})
ATOM_KINDS = frozenset({"CAPABILITY", "ENABLED"})


class ParseError(ValueError):
    """A response that the IMAP grammar does not allow."""


class Atom(str):
    """An atom (or number, or flag) as opposed to a quoted string; NIL is ``None``."""


Value = Atom | str | bytes | None | list["Value"]


@dataclass
class Untagged:
    kind: str  # EXISTS, EXPUNGE, RECENT, FETCH, OK, NO, SEARCH, LIST, ...
    number: int | None = None  # the message number of EXISTS/EXPUNGE/RECENT/FETCH
    values: list[Value] = field(default_factory=list)  # what follows the kind
    code: str | None = None  # the response code of a status response, e.g. "UIDVALIDITY"
    code_args: str = ""
    uid: int | None = None  # FETCH: the UID item, if present
    flags: list[str] | None = None  # FETCH: the FLAGS item, if present


@dataclass
class Tagged:
    tag: str
    status: str  # OK, NO or BAD
    code: str | None = None
    code_args: str = ""
    text: str = ""


@dataclass
class Continuation:
    text: str


Response = Untagged | Tagged | Continuation


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response, with every literal it carries, ending with CRLF."""
    parts: list[bytes] = []
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("server closed the connection") from e
        parts.append(line)
        literal = LITERAL_AT_END.search(line)
        if literal is None:
            return b"".join(parts)
        size = int(literal.group(1))
        if size > MAX_LITERAL:
            raise ConnectionError(f"literal of {size} octets")
        try:
            parts.append(await reader.readexactly(size))
        except asyncio.IncompleteReadError as e:
            raise ConnectionError("server closed the connection in a literal") from e


def parse_values(data: bytes) -> list[Value]:
    """Space-separated values: atoms, numbers, quoted strings, literals, NIL, lists.

    An atom may carry a bracketed section with spaces, as in ``BODY[HEADER.FIELDS (FROM)]<0>``.
    """
    stack: list[list[Value]] = [[]]
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x20:  # SP
            i += 1
        elif c == 0x28:  # (
            inner: list[Value] = []
            stack[-1].append(inner)
            stack.append(inner)
            i += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ParseError("unbalanced ')'")
            stack.pop()
            i += 1
        elif c == 0x22:  # "
            i = _quoted(data, i, stack[-1])
        elif c == 0x7B:  # {
            head = LITERAL_HEAD.match(data, i)
            if head is None:
                raise ParseError("bad literal")
            start = head.end()
            end = start + int(head.group(1))
            if end > n:
                raise ParseError("literal longer than the response")
            stack[-1].append(data[start:end])
            i = end
        else:
            i = _atom(data, i, stack[-1])
    if len(stack) != 1:
        raise ParseError("unbalanced '('")
    return stack[0]


def _quoted(data: bytes, i: int, out: list[Value]) -> int:
    chars = bytearray()
    i += 1
    while i < len(data):
        c = data[i]
        if c == 0x22:
            out.append(chars.decode("utf-8", "replace"))
            return i + 1
        if c == 0x5C:  # backslash: only \\ and \" may be escaped
            if i + 1 >= len(data) or data[i + 1] not in (0x22, 0x5C):
                raise ParseError("bad escape in a quoted string")
            i += 1
            c = data[i]
        elif c in (0x0D, 0x0A):
            raise ParseError("CR or LF in a quoted string")
        chars.append(c)
        i += 1
    raise ParseError("unterminated quoted string")


def _atom(data: bytes, i: int, out: list[Value]) -> int:
    start = i
    while True:
        run = ATOM_RUN.match(data, i)
        if run is not None:
            i = run.end()
        if i < len(data) and data[i] == 0x5B:  # a section, up to its "]"
            close = data.find(b"]", i)
            if close < 0:
                raise ParseError("unterminated section")
            if any(c < 0x20 or c == 0x7F for c in data[i:close]):
                raise ParseError("control character in a section")
            i = close + 1
            continue
        break
    if i < len(data) and data[i] not in (0x20, 0x28, 0x29):
        raise ParseError(f"character {data[i]:#x} in an atom")
    text = data[start:i].decode("latin-1")
    out.append(None if text.upper() == "NIL" else Atom(text))
    return i


def _status_code(rest: str) -> tuple[str | None, str, str]:
    """``[CODE args] text`` → (CODE, args, text)."""
    if not rest.startswith("["):
        return None, "", rest
    close = rest.find("]")
    if close < 0:
        raise ParseError("unterminated response code")
    code, _, args = rest[1:close].partition(" ")
    if not code:
        raise ParseError("empty response code")
    return code.upper(), args, rest[close + 1 :].lstrip(" ")


def _number(token: str, what: str) -> int:
    if not token.isdigit() or len(token) > 10:
        raise ParseError(f"{what} is not a number: {token[:20]!r}")
    return int(token)


def parse_response(raw: bytes, fast: bool = True) -> Response:
    if fast and (m := FAST_FETCH.match(raw)) is not None:
        return _fast_fetch(m)
    if not raw.endswith(b"\r\n"):
        raise ParseError("response without CRLF")
    body = raw[:-2]
    if body.startswith(b"+"):
        return Continuation(body[1:].strip().decode("latin-1"))
    first_line = body.split(b"\r\n", 1)[0]
    tag, _, rest = first_line.partition(b" ")
    if not tag or not rest:
        raise ParseError("response without tag and text")
    if tag != b"*":
        status, _, text = rest.decode("utf-8", "replace").partition(" ")
        if status.upper() not in ("OK", "NO", "BAD"):
            raise ParseError(f"tagged response with status {status[:20]!r}")
        code, args, text = _status_code(text)
        return Tagged(tag.decode("latin-1"), status.upper(), code, args, text)
    return _untagged(body[2:])


def _fast_fetch(m: re.Match[bytes]) -> Untagged:
    number, uid_first, flags_after_uid, flags_first, uid_after = m.groups()
    text = (flags_after_uid if uid_first is not None else flags_first).decode("latin-1")
    flags = ["NIL" if f.upper() == "NIL" else f for f in text.split(" ")] if text else []
    uid = uid_first or uid_after
    flag_item: list[Value] = [Atom("FLAGS"), [None if f == "NIL" else Atom(f) for f in flags]]
    uid_item: list[Value] = [Atom("UID"), Atom(uid.decode())] if uid else []
    items = uid_item + flag_item if uid_first else flag_item + uid_item
    return Untagged("FETCH", int(number), items, uid=int(uid) if uid else None, flags=flags)


def _untagged(data: bytes) -> Untagged:
    head, _, rest = data.partition(b" ")
    word = head.decode("latin-1").upper()
    if word in STATUS_NAMES:
        code, args, _ = _status_code(rest.decode("utf-8", "replace"))
        return Untagged(word, code=code, code_args=args)
    if word.isdigit():
        kind_bytes, _, rest = rest.partition(b" ")
        kind = kind_bytes.decode("latin-1").upper()
        if kind not in NUMBERED_KINDS:
            raise ParseError(f"unknown numbered response {kind[:20]!r}")
        number = _number(word, "message number")
        if kind != "FETCH":
            if rest:
                raise ParseError(f"text after {kind}")
            return Untagged(kind, number)
        return _fetch(number, rest)
    if word == "SEARCH":
        values = parse_values(rest)
        if values and isinstance(values[-1], list):  # CONDSTORE: (MODSEQ n)
            values = values[:-1]
        for v in values:
            if not isinstance(v, Atom):
                raise ParseError("SEARCH result that is not a number")
            _number(v, "SEARCH result")
        return Untagged(word, values=values)
    if word in ATOM_KINDS:
        values = parse_values(rest)
        if not all(isinstance(v, Atom) for v in values):
            raise ParseError(f"{word} with something other than atoms")
        return Untagged(word, values=values)
    if word in LISTED_KINDS:
        values = parse_values(rest)
        if word == "FLAGS" and (len(values) != 1 or not isinstance(values[0], list)):
            raise ParseError("FLAGS without one flag list")
        if word in ("LIST", "LSUB") and (len(values) < 3 or not isinstance(values[0], list)):
            raise ParseError(f"{word} without attributes, delimiter and name")
        if word == "STATUS" and (len(values) != 2 or not isinstance(values[1], list)):
            raise ParseError("STATUS without a mailbox and an attribute list")
        return Untagged(word, values=values)
    raise ParseError(f"unknown response {word[:20]!r}")


def _fetch(number: int, rest: bytes) -> Untagged:
    values = parse_values(rest)
    if len(values) != 1 or not isinstance(values[0], list):
        raise ParseError("FETCH without one attribute list")
    items = values[0]
    if len(items) % 2:
        raise ParseError("FETCH attribute without a value")
    response = Untagged("FETCH", number, items)
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(key, Atom):
            raise ParseError("FETCH attribute name that is not an atom")
        name = key.upper()
        if name == "UID":
            if not isinstance(value, Atom):
                raise ParseError("UID that is not a number")
            response.uid = _number(value, "UID")
            if response.uid == 0:
                raise ParseError("UID 0")
        elif name == "FLAGS":
            # NIL is an atom by the grammar, so as a keyword it is readable (if unwise).
            if not isinstance(value, list) or not all(
                f is None or isinstance(f, Atom) for f in value
            ):
                raise ParseError("FLAGS that are not a list of flags")
            response.flags = ["NIL" if f is None else str(f) for f in value]
    if number == 0:
        raise ParseError("FETCH for message number 0")
    return response
