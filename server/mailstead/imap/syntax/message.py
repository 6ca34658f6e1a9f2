"""Message commands: APPEND (MULTIAPPEND, literal8), EXPUNGE / UID EXPUNGE, COPY, MOVE,
and the argument-less CHECK, CLOSE and UNSELECT (parsed by name in ``syntax/__init__.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from ..dates import parse_datetime
from .sequence import SequenceSet, parse_seqset
from .tokens import DQUOTE, LPAREN, Command, CommandParser, Parser


@dataclass(frozen=True, slots=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502).

    ``binary`` is set when the client sent a ``~{n}`` literal8 (RFC 3516).
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uids`` is set."""

    uids: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True, slots=True)
class Move(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"


def parse_append(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("mailbox name")
    mailbox = p.mailbox()
    messages: list[AppendMessage] = []
    while True:
        # Each message: [flag-list SP] [date-time SP] literal (MULTIAPPEND repeats).
        p.sp("message literal")
        flags: tuple[str, ...] = ()
        when = None
        if p.peek() == LPAREN:
            flags = p.flag_list()
            p.sp("message literal")
        if p.peek() == DQUOTE:
            text = p.quoted("date-time")
            try:
                when = parse_datetime(text)
            except ValueError as exc:
                p.fail(str(exc))
            p.sp("message literal")
        lit = p.literal("message literal")
        messages.append(AppendMessage(lit.data, flags, when, lit.binary))
        if p.at_end():
            break
    return Append(tag, mailbox, tuple(messages))


def parse_expunge(p: Parser, tag: bytes, uid: bool) -> Command:
    if not uid:
        p.finish("EXPUNGE")
        return Expunge(tag)
    p.sp("UID set")
    uids = parse_seqset(p, "UID set")
    p.finish("UID set")
    return Expunge(tag, uids)


def copy_or_move_parser(cls: type[Copy | Move]) -> CommandParser:
    def parse(p: Parser, tag: bytes, uid: bool) -> Command:
        p.sp("sequence set")
        seqset = parse_seqset(p)
        p.sp("mailbox name")
        mailbox = p.mailbox()
        p.finish("mailbox name")
        return cls(tag, seqset, mailbox, uid)

    return parse

