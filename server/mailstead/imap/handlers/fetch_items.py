"""FETCH data items: response bytes from what the store precomputed.

The FETCH handler (``handlers/fetch.py``) resolves the messages; this module builds
each ``* n FETCH (...)`` line.

Only what the items need is read: flags come from the session's view, sizes and dates
from the message listing, ENVELOPE/BODYSTRUCTURE from the parse stored at delivery,
header sections from the stored header block, and the full octets only for body
sections. Section bytes are always the stored octets, never a re-serialisation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ...mime.parse import BodyPart, ParsedMessage, header_fields, part_by_number
from ...store.api import MailStore, MessageInfo
from .. import response
from ..dates import format_internaldate
from ..selected import SelectedMailbox
from ..structure import format_bodystructure, format_envelope
from ..syntax.fetch import FetchAttribute, FetchSection

CHUNK = 200
BODY_CHUNK = 16


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
        return cls(info, structure, headers, full)


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


def section_bytes(raw: bytes, root: BodyPart, section: FetchSection) -> bytes | None:
    """The octets of ``BODY[section]`` (None when the part does not exist)."""
    if not section.parts:
        target: BodyPart | None = root
    else:
        target = part_by_number(root, section.parts)
        if target is None:
            return None
    assert target is not None
    text = section.text
    if text is None:
        if not section.parts:
            return raw
        return raw[target.body_start : target.body_end]
    if text == "MIME":
        return raw[target.header_start : target.header_end]
    if section.parts:
        # HEADER/TEXT below a part number apply to an encapsulated message only.
        if not target.is_message:
            return b""
        target = target.parts[0]
    if text == "TEXT":
        return raw[target.body_start : target.body_end]
    return header_section(raw[target.header_start : target.header_end], section)


def header_section(header: bytes, section: FetchSection) -> bytes:
    if section.text == "HEADER":
        return header
    return header_fields(header, _field_names(section), exclude=section.text == "HEADER.FIELDS.NOT")


def _partial(data: bytes, attr: FetchAttribute) -> bytes:
    if attr.partial is None:
        return data
    origin, count = attr.partial
    return data[origin : origin + count]


async def fetch_responses(
    store: MailStore,
    view: SelectedMailbox,
    uids: Sequence[int],
    attrs: Sequence[FetchAttribute],
    *,
    with_uid: bool,
    flags_for: set[int],
) -> AsyncIterator[tuple[int, bytes | None]]:
    """Yield ``(uid, line)`` per message, or ``(uid, None)`` when it vanished meanwhile.

    ``flags_for`` are UIDs whose FLAGS must be included even when not asked for (an
    implicit \\Seen was just set on them).
    """
    needs = FetchNeeds.of(attrs)
    mbox = view.mailbox.id
    for start in range(0, len(uids), CHUNK):
        chunk = uids[start : start + CHUNK]
        infos: dict[int, MessageInfo] = {}
        structures: dict[int, ParsedMessage] = {}
        headers: dict[int, bytes] = {}
        if needs.info:
            infos = {i.uid: i for i in await store.get_messages(mbox, chunk)}
        if needs.structure:
            structures = await store.read_structures(mbox, chunk)
        if needs.headers:
            headers = await store.read_headers(mbox, chunk)
        # Bodies in sub-chunks: one store call for several, without holding a whole
        # chunk of big messages in memory at once.
        bodies: dict[int, bytes] = {}
        for i, uid in enumerate(chunk):
            raw: bytes | None = None
            if needs.full:
                if uid not in bodies:
                    bodies = await store.read_messages(mbox, chunk[i : i + BODY_CHUNK])
                raw = bodies.pop(uid, None)
                if raw is None:
                    yield uid, None
                    continue
            if (needs.info and uid not in infos) or (needs.structure and uid not in structures) \
                    or (needs.headers and uid not in headers):
                yield uid, None
                continue
            parsed = structures[uid] if needs.structure else None
            items: list[bytes] = []
            if with_uid:
                items.append(b"UID %d" % uid)
            for attr in attrs:
                items.append(_item(attr, uid, view, infos, parsed, headers, raw, with_uid))
            if uid in flags_for and not any(a.name == "FLAGS" for a in attrs):
                items.append(b"FLAGS " + view.format_flags(uid))
            items = [i for i in items if i]
            msn = view.msn(uid)
            if msn is None:
                yield uid, None
                continue
            yield uid, b"* %d FETCH (%s)" % (msn, b" ".join(items))


def _item(
    attr: FetchAttribute,
    uid: int,
    view: SelectedMailbox,
    infos: dict[int, MessageInfo],
    parsed: ParsedMessage | None,
    headers: dict[int, bytes],
    raw: bytes | None,
    with_uid: bool,
) -> bytes:
    name = attr.name
    if name == "UID":
        return b"" if with_uid else b"UID %d" % uid
    if name == "FLAGS":
        return b"FLAGS " + view.format_flags(uid)
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + response.string(format_internaldate(infos[uid].internaldate))
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % infos[uid].size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % view.modseqs.get(uid, 0)
    if name == "ENVELOPE":
        assert parsed is not None
        return b"ENVELOPE " + format_envelope(parsed.envelope)
    if name == "BODYSTRUCTURE":
        assert parsed is not None
        return b"BODYSTRUCTURE " + format_bodystructure(parsed.root, extensible=True)
    if name == "BODY" and attr.section is None:
        assert parsed is not None
        return b"BODY " + format_bodystructure(parsed.root, extensible=False)
    if name == "RFC822":
        assert raw is not None
        return b"RFC822 " + response.literal(raw)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + response.literal(headers[uid])
    if name == "RFC822.TEXT":
        assert raw is not None and parsed is not None
        return b"RFC822.TEXT " + response.literal(raw[parsed.root.body_start :])
    section = attr.section
    assert section is not None
    if not section.parts and section.text is None:
        assert raw is not None
        data: bytes | None = raw
    elif raw is not None and parsed is not None:
        data = section_bytes(raw, parsed.root, section)
    else:
        data = header_section(headers[uid], section)
    if data is None:
        return response_name(attr) + b" NIL"
    return response_name(attr) + b" " + response.literal(_partial(data, attr))
