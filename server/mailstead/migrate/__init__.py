"""Migration in and out: Maildir++, mbox and Dovecot passwd-file.

Shared by the importers: validation of a source message, the duplicate key, and
``MailboxImporter``, which appends messages to one mailbox in batches.

Duplicates. The key of a message is the SHA-256 of its stored octets (CRLF-normalised,
and for mbox with the mbox bookkeeping headers removed). Before importing into a mailbox
the importer reads every message already in it through the store API and hashes it, so
the cost of a run grows with the size of the target mailbox (one read and one SHA-256
pass over its bytes: ~0.6 GB/s measured on a cached SQLite store, about 2 s per GB), not
with the size of the store. Keys are counted, not just remembered: a source holding the
same message twice imports it twice, and a re-run then skips both copies. Flags of a
skipped message are left as they are in the store.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..mime.parse import normalise_crlf
from .progress import Reporter

__all__ = [
    "MailboxImporter",
    "MigrateError",
    "SourceMessage",
    "check_message",
    "message_key",
    "valid_keyword",
]

# Messages per store transaction, and bytes: each batch is one fsynced commit.
BATCH_MESSAGES = 200
BATCH_BYTES = 8 * 1024 * 1024
# How many existing messages are read at once while building the duplicate index.
READ_CHUNK = 64

# A header field name (RFC 5322 ftext), optionally followed by white space (obsolete syntax).
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_ATOM_SPECIALS = frozenset('(){%*"\\]')


class MigrateError(Exception):
    """A failure that stops the whole run (worded for the person at the terminal)."""


def message_key(data: bytes) -> bytes:
    """The duplicate key of stored (normalised) message octets."""
    return hashlib.sha256(data).digest()


def check_message(data: bytes) -> str | None:
    """Why ``data`` (raw source octets) is not an email message, or None when it is one.

    A message must be non-empty, start with a header field (or an mbox-style ``From ``
    line, which some Maildir writers leave in) and have no NUL octet in its header.
    """
    if not data.strip():
        return "empty message"
    if not (_FIELD_LINE.match(data) or data.startswith(b"From ")):
        return "not an email message (it does not start with a header field)"
    blank = _BLANK_LINE.search(data)
    header = data[: blank.start()] if blank else data
    if b"\0" in header:
        return "not an email message (NUL bytes in the header)"
    return None


def too_big(size: int, limit: int) -> str:
    return f"message of {size} bytes is over the limit of {limit} ([limits] max_message_size)"


def valid_keyword(word: str) -> bool:
    """An IMAP keyword we can store: an atom, not a system flag."""
    return (
        0 < len(word) <= 200
        and not word.startswith("\\")
        and all(0x21 <= ord(c) <= 0x7E and c not in _ATOM_SPECIALS for c in word)
    )


@dataclass(slots=True)
class SourceMessage:
    """One message found in a source, before validation."""

    where: str  # path, or "file: message N", for error lines
    data: bytes  # stored octets: already CRLF-normalised
    flags: frozenset[str]
    internaldate: datetime | None
    recent: bool  # False for messages the source marks as already seen by a client


class MailboxImporter:
    """Appends messages to one mailbox: duplicate check, batching and \\Recent.

    \\Recent: the store marks every appended message recent for the next session. When the
    mailbox had no recent messages before the run, the leading run of imported messages that
    the source calls old (Maildir ``cur/``, mbox ``Status: O``) is made not recent with
    ``claim_recent``; an old message that follows a recent one stays recent, because the
    store's recent marker is a single UID boundary.
    """

    def __init__(self, store: Any, mailbox: Any, reporter: Reporter) -> None:
        self.store = store
        self.mailbox = mailbox
        self.reporter = reporter
        self.existing: Counter[bytes] = Counter()
        self.imported = 0
        self._batch: list[Any] = []
        self._batch_bytes = 0
        self._claim_pending = False
        self._appended = 0

    async def prepare(self) -> None:
        """Hash what the mailbox already holds (see the module docstring for the cost)."""
        infos = await self.store.list_messages(self.mailbox.id)
        uids = [i.uid for i in infos]
        for start in range(0, len(uids), READ_CHUNK):
            chunk = uids[start : start + READ_CHUNK]
            blobs = await self.store.read_messages(self.mailbox.id, chunk)
            for data in blobs.values():
                self.existing[message_key(bytes(data))] += 1
        status = await self.store.mailbox_status(self.mailbox.id)
        self._claim_pending = status.recent == 0

    def is_duplicate(self, data: bytes) -> bool:
        """True (and the copy is used up) when the mailbox already holds ``data``."""
        key = message_key(data)
        if self.existing[key] > 0:
            self.existing[key] -= 1
            return True
        return False

    async def add(self, msg: SourceMessage) -> None:
        """Queue one validated, normalised message (or skip it as a duplicate)."""
        from ..store.api import NewMessage

        if self.is_duplicate(msg.data):
            self.reporter.skipped += 1
            self.reporter.tick()
            return
        if msg.recent and self._claim_pending:
            # Everything appended so far is old: make it not recent before the first new one.
            await self.flush()
            if self._appended:
                await self.store.claim_recent(self.mailbox.id)
            self._claim_pending = False
        self._batch.append(NewMessage(msg.data, msg.flags, msg.internaldate))
        self._batch_bytes += len(msg.data)
        if len(self._batch) >= BATCH_MESSAGES or self._batch_bytes >= BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        # A store failure here (disk full, database unavailable) is not about one message:
        # it propagates and stops the run; what was committed before stays.
        await self.store.append(self.mailbox.id, batch)
        self._appended += len(batch)
        self.imported += len(batch)
        self.reporter.imported += len(batch)
        self.reporter.tick()

    async def finish(self) -> None:
        await self.flush()
        if self._claim_pending and self._appended:
            await self.store.claim_recent(self.mailbox.id)
        self._claim_pending = False


def prepare_data(raw: bytes, limit: int) -> tuple[bytes | None, str | None]:
    """(stored octets, None) or (None, reason) for raw source octets."""
    reason = check_message(raw)
    if reason is not None:
        return None, reason
    if len(raw) > limit:
        return None, too_big(len(raw), limit)
    data = normalise_crlf(raw)
    if len(data) > limit:
        return None, too_big(len(data), limit)
    return data, None


async def resolve_user(store: Any, name: str) -> Any:
    user = await store.get_user(name)
    if user is None:
        raise MigrateError(f"no such user: {name}")
    return user


def canonical_mailbox(name: str) -> str:
    """``inbox`` and ``Inbox/x`` name INBOX, as on the IMAP wire."""
    head = name[:5]
    if head.upper() == "INBOX" and name[5:6] in ("", "/"):
        return "INBOX" + name[5:]
    return name


async def get_or_create_mailbox(store: Any, user: Any, name: str) -> tuple[Any, bool]:
    """(mailbox, created). Raises the store's InvalidName for a name it refuses."""
    from ..store.api import AlreadyExists

    box = await store.get_mailbox(user.id, name)
    if box is not None:
        return box, False
    try:
        box = await store.create_mailbox(user.id, name)
    except AlreadyExists:  # created meanwhile (by a client of a running server)
        box = await store.get_mailbox(user.id, name)
        if box is None:
            raise
        return box, False
    await store.set_subscribed(user.id, name, True)
    return box, True
