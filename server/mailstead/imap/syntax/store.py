"""STORE / UID STORE, with the CONDSTORE ``UNCHANGEDSINCE`` modifier (RFC 7162)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .sequence import SequenceSet, parse_seqset
from .tokens import LPAREN, MAX_NUMBER64, Command, Parser, show


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


def parse_store(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("sequence set")
    seqset = parse_seqset(p)
    p.sp("store item")
    unchangedsince: int | None = None
    if p.peek() == LPAREN:

        def modifier() -> None:
            nonlocal unchangedsince
            name = p.keyword("store modifier")
            if name != "UNCHANGEDSINCE":
                p.fail(f"Unknown STORE modifier {show(name.encode())}")
            p.sp("mod-sequence")
            unchangedsince = p.number("mod-sequence", maximum=MAX_NUMBER64)

        p.items("store modifiers", modifier, empty_ok=False)
        p.sp("store item")
    item = p.atom("store item").decode("ascii").upper()
    mode = item[0] if item[:1] in ("+", "-") else ""
    base = item[len(mode) :]
    if base not in ("FLAGS", "FLAGS.SILENT"):
        p.fail(f"Invalid store item: {show(item.encode())}")
    p.sp("flags")
    if p.peek() == LPAREN:
        flags = p.flag_list()
    else:
        flag_items = [p.flag()]
        while p.try_sp():
            flag_items.append(p.flag())
        flags = tuple(flag_items)
    p.finish("flags")
    return Store(tag, seqset, mode, base == "FLAGS.SILENT", flags, uid, unchangedsince)

