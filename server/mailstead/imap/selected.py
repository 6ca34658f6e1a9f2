"""SelectedMailbox: one session's view of its selected mailbox.

The view is the session's own message-sequence-number ↔ UID map plus the flags it has
told the client about. Committed changes arrive from the ``ChangeHub`` as batches and
wait in ``pending`` until the session may report them (RFC 3501 §5.5, §7.4.1): flag
changes and new messages with any response, EXPUNGE only where the command allows it.
Because every session applies the same batches in commit order, two sessions never
disagree about which UID a sequence number means once both have caught up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..store.api import (
    Appended,
    ChangeBatch,
    Expunged,
    FlagsChanged,
    Mailbox,
    MailboxGone,
    MessageInfo,
)
from . import response


@dataclass(slots=True)
class Untagged:
    """What ``SelectedMailbox.drain`` asks the session to send, in order."""

    lines: list[bytes] = field(default_factory=list)
    gone: bool = False


class RecentTracker:
    """Hands each new message's \\Recent to exactly one session (the first to see it)."""

    def __init__(self) -> None:
        self._claimed: dict[int, int] = {}

    def claim(self, mailbox_id: int, uid: int) -> bool:
        if uid > self._claimed.get(mailbox_id, 0):
            self._claimed[mailbox_id] = uid
            return True
        return False

    def note(self, mailbox_id: int, highest_uid: int) -> None:
        self._claimed[mailbox_id] = max(self._claimed.get(mailbox_id, 0), highest_uid)


class SelectedMailbox:
    """The MSN↔UID map, flag cache and pending updates of one selected mailbox."""

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        readonly: bool,
        recent: RecentTracker,
        notify: Callable[[], None] | None = None,
        on_recent: Callable[[], None] | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.readonly = readonly
        self._recent_tracker = recent
        self.notify = notify  # called when updates arrive (the session may be idling)
        self.on_recent = on_recent  # called when this session took \Recent of new mail
        self.uids: list[int] = []
        self.flags: dict[int, frozenset[str]] = {}
        self.modseqs: dict[int, int] = {}
        self.recent: set[int] = set()
        self.pending: list[Appended | FlagsChanged | Expunged] = []
        self.expunge_deferred: set[int] = set()  # expunged in the store, still in our view
        self.gone = False
        self.condstore = False
        self._reported_exists = 0
        self._reported_recent = 0
        self.highestmodseq = mailbox.highestmodseq

    # --- loading -------------------------------------------------------------------
    def load(self, infos: Iterable[MessageInfo], first_recent_uid: int | None) -> None:
        """Fill the view from a snapshot taken after subscribing to the hub."""
        for info in infos:
            self.uids.append(info.uid)
            self.flags[info.uid] = info.flags
            self.modseqs[info.uid] = info.modseq
            if first_recent_uid is not None and info.uid >= first_recent_uid:
                self.recent.add(info.uid)
        if self.uids:
            self._recent_tracker.note(self.mailbox.id, self.uids[-1])
        # Batches that arrived while the snapshot was read may already be in it.
        known = set(self.uids)
        kept = []
        for ev in self.pending:
            if isinstance(ev, Appended) and ev.uid in known:
                continue
            if isinstance(ev, FlagsChanged) and self.modseqs.get(ev.uid, 0) >= ev.modseq:
                continue
            if isinstance(ev, Expunged) and ev.uid not in known:
                continue
            kept.append(ev)
        self.pending = kept
        self._reported_exists = len(self.uids)
        self._reported_recent = len(self.recent)

    # --- hub subscriber --------------------------------------------------------------
    def on_change(self, batch: ChangeBatch) -> None:
        claimed = False
        for ev in batch.events:
            if isinstance(ev, MailboxGone):
                self.gone = True
                continue
            if (isinstance(ev, Appended) and not self.readonly
                    and self._recent_tracker.claim(self.mailbox.id, ev.uid)):
                self.recent.add(ev.uid)
                claimed = True
            self.pending.append(ev)
            self.highestmodseq = max(self.highestmodseq, ev.modseq)
        if claimed and self.on_recent is not None:
            self.on_recent()
        if self.notify is not None:
            self.notify()

    # --- sequence numbers ------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    # --- reporting -------------------------------------------------------------------
    def drain(self, *, allow_expunge: bool) -> Untagged:
        """Apply pending changes to the view and return the untagged responses.

        ``allow_expunge`` False keeps expunged messages in the view (their numbers stay
        valid) until a command that may announce EXPUNGE. A session's own flag changes
        are not echoed: the command recorded them in the view first, so the hub's copy
        is not newer.
        """
        out = Untagged(gone=self.gone)
        pending, self.pending = self.pending, []
        for ev in pending:
            if isinstance(ev, Appended):
                if not self.uids or ev.uid > self.uids[-1]:
                    self.uids.append(ev.uid)
                    self.flags[ev.uid] = ev.flags
                    self.modseqs[ev.uid] = ev.modseq
            elif isinstance(ev, FlagsChanged):
                if ev.uid not in self.flags or ev.uid in self.expunge_deferred:
                    continue
                if self.modseqs.get(ev.uid, 0) >= ev.modseq:
                    continue
                self.flags[ev.uid] = ev.flags
                self.modseqs[ev.uid] = ev.modseq
                out.lines.append(self.fetch_flags_line(ev.uid))
            elif isinstance(ev, Expunged) and ev.uid in self.flags:
                self.expunge_deferred.add(ev.uid)
        if allow_expunge and self.expunge_deferred:
            for uid in sorted(self.expunge_deferred, reverse=True):
                # Highest first keeps each announced number valid as we go; clients
                # renumber after each EXPUNGE either way.
                n = self.msn(uid)
                if n is None:
                    continue
                del self.uids[n - 1]
                self.flags.pop(uid, None)
                self.modseqs.pop(uid, None)
                self.recent.discard(uid)
                out.lines.append(b"* %d EXPUNGE" % n)
            self.expunge_deferred = set()
            self._reported_exists = min(self._reported_exists, len(self.uids))
        if len(self.uids) != self._reported_exists:
            out.lines.append(b"* %d EXISTS" % len(self.uids))
            self._reported_exists = len(self.uids)
            recent = len(self.recent)
            if recent != self._reported_recent:
                out.lines.append(b"* %d RECENT" % recent)
                self._reported_recent = recent
        return out

    def fetch_flags_line(self, uid: int) -> bytes:
        n = self.msn(uid)
        assert n is not None
        items = [b"FLAGS " + self.format_flags(uid)]
        if self.condstore:
            items.append(b"MODSEQ (%d)" % self.modseqs.get(uid, 0))
        return b"* %d FETCH (%s)" % (n, b" ".join(items))

    def format_flags(self, uid: int) -> bytes:
        flags = sorted(self.flags.get(uid, frozenset()))
        if uid in self.recent:
            flags.append("\\Recent")
        return response.plist(f.encode("utf-8") for f in flags)

    def is_live(self, uid: int) -> bool:
        """In the view and not expunged behind our back."""
        return uid in self.flags and uid not in self.expunge_deferred
