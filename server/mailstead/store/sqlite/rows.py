"""Conversions between store values and SQLite row values, shared by the store modules."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ..api import Mailbox, MessageInfo
from ..reads_api import Octets

MAILBOX_COLS = "id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use"
INFO_COLS = "uid, modseq, flags, internaldate, tzoffset, size"


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


# Distinct flag texts shared at once; a mailbox has few (most messages are "\\Seen" or
# nothing), so a listing of 100,000 messages holds a handful of frozensets, not 100,000
# (each costs 216 octets and would live as long as every view that selected it).
FLAG_SETS_SHARED = 4096


@functools.lru_cache(maxsize=FLAG_SETS_SHARED)
def flags_set(text: str) -> frozenset[str]:
    """The flags of a stored text: one shared frozenset per distinct text (thread-safe:
    readers and the writer run on their own threads)."""
    return frozenset(text.split()) if text else frozenset()


def octets(data: bytes, dot_lines: int | None) -> Octets:
    return Octets(data, None if dot_lines is None else bool(dot_lines))


def to_row_date(when: datetime | None) -> tuple[int, int]:
    if when is None:
        when = datetime.now(UTC).astimezone()
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    return int(when.timestamp()), int(offset.total_seconds() // 60)


@functools.lru_cache(maxsize=64)
def _zone(tzoffset: int) -> timezone:
    # One zone object per offset: building it was half the cost of a listing row's date.
    return timezone(timedelta(minutes=tzoffset))


def from_row_date(ts: int, tzoffset: int) -> datetime:
    return datetime.fromtimestamp(ts, _zone(tzoffset))


def mailbox_row(row: Sequence[Any]) -> Mailbox:
    return Mailbox(*row)


def message_info(row: Sequence[Any]) -> MessageInfo:
    uid, modseq, flags, ts, tz, size = row
    return MessageInfo(uid, modseq, flags_set(flags), from_row_date(ts, tz), size)


# Lengths of the ``IN (...)`` lists the store builds: a list is padded (with its last
# value repeated) to the next of these, so that a handful of distinct statements stay in
# sqlite3's statement cache instead of one compiled per length.
IN_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)
_MARKS = {n: ",".join("?" * n) for n in IN_SIZES}


def in_list(chunk: list[int]) -> tuple[str, list[int]]:
    """``?`` marks and parameters for ``IN (...)`` of a chunk (at most 500 values)."""
    n = next(size for size in IN_SIZES if size >= len(chunk))
    return _MARKS[n], chunk + chunk[-1:] * (n - len(chunk))


CHUNK_ROWS = 500  # values of one IN list at most


def chunks(uids: Iterable[int], size: int = CHUNK_ROWS) -> Iterable[list[int]]:
    """Sorted, distinct UIDs in lists short enough for one ``IN (...)``."""
    it = iter(sorted(set(uids)))
    while chunk := list(itertools.islice(it, size)):
        yield chunk
