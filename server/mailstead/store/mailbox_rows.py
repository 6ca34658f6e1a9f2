"""A process's copy of its mailboxes' rows, so that SELECT copies arrays instead of reading
every message of the mailbox.

``MailboxRows`` holds, for one mailbox, what a selected view starts from: the UID, modseq
and flags of every message, in compact arrays (as ``imap/client_map.py`` keeps them: 4
octets a UID, 4 or 8 a modseq, 1 an index into a table of distinct flag sets), and the
mailbox's ``uidvalidity``, ``uidnext`` and ``highestmodseq``. It is always *exact* at its
``highestmodseq``: it equals what the store held when that modseq was committed. Two
things move it on, both keeping that true:

- ``apply``: a commit of this process whose modseq is exactly the next one (nothing can
  lie between). Anything else (a skipped modseq: another process committed in between)
  is ignored, and the copy stays exact where it was, behind.
- ``merge``: a *catch-up* read in one store transaction: every row whose modseq is above
  some base at or below the copy's, and every UID expunged above it. Applied to a copy
  exact at any modseq from that base up, it gives the store as of the read.

``RowCache`` keeps one per mailbox, least recently used first out, with a bound on the
rows it holds in all. It is a cache: the store checks the mailbox's ``highestmodseq`` at
each SELECT (``store/sqlite/view_reads.py``) and catches up or reads afresh when behind.
Everything here runs on the event loop, except building a copy from a full listing (a
new object, on a reader thread).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from .api import Appended, ChangeBatch, Expunged, FlagsChanged, Mailbox, MailboxGone
from .view_api import ViewSnapshot

Flags = frozenset[str]

# Each array starts at the narrowest type and moves to the next when a value overflows it.
_WIDER = {"B": "H", "H": "I", "I": "Q"}
# Rows one process keeps copies of, in all mailboxes (about 9 octets each: 9 MB).
CACHED_ROWS = 1_000_000


def filled(typecode: str, values: Iterable[int]) -> array[int]:
    """An array of ``values`` of the narrowest type from ``typecode`` up that holds them."""
    values = values if isinstance(values, (list, tuple)) else list(values)
    while True:
        try:
            return array(typecode, values)
        except OverflowError:
            typecode = _WIDER[typecode]


@dataclass(frozen=True, slots=True)
class RowsSnapshot:
    """What SELECT and EXAMINE show (``MailStore.open_rows``): the mailbox row, copies of
    its columns in UID order, and the lowest UID that is \\Recent for this view (as in
    ``ViewSnapshot``). ``flag_of[i]`` indexes ``flag_sets``; ``used_flag_sets`` are the
    sets some message has (the table may hold sets no message has any more)."""

    mailbox: Mailbox
    uids: array[int]
    modseqs: array[int]
    flag_sets: list[Flags]
    flag_of: array[int]
    used_flag_sets: list[Flags]
    first_recent_uid: int


@dataclass(frozen=True, slots=True)
class RowsDelta:
    """A catch-up read: the rows changed above ``base`` and the UIDs expunged above it, as
    of the mailbox row ``mailbox`` (read in the same transaction)."""

    base: int
    mailbox: Mailbox
    changed: Sequence[tuple[int, int, Flags]]  # (uid, modseq, flags)
    expunged: Sequence[int]


class MailboxRows:
    """One mailbox's rows, exact at ``highestmodseq`` (see the module docstring)."""

    __slots__ = ("_counts", "_flag_ids", "flag_of", "flag_sets", "highestmodseq", "modseqs",
                 "uidnext", "uids", "uidvalidity")

    def __init__(self, mailbox: Mailbox, uids: Sequence[int], modseqs: Sequence[int],
                 keys: Sequence[Hashable], to_flags: Callable[[Hashable], Flags]) -> None:
        """From a full listing in UID order (as of ``mailbox``, read in one transaction):
        its columns, each message's flags as a key (the stored text) and how a key turns
        into flags, asked once per distinct key."""
        self.uidvalidity = mailbox.uidvalidity
        self.uidnext = mailbox.uidnext
        self.highestmodseq = mailbox.highestmodseq
        self.uids: array[int] = array("I", uids)
        self.modseqs: array[int] = filled("I", modseqs)
        # Per distinct key: its index, and how many messages have it (Counter and the map
        # below run in C: no Python step per message).
        counts = Counter(keys)
        index: dict[Hashable, int] = {}
        self.flag_sets: list[Flags] = []
        self._flag_ids: dict[Flags, int] = {}
        self._counts: list[int] = []
        self.flag_of: array[int] = array("B")  # _flag_id widens it if the table grows
        for key, n in counts.items():
            fid = self._flag_id(to_flags(key))
            self._counts[fid] += n
            index[key] = fid  # two texts of one set ("a b", "b a") share its index
        self.flag_of = filled(self.flag_of.typecode, list(map(index.__getitem__, keys)))

    def __len__(self) -> int:
        return len(self.uids)

    # --- moving on -----------------------------------------------------------------------
    def apply(self, batches: Sequence[ChangeBatch]) -> bool:
        """This process's commit(s) on the mailbox, in commit order: applied when each is
        the next modseq, else ignored from there on. False: the copy is no use any more
        (the mailbox is gone)."""
        for batch in batches:
            if not batch.events:
                continue
            modseq = batch.events[0].modseq
            if any(isinstance(ev, MailboxGone) for ev in batch.events):
                return False
            if modseq <= self.highestmodseq:
                continue  # a catch-up read brought it already
            if modseq != self.highestmodseq + 1 or any(
                    ev.modseq != modseq for ev in batch.events):
                return True  # behind from here: the next SELECT catches up from the store
            for ev in batch.events:
                if isinstance(ev, Appended):
                    self._put(ev.uid, ev.modseq, ev.flags)
                    self.uidnext = max(self.uidnext, ev.uid + 1)
                elif isinstance(ev, FlagsChanged):
                    self._put(ev.uid, ev.modseq, ev.flags)
                elif isinstance(ev, Expunged):
                    self._remove(ev.uid)
            self.highestmodseq = modseq
        return True

    def merge(self, delta: RowsDelta) -> None:
        """A catch-up read taken from ``delta.base`` (at or below ``highestmodseq``); a
        copy already at or past what it read is left as it is."""
        assert delta.base <= self.highestmodseq
        mailbox = delta.mailbox
        if mailbox.highestmodseq <= self.highestmodseq:
            return
        for uid in delta.expunged:
            self._remove(uid)
        for uid, modseq, flags in delta.changed:
            self._put(uid, modseq, flags)
        self.uidnext = mailbox.uidnext
        self.highestmodseq = mailbox.highestmodseq

    def _put(self, uid: int, modseq: int, flags: Flags) -> None:
        """Set a message's modseq and flags, adding it when it is not here."""
        uids = self.uids
        fid = self._flag_id(flags)
        if not uids or uid > uids[-1]:
            uids.append(uid)
            self._set_modseq(len(uids) - 1, modseq, insert=True)
            self.flag_of.append(fid)
        else:
            i = bisect_left(uids, uid)
            if uids[i] == uid:
                self._counts[self.flag_of[i]] -= 1
                self._set_modseq(i, modseq)
                self.flag_of[i] = fid
            else:  # below the top: a catch-up read in a new message, in UID order
                uids.insert(i, uid)
                self._set_modseq(i, modseq, insert=True)
                self.flag_of.insert(i, fid)
        self._counts[fid] += 1

    def _remove(self, uid: int) -> None:
        uids = self.uids
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            self._counts[self.flag_of[i]] -= 1
            del uids[i]
            del self.modseqs[i]
            del self.flag_of[i]

    def _set_modseq(self, i: int, modseq: int, *, insert: bool = False) -> None:
        while True:
            try:
                if insert:
                    self.modseqs.insert(i, modseq)
                else:
                    self.modseqs[i] = modseq
                return
            except OverflowError:
                self.modseqs = array(_WIDER[self.modseqs.typecode], self.modseqs)

    def _flag_id(self, flags: Flags) -> int:
        fid = self._flag_ids.get(flags)
        if fid is None:
            fid = self._flag_ids[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
            self._counts.append(0)
            if fid >= 1 << (8 * self.flag_of.itemsize):
                self.flag_of = array(_WIDER[self.flag_of.typecode], self.flag_of)
        return fid

    # --- reading -------------------------------------------------------------------------
    def snapshot(self, mailbox: Mailbox, first_recent_uid: int) -> RowsSnapshot:
        """Copies of the columns (a memcpy each), with ``mailbox``'s names and this copy's
        counters."""
        row = Mailbox(mailbox.id, mailbox.user_id, mailbox.name, self.uidvalidity,
                      self.uidnext, self.highestmodseq, mailbox.special_use)
        used = [f for f, n in zip(self.flag_sets, self._counts, strict=True) if n]
        return RowsSnapshot(row, array(self.uids.typecode, self.uids),
                            array(self.modseqs.typecode, self.modseqs), list(self.flag_sets),
                            array(self.flag_of.typecode, self.flag_of), used,
                            first_recent_uid)

    def count_without(self, flag: str) -> int:
        """Messages whose flags lack ``flag`` (STATUS UNSEEN): per distinct flag set."""
        return sum(n for f, n in zip(self.flag_sets, self._counts, strict=True)
                   if flag not in f)

    def count_from(self, uid: int) -> int:
        """Messages with a UID at or above ``uid``."""
        return len(self.uids) - bisect_left(self.uids, uid)


def rows_of_view(snap: ViewSnapshot) -> RowsSnapshot:
    """The columns of a full snapshot (for a backend that keeps no copies)."""
    messages = snap.messages
    rows = MailboxRows(snap.mailbox, [m.uid for m in messages], [m.modseq for m in messages],
                       [m.flags for m in messages], _same)
    return rows.snapshot(snap.mailbox, snap.first_recent_uid)


def _same(flags: Hashable) -> Flags:
    assert isinstance(flags, frozenset)
    return flags


class RowCache:
    """The copies of one process, by mailbox id, least recently used first out, holding
    at most ``max_rows`` rows in all (a copy bigger than that is not kept)."""

    def __init__(self, max_rows: int = CACHED_ROWS) -> None:
        self.max_rows = max_rows
        self._copies: OrderedDict[int, MailboxRows] = OrderedDict()
        self.rows = 0  # in all copies

    def get(self, mailbox_id: int) -> MailboxRows | None:
        rows = self._copies.get(mailbox_id)
        if rows is not None:
            self._copies.move_to_end(mailbox_id)
        return rows

    def __contains__(self, mailbox_id: object) -> bool:
        return mailbox_id in self._copies

    def keep(self, mailbox_id: int, rows: MailboxRows) -> None:
        """Keep a new copy for the mailbox, unless the one it has is further on."""
        old = self._copies.get(mailbox_id)
        if old is rows:
            return
        if old is not None:
            if old.highestmodseq > rows.highestmodseq and old.uidvalidity == rows.uidvalidity:
                return
            self.rows -= len(old)
        self._copies[mailbox_id] = rows
        self.rows += len(rows)
        self._copies.move_to_end(mailbox_id)
        self._evict()

    def catch_up(self, mailbox_id: int, rows: MailboxRows, delta: RowsDelta) -> None:
        """Merge a catch-up read into ``rows`` (kept, or kept again if it was dropped)."""
        if self._copies.get(mailbox_id) is rows:
            before = len(rows)
            rows.merge(delta)
            self.rows += len(rows) - before
            self._evict()
        else:
            rows.merge(delta)
            self.keep(mailbox_id, rows)

    def drop(self, mailbox_id: int) -> None:
        rows = self._copies.pop(mailbox_id, None)
        if rows is not None:
            self.rows -= len(rows)

    def committed(self, batches: Iterable[ChangeBatch]) -> None:
        """This process's commit: each copy it touched moves on (or falls behind)."""
        by_mailbox: dict[int, list[ChangeBatch]] = {}
        for batch in batches:
            if batch.mailbox_id in self._copies:
                by_mailbox.setdefault(batch.mailbox_id, []).append(batch)
        for mailbox_id, mine in by_mailbox.items():
            # Stable, by modseq: a MOVE within one mailbox hands over its expunge (m + 1)
            # before its append (m).
            mine.sort(key=lambda b: b.events[0].modseq if b.events else 0)
            rows = self._copies[mailbox_id]
            before = len(rows)
            if rows.apply(mine):
                self.rows += len(rows) - before
            else:
                del self._copies[mailbox_id]
                self.rows -= before
        if by_mailbox:
            self._evict()  # appends grow copies

    def _evict(self) -> None:
        while self.rows > self.max_rows and self._copies:
            _, rows = self._copies.popitem(last=False)
            self.rows -= len(rows)
