"""Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST/LSUB, STATUS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .sequence import SequenceSet, parse_seqset
from .tokens import (
    ASTRING_RE,
    BACKSLASH,
    LPAREN,
    MAX_NUMBER64,
    Command,
    CommandParser,
    Parser,
    show,
)


@dataclass(frozen=True, slots=True)
class QResync:
    """QRESYNC SELECT parameters (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (sequence numbers, UIDs)


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``. QRESYNC does not imply ``condstore`` here."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None
    name: ClassVar[str] = "SELECT"


SPECIAL_USES = (
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
    "\\Important",
)
_SPECIAL_USE_BY_LOWER = {use.lower(): use for use in SPECIAL_USES}


@dataclass(frozen=True, slots=True)
class Create(Command):
    """CREATE, with RFC 6154 ``USE (...)`` attributes in canonical case."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str
    new: str
    name: ClassVar[str] = "RENAME"


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


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


def _parse_qresync(p: Parser) -> QResync:
    p.open("QRESYNC parameters")
    uidvalidity = p.number("UIDVALIDITY", nonzero=True)
    p.sp("mod-sequence")
    modseq = p.number("mod-sequence", maximum=MAX_NUMBER64)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if p.try_sp() and p.peek() != LPAREN:
        known = parse_seqset(p, "known UIDs")
        p.try_sp()
    if p.peek() == LPAREN:
        p.open("sequence match data")
        seqs = parse_seqset(p, "known sequence set")
        p.sp("known UID set")
        uids = parse_seqset(p, "known UID set")
        p.close("sequence match data")
        match = (seqs, uids)
    p.close("QRESYNC parameters")
    return QResync(uidvalidity, modseq, known, match)


def parse_select(p: Parser, tag: bytes, readonly: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    condstore = False
    qresync: QResync | None = None
    if p.params_follow("mailbox name"):

        def param() -> None:
            nonlocal condstore, qresync
            name = p.keyword("SELECT parameter")
            if name == "CONDSTORE":
                condstore = True
            elif name == "QRESYNC":
                p.sp("QRESYNC parameters")
                qresync = _parse_qresync(p)
            else:
                p.fail(f"Unknown SELECT parameter {show(name.encode())}")

        p.items("SELECT parameters", param, empty_ok=False)
    p.finish("mailbox name" if not (condstore or qresync) else "SELECT parameters")
    return Select(tag, mailbox, readonly, condstore, qresync)


def parse_create(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    uses: list[str] = []
    if p.params_follow("mailbox name"):

        def use_attr() -> None:
            p.expect(BACKSLASH, "Invalid special-use attribute")
            attr = "\\" + p.atom("special-use attribute").decode("ascii")
            known = _SPECIAL_USE_BY_LOWER.get(attr.lower())
            if known is None:
                p.fail(
                    f"Unsupported special-use attribute {show(attr.encode())}",
                    code="USEATTR",
                    status="NO",
                )
            uses.append(known)

        def param() -> None:
            name = p.keyword("CREATE parameter")
            if name != "USE":
                p.fail(f"Unknown CREATE parameter {show(name.encode())}")
            p.sp("special-use attributes")
            # RFC 6154 §6: "(" [use-attr *(SP use-attr)] ")" may be empty.
            p.items("special-use attributes", use_attr, empty_ok=True)

        p.items("CREATE parameters", param, empty_ok=False)
    p.finish("CREATE parameters")
    return Create(tag, mailbox, tuple(uses))


def one_mailbox_parser(cls: type[Delete | Subscribe | Unsubscribe]) -> CommandParser:
    def parse(p: Parser, tag: bytes, uid: bool) -> Command:
        p.sp("mailbox name")
        mailbox = p.mailbox()
        p.finish("mailbox name")
        return cls(tag, mailbox)

    return parse


def parse_rename(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    old = p.mailbox()
    p.sp("new mailbox name")
    new = p.mailbox("new mailbox name")
    p.finish("new mailbox name")
    return Rename(tag, old, new)


def _status_items(p: Parser) -> tuple[str, ...]:
    items: list[str] = []

    def item() -> None:
        name = p.keyword("status item")
        if name not in STATUS_ITEMS:
            p.fail(f"Unknown status item {show(name.encode())}")
        items.append(name)

    p.items("status items", item, empty_ok=False)
    return tuple(items)


def parse_list(p: Parser, tag: bytes, lsub: bool) -> Command:
    p.sp("reference name")
    extended = False
    selection: list[str] = []
    if not lsub and p.peek() == LPAREN:
        extended = True

        def select_opt() -> None:
            name = p.keyword("selection option")
            if name not in LIST_SELECTION_OPTIONS:
                p.fail(f"Unknown LIST selection option {show(name.encode())}")
            selection.append(name)

        p.items("selection options", select_opt, empty_ok=True)
        if selection and set(selection) <= {"RECURSIVEMATCH", "REMOTE"} and (
            "RECURSIVEMATCH" in selection
        ):
            p.fail("RECURSIVEMATCH needs another selection option")
        p.sp("reference name")
    reference = p.list_mailbox("reference name", ASTRING_RE)
    p.sp("mailbox pattern")
    patterns: list[str] = []
    if not lsub and p.peek() == LPAREN:
        extended = True
        p.items(
            "mailbox patterns",
            lambda: patterns.append(p.list_mailbox("mailbox pattern")),
            empty_ok=False,
        )
    else:
        patterns.append(p.list_mailbox("mailbox pattern"))
    returns: list[str] = []
    status: tuple[str, ...] | None = None
    if not lsub and p.try_sp():
        extended = True
        if p.keyword("RETURN") != "RETURN":
            p.fail("Expected RETURN after the mailbox pattern")
        p.sp("return options")

        def return_opt() -> None:
            nonlocal status
            name = p.keyword("return option")
            if name not in LIST_RETURN_OPTIONS:
                p.fail(f"Unknown LIST return option {show(name.encode())}")
            if name == "STATUS":
                p.sp("status items")
                status = _status_items(p)
            returns.append(name)

        p.items("return options", return_opt, empty_ok=True)
    p.finish("mailbox pattern" if not returns else "return options")
    return List(
        tag, reference, tuple(patterns), tuple(selection), tuple(returns), status, lsub, extended
    )


def parse_status(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    p.sp("status items")
    items = _status_items(p)
    p.finish("status items")
    return Status(tag, mailbox, items)

