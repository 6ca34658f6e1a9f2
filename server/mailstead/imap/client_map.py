"""Per-message values of a view's client map, aligned with its UID list.

A session keeps the flags and modseq of every message in its selected mailbox. Two dicts
keyed by UID cost about 100 octets a message each (the dict entries and an int object per
modseq); a column holds one slot per message in UID order instead: a reference to the
flag set the store shares (``store/sqlite/rows.flags_set``) or an 8-octet integer, and
finds a UID by binary search in the view's UID list. Only ``SelectedMailbox`` adds and
removes messages (``ClientMap.append``/``delete_at``), so the columns never drift from
the UID list; handlers read them like mappings.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping, MutableSequence
from typing import TypeVar, overload

V = TypeVar("V")
D = TypeVar("D")


class Column(Mapping[int, V]):
    """UID → value for the UIDs of the map; setting a UID outside it is a KeyError."""

    __slots__ = ("_uids", "_values")

    def __init__(self, uids: list[int], values: MutableSequence[V]) -> None:
        self._uids = uids
        self._values = values

    def _at(self, uid: object) -> int:
        uids = self._uids
        if not isinstance(uid, int):
            return -1
        i = bisect_left(uids, uid)
        return i if i < len(uids) and uids[i] == uid else -1

    def __contains__(self, uid: object) -> bool:
        return self._at(uid) >= 0

    def __getitem__(self, uid: int) -> V:
        i = self._at(uid)
        if i < 0:
            raise KeyError(uid)
        return self._values[i]

    @overload
    def get(self, uid: int, /) -> V | None: ...
    @overload
    def get(self, uid: int, default: V | D, /) -> V | D: ...
    def get(self, uid: int, default: object = None) -> object:
        i = self._at(uid)
        return self._values[i] if i >= 0 else default

    def __setitem__(self, uid: int, value: V) -> None:
        i = self._at(uid)
        if i < 0:
            raise KeyError(uid)
        self._values[i] = value

    def __iter__(self) -> Iterator[int]:
        return iter(self._uids)

    def __len__(self) -> int:
        return len(self._uids)


class ClientMap:
    """The UID list and its flag and modseq columns, changed only together."""

    __slots__ = ("_flag_values", "_modseq_values", "flags", "modseqs", "uids")

    def __init__(self) -> None:
        self.uids: list[int] = []
        self._flag_values: list[frozenset[str]] = []
        self._modseq_values = array("q")
        self.flags: Column[frozenset[str]] = Column(self.uids, self._flag_values)
        self.modseqs: Column[int] = Column(self.uids, self._modseq_values)

    def append(self, uid: int, flags: frozenset[str], modseq: int) -> None:
        """A message above every UID in the map."""
        assert not self.uids or uid > self.uids[-1]
        self.uids.append(uid)
        self._flag_values.append(flags)
        self._modseq_values.append(modseq)

    def entries(self) -> Iterator[tuple[int, int, frozenset[str], int]]:
        """(UID, message number, flags, modseq) in UID order."""
        return zip(self.uids, range(1, len(self.uids) + 1), self._flag_values,
                   self._modseq_values, strict=True)

    def first_without(self, flag: str) -> int | None:
        """The message number of the first message without ``flag``, if any."""
        return next((n for n, flags in enumerate(self._flag_values, 1) if flag not in flags),
                    None)

    def delete_at(self, index: int) -> None:
        del self.uids[index]
        del self._flag_values[index]
        del self._modseq_values[index]
