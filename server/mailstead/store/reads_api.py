"""The message-reading part of the store interface (``MailStore`` inherits it): listings,
stored octets, header blocks and structures parsed at delivery, and one FETCH round's reads.

``sqlite/reads.py`` implements it. The defaults here are correct but make a call per part;
a backend should read what one command needs in one go (``read_for_fetch``) and serve big
messages in pieces (``read_range``). Nothing here formats protocol text.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ..mime.header_text import HeaderText
from ..mime.model import ParsedMessage

if TYPE_CHECKING:  # api.py inherits from this module: its types for annotations only
    from .api import MessageInfo


class Octets(NamedTuple):
    """A message's stored octets, and whether any of its lines starts with ``.``."""

    data: bytes
    dot_lines: bool | None  # None: not known (stored before the mark existed)


@dataclass(frozen=True, slots=True)
class FetchWants:
    """What one FETCH round reads of each message (``MailStore.read_for_fetch``).

    ``bodies``: the octets of the leading run of small messages (see ``small_run``);
    the others are read later, by ``read_messages`` or in pieces by ``read_range``.
    """

    info: bool = False
    structure: bool = False
    headers: bool = False
    bodies: bool = False
    body_max: int = 0  # a message above this size is never read whole here
    batch_bytes: int = 0  # octets of bodies read at most
    batch_count: int = 0  # bodies read at most


@dataclass(slots=True)
class FetchData:
    """One FETCH round's reads; a UID missing from a wanted part was expunged."""

    infos: dict[int, MessageInfo] = field(default_factory=dict)
    structures: dict[int, ParsedMessage] = field(default_factory=dict)
    headers: dict[int, bytes] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)


def small_run(uids: Sequence[int], sizes: dict[int, MessageInfo], wants: FetchWants) -> list[int]:
    """The small messages from ``uids[0]`` on to read whole in one call: at most
    ``batch_count`` of them and ``batch_bytes`` of octets, stopping at the first big one
    (a UID not in ``sizes``, gone, counts as empty)."""
    run: list[int] = []
    total = 0
    for uid in uids:
        info = sizes.get(uid)
        size = info.size if info is not None else 0
        if size > wants.body_max or len(run) >= wants.batch_count or (
                run and total + size > wants.batch_bytes):
            break
        run.append(uid)
        total += size
    return run


class MessageReads(abc.ABC):
    """What protocols read of the messages of a mailbox. All methods are safe to call from
    the event loop."""

    @abc.abstractmethod
    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]:
        """Every message of the mailbox in UID order."""

    @abc.abstractmethod
    async def get_messages(self, mailbox_id: int, uids: Iterable[int]) -> list[MessageInfo]: ...

    async def list_maildrop(self, mailbox_id: int) -> list[tuple[int, int, bool]]:
        """(UID, size, whether \\Seen) of every message in UID order: a POP3 maildrop. A
        backend should read only these (a full listing builds dates it does not need)."""
        return [(m.uid, m.size, "\\Seen" in m.flags) for m in await self.list_messages(mailbox_id)]

    @abc.abstractmethod
    async def read_message(self, mailbox_id: int, uid: int) -> bytes | None:
        """The stored octets (CRLF), or None when the message is gone."""

    async def read_range(
        self, mailbox_id: int, uid: int, offset: int, length: int
    ) -> bytes | None:
        """Up to ``length`` stored octets of a message from ``offset`` (fewer at its end),
        or None when the message is gone: FETCH streams a big message in pieces instead of
        holding it whole. This default reads it whole; a backend should do better."""
        data = await self.read_message(mailbox_id, uid)
        return None if data is None else data[offset : offset + length]

    @abc.abstractmethod
    async def read_messages(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        """Several messages' octets in one call (for read-ahead); missing UIDs are absent."""

    @abc.abstractmethod
    async def read_octets(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, Octets]:
        """Like ``read_messages``, with each message's dot-line mark (computed once at
        delivery) so that a dot-stuffing protocol need not scan every message it sends."""

    @abc.abstractmethod
    async def read_headers(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        """Top-level header blocks (with the blank line) without reading bodies."""

    @abc.abstractmethod
    async def read_structures(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, ParsedMessage]:
        """The parse results computed at delivery (envelope, body structure, part offsets)."""

    async def read_for_fetch(
        self, mailbox_id: int, uids: Sequence[int], wants: FetchWants
    ) -> FetchData:
        """What a FETCH round needs of ``uids`` (in the order given), in one consistent
        read where the backend can: one store call per round, not one per part. This
        default makes one call per part."""
        out = FetchData()
        if wants.info or wants.bodies:
            out.infos = {i.uid: i for i in await self.get_messages(mailbox_id, uids)}
        if wants.structure:
            out.structures = await self.read_structures(mailbox_id, uids)
        if wants.headers:
            out.headers = await self.read_headers(mailbox_id, uids)
        if wants.bodies:
            run = small_run(uids, out.infos, wants)
            if run:
                out.bodies = await self.read_messages(mailbox_id, run)
        return out

    @abc.abstractmethod
    async def read_header_texts(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, HeaderText]:
        """What SEARCH matches in each top-level header, decoded once at delivery
        (``mime.header_text``); missing UIDs are absent."""
