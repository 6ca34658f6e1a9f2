"""The mailbox store interface shared by IMAP, POP3, delivery and the CLI.

Protocol code talks only to ``MailStore``; the SQLite implementation is the embedded
default. Every mutation is one transaction that bumps the mailbox ``modseq`` and, after
commit, publishes its change events through the ``ChangeHub`` (see ``hub.py``).
Nothing here formats protocol text.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .queue_api import QueueStore
from .reads_api import MessageReads
from .view_api import ViewReads

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


class MailStore(QueueStore, MessageReads, ViewReads, abc.ABC):
    """The asynchronous store API. All methods are safe to call from the event loop.

    Declared in parts: the reads of messages' listings and contents (``list_messages``,
    ``read_*``) in ``reads_api``, the snapshot SELECT reads and its \\Recent claim
    (``read_view``, ``open_view``, ``claim_recent``, ``*_rows``) in ``view_api``, the
    outbound queue's methods (``queue_*``) in ``queue_api``."""

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
