"""Sequence sets (RFC 3501 §9 ``sequence-set``): message numbers or UIDs, ``*`` included."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .tokens import MAX_NUMBER, Parser


def _seq_number(token: bytes, whole: bytes) -> int | None:
    if token == b"*":
        return None
    shown = whole[:40].decode("ascii", "replace")
    if not token or not token.isdigit():
        raise ValueError(f"Invalid sequence set: {shown}")
    if len(token) > 10 or int(token) > MAX_NUMBER:
        raise ValueError(f"Invalid sequence set: {shown} (numbers are at most {MAX_NUMBER})")
    value = int(token)
    if value == 0:
        raise ValueError(f"Invalid sequence set: {shown} (numbers start at 1)")
    return value


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set: ``(start, end)`` pairs in client order, None standing for ``*``.

    A single number ``n`` is ``(n, n)``. Ranges keep the client's orientation
    (``5:2``); :meth:`intervals` normalises them.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("Empty sequence set")
        for pair in self.ranges:
            for value in pair:
                if value is not None and not 1 <= value <= MAX_NUMBER:
                    raise ValueError(f"Sequence number out of range: {value}")

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse ``1:3,5,7:*``; raises ValueError with a client-facing message."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        if b"$" in data:
            raise ValueError("SEARCHRES ($) is not supported")
        ranges: list[tuple[int | None, int | None]] = []
        for item in data.split(b","):
            start, sep, end = item.partition(b":")
            first = _seq_number(start, data)
            ranges.append((first, _seq_number(end, data) if sep else first))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, values: Iterable[int]) -> SequenceSet:
        """The most compact set holding exactly ``values`` (which must not be empty)."""
        ranges: list[tuple[int | None, int | None]] = []
        for value in sorted(set(values)):
            if ranges and ranges[-1][1] == value - 1:
                ranges[-1] = (ranges[-1][0], value)
            else:
                ranges.append((value, value))
        return cls(tuple(ranges))

    @property
    def uses_star(self) -> bool:
        return any(value is None for pair in self.ranges for value in pair)

    def format(self) -> bytes:
        """The set in IMAP syntax, as responses carry it (APPENDUID, COPYUID, ESEARCH)."""
        def one(value: int | None) -> bytes:
            return b"*" if value is None else b"%d" % value

        return b",".join(
            one(start) if start == end else one(start) + b":" + one(end)
            for start, end in self.ranges
        )

    def intervals(self, max_value: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ``(low, high)`` intervals within ``1..max_value``.

        ``*`` is ``max_value`` (the highest sequence number, or the highest UID). As
        RFC 3501 requires, ``559:*`` still names the last message when 559 is larger.
        """
        spans: list[tuple[int, int]] = []
        for start, end in self.ranges:
            a = max_value if start is None else start
            b = max_value if end is None else end
            low, high = max(min(a, b), 1), min(max(a, b), max_value)
            if low <= high:
                spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def resolve(self, max_value: int) -> list[int]:
        """Every number in the set, ascending, within ``1..max_value``.

        Meant for message sequence numbers; for UIDs use :meth:`matching`, which does
        not expand ranges.
        """
        return [n for low, high in self.intervals(max_value) for n in range(low, high + 1)]

    def contains(self, value: int, max_value: int) -> bool:
        return any(low <= value <= high for low, high in self.intervals(max_value))

    def matching(self, values: Iterable[int]) -> list[int]:
        """Those of ``values`` (e.g. a mailbox's UIDs) in the set, ascending.

        ``*`` is the largest of ``values``.
        """
        return self.matching_sorted(sorted(set(values)))

    def matching_sorted(self, ordered: Sequence[int]) -> list[int]:
        """``matching`` for values already ascending and unique (a mailbox's UID list):
        a binary search per range, so one UID of 100,000 costs no pass over them all."""
        if not ordered:
            return []
        found: list[int] = []
        for low, high in self.intervals(ordered[-1]):
            found.extend(ordered[bisect_left(ordered, low) : bisect_right(ordered, high)])
        return found


def parse_seqset(p: Parser, what: str = "sequence set") -> SequenceSet:
    """A sequence set argument; read as a word so ``*`` and ``:`` come along."""
    token = p.word(what)
    try:
        return SequenceSet.parse(token)
    except ValueError as exc:
        p.fail(str(exc))
