"""The outbound queue's part of the store interface (``MailStore`` inherits it).

The queue lives in the store, like the mailboxes, so it works on every backend and shares
their durability: ``queue_add`` returns only after the commit and its fsync, and
``queue_record`` settles the recipients of one delivery attempt, and stores the bounce
that attempt produced, in one transaction. Nothing here speaks SMTP.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

# A recipient's state: waiting for an attempt, accepted by the remote, or given up on.
PENDING = "pending"
SENT = "sent"
BOUNCED = "bounced"
STATES = (PENDING, SENT, BOUNCED)


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    queue_id: int
    address: str
    domain: str  # lower case: what the MX lookup is for
    state: str
    attempts: int
    next_attempt: float  # Unix time
    last_reply: str


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    mail_from: str  # "" for a null reverse path (a bounce)
    created: float  # Unix time
    size: int
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended for one recipient: ``state`` SENT, BOUNCED, or PENDING
    (deferred until ``next_attempt``), with the reply that decided it."""

    address: str
    state: str
    reply: str
    next_attempt: float = 0.0


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery status notification stored with the outcomes that caused it: into a
    local mailbox (``mailbox_id``, through the normal delivery path, so IDLE sessions
    see it) or, for a sender elsewhere, queued to ``remote`` with a null reverse path."""

    data: bytes
    mailbox_id: int | None = None
    remote: str | None = None


class QueueStore(abc.ABC):
    @abc.abstractmethod
    async def queue_add(self, mail_from: str, recipients: list[str], data: bytes) -> int:
        """Queue a message for its recipients (committed with fsync); returns its id."""

    @abc.abstractmethod
    async def queue_due(self, now: float, limit: int) -> list[QueuedRecipient]:
        """Pending recipients whose next attempt is at or before ``now``, soonest first."""

    @abc.abstractmethod
    async def queue_next_due(self) -> float | None:
        """When the soonest pending recipient is due (None: nothing is pending)."""

    @abc.abstractmethod
    async def queue_message(self, queue_id: int) -> QueuedMessage | None: ...

    @abc.abstractmethod
    async def queue_data(self, queue_id: int) -> bytes | None: ...

    @abc.abstractmethod
    async def queue_list(self) -> list[QueuedMessage]:
        """Every queued message, oldest first."""

    @abc.abstractmethod
    async def queue_record(
        self, queue_id: int, outcomes: list[Outcome], bounce: Bounce | None = None
    ) -> None:
        """End an attempt: each outcome counts one attempt of a recipient still pending,
        the bounce (if any) is stored, and a message with no recipient left pending leaves
        the queue, all in one transaction. A recipient no longer pending is left alone,
        and a message deleted meanwhile gets neither outcomes nor a bounce."""

    @abc.abstractmethod
    async def queue_retry(self, queue_id: int | None, now: float) -> int:
        """Make pending recipients (of one message, or all) due at ``now``; how many."""

    @abc.abstractmethod
    async def queue_delete(self, queue_id: int) -> bool:
        """Drop a queued message without a bounce; False when there was none."""

    @abc.abstractmethod
    async def queue_pending(self) -> int:
        """How many recipients are pending."""
