"""The mailbox store interface shared by IMAP, POP3, delivery and the CLI.

Protocol code talks only to ``MailStore``; the SQLite implementation is the embedded
default. Every mutation is one transaction that bumps the mailbox ``modseq`` and, after
commit, publishes its change events through the ``ChangeHub`` (see ``hub.py``).
Nothing here formats protocol text.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from ..mime.header_text import HeaderText
from ..mime.model import ParsedMessage
from .queue_api import QueueStore

if TYPE_CHECKING:
    from .mailbox_rows import RowsSnapshot

# Mailboxes every new user gets, with their RFC 6154 special-use attribute.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class StoreError(Exception):
    """Base of store failures that protocols turn into NO / -ERR / 4xx."""


class NotFound(StoreError):
    """A user, mailbox or message that does not exist (or is not the caller's)."""


class AlreadyExists(StoreError):
    """A user or mailbox name that is taken."""


class SpecialUseTaken(AlreadyExists):
    """Another mailbox of the user already has the special-use attribute asked for."""


class InvalidName(StoreError):
    """A mailbox or user name that the store refuses."""


class LimitExceeded(StoreError):
    """A configured quota (mailboxes per user, ...) would be exceeded."""


class StorageFull(StoreError):
    """The disk or database is full: a temporary, server-side failure."""


class StoreUnavailable(StoreError):
    """Any other temporary server-side failure."""


class FlagMode(enum.Enum):
    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class Alias:
    """An address (``local@domain``, or ``@domain``: the domain's catch-all) and the
    names of the users it reaches."""

    address: str
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    user_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    name: str
    messages: int
    unseen: int
    recent: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    size: int


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a mailbox listing knows of one message without reading its body."""

    uid: int
    modseq: int
    flags: frozenset[str]
    internaldate: datetime
    size: int


@dataclass(frozen=True, slots=True)
class FetchWants:
    """What one FETCH round reads of each message (``MailStore.read_for_fetch``).

    ``bodies``: the octets of the leading run of small messages (see ``small_run``);
    the others are read later, by ``read_messages`` or in pieces by ``read_range``.
    """

    info: bool = False
    structure: bool = False
    headers: bool = False
    bodies: bool = False
    body_max: int = 0  # a message above this size is never read whole here
    batch_bytes: int = 0  # octets of bodies read at most
    batch_count: int = 0  # bodies read at most


@dataclass(slots=True)
class FetchData:
    """One FETCH round's reads; a UID missing from a wanted part was expunged."""

    infos: dict[int, MessageInfo] = field(default_factory=dict)
    structures: dict[int, ParsedMessage] = field(default_factory=dict)
    headers: dict[int, bytes] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)


def small_run(uids: Sequence[int], sizes: dict[int, MessageInfo], wants: FetchWants) -> list[int]:
    """The small messages from ``uids[0]`` on to read whole in one call: at most
    ``batch_count`` of them and ``batch_bytes`` of octets, stopping at the first big one
    (a UID not in ``sizes``, gone, counts as empty)."""
    run: list[int] = []
    total = 0
    for uid in uids:
        info = sizes.get(uid)
        size = info.size if info is not None else 0
        if size > wants.body_max or len(run) >= wants.batch_count or (
                run and total + size > wants.batch_bytes):
            break
        run.append(uid)
        total += size
    return run


class Octets(NamedTuple):
    """A message's stored octets, and whether any of its lines starts with ``.``."""

    data: bytes
    dot_lines: bool | None  # None: not known (stored before the mark existed)


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


@dataclass(frozen=True, slots=True)
class Appended:
    uid: int
    modseq: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    uid: int
    modseq: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Expunged:
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class MailboxGone:
    """The mailbox was deleted or renamed away: selected sessions must drop it."""

    modseq: int


ChangeEvent = Appended | FlagsChanged | Expunged | MailboxGone


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """The events of one committed transaction on one mailbox, in order."""

    mailbox_id: int
    events: tuple[ChangeEvent, ...]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: CRLF-normalised bytes plus its initial state."""

    data: bytes
    flags: frozenset[str] = frozenset()
    internaldate: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageFile:
    """A message to deliver that waits in an open file: its first ``size`` octets, CRLF
    already. The caller keeps the file open and unchanged until ``deliver_file`` returns."""

    fileno: int
    size: int


@dataclass(slots=True)
class FlagUpdate:
    """Result of a STORE: what changed and what was refused by UNCHANGEDSINCE."""

    changed: list[FlagsChanged] = field(default_factory=list)
    unchanged: list[FlagsChanged] = field(default_factory=list)  # matched, already had them
    failed_uids: list[int] = field(default_factory=list)


class MailStore(QueueStore, abc.ABC):
    """The asynchronous store API. All methods are safe to call from the event loop.

    The outbound queue's methods (``queue_*``) are declared in ``queue_api``."""

    # --- lifecycle -------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # --- users -----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_user(self, name: str, password_hash: str) -> User:
        """Create a user with the default mailboxes, subscribed. Names are case-insensitive.

        INBOX always; the other defaults only as far as the mailbox limit allows."""

    @abc.abstractmethod
    async def get_user(self, name: str) -> User | None: ...

    @abc.abstractmethod
    async def list_users(self) -> list[User]: ...

    @abc.abstractmethod
    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...

    @abc.abstractmethod
    async def delete_user(self, name: str) -> bool: ...

    # --- aliases ---------------------------------------------------------------------
    # Addresses are given normalised (lower case, checked) by the caller; the store only
    # keeps them. Deleting a user removes them from every alias (an alias left with no
    # user is gone).
    @abc.abstractmethod
    async def add_alias(self, address: str, user_ids: Sequence[int]) -> Alias:
        """Make ``address`` reach these users too (added to any it reached already)."""

    @abc.abstractmethod
    async def delete_alias(self, address: str) -> bool:
        """Remove ``address``; False when it was no alias."""

    @abc.abstractmethod
    async def list_aliases(self) -> list[Alias]:
        """Every alias, by address."""

    @abc.abstractmethod
    async def alias_users(self, address: str) -> list[User]:
        """The users ``address`` reaches (exactly this address: no catch-all lookup)."""

    # --- mailboxes -------------------------------------------------------------------
    @abc.abstractmethod
    async def list_mailboxes(self, user_id: int) -> list[Mailbox]: ...

    @abc.abstractmethod
    async def get_mailbox(self, user_id: int, name: str) -> Mailbox | None: ...

    @abc.abstractmethod
    async def create_mailbox(
        self, user_id: int, name: str, special_use: str | None = None
    ) -> Mailbox: ...

    @abc.abstractmethod
    async def delete_mailbox(self, user_id: int, name: str) -> None:
        """Delete one mailbox and its messages (children are left alone)."""

    @abc.abstractmethod
    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        """Rename a mailbox and its whole hierarchy (``old/…`` → ``new/…``).

        Renaming INBOX moves its messages into a new mailbox and leaves INBOX empty.
        """

    @abc.abstractmethod
    async def list_subscriptions(self, user_id: int) -> list[str]: ...

    @abc.abstractmethod
    async def set_subscribed(self, user_id: int, name: str, subscribed: bool) -> None: ...

    @abc.abstractmethod
    async def mailbox_status(self, mailbox_id: int, *, size: bool = True) -> MailboxStatus:
        """The STATUS counts; with ``size=False`` the caller needs no total size (0 then),
        so a backend may count from a copy of the rows it keeps (``mailbox_rows.py``)."""

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

    # --- messages --------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, mailbox_id: int, messages: Sequence[NewMessage]) -> list[int]:
        """Store messages (one transaction, fsynced before returning); returns their UIDs."""

    @abc.abstractmethod
    async def deliver(self, mailbox_ids: Sequence[int], data: bytes) -> list[int]:
        """Store one message in several mailboxes (one transaction, one blob)."""

    async def deliver_file(self, mailbox_ids: Sequence[int], message: MessageFile) -> list[int]:
        """``deliver`` for a message in a file: a backend that can store it without holding
        it whole in memory should (SMTP and LMTP deliver up to the size limit, in
        parallel). This default reads it whole."""
        data = await asyncio.to_thread(read_message_file, message)
        return await self.deliver(mailbox_ids, data)

    def delivery_memory(self, size: int) -> int:
        """Octets of memory ``deliver_file`` holds at once for a message of ``size`` octets,
        for a caller that bounds the memory of parallel deliveries."""
        return size

    @abc.abstractmethod
    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]:
        """Every message of the mailbox in UID order."""

    @abc.abstractmethod
    async def get_messages(self, mailbox_id: int, uids: Iterable[int]) -> list[MessageInfo]: ...

    async def list_maildrop(self, mailbox_id: int) -> list[tuple[int, int, bool]]:
        """(UID, size, whether \\Seen) of every message in UID order: a POP3 maildrop. A
        backend should read only these (a full listing builds dates it does not need)."""
        return [(m.uid, m.size, "\\Seen" in m.flags) for m in await self.list_messages(mailbox_id)]

    @abc.abstractmethod
    async def read_message(self, mailbox_id: int, uid: int) -> bytes | None:
        """The stored octets (CRLF), or None when the message is gone."""

    async def read_range(
        self, mailbox_id: int, uid: int, offset: int, length: int
    ) -> bytes | None:
        """Up to ``length`` stored octets of a message from ``offset`` (fewer at its end),
        or None when the message is gone: FETCH streams a big message in pieces instead of
        holding it whole. This default reads it whole; a backend should do better."""
        data = await self.read_message(mailbox_id, uid)
        return None if data is None else data[offset : offset + length]

    @abc.abstractmethod
    async def read_messages(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        """Several messages' octets in one call (for read-ahead); missing UIDs are absent."""

    @abc.abstractmethod
    async def read_octets(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, Octets]:
        """Like ``read_messages``, with each message's dot-line mark (computed once at
        delivery) so that a dot-stuffing protocol need not scan every message it sends."""

    @abc.abstractmethod
    async def read_headers(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, bytes]:
        """Top-level header blocks (with the blank line) without reading bodies."""

    @abc.abstractmethod
    async def read_structures(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, ParsedMessage]:
        """The parse results computed at delivery (envelope, body structure, part offsets)."""

    async def read_for_fetch(
        self, mailbox_id: int, uids: Sequence[int], wants: FetchWants
    ) -> FetchData:
        """What a FETCH round needs of ``uids`` (in the order given), in one consistent
        read where the backend can: one store call per round, not one per part. This
        default makes one call per part."""
        out = FetchData()
        if wants.info or wants.bodies:
            out.infos = {i.uid: i for i in await self.get_messages(mailbox_id, uids)}
        if wants.structure:
            out.structures = await self.read_structures(mailbox_id, uids)
        if wants.headers:
            out.headers = await self.read_headers(mailbox_id, uids)
        if wants.bodies:
            run = small_run(uids, out.infos, wants)
            if run:
                out.bodies = await self.read_messages(mailbox_id, run)
        return out

    @abc.abstractmethod
    async def read_header_texts(
        self, mailbox_id: int, uids: Iterable[int]
    ) -> dict[int, HeaderText]:
        """What SEARCH matches in each top-level header, decoded once at delivery
        (``mime.header_text``); missing UIDs are absent."""

    @abc.abstractmethod
    async def store_flags(
        self,
        mailbox_id: int,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> FlagUpdate: ...

    @abc.abstractmethod
    async def expunge(self, mailbox_id: int, uids: Iterable[int] | None = None, *,
                      deleted_only: bool = False) -> list[int]:
        """Remove messages: the given UIDs, or (None) every message flagged \\Deleted.

        With UIDs given, only those that are still there are removed, and with
        ``deleted_only`` only those of them flagged \\Deleted when the removal commits
        (UID EXPUNGE: another session may have just cleared the flag). Returns the UIDs
        actually removed."""

    @abc.abstractmethod
    async def copy(
        self,
        src_id: int,
        uids: Iterable[int],
        dst_id: int,
        *,
        move: bool = False,
    ) -> list[tuple[int, int]]:
        """Copy (or move) messages; returns (source UID, new UID) pairs in UID order."""

    # --- POP3 maildrop lock ----------------------------------------------------------
    @abc.abstractmethod
    def try_lock_maildrop(self, user_id: int) -> bool:
        """Take the exclusive POP3 lock on a user's maildrop; False if held."""

    @abc.abstractmethod
    def unlock_maildrop(self, user_id: int) -> None: ...


def read_message_file(message: MessageFile) -> bytes:
    """The octets of a ``MessageFile``, read whole (blocking)."""
    parts: list[bytes] = []
    got = 0
    while got < message.size:  # a short read (a signal) is rare
        more = os.pread(message.fileno, message.size - got, got)
        if not more:
            raise OSError(f"message file ended after {got} of {message.size} octets")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
