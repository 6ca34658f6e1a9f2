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
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from ..store.api import MailStore

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
