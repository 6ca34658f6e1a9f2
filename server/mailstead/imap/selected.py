"""SelectedMailbox: one session's view of its selected mailbox, and the only writer of what
the session tells its client about it (EXISTS, EXPUNGE, RECENT, FETCH of flags, FLAGS).

The rule it keeps (RFC 3501 §2.3.1.2, §5.2, §5.5, §7.3.1, §7.4.1): every sequence number
it mentions is at most the count the client has been told; EXISTS comes first for anything
new and never shrinks the count, only EXPUNGE does; a message appended and expunged
before the client heard of it is never mentioned; flags of a message go out only once it
is announced, and a keyword only after a ``* FLAGS`` that lists it; no EXPUNGE where the
command forbids it; after an update the client's count is the view's. ``StreamChecker``
checks each line against that rule as it is emitted.

Three layers, each fed by the one below:

- the *client map* (``uids``, ``flags``, ``modseqs``, ``recent``): what the client has
  been told. Handlers read it; only ``drain`` (and our own STORE) changes it.
- the *delta* (``_new``, ``_changed``, ``_expunged``): what the store committed beyond
  the client map, complete up to modseq ``_applied``.
- the *inbox*: change events as the hub delivered them, not applied yet.

``sync()`` (async) applies the inbox to the delta strictly in modseq order. Every commit
bumps the mailbox's modseq once, so a modseq that skips one, or an event that makes no
sense (an unknown UID, a UID that is not new), means something was missed or reordered
(another process's commit arrives later than ours): the view then reads the mailbox from
the store and rebuilds the delta from that, instead of guessing. ``sync()`` also claims
\\Recent of new messages in the store before they are announced. ``drain()`` (sync)
turns the delta into lines and moves the client map forward.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..store.api import (
    SYSTEM_FLAGS,
    Appended,
    ChangeBatch,
    ChangeEvent,
    Expunged,
    FlagsChanged,
    Mailbox,
    MailboxGone,
    MailStore,
    NotFound,
    StoreError,
    ViewSnapshot,
)
from . import response
from .stream_check import StreamChecker

log = logging.getLogger("mailstead.imap")

Flags = frozenset[str]

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
    """The client map, delta and inbox of one selected mailbox (see the module docstring)."""

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
        # --- the client map
        self.uids: list[int] = []
        self.flags: dict[int, Flags] = {}
        self.modseqs: dict[int, int] = {}
        self.recent: set[int] = set()
        self.keywords: set[str] = set()  # announced in FLAGS
        self._top_uid = 0  # highest UID ever in the client map
        self._reported_recent = 0
        # --- the delta
        self._applied = mailbox.highestmodseq
        self._new: dict[int, tuple[Flags, int]] = {}  # appended, not announced
        self._changed: dict[int, tuple[Flags, int]] = {}  # flags of announced messages
        self._expunged: set[int] = set()  # announced messages gone from the store
        self._new_recent: set[int] = set()  # of _new, those whose \Recent we claimed
        self._new_touched: set[int] = set()  # of _new, flags changed after the append
        self._stale: set[int] = set()  # announced; our .SILENT STORE hid others' change
        self._held: set[int] = set()  # targets of the running .SILENT STORE
        self._held_told: Callable[[Flags], Flags] = lambda flags: flags
        self._known_top = 0  # highest UID in the client map or _new
        self._claimed_upto = 0  # \Recent settled (ours or not) for every UID up to here
        self._resync = False
        # --- the inbox
        self._inbox: list[ChangeEvent] = []
        self.checker = StreamChecker(label=f"mailbox {mailbox.id}")

    # --- opening -----------------------------------------------------------------------
    def load(self, snap: ViewSnapshot) -> None:
        """Fill the client map from the snapshot SELECT/EXAMINE read (after subscribing:
        events already in the snapshot are dropped by modseq when they are applied)."""
        self.mailbox = snap.mailbox
        for info in snap.messages:
            self.uids.append(info.uid)
            self.flags[info.uid] = info.flags
            self.modseqs[info.uid] = info.modseq
            self.keywords |= keywords_of(info.flags)
        self.recent = set(snap.recent_uids)
        self._reported_recent = len(self.recent)
        self._top_uid = self._known_top = self.uids[-1] if self.uids else 0
        self._applied = snap.mailbox.highestmodseq
        # A SELECT claimed everything below uidnext; newer messages arrive as events.
        self._claimed_upto = snap.mailbox.uidnext - 1

    def opening_lines(self) -> list[bytes]:
        """The untagged part of the SELECT/EXAMINE answer (RFC 3501 §6.3.1)."""
        mb = self.mailbox
        exists = b"* %d EXISTS" % len(self.uids)
        lines = [*self._flags_lines(), exists, b"* %d RECENT" % len(self.recent)]
        self.checker.opened(exists, self.uids, self.keywords)
        self.checker.recent(lines[-1])
        first_unseen = next((i for i, u in enumerate(self.uids, 1)
                             if "\\Seen" not in self.flags[u]), None)
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
        lines = [b"* FLAGS " + _flag_list(flags)]
        if self.readonly:
            lines.append(b"* OK [PERMANENTFLAGS ()] No permanent flags permitted")
        else:
            lines.append(b"* OK [PERMANENTFLAGS " + _flag_list([*flags, "\\*"])
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
                self._inbox.append(ev)
        if self.notify is not None:
            self.notify()

    # --- inbox -> delta ------------------------------------------------------------------
    async def sync(self) -> None:
        """Bring the delta up to date (see the module docstring). Call with ``lock`` held.

        Returns only after a pass that needed no store call, so everything the hub handed
        over before the caller's next write is in the delta: a NOOP's tagged OK comes after
        every change committed before it. Store failures are logged, never raised: the
        delta then stays complete up to ``_applied`` and the rest waits for the next sync.
        """
        for _ in range(_SYNC_ROUNDS):
            self._absorb()
            if self.gone:
                return
            if self._resync:
                if not await self._resync_from_store():
                    return
            elif not self.readonly and self._unclaimed():
                await self._claim_new()
            else:
                return
        # Still busy after that many store calls: take what arrived meanwhile without
        # claiming it (its \Recent then goes to nobody, never to two sessions).
        self._absorb()

    def _absorb(self) -> None:
        if not self._inbox or self._resync:
            return
        # Stable sort: a MOVE within the mailbox publishes its expunge (modseq m+1) before
        # its append (m); events of one commit share a modseq and keep their order.
        events = sorted(self._inbox, key=lambda e: e.modseq)
        self._inbox = []
        group: int | None = None
        for i, ev in enumerate(events):
            if ev.modseq != group:
                if ev.modseq <= self._applied:
                    continue  # in our snapshot already, or our own change, applied
                if ev.modseq != self._applied + 1:
                    log.debug("view of mailbox %d: modseq %d after %d, reading the store",
                              self.mailbox.id, ev.modseq, self._applied)
                    self._resync = True
                    self._inbox = events[i:]
                    return
                group = ev.modseq
            if self._apply(ev):
                self._applied = ev.modseq
            else:
                log.debug("view of mailbox %d: unexpected %r, reading the store",
                          self.mailbox.id, ev)
                self._resync = True
                self._inbox = events[i + 1:]
                return

    def _apply(self, ev: ChangeEvent) -> bool:
        """One event into the delta; False when it does not fit what we know."""
        uid = getattr(ev, "uid", 0)
        if isinstance(ev, Appended):
            if uid <= self._known_top:
                return False
            self._new[uid] = (ev.flags, ev.modseq)
            self._known_top = uid
            return True
        if isinstance(ev, FlagsChanged):
            if uid in self._new:
                # Sent as FETCH right after its EXISTS, as a change seen live would be.
                self._new[uid] = (ev.flags, ev.modseq)
                self._new_touched.add(uid)
                return True
            if uid in self.flags and uid not in self._expunged:
                self._changed[uid] = (ev.flags, ev.modseq)
                return True
            return False
        if isinstance(ev, Expunged):
            if uid in self._new:
                # Appended and expunged before the client heard of it: never mentioned.
                del self._new[uid]
                self._new_recent.discard(uid)
                self._new_touched.discard(uid)
                return True
            if uid in self.flags and uid not in self._expunged:
                self._expunged.add(uid)
                self._changed.pop(uid, None)
                return True
        return False

    async def _resync_from_store(self) -> bool:
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
        mb = snap.mailbox
        if mb.uidvalidity != self.mailbox.uidvalidity:
            self.gone = True  # not the mailbox we selected any more
            return False
        live = {info.uid: info for info in snap.messages}
        self._expunged = {u for u in self.uids if u not in live}
        self._changed = {u: (live[u].flags, live[u].modseq) for u in self.uids
                         if u in live and live[u].modseq > self.modseqs.get(u, 0)}
        self._new = {u: (i.flags, i.modseq) for u, i in live.items() if u > self._top_uid}
        self._new_recent &= self._new.keys()
        self._new_touched.clear()
        self._known_top = max(self._top_uid, max(self._new, default=0))
        self._applied = mb.highestmodseq
        self._inbox = [ev for ev in self._inbox if ev.modseq > self._applied]
        self._resync = False
        self.mailbox = mb
        return True

    def _unclaimed(self) -> bool:
        return any(u > self._claimed_upto for u in self._new)

    async def _claim_new(self) -> None:
        """Claim \\Recent of new messages in the store before announcing them, so that
        exactly one session (of any process) shows each as recent."""
        todo = sorted(u for u in self._new if u > self._claimed_upto)
        top = todo[-1]
        try:
            was = await self.store.claim_recent(self.mailbox.id, below=top + 1)
        except NotFound:
            self.gone = True
            return
        except StoreError as exc:  # then not ours: \Recent in at most one session
            log.warning("view of mailbox %d: cannot claim \\Recent: %s", self.mailbox.id, exc)
            was = top + 1
        self._claimed_upto = max(self._claimed_upto, top)
        self._new_recent.update(u for u in todo if u >= was and u in self._new)

    # --- delta -> client -----------------------------------------------------------------
    def drain(self, *, allow_expunge: bool) -> Untagged:
        """Announce the delta: EXPUNGEs (when ``allow_expunge``), FLAGS for new keywords,
        EXISTS and RECENT for new messages, then FETCH for changed flags."""
        out = Untagged(gone=self.gone)
        lines = out.lines
        if allow_expunge and self._expunged:
            for uid in sorted(self._expunged, reverse=True):
                # Highest first: each number is valid as sent, clients renumber after each.
                n = self.msn(uid)
                assert n is not None
                del self.uids[n - 1]
                del self.flags[uid]
                self.modseqs.pop(uid, None)
                self.recent.discard(uid)
                line = b"* %d EXPUNGE" % n
                self.checker.expunge(line, uid, allowed=True)
                lines.append(line)
            self._expunged.clear()
        changed = {u: (f, m) for u, (f, m) in self._changed.items()
                   if u in self.flags and u not in self._expunged and m > self.modseqs[u]}
        self._changed.clear()
        new = sorted(self._new.items())
        changed.update((u, self._new[u]) for u in self._new_touched)
        self._new_touched.clear()
        changed.update((u, (self.flags[u], self.modseqs[u])) for u in self._stale
                       if u in self.flags and u not in self._expunged and u not in changed)
        self._stale = set()
        # The targets of a .SILENT STORE: a client applies its own change over whatever it
        # holds when the STORE completes, so flags it would turn into something else (a
        # later change by another session) wait for the next update.
        told, held = self._held_told, self._held
        self._held = set()
        for uid in [u for u in held & changed.keys() if told(changed[u][0]) != changed[u][0]]:
            flags, modseq = changed.pop(uid)
            self.flags[uid] = flags
            self.modseqs[uid] = modseq
            self._stale.add(uid)
        lines += self._announce([f for _, (f, _) in new] + [f for f, _ in changed.values()])
        if new:
            added = [u for u, _ in new]
            for uid, (flags, modseq) in new:
                self.uids.append(uid)
                self.flags[uid] = flags
                self.modseqs[uid] = modseq
                if uid in self._new_recent:
                    self.recent.add(uid)
            self._top_uid = added[-1]
            self._new.clear()
            self._new_recent.clear()
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
        flags = sorted(self.flags.get(uid, frozenset()))
        if uid in self.recent:
            flags.append("\\Recent")
        return _flag_list(flags)

    # --- sequence numbers ----------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def is_live(self, uid: int) -> bool:
        """In the client map and not expunged behind its back."""
        return uid in self.flags and uid not in self._expunged


def _flag_list(flags: Iterable[str]) -> bytes:
    return response.plist(f.encode("utf-8") for f in flags)
