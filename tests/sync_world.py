"""The truth side of the model-based sync test (``test_sync_model``).

``Mirror`` applies every batch the store commits (told by the writer thread just before
COMMIT) and notes when the hub publishes it; each server write is stamped with a ``Moment``
(how far both had got at that write). A session's view must equal one of the states
between the two when it writes a tagged OK that closes a sync point: all of what was
published, and perhaps some of what was committed, which a store read can show before
the hub does. The mirror also checks that
every expunge was licensed by a command of the program (nothing acknowledged is lost),
and at barriers the test compares it with ``list_messages``. ``RecentLedger`` tracks which
selections were told of which messages, for the ``\\Recent`` checks.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from imap_model import SessionModel, Truth, Violation, tolerate
from mailstead.store.api import Appended, ChangeBatch, Expunged, FlagsChanged, MailboxGone
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore

# (mailbox id, uid, flags just before) → (the violation or None, the sessions whose running
# command asks for that expunge). Change batches do not say which session caused them, so
# an expunge is licensed by any session whose command in flight could have done it.
License = Callable[[int, int, frozenset[str]], tuple[Violation | None, list[object]]]


@dataclass(frozen=True, slots=True)
class Moment:
    """The mirror's state when the server wrote one chunk: ``version`` batches published
    by the hub, ``upto`` >= version committed (a store read may already return those)."""

    version: int
    upto: int


class Mirror:
    """Every watched mailbox as the store has committed it, with a little history.

    The truth follows commits, not the hub: the store calls ``on_commit`` on its writer
    thread just before each COMMIT, so a session that read the store (SELECT, STATUS, a
    catch-up after a gap) can never be ahead of the mirror. The hub's copy of each batch
    (``on_batch``, on the loop) marks it published: everything published before a write
    must be in the session's view, and anything committed by then may be. Versions number
    the watched batches in commit order, which is also the hub's order.
    """

    def __init__(self, hub: ChangeHub, names: dict[int, str], store: SqliteStore) -> None:
        self.version = 0  # batches the hub has published
        self.upto = 0  # batches committed (or about to be: observed before COMMIT)
        self.names = names  # mailbox id → its name for the owner ("INBOX", "Archive")
        self.flags: dict[int, dict[int, frozenset[str]]] = {mb: {} for mb in names}
        self.truths: dict[int, Truth] = {mb: Truth(n, (), {}) for mb, n in names.items()}
        self.history: dict[int, list[tuple[int, Truth]]] = {mb: [(0, t)] for mb, t in
                                                            self.truths.items()}
        self.appended_at: dict[tuple[int, int], int] = {}
        self.expunged: dict[tuple[int, int], int] = {}  # → version
        self.by_origin: dict[int, list[tuple[int, int, int]]] = {}  # id → (mbid, uid, version)
        self.problems: list[Violation] = []
        self.license: License | None = None
        self._lock = threading.Lock()  # on_commit runs on the store's writer thread
        self._unpublished: deque[tuple[ChangeBatch, int, dict[int, frozenset[str]]]] = deque()
        self._store = store
        store.commit_observer = self.on_commit
        self._subs = [hub.subscribe(mb, self.on_batch) for mb in names]

    def close(self) -> None:
        self._store.commit_observer = None
        for sub in self._subs:
            sub.close()

    def moment(self) -> Moment:
        with self._lock:
            return Moment(self.version, self.upto)

    def on_commit(self, batches: list[ChangeBatch]) -> None:
        """The writer thread is about to commit ``batches``: apply them to the truth."""
        with self._lock:
            for batch in batches:
                if batch.mailbox_id in self.names:
                    self._apply(batch)

    def _apply(self, batch: ChangeBatch) -> None:
        self.upto += 1
        mb = batch.mailbox_id
        box = self.flags[mb]
        before: dict[int, frozenset[str]] = {}  # flags of the expunged, for the license
        for ev in batch.events:
            if isinstance(ev, Appended):
                box[ev.uid] = ev.flags
                self.appended_at[(mb, ev.uid)] = self.upto
            elif isinstance(ev, FlagsChanged):
                if ev.uid in box:
                    box[ev.uid] = ev.flags
            elif isinstance(ev, Expunged):
                before[ev.uid] = box.pop(ev.uid, frozenset())
                self.expunged[(mb, ev.uid)] = self.upto
        truth = Truth(self.names[mb], tuple(sorted(box)), dict(box))
        self.truths = {**self.truths, mb: truth}
        self.history[mb].append((self.upto, truth))
        self._unpublished.append((batch, self.upto, before))

    def on_batch(self, batch: ChangeBatch) -> None:
        """The hub published ``batch`` (on the loop): it is now due in every view."""
        with self._lock:
            if self._unpublished and self._unpublished[0][0] is batch:
                _, version, before = self._unpublished.popleft()
            else:  # not seen before its commit (another process's change): take it now
                self._apply(batch)
                _, version, before = self._unpublished.pop()
            self.version = version
        mb = batch.mailbox_id
        for ev in batch.events:
            if isinstance(ev, Expunged) and self.license is not None:
                bad, owners = self.license(mb, ev.uid, before.get(ev.uid, frozenset()))
                if bad is not None:
                    self.problems.append(bad)
                if len(owners) == 1:  # attributed only when no other session could
                    self.by_origin.setdefault(id(owners[0]), []).append((mb, ev.uid, version))
            elif isinstance(ev, MailboxGone):
                self.problems.append(Violation("mailbox-gone", "store", self.names[mb],
                                               "the program deletes no mailbox", []))

    def truths_between(self, mb: int, first: int, last: int) -> list[Truth]:
        """The states of ``mb`` at every version in [first, last]."""
        with self._lock:
            hist = list(self.history[mb])
        out = [t for v, t in hist if first < v <= last]
        before = [t for v, t in hist if v <= first]
        return ([before[-1]] if before else []) + out

    def truth_at(self, mb: int, version: int) -> Truth:
        return self.truths_between(mb, version, version)[0]

    def prune(self) -> None:
        with self._lock:
            for mb, hist in self.history.items():
                self.history[mb] = hist[-1:]

    def expunged_by(self, origin: object, mb: int, first: int, last: int) -> set[int]:
        return {uid for m, uid, v in self.by_origin.get(id(origin), ())
                if m == mb and first <= v <= last}


class RecordingTransport(StringTransport):
    """Hands every server write, stamped with the mirror's moment, to a listener."""

    def __init__(self, mirror: Mirror, wake: asyncio.Event, peer: str = "127.0.0.1") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.mirror = mirror
        self.wake = wake
        self.chunks: list[tuple[bytes, Moment]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append((bytes(data), self.mirror.moment()))
        self.wake.set()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        super().loseConnection()
        self.closed = True
        self.wake.set()

    def abortConnection(self) -> None:
        self.loseConnection()


class ResponseReader:
    """Splits the stamped chunks of one connection into whole responses (with literals)."""

    def __init__(self) -> None:
        self.buf = b""
        self.marks: list[tuple[int, Moment]] = []  # (end offset, moment of that write)

    def feed(self, chunks: list[tuple[bytes, Moment]]) -> None:
        for data, moment in chunks:
            self.buf += data
            self.marks.append((len(self.buf), moment))

    def next(self) -> tuple[bytes, Moment] | None:
        pos = 0
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end < 0:
                return None
            line_end = end
            if self.buf[pos:end].endswith(b"}") and b"{" in self.buf[pos:end]:
                size = self.buf[pos:end].rsplit(b"{", 1)[1][:-1].rstrip(b"+")
                if size.isdigit():
                    pos = end + 2 + int(size)
                    if pos > len(self.buf):
                        return None
                    continue
            total = line_end + 2
            moment = next(m for e, m in self.marks if e >= total)
            response = self.buf[:line_end]
            self.buf = self.buf[total:]
            self.marks = [(e - total, m) for e, m in self.marks if e - total > 0]
            return response, moment


@dataclass
class Selection:
    """One SELECT/EXAMINE of one connection, for the \\Recent accounting."""

    owner: str
    user: str
    mailbox: str
    rw: bool
    opened: int  # mirror version when SELECT was sent
    model: SessionModel | None  # live while open
    closed: int | None = None
    known: set[int] = field(default_factory=set)
    intervals: list[tuple[int, float]] = field(default_factory=list)

    def freeze(self, version: int) -> None:
        if self.model is not None and self.closed is None:
            self.known = self.model.known_uids()
            self.intervals = self.model.unknown_intervals()
            self.model = None
            self.closed = version

    def told(self) -> tuple[set[int], list[tuple[int, float]]]:
        if self.model is not None:
            return self.model.known_uids(), self.model.unknown_intervals()
        return self.known, self.intervals


class RecentLedger:
    """Who showed ``\\Recent`` for what, and which selections were told of which message."""

    def __init__(self) -> None:
        self.holder: dict[tuple[str, str, int], tuple[str, list[str]]] = {}
        self.selections: list[Selection] = []

    def shown(self, user: str, model: SessionModel, mailbox: str, uid: int) -> None:
        key = (user, mailbox, uid)
        first = self.holder.setdefault(key, (model.name, list(model.transcript)))
        if first[0] != model.name:
            earlier = "\n".join("      " + t for t in first[1][-8:])
            tolerate(model.fail("recent-in-two-sessions", model.transcript[-1] if model.transcript
                             else "", f"\\Recent of UID {uid} in {mailbox} for one session only "
                             f"(RFC 3501 §2.3.2), but {first[0]} showed it too:\n{earlier}"))

    def open(self, sel: Selection) -> Selection:
        self.selections.append(sel)
        return sel

    def recent_range(self, user: str, mailbox: str, live: tuple[int, ...],
                     appended_at: Callable[[int], int], probe: Selection | None
                     ) -> tuple[int, int]:
        """The RECENT a new selection may report: messages no read-write selection was
        open for are certainly recent, messages one was told of certainly not."""
        claimed: set[int] = set()
        lives: list[int | None] = []
        for sel in self.selections:
            if sel is probe or not sel.rw or sel.user != user or sel.mailbox != mailbox:
                continue
            known, _ = sel.told()
            claimed |= known
            lives.append(sel.closed)
        certain = 0
        for uid in live:
            if uid in claimed:
                continue
            born = appended_at(uid)
            if not any(closed is None or closed >= born for closed in lives):
                certain += 1
        return certain, len(live) - len(claimed & set(live))
