"""FETCH / UID FETCH: data items, sections, partials, macros and the CHANGEDSINCE and
VANISHED modifiers (RFC 3501 §6.4.5, RFC 3516 BINARY, RFC 7162)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .sequence import SequenceSet, parse_seqset
from .tokens import LPAREN, MAX_NUMBER, MAX_NUMBER64, Command, Parser, show

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


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """FETCH / UID FETCH with macros expanded and RFC 7162 modifiers.

    ``vanished`` is parsed (with its syntax rules checked here) so that the handler can
    refuse it clearly: QRESYNC is not enabled (RFC 7162 §3.2.6).
    """

    seqset: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changedsince: int | None = None
    vanished: bool = False
    name: ClassVar[str] = "FETCH"


_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_PARTIAL_RE = re.compile(rb"<([0-9]{1,10})\.([0-9]{1,10})>")


def _parse_section(p: Parser, *, binary: bool) -> FetchSection:
    p.expect(ord("["), "Expected '[' to start a section")
    parts: list[int] = []
    text: str | None = None
    headers: list[str] = []
    spec = p.run(_FETCH_NAME_RE)
    if spec:
        pieces = spec.split(b".")
        if any(not piece for piece in pieces):
            p.fail(f"Invalid section: {show(spec)}")
        i = 0
        while i < len(pieces) and pieces[i].isdigit():
            if len(pieces[i]) > 10 or not 0 < int(pieces[i]) <= MAX_NUMBER:
                p.fail(f"Invalid section part number: {show(pieces[i])}")
            parts.append(int(pieces[i]))
            i += 1
        if i < len(pieces):
            text = b".".join(pieces[i:]).decode("ascii").upper()
            if binary or text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT",
                                      "MIME"):
                p.fail(f"Invalid section: {show(spec)}")
            if text == "MIME" and not parts:
                p.fail("MIME section needs a part number")
            if text.startswith("HEADER.FIELDS"):
                p.sp("header field names")

                def header() -> None:
                    try:
                        headers.append(p.astring("header field name").decode("ascii"))
                    except UnicodeDecodeError:
                        p.fail("Invalid header field name")

                p.items("header field names", header, empty_ok=False)
    p.expect(ord("]"), "Expected ']' to end the section")
    return FetchSection(tuple(parts), text, tuple(headers))


def _parse_partial(p: Parser) -> tuple[int, int] | None:
    if p.peek() != ord("<"):
        return None
    found = p.match(_PARTIAL_RE)
    if found is None:
        p.fail("Invalid partial range, expected <origin.count>")
    origin, count = int(found.group(1)), int(found.group(2))
    if origin > MAX_NUMBER or not 0 < count <= MAX_NUMBER:
        p.fail("Invalid partial range")
    return origin, count


def _fetch_attribute(p: Parser) -> FetchAttribute:
    token = p.token(_FETCH_NAME_RE, "fetch attribute")
    name = token.decode("ascii").upper()
    has_section = p.peek() == ord("[")
    if name in FETCH_SIMPLE and not (name == "BODY" and has_section):
        return FetchAttribute(name)
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        if not has_section:
            p.fail(f"{name} needs a section")
        base, peek = name.removesuffix(".PEEK"), name.endswith(".PEEK")
        section = _parse_section(p, binary=base != "BODY")
        partial = None if base == "BINARY.SIZE" else _parse_partial(p)
        return FetchAttribute(base, section, partial, peek)
    p.fail(f"Unknown fetch attribute {show(token)}")


def parse_fetch(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("sequence set")
    seqset = parse_seqset(p)
    p.sp("fetch attributes")
    attrs: list[FetchAttribute] = []
    macro = p.peek_word().decode("ascii", "replace")
    if macro in FETCH_MACROS:
        p.word("fetch attributes")
        attrs.extend(FETCH_MACROS[macro])
    elif p.peek() == LPAREN:
        p.items("fetch attributes", lambda: attrs.append(_fetch_attribute(p)), empty_ok=False)
    else:
        attrs.append(_fetch_attribute(p))
    changedsince: int | None = None
    vanished = False
    if p.params_follow("fetch attributes"):

        def modifier() -> None:
            nonlocal changedsince, vanished
            name = p.keyword("fetch modifier")
            if name == "CHANGEDSINCE":
                p.sp("mod-sequence")
                changedsince = p.number("mod-sequence", maximum=MAX_NUMBER64)
            elif name == "VANISHED":
                vanished = True
            else:
                p.fail(f"Unknown FETCH modifier {show(name.encode())}")

        p.items("fetch modifiers", modifier, empty_ok=False)
    p.finish("fetch attributes")
    if vanished and not uid:
        p.fail("VANISHED is only allowed with UID FETCH")
    if vanished and changedsince is None:
        p.fail("VANISHED needs CHANGEDSINCE")
    return Fetch(tag, seqset, tuple(attrs), uid, changedsince, vanished)

