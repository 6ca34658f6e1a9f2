"""Sequence sets (RFC 3501 §9 ``sequence-set``): message numbers or UIDs, ``*`` included."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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
    # The normalised form for the last ``max_value`` asked about (see :meth:`_spans`).
    _cache: list[_Spans] = field(
        default_factory=list, init=False, compare=False, hash=False, repr=False
    )

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
        spans = self._spans(max_value)
        return list(zip(spans.lows, spans.highs, strict=True))

    def _spans(self, max_value: int) -> _Spans:
        """The set normalised for ``max_value``, computed once: a SEARCH asks about every
        message of a mailbox with the same ``max_value``, and a client may send a set of
        tens of thousands of ranges (re-sorting it per message froze the server)."""
        if self._cache and self._cache[0].max_value == max_value:
            return self._cache[0]
        spans = _Spans.normalise(self.ranges, max_value)
        self._cache[:] = [spans]
        return spans

    def resolve(self, max_value: int) -> list[int]:
        """Every number in the set, ascending, within ``1..max_value``.

        Meant for message sequence numbers; for UIDs use :meth:`matching`, which does
        not expand ranges.
        """
        return [n for low, high in self.intervals(max_value) for n in range(low, high + 1)]

    def contains(self, value: int, max_value: int) -> bool:
        """Whether ``value`` is in the set: a binary search in the normalised ranges."""
        return value in self._spans(max_value)

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
        spans = self._spans(ordered[-1])
        for low, high in zip(spans.lows, spans.highs, strict=True):
            found.extend(ordered[bisect_left(ordered, low) : bisect_right(ordered, high)])
        return found


@dataclass(frozen=True, slots=True)
class _Spans:
    """A sequence set as sorted, disjoint, non-adjacent inclusive ranges within
    ``1..max_value``: ``lows[i]..highs[i]``, both lists ascending."""

    max_value: int
    lows: list[int]
    highs: list[int]

    @classmethod
    def normalise(
        cls, ranges: Sequence[tuple[int | None, int | None]], max_value: int
    ) -> _Spans:
        spans: list[tuple[int, int]] = []
        for start, end in ranges:
            a = max_value if start is None else start
            b = max_value if end is None else end
            low, high = max(min(a, b), 1), min(max(a, b), max_value)
            if low <= high:
                spans.append((low, high))
        spans.sort()
        lows: list[int] = []
        highs: list[int] = []
        for low, high in spans:
            if highs and low <= highs[-1] + 1:
                highs[-1] = max(highs[-1], high)
            else:
                lows.append(low)
                highs.append(high)
        return cls(max_value, lows, highs)

    def __contains__(self, value: int) -> bool:
        # The last range starting at or below value is the only one that can hold it.
        i = bisect_right(self.lows, value) - 1
        return i >= 0 and value <= self.highs[i]


def parse_seqset(p: Parser, what: str = "sequence set") -> SequenceSet:
    """A sequence set argument; read as a word so ``*`` and ``:`` come along."""
    token = p.word(what)
    try:
        return SequenceSet.parse(token)
    except ValueError as exc:
        p.fail(str(exc))
