"""FETCH data items: response pieces from what the store precomputed.

The FETCH handler (``handlers/fetch.py``) resolves the messages and writes; this module
turns each message's items into the pieces of its ``* n FETCH (...)`` response.

Only what the items need is read: flags come from the session's view, sizes and dates
from the message listing, ENVELOPE/BODYSTRUCTURE from the parse stored at delivery,
header sections from the stored header block, and the message octets only for body
sections. Section bytes are always the stored octets, never a re-serialisation.

A body section is never built into the response: it is a :class:`Span` of the stored
octets, which the handler copies to the client piece by piece as the client reads
(``MessageOctets.pieces``). Small messages are read whole, a few megabytes' worth per
store call; bigger ones are read in pieces, so a FETCH holds a bounded amount of memory
whatever the messages' sizes and however many sections it asks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ...mime.parse import BodyPart, ParsedMessage, header_fields, part_by_number
from ...store.api import MailStore, MessageInfo
from ...store.reads_api import FetchData, FetchWants, small_run
from .. import response
from ..dates import format_internaldate
from ..selected import SelectedMailbox
from ..structure import format_bodystructure, format_envelope
from ..syntax.fetch import FetchAttribute, FetchSection

CHUNK = 200  # messages per round of listing / structure / header reads
BODY_CHUNK = CHUNK  # whole messages read in one store call, at most ...
BODY_BATCH_BYTES = 4 * 1024 * 1024  # ... and at most this many octets of them
INLINE_BODY = 256 * 1024  # a message up to this size is read whole, a bigger one in pieces
PIECE = 256 * 1024  # a literal's content is read and written in pieces of this size


class MessageVanished(Exception):
    """The message was expunged while its octets were being sent."""


@dataclass(frozen=True, slots=True)
class Span:
    """A literal's content: ``length`` stored octets from ``start``.

    ``binary`` is for BINARY[] (a literal8, RFC 3516), the only place NUL octets may be
    sent; elsewhere they are replaced (see ``response.literal``).
    """

    start: int
    length: int
    binary: bool = False


Piece = bytes | Span


class MessageOctets:
    """The stored octets of one message: in memory when small, else read in pieces."""

    def __init__(self, store: MailStore, mailbox_id: int, uid: int, size: int,
                 data: bytes | None) -> None:
        self._store = store
        self._mailbox_id = mailbox_id
        self.uid = uid
        self.size = size
        self._data = data

    async def read(self, start: int, length: int) -> bytes:
        if self._data is not None:
            return self._data[start : start + length]
        got = await self._store.read_range(self._mailbox_id, self.uid, start, length)
        if got is None or len(got) != min(length, max(self.size - start, 0)):
            raise MessageVanished(self.uid)
        return got

    async def pieces(self, span: Span) -> AsyncIterator[bytes]:
        pos, end = span.start, span.start + span.length
        while pos < end:
            n = min(PIECE, end - pos)
            yield await self.read(pos, n)
            pos += n


@dataclass(slots=True)
class FetchReply:
    """One message's response: bytes to send as they are, and spans of ``octets``."""

    uid: int
    pieces: list[Piece]
    octets: MessageOctets | None


@dataclass(frozen=True, slots=True)
class FetchNeeds:
    info: bool
    structure: bool
    headers: bool
    full: bool

    @classmethod
    def of(cls, attrs: Sequence[FetchAttribute]) -> FetchNeeds:
        info = structure = headers = full = False
        for a in attrs:
            if a.name in ("INTERNALDATE", "RFC822.SIZE"):
                info = True
            elif a.name in ("ENVELOPE", "BODYSTRUCTURE") or (a.name == "BODY" and not a.section):
                structure = True
            elif a.name == "RFC822.HEADER":
                headers = True
            elif a.name == "RFC822":
                full = True
            elif a.name == "RFC822.TEXT":
                full = structure = True
            elif a.section is not None:
                sec = a.section
                if not sec.parts and sec.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                    headers = True
                elif not sec.parts and sec.text is None:
                    full = True  # BODY[] is the stored octets: no structure needed
                else:
                    full = True
                    structure = True
        # The sizes decide how the octets are read (whole or in pieces).
        return cls(info or full, structure, headers, full)

    @property
    def any(self) -> bool:
        return self.info or self.structure or self.headers or self.full


def _section_spec(section: FetchSection) -> bytes:
    spec = b".".join(b"%d" % part for part in section.parts)
    if section.text is not None:
        spec += (b"." if spec else b"") + section.text.encode("ascii")
    if section.headers:
        spec += b" " + response.plist(response.section_header_name(h) for h in section.headers)
    return spec


@lru_cache(maxsize=256)
def response_name(attr: FetchAttribute) -> bytes:
    """The item's name in the response: no ``.PEEK``, only the partial's origin."""
    # Cached: formatting a section spec per message was the top cost of a header sync.
    out = attr.name.encode("ascii")
    if attr.section is not None:
        out += b"[" + _section_spec(attr.section) + b"]"
    if attr.partial is not None:
        out += b"<%d>" % attr.partial[0]
    return out


@lru_cache(maxsize=256)
def _field_names(section: FetchSection) -> tuple[bytes, ...]:
    return tuple(h.encode("utf-8", "replace") for h in section.headers)


def header_section(header: bytes, section: FetchSection) -> bytes:
    if section.text == "HEADER":
        return header
    return header_fields(header, _field_names(section), exclude=section.text == "HEADER.FIELDS.NOT")


def _between(start: int, end: int) -> Span:
    return Span(start, max(end - start, 0))


async def section_source(
    section: FetchSection, size: int, root: BodyPart | None, header: bytes | None,
    octets: MessageOctets | None,
) -> Span | bytes | None:
    """Where ``BODY[section]`` comes from: a span of the stored octets, bytes derived from
    them (header fields), or None when the part does not exist."""
    text = section.text
    if not section.parts:
        if text is None:
            return Span(0, size)
        if text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            assert header is not None
            return header_section(header, section)
        assert root is not None
        return _between(root.body_start, root.body_end)  # TEXT
    assert root is not None
    target = part_by_number(root, section.parts)
    if target is None:
        return None
    if text is None:
        return _between(target.body_start, target.body_end)
    if text == "MIME":
        return _between(target.header_start, target.header_end)
    # HEADER/TEXT below a part number apply to an encapsulated message only.
    if not target.is_message:
        return b""
    inner = target.parts[0]
    if text == "TEXT":
        return _between(inner.body_start, inner.body_end)
    span = _between(inner.header_start, inner.header_end)
    if text == "HEADER":
        return span
    assert octets is not None
    return header_section(await octets.read(span.start, span.length), section)


def _partial(source: Span | bytes, attr: FetchAttribute) -> Span | bytes:
    if attr.partial is None:
        return source
    origin, count = attr.partial
    if isinstance(source, bytes):
        return source[origin : origin + count]
    start = min(source.start + origin, source.start + source.length)
    return Span(start, min(count, source.start + source.length - start), source.binary)


def _literal(name: bytes, source: Span | bytes, binary: bool) -> list[Piece]:
    """``name {n}`` + content; BINARY[] sends a literal8 with the octets as stored."""
    if isinstance(source, bytes):
        if binary:
            return [name + b" " + response.literal8(source)]
        return [name + b" " + response.literal(source)]
    head = b"~{%d}\r\n" if binary else b"{%d}\r\n"
    return [name + b" " + head % source.length, Span(source.start, source.length, binary)]


async def _item(
    attr: FetchAttribute, uid: int, view: SelectedMailbox, info: MessageInfo | None,
    parsed: ParsedMessage | None, header: bytes | None, octets: MessageOctets | None,
    with_uid: bool,
) -> list[Piece]:
    name = attr.name
    if name == "UID":
        return [] if with_uid else [b"UID %d" % uid]
    if name == "FLAGS":
        return [b"FLAGS " + view.format_flags(uid)]
    if name == "INTERNALDATE":
        assert info is not None
        return [b"INTERNALDATE " + response.string(format_internaldate(info.internaldate))]
    if name == "RFC822.SIZE":
        assert info is not None
        return [b"RFC822.SIZE %d" % info.size]
    if name == "MODSEQ":
        return [b"MODSEQ (%d)" % view.modseqs.get(uid, 0)]
    if name == "ENVELOPE":
        assert parsed is not None
        return [b"ENVELOPE " + format_envelope(parsed.envelope)]
    if name == "BODYSTRUCTURE":
        assert parsed is not None
        return [b"BODYSTRUCTURE " + format_bodystructure(parsed.root, extensible=True)]
    if name == "BODY" and attr.section is None:
        assert parsed is not None
        return [b"BODY " + format_bodystructure(parsed.root, extensible=False)]
    if name == "RFC822":
        assert octets is not None
        return _literal(b"RFC822", Span(0, octets.size), False)
    if name == "RFC822.HEADER":
        assert header is not None
        return _literal(b"RFC822.HEADER", header, False)
    if name == "RFC822.TEXT":
        assert octets is not None and parsed is not None
        return _literal(b"RFC822.TEXT", _between(parsed.root.body_start, octets.size), False)
    section = attr.section
    assert section is not None
    size = octets.size if octets is not None else 0
    root = parsed.root if parsed is not None else None
    source = await section_source(section, size, root, header, octets)
    if source is None:
        return [response_name(attr) + b" NIL"]
    source = _partial(source, attr)
    if name == "BINARY.SIZE":
        # Content-transfer decoding is not done: BINARY[] sends the stored octets, so
        # its size is theirs.
        length = len(source) if isinstance(source, bytes) else source.length
        return [response_name(attr) + b" %d" % length]
    return _literal(response_name(attr), source, name == "BINARY")


def _joined(items: list[list[Piece]], msn: int) -> list[Piece]:
    """``* msn FETCH (item item ...)`` CRLF, consecutive bytes joined into one."""
    out: list[Piece] = []
    run: list[bytes] = [b"* %d FETCH (" % msn]  # bytes since the last span
    for i, item in enumerate(items):
        if i:
            run.append(b" ")
        for piece in item:
            if isinstance(piece, bytes):
                run.append(piece)
            else:
                if run:
                    out.append(b"".join(run))
                out.append(piece)
                run = []
    run.append(b")\r\n")
    out.append(b"".join(run))
    return out


async def fetch_responses(
    store: MailStore,
    view: SelectedMailbox,
    uids: Sequence[int],
    attrs: Sequence[FetchAttribute],
    *,
    with_uid: bool,
    flags_for: set[int],
) -> AsyncIterator[tuple[int, FetchReply | None]]:
    """Yield ``(uid, reply)`` per message, or ``(uid, None)`` when it vanished meanwhile.

    ``flags_for`` are UIDs whose FLAGS must be included even when not asked for (an
    implicit \\Seen was just set on them).
    """
    needs = FetchNeeds.of(attrs)
    mbox = view.mailbox.id
    wants = FetchWants(info=needs.info, structure=needs.structure, headers=needs.headers,
                       bodies=needs.full, body_max=INLINE_BODY, batch_bytes=BODY_BATCH_BYTES,
                       batch_count=BODY_CHUNK)
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        # One store call per round: listing, structures, headers and the first small
        # bodies together.
        # FLAGS, UID and MODSEQ come from the view: nothing to read.
        data = await store.read_for_fetch(mbox, chunk, wants) if needs.any else FetchData()
        infos, structures, headers = data.infos, data.structures, data.headers
        bodies = data.bodies
        for i, uid in enumerate(chunk):
            if (needs.info and uid not in infos) or (needs.structure and uid not in structures) \
                    or (needs.headers and uid not in headers):
                yield uid, None
                continue
            octets: MessageOctets | None = None
            if needs.full:
                size = infos[uid].size
                if size > INLINE_BODY:
                    octets = MessageOctets(store, mbox, uid, size, None)
                else:
                    if uid not in bodies:
                        bodies = await store.read_messages(mbox, small_run(chunk[i:], infos,
                                                                           wants))
                    raw = bodies.pop(uid, None)
                    if raw is None:
                        yield uid, None
                        continue
                    octets = MessageOctets(store, mbox, uid, len(raw), raw)
            parsed = structures[uid] if needs.structure else None
            items: list[list[Piece]] = []
            if with_uid:
                items.append([b"UID %d" % uid])
            for attr in attrs:
                item = await _item(attr, uid, view, infos.get(uid), parsed, headers.get(uid),
                                   octets, with_uid)
                if item:
                    items.append(item)
            if uid in flags_for and not any(a.name == "FLAGS" for a in attrs):
                items.append([b"FLAGS " + view.format_flags(uid)])
            msn = view.msn(uid)
            if msn is None:
                yield uid, None
                continue
            yield uid, FetchReply(uid, _joined(items, msn), octets)

