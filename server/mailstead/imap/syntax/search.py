"""SEARCH / UID SEARCH: the search-key tree (RFC 3501 §6.4.4), CONDSTORE's MODSEQ key
and ESEARCH return options (RFC 4731).

The keys are plain values; ``handlers/search_eval.py`` evaluates them against a
mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import ClassVar

from ..dates import parse_date
from .sequence import SequenceSet, parse_seqset
from .tokens import DQUOTE, LPAREN, MAX_NUMBER64, Command, Parser, show


class SearchKey:
    """Base of the search-key tree."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AllKey(SearchKey):
    pass


@dataclass(frozen=True, slots=True)
class FlagKey(SearchKey):
    """A flag test: system flags in canonical case (``\\Seen``), keywords as sent.

    ``present=False`` is the ``UN...`` form (and ``OLD`` for ``\\Recent``).
    """

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class HeaderKey(SearchKey):
    """``HEADER field value`` and ``SUBJECT value``: a match in the field's text.

    ``field`` is lower case (header names are case-insensitive).
    """

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class AddressKey(SearchKey):
    """``BCC``/``CC``/``FROM``/``TO value``: a match in the envelope's addresses of that
    field (RFC 3501 §6.4.4), not in the raw header text; ``HEADER FROM`` stays a
    :class:`HeaderKey`. ``field`` is ``"bcc"``, ``"cc"``, ``"from"`` or ``"to"``.
    """

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class TextKey(SearchKey):
    """``BODY value`` (scope ``BODY``) or ``TEXT value`` (headers and body)."""

    scope: str
    value: str


@dataclass(frozen=True, slots=True)
class DateKey(SearchKey):
    """``BEFORE``/``ON``/``SINCE`` on the internal date, or on Date: when ``sent``."""

    op: str
    value: date
    sent: bool = False


@dataclass(frozen=True, slots=True)
class SizeKey(SearchKey):
    """``LARGER n`` / ``SMALLER n`` (RFC822.SIZE)."""

    op: str
    size: int


@dataclass(frozen=True, slots=True)
class SequenceKey(SearchKey):
    """A bare sequence set, or ``UID set`` when ``uid``."""

    seqset: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class ModSeqKey(SearchKey):
    """``MODSEQ ["/flags/x" priv|shared|all] n`` (RFC 7162).

    The entry name and type are kept but may be ignored: Mailstead has no per-flag
    mod-sequences, which the RFC allows.
    """

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class NotKey(SearchKey):
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey(SearchKey):
    """Keys that must all match: a parenthesised group, or several top-level keys.

    The parser never builds a one-key AndKey: ``(X)`` is just ``X``.
    """

    keys: tuple[SearchKey, ...]


# NEW is "recent and not seen"; it is parsed into this pair.
NEW_KEY_PARTS = (FlagKey("\\Recent"), FlagKey("\\Seen", present=False))
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


_SEARCH_CHARSETS = ("UTF-8", "US-ASCII")
_SEARCH_FLAGS: dict[bytes, SearchKey] = {
    b"ALL": AllKey(),
    b"ANSWERED": FlagKey("\\Answered"),
    b"DELETED": FlagKey("\\Deleted"),
    b"DRAFT": FlagKey("\\Draft"),
    b"FLAGGED": FlagKey("\\Flagged"),
    b"SEEN": FlagKey("\\Seen"),
    b"RECENT": FlagKey("\\Recent"),
    b"UNANSWERED": FlagKey("\\Answered", present=False),
    b"UNDELETED": FlagKey("\\Deleted", present=False),
    b"UNDRAFT": FlagKey("\\Draft", present=False),
    b"UNFLAGGED": FlagKey("\\Flagged", present=False),
    b"UNSEEN": FlagKey("\\Seen", present=False),
    b"OLD": FlagKey("\\Recent", present=False),
    b"NEW": AndKey(NEW_KEY_PARTS),
}
_SEARCH_DATES = {
    b"BEFORE": ("BEFORE", False), b"ON": ("ON", False), b"SINCE": ("SINCE", False),
    b"SENTBEFORE": ("BEFORE", True), b"SENTON": ("ON", True), b"SENTSINCE": ("SINCE", True),
}


def _search_key(p: Parser) -> SearchKey:
    p.enter()
    try:
        return _search_key_inner(p)
    finally:
        p.leave()


def _search_key_inner(p: Parser) -> SearchKey:
    if p.peek() == LPAREN:
        keys: list[SearchKey] = []
        p.open("search key")
        keys.append(_search_key(p))
        while p.try_sp():
            keys.append(_search_key(p))
        p.close("search group")
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    token = p.word("search key")
    if token[:1].isdigit() or token[:1] in (b"*", b"$"):
        try:
            return SequenceKey(SequenceSet.parse(token))
        except ValueError as exc:
            p.fail(str(exc))
    name = token.upper()
    if name in _SEARCH_FLAGS:
        return _SEARCH_FLAGS[name]
    if name in (b"BCC", b"CC", b"FROM", b"SUBJECT", b"TO"):
        p.sp(f"{name.decode()} string")
        value = p.text(f"{name.decode()} string")
        if name == b"SUBJECT":
            return HeaderKey("subject", value)
        return AddressKey(name.decode().lower(), value)
    if name in (b"BODY", b"TEXT"):
        p.sp(f"{name.decode()} string")
        return TextKey(name.decode(), p.text(f"{name.decode()} string"))
    if name == b"HEADER":
        p.sp("header field name")
        header = p.text("header field name").lower()
        p.sp("header value")
        return HeaderKey(header, p.text("header value"))
    if name in (b"KEYWORD", b"UNKEYWORD"):
        p.sp("keyword")
        keyword = p.atom("keyword").decode("ascii")
        return FlagKey(keyword, present=name == b"KEYWORD")
    if name in _SEARCH_DATES:
        op, sent = _SEARCH_DATES[name]
        p.sp("date")
        raw = p.quoted("date") if p.peek() == DQUOTE else p.word("date")
        try:
            return DateKey(op, parse_date(raw), sent)
        except ValueError:
            p.fail(f"Invalid date: {show(raw)}, expected d-Mon-yyyy")
    if name in (b"LARGER", b"SMALLER"):
        p.sp("size")
        return SizeKey(name.decode(), p.number("size", maximum=MAX_NUMBER64))
    if name == b"UID":
        p.sp("UID set")
        return SequenceKey(parse_seqset(p, "UID set"), uid=True)
    if name == b"NOT":
        p.sp("search key")
        return NotKey(_search_key(p))
    if name == b"OR":
        p.sp("search key")
        left = _search_key(p)
        p.sp("search key")
        return OrKey(left, _search_key(p))
    if name == b"MODSEQ":
        p.sp("mod-sequence")
        entry: str | None = None
        entry_type: str | None = None
        if p.peek() == DQUOTE:
            try:
                entry = p.quoted("entry name").decode("ascii")
            except UnicodeDecodeError:
                p.fail("Invalid MODSEQ entry name")
            p.sp("entry type")
            entry_type = p.atom("entry type").decode("ascii").lower()
            if entry_type not in ("priv", "shared", "all"):
                p.fail(f"Invalid MODSEQ entry type: {show(entry_type.encode())}")
            p.sp("mod-sequence")
        return ModSeqKey(p.number("mod-sequence", maximum=MAX_NUMBER64), entry, entry_type)
    p.fail(f"Unknown search key {show(token)}")


def parse_search(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("search criteria")
    returns: tuple[str, ...] | None = None
    charset: str | None = None
    if p.peek_word() == b"RETURN":
        p.word("RETURN")
        p.sp("return options")
        options: list[str] = []

        def option() -> None:
            name = p.keyword("return option")
            if name == "SAVE":
                p.fail("SEARCHRES (RETURN SAVE) is not supported")
            if name not in SEARCH_RETURN_OPTIONS:
                p.fail(f"Unknown SEARCH return option {show(name.encode())}")
            options.append(name)

        p.items("return options", option, empty_ok=True)
        returns = tuple(options) or ("ALL",)
        p.sp("search criteria")
    if p.peek_word() == b"CHARSET":
        p.word("CHARSET")
        p.sp("charset")
        charset = p.astring("charset").decode("ascii", "replace").upper()
        if charset not in _SEARCH_CHARSETS:
            p.fail(
                f"Unsupported charset {show(charset.encode())}",
                code="BADCHARSET (" + " ".join(_SEARCH_CHARSETS) + ")",
                status="NO",
            )
        p.sp("search criteria")
    keys = [_search_key(p)]
    while p.try_sp():
        keys.append(_search_key(p))
    p.finish("search criteria")
    criteria = keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    return Search(tag, criteria, charset, uid, returns)

