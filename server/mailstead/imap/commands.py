"""Typed IMAP commands and their arguments, as produced by :mod:`.codec`.

Every type here is an immutable value. Each can also write itself back in client
syntax (``format()`` / ``bytes()``), which the test client uses and which the tests
use to check that parsing a formatted command gives the same value back.

Strings that are not plain atoms are written quoted, or as literals when they cannot
be quoted; ``literal_plus=True`` (the default) writes non-synchronising ``{n+}``
literals (RFC 7888) so that the whole command can be sent at once.
"""

from __future__ import annotations

import abc
import base64
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar

from .dates import format_date, format_internaldate
from .utf7 import encode_mailbox

MAX_NUMBER = 2**32 - 1  # RFC 3501 number / nz-number
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 number64, RFC 7162 mod-sequence-value

# ---------------------------------------------------------------------------
# Character classes (RFC 3501 §9)
# ---------------------------------------------------------------------------

CTL = frozenset(range(0x20)) | {0x7F}
ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | CTL
ATOM_CHARS = frozenset(range(0x01, 0x80)) - ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ATOM_CHARS | frozenset(b"%*]")

_QUOTABLE_MAX = 1024


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def format_literal(data: bytes, *, literal_plus: bool = True, binary: bool = False) -> bytes:
    """A literal in client syntax, ``~`` prefixed for a literal8 (RFC 3516)."""
    marker = b"{%d+}\r\n" if literal_plus else b"{%d}\r\n"
    return (b"~" if binary else b"") + marker % len(data) + data


def format_string(value: str | bytes, *, literal_plus: bool = True) -> bytes:
    """A quoted string when possible, else a literal."""
    data = _as_bytes(value)
    if len(data) <= _QUOTABLE_MAX and all(0 < c < 0x80 and c not in (10, 13) for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return format_literal(data, literal_plus=literal_plus)


def format_astring(value: str | bytes, *, literal_plus: bool = True) -> bytes:
    """An atom when the value is one, else a string."""
    data = _as_bytes(value)
    if data and all(c in ASTRING_CHARS for c in data):
        return data
    return format_string(data, literal_plus=literal_plus)


def format_nstring(value: str | bytes | None, *, literal_plus: bool = True) -> bytes:
    return b"NIL" if value is None else format_string(value, literal_plus=literal_plus)


def format_mailbox(name: str, *, literal_plus: bool = True) -> bytes:
    """A mailbox name, modified UTF-7 encoded."""
    return format_astring(encode_mailbox(name), literal_plus=literal_plus)


def format_list_mailbox(pattern: str, *, literal_plus: bool = True) -> bytes:
    """A LIST pattern: wildcards may stay bare (``list-char``)."""
    data = encode_mailbox(pattern)
    if data and all(c in LIST_CHARS for c in data):
        return data
    return format_string(data, literal_plus=literal_plus)


def _plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_FLAG_BY_LOWER = {flag.lower(): flag for flag in (*SYSTEM_FLAGS, "\\Recent")}


def canonical_system_flag(flag: str) -> str | None:
    """The canonical spelling of a system flag (``\\seen`` -> ``\\Seen``), else None."""
    return _SYSTEM_FLAG_BY_LOWER.get(flag.lower())


# ---------------------------------------------------------------------------
# Sequence sets
# ---------------------------------------------------------------------------


def _seq_number(token: bytes, whole: bytes) -> int | None:
    if token == b"*":
        return None
    shown = whole[:40].decode("ascii", "replace")
    if not token or not token.isdigit():
        raise ValueError(f"Invalid sequence set: {shown}")
    if len(token) > 10 or int(token) > MAX_NUMBER:
        raise ValueError(f"Invalid sequence set: {shown} (numbers are at most {MAX_NUMBER})")
    value = int(token)
    if value == 0:
        raise ValueError(f"Invalid sequence set: {shown} (numbers start at 1)")
    return value


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set: ``(start, end)`` pairs in client order, None standing for ``*``.

    A single number ``n`` is ``(n, n)``. Ranges keep the client's orientation
    (``5:2``); :meth:`intervals` normalises them.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("Empty sequence set")
        for pair in self.ranges:
            for value in pair:
                if value is not None and not 1 <= value <= MAX_NUMBER:
                    raise ValueError(f"Sequence number out of range: {value}")

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse ``1:3,5,7:*``; raises ValueError with a client-facing message."""
        data = _as_bytes(text)
        if b"$" in data:
            raise ValueError("SEARCHRES ($) is not supported")
        ranges: list[tuple[int | None, int | None]] = []
        for item in data.split(b","):
            start, sep, end = item.partition(b":")
            first = _seq_number(start, data)
            ranges.append((first, _seq_number(end, data) if sep else first))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, values: Iterable[int]) -> SequenceSet:
        """The most compact set holding exactly ``values`` (which must not be empty)."""
        ranges: list[tuple[int | None, int | None]] = []
        for value in sorted(set(values)):
            if ranges and ranges[-1][1] == value - 1:
                ranges[-1] = (ranges[-1][0], value)
            else:
                ranges.append((value, value))
        return cls(tuple(ranges))

    @property
    def uses_star(self) -> bool:
        return any(value is None for pair in self.ranges for value in pair)

    def format(self) -> bytes:
        def one(value: int | None) -> bytes:
            return b"*" if value is None else b"%d" % value

        return b",".join(
            one(start) if start == end else one(start) + b":" + one(end)
            for start, end in self.ranges
        )

    def __bytes__(self) -> bytes:
        return self.format()

    def __str__(self) -> str:
        return self.format().decode("ascii")

    def intervals(self, max_value: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ``(low, high)`` intervals within ``1..max_value``.

        ``*`` is ``max_value`` (the highest sequence number, or the highest UID). As
        RFC 3501 requires, ``559:*`` still names the last message when 559 is larger.
        """
        spans: list[tuple[int, int]] = []
        for start, end in self.ranges:
            a = max_value if start is None else start
            b = max_value if end is None else end
            low, high = max(min(a, b), 1), min(max(a, b), max_value)
            if low <= high:
                spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def resolve(self, max_value: int) -> list[int]:
        """Every number in the set, ascending, within ``1..max_value``.

        Meant for message sequence numbers; for UIDs use :meth:`matching`, which does
        not expand ranges.
        """
        return [n for low, high in self.intervals(max_value) for n in range(low, high + 1)]

    def contains(self, value: int, max_value: int) -> bool:
        return any(low <= value <= high for low, high in self.intervals(max_value))

    def matching(self, values: Iterable[int]) -> list[int]:
        """Those of ``values`` (e.g. a mailbox's UIDs) in the set, ascending.

        ``*`` is the largest of ``values``.
        """
        return self.matching_sorted(sorted(set(values)))

    def matching_sorted(self, ordered: Sequence[int]) -> list[int]:
        """``matching`` for values already ascending and unique (a mailbox's UID list):
        a binary search per range, so one UID of 100,000 costs no pass over them all."""
        if not ordered:
            return []
        found: list[int] = []
        for low, high in self.intervals(ordered[-1]):
            found.extend(ordered[bisect_left(ordered, low) : bisect_right(ordered, high)])
        return found


# ---------------------------------------------------------------------------
# FETCH attributes
# ---------------------------------------------------------------------------

SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")


@dataclass(frozen=True, slots=True)
class FetchSection:
    """What is inside ``BODY[...]``: part numbers, then an optional text specifier.

    ``text`` is one of :data:`SECTION_TEXTS` or None; ``headers`` is only set for
    ``HEADER.FIELDS`` and ``HEADER.FIELDS.NOT`` and keeps the client's spelling.
    """

    parts: tuple[int, ...] = ()
    text: str | None = None
    headers: tuple[str, ...] = ()

    def format(self, *, literal_plus: bool = True) -> bytes:
        spec = b".".join(b"%d" % part for part in self.parts)
        if self.text is not None:
            spec += (b"." if spec else b"") + self.text.encode("ascii")
        if self.headers:
            names = (format_astring(h, literal_plus=literal_plus) for h in self.headers)
            spec += b" " + _plist(names)
        return spec


FETCH_SIMPLE = (
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
    "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ",
)


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One FETCH data item.

    ``name`` is canonical upper case: one of :data:`FETCH_SIMPLE`, ``BINARY`` or
    ``BINARY.SIZE``. ``BODY`` without a section is the non-extensible BODYSTRUCTURE;
    ``BODY`` with a section is ``BODY[...]`` (``peek`` for ``BODY.PEEK``). ``partial``
    is ``(origin, count)`` from ``<origin.count>``.
    """

    name: str
    section: FetchSection | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """Whether fetching this implicitly sets ``\\Seen`` (RFC 3501 §6.4.5)."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek

    def _section_suffix(self, *, literal_plus: bool) -> bytes:
        if self.section is None:
            return b""
        return b"[" + self.section.format(literal_plus=literal_plus) + b"]"

    def format(self, *, literal_plus: bool = True) -> bytes:
        """The item as a client writes it, e.g. ``BODY.PEEK[HEADER]<0.512>``."""
        name = self.name.encode("ascii") + (b".PEEK" if self.peek else b"")
        out = name + self._section_suffix(literal_plus=literal_plus)
        if self.partial is not None:
            out += b"<%d.%d>" % self.partial
        return out

    def response_name(self) -> bytes:
        """The name the server answers with: no ``.PEEK``, only the partial's origin."""
        out = self.name.encode("ascii") + self._section_suffix(literal_plus=False)
        if self.partial is not None:
            out += b"<%d>" % self.partial[0]
        return out

    def __bytes__(self) -> bytes:
        return self.format()


FETCH_MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "FAST": tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    "ALL": tuple(
        FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")
    ),
    "FULL": tuple(
        FetchAttribute(n)
        for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    ),
}


# ---------------------------------------------------------------------------
# SEARCH keys
# ---------------------------------------------------------------------------


class SearchKey(abc.ABC):
    """Base of the search-key tree (RFC 3501 §6.4.4); every key type formats itself."""

    __slots__ = ()

    @abc.abstractmethod
    def format(self, *, literal_plus: bool = True) -> bytes:
        """The key as a client writes it."""

    def __bytes__(self) -> bytes:
        return self.format()


def _text_arg(value: str, literal_plus: bool) -> bytes:
    return format_astring(value, literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class AllKey(SearchKey):
    def format(self, *, literal_plus: bool = True) -> bytes:
        return b"ALL"


# System flag -> (key when set, key when not set).
_FLAG_SEARCH_NAMES = {
    "\\Answered": (b"ANSWERED", b"UNANSWERED"),
    "\\Deleted": (b"DELETED", b"UNDELETED"),
    "\\Draft": (b"DRAFT", b"UNDRAFT"),
    "\\Flagged": (b"FLAGGED", b"UNFLAGGED"),
    "\\Seen": (b"SEEN", b"UNSEEN"),
    "\\Recent": (b"RECENT", b"OLD"),
}


@dataclass(frozen=True, slots=True)
class FlagKey(SearchKey):
    """A flag test: system flags in canonical case (``\\Seen``), keywords as sent.

    ``present=False`` is the ``UN...`` form (and ``OLD`` for ``\\Recent``).
    """

    flag: str
    present: bool = True

    def format(self, *, literal_plus: bool = True) -> bytes:
        names = _FLAG_SEARCH_NAMES.get(self.flag)
        if names is not None:
            return names[0] if self.present else names[1]
        prefix = b"KEYWORD " if self.present else b"UNKEYWORD "
        return prefix + self.flag.encode("ascii")


# NEW is "recent and not seen"; it is parsed into this pair.
NEW_KEY_PARTS = (FlagKey("\\Recent"), FlagKey("\\Seen", present=False))
_HEADER_SHORTHANDS = ("bcc", "cc", "from", "subject", "to")


@dataclass(frozen=True, slots=True)
class HeaderKey(SearchKey):
    """``HEADER field value``; BCC/CC/FROM/SUBJECT/TO become this too.

    ``field`` is lower case (header names are case-insensitive).
    """

    field: str
    value: str

    def format(self, *, literal_plus: bool = True) -> bytes:
        value = _text_arg(self.value, literal_plus)
        if self.field in _HEADER_SHORTHANDS:
            return self.field.upper().encode("ascii") + b" " + value
        return b"HEADER " + _text_arg(self.field, literal_plus) + b" " + value


@dataclass(frozen=True, slots=True)
class TextKey(SearchKey):
    """``BODY value`` (scope ``BODY``) or ``TEXT value`` (headers and body)."""

    scope: str
    value: str

    def format(self, *, literal_plus: bool = True) -> bytes:
        return self.scope.encode("ascii") + b" " + _text_arg(self.value, literal_plus)


@dataclass(frozen=True, slots=True)
class DateKey(SearchKey):
    """``BEFORE``/``ON``/``SINCE`` on the internal date, or on Date: when ``sent``."""

    op: str
    value: date
    sent: bool = False

    def format(self, *, literal_plus: bool = True) -> bytes:
        name = ("SENT" if self.sent else "") + self.op
        return name.encode("ascii") + b" " + format_date(self.value)


@dataclass(frozen=True, slots=True)
class SizeKey(SearchKey):
    """``LARGER n`` / ``SMALLER n`` (RFC822.SIZE)."""

    op: str
    size: int

    def format(self, *, literal_plus: bool = True) -> bytes:
        return self.op.encode("ascii") + b" %d" % self.size


@dataclass(frozen=True, slots=True)
class SequenceKey(SearchKey):
    """A bare sequence set, or ``UID set`` when ``uid``."""

    seqset: SequenceSet
    uid: bool = False

    def format(self, *, literal_plus: bool = True) -> bytes:
        return (b"UID " if self.uid else b"") + self.seqset.format()


@dataclass(frozen=True, slots=True)
class ModSeqKey(SearchKey):
    """``MODSEQ ["/flags/x" priv|shared|all] n`` (RFC 7162).

    The entry name and type are kept but may be ignored: Mailstead has no per-flag
    mod-sequences, which the RFC allows.
    """

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None

    def format(self, *, literal_plus: bool = True) -> bytes:
        entry = b""
        if self.entry_name is not None:
            entry = format_string(self.entry_name, literal_plus=literal_plus) + b" "
            entry += (self.entry_type or "all").encode("ascii") + b" "
        return b"MODSEQ " + entry + b"%d" % self.modseq


@dataclass(frozen=True, slots=True)
class NotKey(SearchKey):
    key: SearchKey

    def format(self, *, literal_plus: bool = True) -> bytes:
        return b"NOT " + self.key.format(literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class OrKey(SearchKey):
    left: SearchKey
    right: SearchKey

    def format(self, *, literal_plus: bool = True) -> bytes:
        return (
            b"OR "
            + self.left.format(literal_plus=literal_plus)
            + b" "
            + self.right.format(literal_plus=literal_plus)
        )


@dataclass(frozen=True, slots=True)
class AndKey(SearchKey):
    """Keys that must all match: a parenthesised group, or several top-level keys.

    The parser never builds a one-key AndKey: ``(X)`` is just ``X``.
    """

    keys: tuple[SearchKey, ...]

    def format(self, *, literal_plus: bool = True) -> bytes:
        return _plist(key.format(literal_plus=literal_plus) for key in self.keys)

    def format_program(self, *, literal_plus: bool = True) -> bytes:
        """The keys without the parentheses, as at the top of a SEARCH."""
        return b" ".join(key.format(literal_plus=literal_plus) for key in self.keys)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """Base of all parsed commands. ``tag`` is the client's tag, as bytes."""

    tag: bytes
    name: ClassVar[str] = ""

    @property
    def verb(self) -> str:
        """The command as named in a completion response (``UID FETCH``, ``EXAMINE``)."""
        return self.name

    def _args(self, literal_plus: bool) -> bytes:
        return b""

    def format(self, *, literal_plus: bool = True) -> bytes:
        """The whole command line in client syntax, CRLF included."""
        args = self._args(literal_plus)
        return self.tag + b" " + self.verb.encode("ascii") + (b" " + args if args else b"") + (
            b"\r\n"
        )

    def __bytes__(self) -> bytes:
        return self.format()


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``AUTHENTICATE mech [initial]``; the initial response (RFC 4959) is decoded.

    ``b""`` means the client sent ``=`` (an empty initial response); None means none.
    """

    mechanism: str
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"

    def _args(self, literal_plus: bool) -> bytes:
        out = self.mechanism.encode("ascii")
        if self.initial_response is not None:
            out += b" " + (base64.b64encode(self.initial_response) or b"=")
        return out


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: bytes
    password: bytes
    name: ClassVar[str] = "LOGIN"

    def _args(self, literal_plus: bool) -> bytes:
        return (
            format_astring(self.user, literal_plus=literal_plus)
            + b" "
            + format_astring(self.password, literal_plus=literal_plus)
        )


@dataclass(frozen=True, slots=True)
class QResync:
    """QRESYNC SELECT parameters (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (sequence numbers, UIDs)

    def format(self) -> bytes:
        items = [b"%d" % self.uidvalidity, b"%d" % self.modseq]
        if self.known_uids is not None:
            items.append(self.known_uids.format())
        if self.seq_match is not None:
            items.append(_plist(s.format() for s in self.seq_match))
        return _plist(items)


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``. QRESYNC does not imply ``condstore`` here."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None
    name: ClassVar[str] = "SELECT"

    @property
    def verb(self) -> str:
        return "EXAMINE" if self.readonly else "SELECT"

    def _args(self, literal_plus: bool) -> bytes:
        out = format_mailbox(self.mailbox, literal_plus=literal_plus)
        params = [b"CONDSTORE"] if self.condstore else []
        if self.qresync is not None:
            params.append(b"QRESYNC " + self.qresync.format())
        return out + (b" " + _plist(params) if params else b"")


SPECIAL_USES = (
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
    "\\Important",
)


@dataclass(frozen=True, slots=True)
class Create(Command):
    """CREATE, with RFC 6154 ``USE (...)`` attributes in canonical case."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"

    def _args(self, literal_plus: bool) -> bytes:
        out = format_mailbox(self.mailbox, literal_plus=literal_plus)
        if self.special_use:
            uses = _plist(u.encode("ascii") for u in self.special_use)
            out += b" (USE " + uses + b")"
        return out


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"

    def _args(self, literal_plus: bool) -> bytes:
        return format_mailbox(self.mailbox, literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"

    def _args(self, literal_plus: bool) -> bytes:
        return format_mailbox(self.mailbox, literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"

    def _args(self, literal_plus: bool) -> bytes:
        return format_mailbox(self.mailbox, literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str
    new: str
    name: ClassVar[str] = "RENAME"

    def _args(self, literal_plus: bool) -> bytes:
        return (
            format_mailbox(self.old, literal_plus=literal_plus)
            + b" "
            + format_mailbox(self.new, literal_plus=literal_plus)
        )


LIST_SELECTION_OPTIONS = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
LIST_RETURN_OPTIONS = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")
STATUS_ITEMS = (
    "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE",
    "DELETED", "APPENDLIMIT",
)


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST (RFC 3501, LIST-EXTENDED 5258, LIST-STATUS 5819) or LSUB (``lsub``).

    ``reference`` and ``patterns`` are decoded but not INBOX-normalised (patterns
    are matched case-insensitively against INBOX by the session). ``return_options``
    holds ``STATUS`` in its place when ``status_items`` is set. ``extended`` is true
    when any RFC 5258 syntax was used, which changes what the reply must contain.
    """

    reference: str
    patterns: tuple[str, ...]
    selection_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] | None = None
    lsub: bool = False
    extended: bool = False
    name: ClassVar[str] = "LIST"

    @property
    def verb(self) -> str:
        return "LSUB" if self.lsub else "LIST"

    def _args(self, literal_plus: bool) -> bytes:
        parts: list[bytes] = []
        if self.selection_options:
            parts.append(_plist(o.encode("ascii") for o in self.selection_options))
        parts.append(format_mailbox(self.reference, literal_plus=literal_plus))
        pats = [format_list_mailbox(p, literal_plus=literal_plus) for p in self.patterns]
        bare_extended = self.extended and not (self.selection_options or self.return_options)
        if len(pats) != 1 or bare_extended:
            parts.append(_plist(pats))
        else:
            parts.append(pats[0])
        if self.return_options:
            opts = []
            for opt in self.return_options:
                if opt == "STATUS":
                    items = _plist(i.encode("ascii") for i in self.status_items or ())
                    opts.append(b"STATUS " + items)
                else:
                    opts.append(opt.encode("ascii"))
            parts.append(b"RETURN " + _plist(opts))
        return b" ".join(parts)


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"

    def _args(self, literal_plus: bool) -> bytes:
        items = _plist(i.encode("ascii") for i in self.items)
        return format_mailbox(self.mailbox, literal_plus=literal_plus) + b" " + items


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502).

    ``binary`` is set when the client sent a ``~{n}`` literal8 (RFC 3516).
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    binary: bool = False

    def format(self, *, literal_plus: bool = True) -> bytes:
        out = b""
        if self.flags:
            out += _plist(f.encode("ascii") for f in self.flags) + b" "
        if self.internaldate is not None:
            out += b'"' + format_internaldate(self.internaldate) + b'" '
        return out + format_literal(self.data, literal_plus=literal_plus, binary=self.binary)


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]
    name: ClassVar[str] = "APPEND"

    def _args(self, literal_plus: bool) -> bytes:
        parts = [format_mailbox(self.mailbox, literal_plus=literal_plus)]
        parts.extend(m.format(literal_plus=literal_plus) for m in self.messages)
        return b" ".join(parts)


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uids`` is set."""

    uids: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"

    @property
    def verb(self) -> str:
        return "EXPUNGE" if self.uids is None else "UID EXPUNGE"

    def _args(self, literal_plus: bool) -> bytes:
        return b"" if self.uids is None else self.uids.format()


SEARCH_RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT")


@dataclass(frozen=True, slots=True)
class Search(Command):
    """SEARCH / UID SEARCH.

    ``criteria`` is one key; several top-level keys arrive as an :class:`AndKey`.
    ``charset`` is ``"UTF-8"``, ``"US-ASCII"`` or None (not given). ``return_options``
    is None for a plain SEARCH and a tuple for ESEARCH (RFC 4731); ``RETURN ()`` is
    given as ``("ALL",)``, which the RFC says it means.
    """

    criteria: SearchKey
    charset: str | None = None
    uid: bool = False
    return_options: tuple[str, ...] | None = None
    name: ClassVar[str] = "SEARCH"

    @property
    def verb(self) -> str:
        return "UID SEARCH" if self.uid else "SEARCH"

    def _args(self, literal_plus: bool) -> bytes:
        out = b""
        if self.return_options is not None:
            out += b"RETURN " + _plist(o.encode("ascii") for o in self.return_options) + b" "
        if self.charset is not None:
            out += b"CHARSET " + format_astring(self.charset) + b" "
        if isinstance(self.criteria, AndKey):
            return out + self.criteria.format_program(literal_plus=literal_plus)
        return out + self.criteria.format(literal_plus=literal_plus)


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """FETCH / UID FETCH with macros expanded and RFC 7162 modifiers."""

    seqset: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changedsince: int | None = None
    vanished: bool = False
    name: ClassVar[str] = "FETCH"

    @property
    def verb(self) -> str:
        return "UID FETCH" if self.uid else "FETCH"

    def _args(self, literal_plus: bool) -> bytes:
        attrs = _plist(a.format(literal_plus=literal_plus) for a in self.attributes)
        out = self.seqset.format() + b" " + attrs
        mods = []
        if self.changedsince is not None:
            mods.append(b"CHANGEDSINCE %d" % self.changedsince)
        if self.vanished:
            mods.append(b"VANISHED")
        return out + (b" " + _plist(mods) if mods else b"")


@dataclass(frozen=True, slots=True)
class Store(Command):
    """STORE / UID STORE. ``mode`` is ``"+"``, ``"-"`` or ``""`` (replace)."""

    seqset: SequenceSet
    mode: str = ""
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    unchangedsince: int | None = None
    name: ClassVar[str] = "STORE"

    @property
    def verb(self) -> str:
        return "UID STORE" if self.uid else "STORE"

    def _args(self, literal_plus: bool) -> bytes:
        out = self.seqset.format() + b" "
        if self.unchangedsince is not None:
            out += b"(UNCHANGEDSINCE %d) " % self.unchangedsince
        item = self.mode.encode("ascii") + b"FLAGS" + (b".SILENT" if self.silent else b"")
        return out + item + b" " + _plist(f.encode("ascii") for f in self.flags)


@dataclass(frozen=True, slots=True)
class Copy(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"

    @property
    def verb(self) -> str:
        return "UID COPY" if self.uid else "COPY"

    def _args(self, literal_plus: bool) -> bytes:
        return self.seqset.format() + b" " + format_mailbox(
            self.mailbox, literal_plus=literal_plus
        )


@dataclass(frozen=True, slots=True)
class Move(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"

    @property
    def verb(self) -> str:
        return "UID MOVE" if self.uid else "MOVE"

    def _args(self, literal_plus: bool) -> bytes:
        return self.seqset.format() + b" " + format_mailbox(
            self.mailbox, literal_plus=literal_plus
        )


@dataclass(frozen=True, slots=True)
class Id(Command):
    """ID (RFC 2971): field/value pairs, or None for ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None = None
    name: ClassVar[str] = "ID"

    def _args(self, literal_plus: bool) -> bytes:
        if self.params is None:
            return b"NIL"
        items = []
        for key, value in self.params:
            items.append(format_string(key, literal_plus=literal_plus))
            items.append(format_nstring(value, literal_plus=literal_plus))
        return _plist(items)


@dataclass(frozen=True, slots=True)
class Enable(Command):
    """ENABLE (RFC 5161); capability names in upper case."""

    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"

    def _args(self, literal_plus: bool) -> bytes:
        return b" ".join(c.encode("ascii") for c in self.capabilities)


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

    def __bytes__(self) -> bytes:
        return self.response()
