"""Per-message values of a view's client map, aligned with its UID list.

A session keeps the UID, flags and modseq of every message in its selected mailbox. As
Python lists that costs about 60 octets a message (an int object per UID and modseq and a
pointer to each); here each is a slot in a compact array, about 9 octets a message: the
UID in 4 octets (``array('I')``: IMAP UIDs are 32-bit), the modseq in 4 (widened to 8
octets the first time one does not fit), and the flags as a 1-octet index into the map's
table of distinct flag sets (a mailbox has a handful; widened past 255). A UID is found
by binary search in the UID array. Only ``SelectedMailbox`` adds and removes messages
(``ClientMap.load``/``append``/``delete_at``), so the columns never drift from the UID
list; handlers read them like mappings.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import compress
from typing import TypeVar, overload

V = TypeVar("V")
D = TypeVar("D")

Flags = frozenset[str]

# Each array starts at the narrowest type and moves to the next when a value overflows it.
_WIDER = {"B": "H", "H": "I", "I": "Q"}


def _appended(values: array[int], value: int) -> array[int]:
    """``values`` with ``value`` appended: the same array, or a wider copy."""
    while True:
        try:
            values.append(value)
            return values
        except OverflowError:
            values = array(_WIDER[values.typecode], values)


def _filled(typecode: str, values: list[int]) -> array[int]:
    """An array of ``values`` of the narrowest type from ``typecode`` up that holds them."""
    while True:
        try:
            return array(typecode, values)
        except OverflowError:
            typecode = _WIDER[typecode]


class Column(Mapping[int, V]):
    """UID → value for the UIDs of the map; setting a UID outside it is a KeyError."""

    __slots__ = ("_map",)

    def __init__(self, cmap: ClientMap) -> None:
        self._map = cmap

    def _at(self, uid: object) -> int:
        return self._map.index(uid) if isinstance(uid, int) else -1

    # The two hooks of a column: how it reads and writes its array at position ``i``.
    # ``_FlagColumn`` and ``_ModseqColumn`` below are the only columns, and both define them.
    def _value(self, i: int) -> V:
        raise NotImplementedError("a Column subclass reads its own array")

    def _store(self, i: int, value: V) -> None:
        raise NotImplementedError("a Column subclass writes its own array")

    def __contains__(self, uid: object) -> bool:
        return self._at(uid) >= 0

    def __getitem__(self, uid: int) -> V:
        i = self._at(uid)
        if i < 0:
            raise KeyError(uid)
        return self._value(i)

    @overload
    def get(self, uid: int, /) -> V | None: ...
    @overload
    def get(self, uid: int, default: V | D, /) -> V | D: ...
    def get(self, uid: int, default: object = None) -> object:
        i = self._at(uid)
        return self._value(i) if i >= 0 else default

    def __setitem__(self, uid: int, value: V) -> None:
        i = self._at(uid)
        if i < 0:
            raise KeyError(uid)
        self._store(i, value)

    def __iter__(self) -> Iterator[int]:
        return iter(self._map.uids)

    def __len__(self) -> int:
        return len(self._map.uids)


class _FlagColumn(Column[Flags]):
    __slots__ = ()

    def _value(self, i: int) -> Flags:
        cmap = self._map
        return cmap._flag_sets[cmap._flag_of[i]]

    def _store(self, i: int, value: Flags) -> None:
        cmap = self._map
        fid = cmap._flag_id(value)  # first: it may widen ``_flag_of``
        cmap._flag_of[i] = fid


class _ModseqColumn(Column[int]):
    __slots__ = ()

    def _value(self, i: int) -> int:
        return self._map._modseqs[i]

    def _store(self, i: int, value: int) -> None:
        cmap = self._map
        try:
            cmap._modseqs[i] = value
        except OverflowError:
            cmap._modseqs = array(_WIDER[cmap._modseqs.typecode], cmap._modseqs)
            self._store(i, value)


class ClientMap:
    """The UID list and its flag and modseq columns, changed only together."""

    __slots__ = ("_flag_ids", "_flag_of", "_flag_sets", "_hint", "_modseqs", "flags",
                 "modseqs", "uids")

    def __init__(self) -> None:
        self.uids: array[int] = array("I")  # never replaced: views hold on to it
        self._modseqs: array[int] = array("I")
        self._flag_sets: list[Flags] = []  # the table: index → one distinct flag set
        self._flag_ids: dict[Flags, int] = {}
        self._flag_of: array[int] = array("B")  # per message, its index in the table
        self.flags: Column[Flags] = _FlagColumn(self)
        self.modseqs: Column[int] = _ModseqColumn(self)
        self._hint = 0  # where the last UID looked up was (only a guess, always checked)

    def index(self, uid: int) -> int:
        """Where ``uid`` is in the UID array, or -1. A command asks about one message
        several times (live? flags? number?) and about messages in UID order, so the
        last place and the next are tried first: a binary search in an array makes an
        int object per probe, several times the cost of one in a list."""
        uids = self.uids
        i = self._hint
        try:
            if uids[i] == uid:
                return i
            if uids[i + 1] == uid:
                self._hint = i + 1
                return i + 1
        except IndexError:
            pass
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            self._hint = i
            return i
        return -1

    def _flag_id(self, flags: Flags) -> int:
        fid = self._flag_ids.get(flags)
        if fid is None:
            fid = self._flag_ids[flags] = len(self._flag_sets)
            self._flag_sets.append(flags)
            if fid >= 1 << (8 * self._flag_of.itemsize):
                self._flag_of = array(_WIDER[self._flag_of.typecode], self._flag_of)
        return fid

    def load(self, uids: list[int], flags: list[Flags], modseqs: list[int]) -> None:
        """Fill an empty map with messages in ascending UID order (as a snapshot lists
        them), in bulk: a SELECT of 100,000 messages makes no call per message."""
        assert not self.uids
        self.uids.extend(uids)
        self._modseqs = _filled("I", modseqs)
        for f in dict.fromkeys(flags):
            self._flag_id(f)
        self._flag_of = _filled("B", list(map(self._flag_ids.__getitem__, flags)))

    def load_columns(self, uids: array[int], modseqs: array[int], flag_sets: list[Flags],
                     flag_of: array[int]) -> None:
        """Fill an empty map from columns in this map's own shape (a copy of the store's:
        ``store/mailbox_rows.py``), which it takes over: no step per message at all."""
        assert not self.uids and not self._flag_sets
        self.uids.extend(uids)
        self._modseqs = modseqs
        self._flag_sets = flag_sets
        self._flag_ids = {f: i for i, f in enumerate(flag_sets)}
        self._flag_of = flag_of

    def append(self, uid: int, flags: Flags, modseq: int) -> None:
        """A message above every UID in the map."""
        assert not self.uids or uid > self.uids[-1]
        self.uids.append(uid)
        self._modseqs = _appended(self._modseqs, modseq)
        fid = self._flag_id(flags)  # first: it may widen ``_flag_of``
        self._flag_of.append(fid)

    def flag_sets(self) -> Iterable[Flags]:
        """Every distinct flag set the map has held (a superset of those it holds now)."""
        return self._flag_sets

    def entries(self) -> Iterator[tuple[int, int, Flags, int]]:
        """(UID, message number, flags, modseq) in UID order."""
        return zip(self.uids, range(1, len(self.uids) + 1),
                   map(self._flag_sets.__getitem__, self._flag_of), self._modseqs,
                   strict=True)

    def first_without(self, flag: str) -> int | None:
        """The message number of the first message without ``flag``, if any."""
        first: int | None = None
        for fid, flags in enumerate(self._flag_sets):
            if flag in flags:
                continue
            try:  # a scan in C, per distinct flag set, not a Python step per message
                i = self._flag_of.index(fid)
            except ValueError:
                continue
            first = i if first is None else min(first, i)
        return None if first is None else first + 1

    def uids_where(self, wanted: Callable[[Flags], bool]) -> list[int]:
        """UIDs, ascending, of the messages whose flags are ``wanted``: asked once per
        distinct flag set, then one pass in C over the index array (``UID SEARCH UNSEEN``
        of 100,000 messages makes no Python step per message)."""
        table = bytes(1 if wanted(flags) else 0 for flags in self._flag_sets)
        return list(compress(self.uids, map(table.__getitem__, self._flag_of)))

    def delete_at(self, index: int) -> None:
        del self.uids[index]
        del self._flag_of[index]
        del self._modseqs[index]
