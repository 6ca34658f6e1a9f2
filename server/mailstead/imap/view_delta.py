"""The delta of a selected-mailbox view: what the store has committed beyond what the
client has been told, complete up to one modseq.

Change events arrive from the hub in an *inbox* and are applied strictly in modseq order.
Every commit bumps the mailbox's modseq once, so a modseq that skips one, or an event that
makes no sense (an unknown UID, an appended UID that is not new), means something was
missed or reordered (another process's commit can arrive after ours): the delta then asks
to be rebuilt from a fresh read of the store (``needs_read``) instead of guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping, Sequence

from ..store.api import Appended, ChangeEvent, Expunged, FlagsChanged
from ..store.view_api import ViewSnapshot

log = logging.getLogger("mailstead.imap")

Flags = frozenset[str]


class Delta:
    """New messages, flag changes and expunges not yet told to the client."""

    def __init__(self, applied: int, known_top: int) -> None:
        self.inbox: list[ChangeEvent] = []  # as delivered, not applied yet
        self.applied = applied  # every change up to this modseq is in the delta or told
        self.new: dict[int, tuple[Flags, int]] = {}  # appended, not announced
        self.touched: set[int] = set()  # of ``new``, flags changed after the append
        self.recent: set[int] = set()  # of ``new``, those whose \Recent we claimed
        self.changed: dict[int, tuple[Flags, int]] = {}  # flags of announced messages
        self.expunged: set[int] = set()  # announced messages gone from the store
        self.known_top = known_top  # highest UID announced or in ``new``
        self.needs_read = False

    def absorb(self, announced: Container[int], label: object) -> None:
        """Apply the inbox in modseq order, up to a gap or a surprise. ``announced``: the
        UIDs in the client's map."""
        if not self.inbox or self.needs_read:
            return
        # Stable sort: a MOVE within the mailbox publishes its expunge (modseq m+1) before
        # its append (m); events of one commit share a modseq and keep their order.
        events = sorted(self.inbox, key=lambda e: e.modseq)
        self.inbox = []
        group: int | None = None
        for i, ev in enumerate(events):
            if ev.modseq != group:
                if ev.modseq <= self.applied:
                    continue  # in the snapshot already, or our own change, applied
                if ev.modseq != self.applied + 1:
                    log.debug("view of %s: modseq %d after %d, reading the store",
                              label, ev.modseq, self.applied)
                    self.needs_read = True
                    self.inbox = events[i:]
                    return
                group = ev.modseq
            if self._apply(ev, announced):
                self.applied = ev.modseq
            else:
                log.debug("view of %s: unexpected %r, reading the store", label, ev)
                self.needs_read = True
                self.inbox = events[i + 1:]
                return

    def _apply(self, ev: ChangeEvent, announced: Container[int]) -> bool:
        """One event into the delta; False when it does not fit what we know."""
        uid = getattr(ev, "uid", 0)
        if isinstance(ev, Appended):
            if uid <= self.known_top:
                return False
            self.new[uid] = (ev.flags, ev.modseq)
            self.known_top = uid
            return True
        if isinstance(ev, FlagsChanged):
            if uid in self.new:
                # Sent as FETCH right after its EXISTS, as a change seen live would be.
                self.new[uid] = (ev.flags, ev.modseq)
                self.touched.add(uid)
                return True
            if uid in announced and uid not in self.expunged:
                self.changed[uid] = (ev.flags, ev.modseq)
                return True
            return False
        if isinstance(ev, Expunged):
            if uid in self.new:
                # Appended and expunged before the client heard of it: never mentioned.
                del self.new[uid]
                self.recent.discard(uid)
                self.touched.discard(uid)
                return True
            if uid in announced and uid not in self.expunged:
                self.expunged.add(uid)
                self.changed.pop(uid, None)
                return True
        return False

    def rebuild(self, snap: ViewSnapshot, client_uids: Sequence[int],
                client_modseqs: Mapping[int, int], top_uid: int) -> None:
        """The delta as the difference between the client's map and a fresh snapshot."""
        live = {info.uid: info for info in snap.messages}
        self.expunged = {u for u in client_uids if u not in live}
        self.changed = {u: (live[u].flags, live[u].modseq) for u in client_uids
                        if u in live and live[u].modseq > client_modseqs.get(u, 0)}
        self.new = {u: (i.flags, i.modseq) for u, i in live.items() if u > top_uid}
        self.recent &= self.new.keys()
        self.touched.clear()
        self.known_top = max(top_uid, max(self.new, default=0))
        self.applied = snap.mailbox.highestmodseq
        self.inbox = [ev for ev in self.inbox if ev.modseq > self.applied]
        self.needs_read = False
