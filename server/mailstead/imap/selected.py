"""SelectedMailbox: one session's view of its selected mailbox, and the only writer of what
the session tells its client about it (EXISTS, EXPUNGE, RECENT, FETCH of flags, FLAGS).

The rule it keeps (RFC 3501 §2.3.1.2, §5.2, §5.5, §7.3.1, §7.4.1): every sequence number
it mentions is at most the count the client has been told; EXISTS comes first for anything
new and never shrinks the count, only EXPUNGE does; a message appended and expunged
before the client heard of it is never mentioned; flags of a message go out only once it
is announced, and a keyword only after a ``* FLAGS`` that lists it; no EXPUNGE where the
command forbids it; after an update the client's count is the view's. ``StreamChecker``
checks each line against that rule as it is emitted.

Three layers, each fed by the one below: the *client map* (``uids``, ``flags``,
``modseqs``, ``recent``: what the client has been told; handlers read it, only ``drain``
and our own STORE change it), the *delta* (``view_delta.Delta``: what the store committed
beyond it, applied from change events in modseq order) and the delta's inbox of events
as the hub delivered them. ``sync()`` (async) brings the delta up to date, reading the
store on a gap and claiming \\Recent of new messages in the store before they are
announced; ``drain()`` (sync) turns the delta into lines and moves the client map on.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..store.api import (
    SYSTEM_FLAGS,
    ChangeBatch,
    FlagsChanged,
    Mailbox,
    MailboxGone,
    MailStore,
    NotFound,
    StoreError,
)
from ..store.mailbox_rows import RowsSnapshot, rows_of_view
from ..store.view_api import ViewSnapshot
from . import recent_claims, response
from .client_map import ClientMap, Column
from .stream_check import StreamChecker
from .view_delta import Delta, Flags

log = logging.getLogger("mailstead.imap")

# Store calls one sync may make before it stops waiting for the mailbox to be quiet.
_SYNC_ROUNDS = 8


@dataclass(slots=True)
class Untagged:
    """What ``SelectedMailbox.drain`` asks the session to send, in order."""

    lines: list[bytes] = field(default_factory=list)
    gone: bool = False


def keywords_of(flags: Iterable[str]) -> set[str]:
    return {f for f in flags if not f.startswith("\\")}


class SelectedMailbox:
    """The client map and delta of one selected mailbox (see the module docstring)."""

    def __init__(
        self,
        store: MailStore,
        mailbox: Mailbox,
        *,
        readonly: bool,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.readonly = readonly
        self.notify = notify  # called when changes arrive (the session may be idling)
        self.condstore = False
        self.gone = False
        # sync() and drain() of one view never interleave (the IDLE push and the command
        # path both take it), so a claim in flight is never overtaken by a drain.
        self.lock = asyncio.Lock()
        # --- the client map (the flag and modseq columns follow ``uids``: client_map.py)
        self._map = ClientMap()
        self.uids: array[int] = self._map.uids
        self.flags: Column[Flags] = self._map.flags
        self.modseqs: Column[int] = self._map.modseqs
        self.recent: set[int] = set()
        self.keywords: set[str] = set()  # announced in FLAGS
        self._top_uid = 0  # highest UID ever in the client map
        self._reported_recent = 0
        self._claims = recent_claims.ViewClaims(store, mailbox.id)
        self._stale: set[int] = set()  # announced; our .SILENT STORE hid others' change
        self._held: set[int] = set()  # targets of the running .SILENT STORE
        self._held_told: Callable[[Flags], Flags] = lambda flags: flags
        self.delta = Delta(mailbox.highestmodseq, 0)
        self.checker = StreamChecker(label=f"mailbox {mailbox.id}")

    # --- opening -----------------------------------------------------------------------
    def load(self, snap: ViewSnapshot | RowsSnapshot) -> None:
        """Fill the client map from the snapshot SELECT/EXAMINE read (after subscribing:
        events already in the snapshot are dropped by modseq when they are applied)."""
        if isinstance(snap, ViewSnapshot):
            snap = rows_of_view(snap)
        self.mailbox = snap.mailbox
        # Columns copied from the store's copy of the rows: taken over, not rebuilt.
        self._map.load_columns(snap.uids, snap.modseqs, snap.flag_sets, snap.flag_of)
        for flags in snap.used_flag_sets:  # a handful of distinct sets, not one a message
            self.keywords |= keywords_of(flags)
        # The recent ones are the UIDs from the boundary up: a tail of the ascending list.
        self.recent = set(self.uids[bisect_left(self.uids, snap.first_recent_uid):])
        self._reported_recent = len(self.recent)
        self._top_uid = self.uids[-1] if self.uids else 0
        # Keep the inbox: changes that arrived while the snapshot was read are in it.
        self.delta.applied = snap.mailbox.highestmodseq
        self.delta.known_top = self._top_uid
        # A SELECT claimed everything below uidnext; newer messages arrive as events.
        self._claims.settled_upto = snap.mailbox.uidnext - 1

    def opening_lines(self) -> list[bytes]:
        """The untagged part of the SELECT/EXAMINE answer (RFC 3501 §6.3.1)."""
        mb = self.mailbox
        exists = b"* %d EXISTS" % len(self.uids)
        lines = [*self._flags_lines(), exists, b"* %d RECENT" % len(self.recent)]
        self.checker.opened(exists, self.uids, self.keywords)
        self.checker.recent(lines[-1])
        first_unseen = self._map.first_without("\\Seen")
        if first_unseen is not None:
            lines.append(b"* OK [UNSEEN %d] First unseen" % first_unseen)
        lines += [
            b"* OK [UIDVALIDITY %d] UIDs valid" % mb.uidvalidity,
            b"* OK [UIDNEXT %d] Predicted next UID" % mb.uidnext,
            b"* OK [HIGHESTMODSEQ %d] Highest" % mb.highestmodseq,
        ]
        return lines

    def _flags_lines(self) -> list[bytes]:
        flags = [*SYSTEM_FLAGS, *sorted(self.keywords)]
        lines = [b"* FLAGS " + response.flag_list(flags)]
        if self.readonly:
            lines.append(b"* OK [PERMANENTFLAGS ()] No permanent flags permitted")
        else:
            lines.append(b"* OK [PERMANENTFLAGS " + response.flag_list([*flags, "\\*"])
                         + b"] Flags permitted")
        self.checker.flags(self.keywords)
        return lines

    def _announce(self, flag_sets: Iterable[Flags]) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS again when keywords the client has not seen appear."""
        fresh: set[str] = set()
        for flags in flag_sets:
            fresh |= keywords_of(flags) - self.keywords
        if not fresh:
            return []
        self.keywords |= fresh
        return self._flags_lines()

    # --- hub subscriber ------------------------------------------------------------------
    def on_change(self, batch: ChangeBatch) -> None:
        for ev in batch.events:
            if isinstance(ev, MailboxGone):
                self.gone = True
            else:
                self.delta.inbox.append(ev)
        if self.notify is not None:
            self.notify()

    # --- inbox -> delta ------------------------------------------------------------------
    async def sync(self) -> None:
        """Bring the delta up to date. Call with ``lock`` held.

        Returns only after a pass that needed no store call, so everything the hub handed
        over before the caller's next write is in the delta: a NOOP's tagged OK comes after
        every change committed before it. Store failures are logged, never raised: the
        delta then stays complete up to its modseq and the rest waits for the next sync.
        """
        for _ in range(_SYNC_ROUNDS):
            if self.settled():
                return
            if self.delta.needs_read:
                if not await self._read_store():
                    return
            else:
                await self._claim_new()
        # Still busy after that many store calls: take what arrived meanwhile without
        # claiming it (its \Recent then goes to nobody, never to two sessions).
        self.delta.absorb(self.flags, self.mailbox.id)

    def settled(self) -> bool:
        """Apply what arrived; True when a drain may follow without a store call.

        New messages above what this view has settled need their \\Recent claimed first:
        by this view when no other view of this process has started that claim (it starts
        it here, and ``sync`` waits for it), else they are settled at once as not ours
        (``recent_claims``): one claim per process and message, not one per view.
        """
        delta = self.delta
        delta.absorb(self.flags, self.mailbox.id)
        if self.gone:
            return True
        if delta.needs_read:
            return False
        if self.readonly or not delta.new:
            return True
        return self._claims.settle(max(delta.new))

    async def _read_store(self) -> bool:
        """Rebuild the delta from a fresh read; False when that was not possible."""
        try:
            snap = await self.store.read_view(self.mailbox.id)
        except NotFound:
            self.gone = True
            return False
        except StoreError as exc:
            log.warning("view of mailbox %d: cannot read it to catch up: %s",
                        self.mailbox.id, exc)
            return False
        if snap.mailbox.uidvalidity != self.mailbox.uidvalidity:
            self.gone = True  # not the mailbox we selected any more
            return False
        self.delta.rebuild(snap, self.uids, self.modseqs, self._top_uid)
        self.mailbox = snap.mailbox
        return True

    async def _claim_new(self) -> None:
        """Wait for this view's \\Recent claim (``settled`` started it): the new messages
        it returned are this session's recent ones."""
        try:
            was, top = await self._claims.wait()
        except NotFound:
            self.gone = True
            return
        # What the store gave us, [was, top], of what is still to be announced.
        self.delta.recent.update(u for u in self.delta.new if was <= u <= top)

    # --- delta -> client -----------------------------------------------------------------
    def drain(self, *, allow_expunge: bool) -> Untagged:
        """Announce the delta: EXPUNGEs (when ``allow_expunge``), FLAGS for new keywords,
        EXISTS and RECENT for new messages, then FETCH for changed flags."""
        out = Untagged(gone=self.gone)
        lines = out.lines
        delta = self.delta
        if allow_expunge and delta.expunged:
            for uid in sorted(delta.expunged, reverse=True):
                # Highest first: each number is valid as sent, clients renumber after each.
                n = self.msn(uid)
                assert n is not None
                self._map.delete_at(n - 1)
                self.recent.discard(uid)
                line = b"* %d EXPUNGE" % n
                self.checker.expunge(line, uid, allowed=True)
                lines.append(line)
            delta.expunged.clear()
        changed = self._flag_news()
        new = sorted(delta.new.items())
        lines += self._announce([f for _, (f, _) in new] + [f for f, _ in changed.values()])
        if new:
            added = [u for u, _ in new]
            for uid, (flags, modseq) in new:
                self._map.append(uid, flags, modseq)
                if uid in delta.recent:
                    self.recent.add(uid)
            self._top_uid = added[-1]
            delta.new.clear()
            delta.recent.clear()
            line = b"* %d EXISTS" % len(self.uids)
            self.checker.exists(line, added)
            lines.append(line)
            if len(self.recent) != self._reported_recent:
                self._reported_recent = len(self.recent)
                line = b"* %d RECENT" % self._reported_recent
                self.checker.recent(line)
                lines.append(line)
        for uid, (flags, modseq) in sorted(changed.items()):
            self.flags[uid] = flags
            self.modseqs[uid] = modseq
            lines.append(self.flags_fetch_line(uid))
        self.checker.settled(self.uids)
        return out

    def _flag_news(self) -> dict[int, tuple[Flags, int]]:
        """The flags to report now, by UID (new messages are added to the map after)."""
        delta = self.delta
        changed = {u: (f, m) for u, (f, m) in delta.changed.items()
                   if u in self.flags and u not in delta.expunged and m > self.modseqs[u]}
        delta.changed.clear()
        changed.update((u, delta.new[u]) for u in delta.touched)
        delta.touched.clear()
        changed.update((u, (self.flags[u], self.modseqs[u])) for u in self._stale
                       if u in self.flags and u not in delta.expunged and u not in changed)
        self._stale = set()
        # The targets of a .SILENT STORE: a client applies its own change over whatever it
        # holds when the STORE completes, so flags it would turn into something else (a
        # later change by another session) wait for the next update.
        told, held = self._held_told, self._held
        self._held = set()
        for uid in [u for u in held & changed.keys() if told(changed[u][0]) != changed[u][0]]:
            flags, modseq = changed.pop(uid)
            if uid in self.flags:  # a new message gets its flags when it is announced
                self.flags[uid] = flags
                self.modseqs[uid] = modseq
            self._stale.add(uid)
        return changed

    def apply_own_changes(self, changes: Iterable[FlagsChanged],
                          told: Callable[[Flags], Flags] | None = None) -> list[bytes]:
        """Our own STORE (or FETCH's implicit \\Seen), known before its hub copy arrives
        (which is then skipped by modseq). Returns FLAGS lines to send first when it
        introduced keywords.

        ``told`` is for a command that does not show the new flags (STORE .SILENT): what
        the client now believes, from what it knew. When the store's flags differ, another
        session's change was folded in, and the next update reports them.
        """
        applied = []
        for ch in changes:
            old = self.flags.get(ch.uid)
            if old is not None and ch.modseq >= self.modseqs.get(ch.uid, 0):
                if told is not None and told(old) != ch.flags:
                    self._stale.add(ch.uid)
                self.flags[ch.uid] = ch.flags
                self.modseqs[ch.uid] = ch.modseq
                applied.append(ch.flags)
        return self._announce(applied)

    def hold_flags(self, uids: Iterable[int], told: Callable[[Flags], Flags]) -> None:
        """The running command is a .SILENT STORE doing ``told`` to ``uids`` (``drain``)."""
        self._held, self._held_told = set(uids), told

    # --- lines -------------------------------------------------------------------------
    def fetch_line(self, uid: int, items: Iterable[bytes]) -> bytes:
        """``* n FETCH (items)`` for a message in the client map, checked."""
        n = self.msn(uid)
        line = b"* %d FETCH (%s)" % (n or 0, b" ".join(items))
        self.checker.fetch(line, uid)
        return line

    def flags_fetch_line(self, uid: int) -> bytes:
        items = [b"FLAGS " + self.format_flags(uid)]
        if self.condstore:
            items.append(b"MODSEQ (%d)" % self.modseqs.get(uid, 0))
        return self.fetch_line(uid, items)

    def format_flags(self, uid: int) -> bytes:
        return response.message_flags(self.flags.get(uid, frozenset()), uid in self.recent)

    # --- sequence numbers ----------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = self._map.index(uid)
        return i + 1 if i >= 0 else None

    def live_entries(self) -> list[tuple[int, int, Flags, int]]:
        """(UID, message number, flags, modseq) of every message in the client map that
        was not expunged behind its back: one pass, no lookup per UID."""
        expunged = self.delta.expunged
        return [e for e in self._map.entries() if e[0] not in expunged]

    def live_uids_where(self, wanted: Callable[[Flags], bool]) -> list[int]:
        """UIDs, ascending, of the live messages whose flags are ``wanted`` (a search that
        only looks at flags: ``ClientMap.uids_where``)."""
        found = self._map.uids_where(wanted)
        expunged = self.delta.expunged
        return [u for u in found if u not in expunged] if expunged else found

    def is_live(self, uid: int) -> bool:
        """In the client map and not expunged behind its back."""
        return uid in self.flags and uid not in self.delta.expunged

