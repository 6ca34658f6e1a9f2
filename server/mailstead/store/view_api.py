"""The part of the store interface that a session selecting a mailbox uses (``MailStore``
inherits it): one consistent snapshot of the mailbox, and its \\Recent claim.

``sqlite/mailboxes.py`` and ``sqlite/view_reads.py`` implement it. Nothing here formats
protocol text.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # api.py inherits from this module: its types for annotations only
    from .api import Mailbox, MessageInfo
    from .mailbox_rows import RowsSnapshot


@dataclass(frozen=True, slots=True)
class ViewSnapshot:
    """One consistent read of a mailbox for a session that selects it.

    ``mailbox`` is the row as of the read (its ``highestmodseq`` covers exactly the
    ``messages``, in UID order), and ``first_recent_uid`` the lowest UID that is \\Recent
    for this view: from ``read_view`` the mailbox's boundary, from ``open_view`` with
    ``claim_recent`` the lowest UID this caller itself claimed.
    """

    mailbox: Mailbox
    messages: list[MessageInfo]
    first_recent_uid: int

    @property
    def recent_uids(self) -> list[int]:
        return [m.uid for m in self.messages if m.uid >= self.first_recent_uid]


class ViewReads(abc.ABC):
    """What SELECT, EXAMINE and a view catching up read. All methods are safe to call from
    the event loop."""

    # --- \Recent ----------------------------------------------------------------------
    # A mailbox keeps one boundary, ``first_recent_uid``: messages at or above it are
    # \Recent for the next session that claims them. A claim moves the boundary up and
    # returns where it was, in one write, so every UID below the new boundary went to
    # exactly one caller: whoever moved the boundary past it. It lives in the database, so
    # this holds across sessions and across processes.
    @abc.abstractmethod
    async def claim_recent(self, mailbox_id: int, below: int | None = None) -> int:
        """Claim \\Recent for UIDs below ``below`` (default: ``uidnext``, never past it).

        Returns the boundary as it was: the caller got the UIDs from there to ``below``
        (none when it was already at or above ``below``)."""

    @abc.abstractmethod
    async def read_view(self, mailbox_id: int) -> ViewSnapshot:
        """The mailbox row and its messages in one read transaction (NotFound if gone)."""

    async def open_view(self, mailbox_id: int, *, claim_recent: bool) -> ViewSnapshot:
        """What SELECT (``claim_recent``) and EXAMINE show: the snapshot and its \\Recent.

        The claim moves the boundary to the snapshot's ``uidnext`` and the view is given
        the UIDs from where the boundary was; a message another session claimed between
        the read and the claim is therefore not recent here, and a message appended after
        the read is above the claim and reaches the session as a change event, claimed
        then. A backend that can read and write in one transaction may do both at once;
        the result is the same.
        """
        snap = await self.read_view(mailbox_id)
        first = await self._first_recent(snap.mailbox, snap.first_recent_uid, claim_recent)
        return ViewSnapshot(snap.mailbox, snap.messages, first)

    async def _first_recent(self, mailbox: Mailbox, first_recent_uid: int,
                            claim_recent: bool) -> int:
        """The lowest UID recent for a view of ``mailbox`` as read: claimed up to its
        ``uidnext`` when ``claim_recent`` (see ``open_view``)."""
        if not claim_recent or first_recent_uid >= mailbox.uidnext:
            return first_recent_uid  # EXAMINE shows \Recent without taking it (§6.3.2)
        was = await self.claim_recent(mailbox.id, below=mailbox.uidnext)
        return max(was, first_recent_uid)

    async def read_rows(self, mailbox_id: int) -> RowsSnapshot:
        """``read_view`` as the columns a view is built from (UIDs, modseqs, flags). A
        backend may serve it from a copy of the rows it keeps (``mailbox_rows.py``)."""
        from .mailbox_rows import rows_of_view

        return rows_of_view(await self.read_view(mailbox_id))

    async def open_rows(self, mailbox_id: int, *, claim_recent: bool) -> RowsSnapshot:
        """``open_view`` as columns (``read_rows``), with the same \\Recent claim."""
        snap = await self.read_rows(mailbox_id)
        first = await self._first_recent(snap.mailbox, snap.first_recent_uid, claim_recent)
        return snap if first == snap.first_recent_uid else dataclasses.replace(
            snap, first_recent_uid=first)
