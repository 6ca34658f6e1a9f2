"""Which view of this process claims \\Recent of a new message, so that one does and the
others announce it at once.

A read-write view claims \\Recent of new messages in the store before it announces them
(``SelectedMailbox``), and the store gives each UID to exactly one claim, in any process.
When 1,000 sessions of this process idle on a mailbox, one new message would make 1,000
claims, each a task that waits for a write, although only one can win. So, per mailbox,
the process remembers up to which UID a claim has been *started* here: the first view to
see a new message starts the claim (one write, one task: its own push), and every other
view of this process settles that message at once as not its own. The store stays the
judge: a view shows \\Recent only for what its own claim returned, so the rule "each UID
to one session" holds whatever this ledger says; the ledger only decides who does not
ask. A claim that fails gives the message to nobody, as a failed claim always did.

``ViewClaims`` is one view's side of this: what it has settled, and its claim in flight.
"""

from __future__ import annotations

import asyncio
import logging
from weakref import WeakKeyDictionary

from ..store.api import MailStore, NotFound, StoreError

log = logging.getLogger("mailstead.imap")

# Mailboxes remembered per store; past this the ledger starts again from nothing, which
# only costs a claim write per view that has one to make (a ledger entry is never needed
# for correctness).
MAX_MAILBOXES = 4096

_ledgers: WeakKeyDictionary[MailStore, dict[int, int]] = WeakKeyDictionary()


def _ledger(store: MailStore) -> dict[int, int]:
    ledger = _ledgers.get(store)
    if ledger is None:
        ledger = _ledgers[store] = {}
    return ledger


def started_upto(store: MailStore, mailbox_id: int) -> int:
    """The highest UID of ``mailbox_id`` whose claim a view of this process has started."""
    return _ledger(store).get(mailbox_id, 0)


def start(store: MailStore, mailbox_id: int, top: int) -> asyncio.Task[int]:
    """A view of this process claims every UID up to ``top``: noted here, and the store's
    claim started at once. The task returns where the boundary was for this claim."""
    ledger = _ledger(store)
    if len(ledger) >= MAX_MAILBOXES and mailbox_id not in ledger:
        ledger.clear()
    if top > ledger.get(mailbox_id, 0):
        ledger[mailbox_id] = top
    write = asyncio.get_running_loop().create_task(
        store.claim_recent(mailbox_id, below=top + 1))
    # Retrieved here too: a view closed before its sync awaits the claim.
    write.add_done_callback(lambda t: t.cancelled() or t.exception())
    return write


class ViewClaims:
    """One read-write view's \\Recent claims: up to which UID its new messages are settled
    (its own claim answered for them, or another view of this process started theirs), and
    its own claim in flight. Used under the view's lock, so one claim at a time."""

    __slots__ = ("_claim", "mailbox_id", "settled_upto", "store")

    def __init__(self, store: MailStore, mailbox_id: int) -> None:
        self.store = store
        self.mailbox_id = mailbox_id
        self.settled_upto = 0  # \Recent settled (ours or not) for every UID up to here
        # Our claim in flight, if any: (every UID up to this one, its write).
        self._claim: tuple[int, asyncio.Task[int]] | None = None

    def settle(self, top: int) -> bool:
        """True when every new message up to ``top`` is settled; False while this view's
        claim is in flight (started here when no view of this process had started one):
        ``wait`` then gives its answer."""
        if top <= self.settled_upto:
            return True
        if self._claim is None:
            if top <= started_upto(self.store, self.mailbox_id):
                self.settled_upto = top  # another view of this process claims them
                return True
            # Started now, not when the view waits: the other views rely on it being made.
            self._claim = (top, start(self.store, self.mailbox_id, top))
        return False

    async def wait(self) -> tuple[int, int]:
        """Wait for the claim ``settle`` started; ``(was, top)``: the UIDs from ``was`` to
        ``top`` are this view's (none when ``was > top``). ``NotFound``: the mailbox is gone.
        Shielded: a session closing while the claim is written leaves it running (its UIDs
        then go to nobody, never to two)."""
        assert self._claim is not None
        top, write = self._claim
        try:
            was = await asyncio.shield(write)
        except NotFound:
            raise
        except StoreError as exc:  # then not ours: \\Recent in at most one session
            log.warning("view of mailbox %d: cannot claim \\Recent: %s", self.mailbox_id, exc)
            was = top + 1
        finally:
            if self._claim is not None and self._claim[1] is write:
                self._claim = None
        self.settled_upto = max(self.settled_upto, top)
        return was, top
