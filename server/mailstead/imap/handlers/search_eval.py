"""SEARCH: evaluate a search-key tree against the messages of a selected mailbox.

Only the data the keys need is loaded: flags and numbers come from the view, sizes and
dates from the listing, header keys, address keys (FROM/TO/CC/BCC) and the header half of
TEXT from the header text decoded at delivery (``mime.header_text``, stored with the
message), and BODY/TEXT from the full message decoded (transfer encoding and charset) by
``mime.search``. Text matching is a
case-insensitive substring match over the decoded text, as RFC 3501 asks. Decoding is
CPU work, so chunks that need it are matched on the worker threads of
``imap/expensive.py`` (passed in as ``run``); so are chunks whose key is big enough that
matching them would hold the loop, and what stays on the loop is matched in slices that
yield. Bodies are read a few megabytes at a time, not a chunk of messages at once.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from ...mime.header_text import HeaderText
from ...mime.parse import parse_message
from ...mime.search import body_text
from ...store.api import MailStore, MessageInfo
from ..selected import SelectedMailbox
from ..syntax.search import (
    AddressKey,
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)

CHUNK = 200
# Key nodes times messages matched on the loop at most between two yields (~ms of work);
# a chunk costing more is matched on a worker thread.
INLINE_WORK = 20_000
# Message octets read for BODY/TEXT in one store call (a message larger is read alone).
BODY_BATCH_BYTES = 2 * 1024 * 1024

# Runs ``fn(*args)`` off the loop (``ExpensiveWork.run``).
Runner = Callable[..., Awaitable[list[int]]]


@dataclass(slots=True)
class _Needs:
    info: bool = False
    headers: bool = False  # the stored header text
    text: bool = False


def _needs(key: SearchKey, out: _Needs) -> _Needs:
    if isinstance(key, (DateKey,)):
        if key.sent:
            out.headers = True
        else:
            out.info = True
    elif isinstance(key, SizeKey):
        out.info = True
    elif isinstance(key, (HeaderKey, AddressKey)):
        out.headers = True
    elif isinstance(key, TextKey):
        out.text = True
        out.info = True  # the sizes bound how many bodies are read at once
        if key.scope == "TEXT":
            out.headers = True
    elif isinstance(key, NotKey):
        _needs(key.key, out)
    elif isinstance(key, OrKey):
        _needs(key.left, out)
        _needs(key.right, out)
    elif isinstance(key, AndKey):
        for k in key.keys:
            _needs(k, out)
    return out


class _Message:
    """One candidate message and what the keys need of it, decoded at most once.

    A plain class, not a dataclass: one is made per message per SEARCH, and the
    dataclass ``__init__`` with its two dict factories was a tenth of a flags search."""

    __slots__ = (
        "_addresses_folded",
        "_body",
        "_header_text",
        "_headers_folded",
        "flags",
        "header",
        "info",
        "modseq",
        "msn",
        "raw",
        "recent",
        "uid",
    )

    def __init__(self, uid: int, msn: int, flags: frozenset[str], recent: bool, modseq: int,
                 info: MessageInfo | None = None, header: HeaderText | None = None) -> None:
        self.uid = uid
        self.msn = msn
        self.flags = flags
        self.recent = recent
        self.modseq = modseq
        self.info = info
        self.header = header
        self.raw: bytes | None = None
        self._body: str | None = None
        self._header_text: str | None = None
        self._headers_folded: dict[str, list[str]] | None = None
        self._addresses_folded: dict[str, list[str]] | None = None

    def body_text(self) -> str:
        if self._body is None:
            raw = self.raw or b""
            self._body = body_text(raw, parse_message(raw)).casefold()
        return self._body

    def header_text(self) -> str:
        if self._header_text is None:
            self._header_text = self.header.text().casefold() if self.header else ""
        return self._header_text

    def header_values(self, name: str) -> list[str]:
        folded = self._headers_folded
        if folded is None:
            folded = self._headers_folded = {}
        if name not in folded:
            values = self.header.values(name) if self.header else []
            folded[name] = [v.casefold() for v in values]
        return folded[name]

    def address_forms(self, name: str) -> list[str]:
        folded = self._addresses_folded
        if folded is None:
            folded = self._addresses_folded = {}
        if name not in folded:
            forms = self.header.addresses(name) if self.header else []
            folded[name] = [f.casefold() for f in forms]
        return folded[name]


def _sent_date(msg: _Message) -> date | None:
    values = msg.header.values("date") if msg.header else []
    if not values:
        return None
    try:
        return email.utils.parsedate_to_datetime(values[0]).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _compare_date(op: str, day: date | None, value: date) -> bool:
    if day is None:
        return False
    if op == "BEFORE":
        return day < value
    if op == "ON":
        return day == value
    return day >= value  # SINCE


Predicate = Callable[[_Message], bool]


def compile_key(key: SearchKey, max_msn: int, max_uid: int) -> Predicate:
    """The key as one function of a message: the tree is walked once per SEARCH, not
    once per message (the ``isinstance`` chain was most of a flags search's cost)."""
    if isinstance(key, AllKey):
        return lambda msg: True
    if isinstance(key, FlagKey):
        flag, present = key.flag, key.present
        if flag == "\\Recent":
            return lambda msg: msg.recent == present
        if present:
            return lambda msg: flag in msg.flags
        return lambda msg: flag not in msg.flags
    if isinstance(key, SequenceKey):
        seqset = key.seqset
        if key.uid:
            return lambda msg: seqset.contains(msg.uid, max_uid)
        return lambda msg: seqset.contains(msg.msn, max_msn)
    if isinstance(key, SizeKey):
        size = key.size
        if key.op == "LARGER":
            return lambda msg: msg.info is not None and msg.info.size > size
        return lambda msg: msg.info is not None and msg.info.size < size
    if isinstance(key, DateKey):
        op, value = key.op, key.value
        if key.sent:
            return lambda msg: _compare_date(op, _sent_date(msg), value)
        return lambda msg: msg.info is not None and _compare_date(
            op, msg.info.internaldate.date(), value)
    if isinstance(key, HeaderKey):
        field, needle = key.field, key.value.casefold()
        return lambda msg: any(needle in v for v in msg.header_values(field))
    if isinstance(key, AddressKey):
        field, needle = key.field, key.value.casefold()
        return lambda msg: any(needle in form for form in msg.address_forms(field))
    if isinstance(key, TextKey):
        needle, with_header = key.value.casefold(), key.scope == "TEXT"
        return lambda msg: needle in msg.body_text() or (
            with_header and needle in msg.header_text())
    if isinstance(key, ModSeqKey):
        modseq = key.modseq
        return lambda msg: msg.modseq >= modseq
    if isinstance(key, NotKey):
        inner = compile_key(key.key, max_msn, max_uid)
        return lambda msg: not inner(msg)
    if isinstance(key, OrKey):
        left = compile_key(key.left, max_msn, max_uid)
        right = compile_key(key.right, max_msn, max_uid)
        return lambda msg: left(msg) or right(msg)
    if isinstance(key, AndKey):
        parts = [compile_key(k, max_msn, max_uid) for k in key.keys]
        if len(parts) == 2:
            first, second = parts
            return lambda msg: first(msg) and second(msg)
        return lambda msg: all(p(msg) for p in parts)
    raise ValueError(f"unsupported search key {type(key).__name__}")


def matches(key: SearchKey, msg: _Message, max_msn: int, max_uid: int) -> bool:
    return compile_key(key, max_msn, max_uid)(msg)


def key_cost(key: SearchKey) -> int:
    """The number of nodes in the key tree: the work of matching one message."""
    if isinstance(key, NotKey):
        return 1 + key_cost(key.key)
    if isinstance(key, OrKey):
        return 1 + key_cost(key.left) + key_cost(key.right)
    if isinstance(key, AndKey):
        return 1 + sum(key_cost(k) for k in key.keys)
    return 1


def is_expensive(key: SearchKey) -> bool:
    """Whether the search reads message data from the store (headers, envelopes, text)."""
    needs = _needs(key, _Needs())
    return needs.headers or needs.text


def _on_flags_only(key: SearchKey) -> bool:
    """Whether the key looks at nothing but a message's flag set (not \\Recent)."""
    if isinstance(key, FlagKey):
        return key.flag != "\\Recent"
    if isinstance(key, AllKey):
        return True
    if isinstance(key, NotKey):
        return _on_flags_only(key.key)
    if isinstance(key, OrKey):
        return _on_flags_only(key.left) and _on_flags_only(key.right)
    if isinstance(key, AndKey):
        return all(_on_flags_only(k) for k in key.keys)
    return False


async def search(
    store: MailStore, view: SelectedMailbox, key: SearchKey, *, run: Runner
) -> list[int]:
    """UIDs of the messages in the view that match, ascending."""
    if _on_flags_only(key):
        # Matched once per distinct flag set, not once per message.
        return view.live_uids_where(
            lambda flags: matches(key, _Message(0, 0, flags, False, 0), 0, 0))
    needs = _needs(key, _Needs())
    cost = key_cost(key)
    candidates = view.live_entries()
    max_msn = view.exists
    max_uid = view.uids[-1] if view.uids else 0
    found: list[int] = []
    mbox = view.mailbox.id
    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start : start + CHUNK]
        uids = [e[0] for e in chunk]
        infos: dict[int, MessageInfo] = {}
        headers: dict[int, HeaderText] = {}
        if needs.info:
            infos = {i.uid: i for i in await store.get_messages(mbox, uids)}
        if needs.headers:
            headers = await store.read_header_texts(mbox, uids)
        msgs: list[_Message] = []
        recent = view.recent
        for uid, msn, flags, modseq in chunk:
            if (needs.info and uid not in infos) or (needs.headers and uid not in headers):
                continue  # expunged while we looked
            msgs.append(_Message(uid, msn, flags, uid in recent, modseq, infos.get(uid),
                                 headers.get(uid)))
        if needs.text:
            for group in _body_groups(msgs):
                bodies = await store.read_messages(mbox, [m.uid for m in group])
                for msg in group:
                    msg.raw = bodies.get(msg.uid)
                present = [m for m in group if m.raw is not None]  # else expunged meanwhile
                found.extend(await run(_match_all, key, present, max_msn, max_uid))
                for msg in present:
                    msg.raw = None
                    msg._body = None
        elif needs.headers or cost * len(msgs) > INLINE_WORK:
            found.extend(await run(_match_all, key, msgs, max_msn, max_uid))
        else:
            found.extend(_match_all(key, msgs, max_msn, max_uid))
            await asyncio.sleep(0)  # a flags-only search of a big mailbox still yields
    return found


def _body_groups(msgs: Sequence[_Message]) -> Iterator[list[_Message]]:
    """``msgs`` in runs of at most BODY_BATCH_BYTES of octets (at least one each)."""
    group: list[_Message] = []
    total = 0
    for msg in msgs:
        size = msg.info.size if msg.info is not None else 0
        if group and total + size > BODY_BATCH_BYTES:
            yield group
            group, total = [], 0
        group.append(msg)
        total += size
    if group:
        yield group


def _match_all(key: SearchKey, msgs: Sequence[_Message], max_msn: int, max_uid: int) -> list[int]:
    match = compile_key(key, max_msn, max_uid)
    return [m.uid for m in msgs if match(m)]
