"""The POP3 maildrop of one session: a snapshot of INBOX taken at login (RFC 1939 §8).

Message numbers, sizes and unique-ids are fixed for the whole session; ``DELE`` only marks,
``RSET`` unmarks, and the session applies the marks at ``QUIT``. Pure bookkeeping: the
store is not touched here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..store.api import MessageInfo
from .wire import parse_number


class NoSuchMessage(LookupError):
    """A message number that is malformed, out of range or marked deleted (client text)."""


@dataclass(slots=True)
class Entry:
    """One message as the session sees it."""

    number: int
    uid: int
    size: int
    seen: bool
    deleted: bool = False


def unique_id(uidvalidity: int, uid: int) -> str:
    """RFC 1939 §7 unique-id: stable across sessions, never reused, 0x21-0x7E, ≤ 70 chars.

    (uidvalidity, uid) never names two different messages, and neither changes with
    flags, so the pair is exactly what UIDL needs.
    """
    return f"{uidvalidity}.{uid}"


class Maildrop:
    """Numbered messages 1..n of one mailbox snapshot, with deletion marks."""

    def __init__(self, mailbox_id: int, uidvalidity: int, infos: Iterable[MessageInfo]) -> None:
        self.mailbox_id = mailbox_id
        self.uidvalidity = uidvalidity
        self.entries = [
            Entry(n, info.uid, info.size, "\\Seen" in info.flags)
            for n, info in enumerate(infos, start=1)
        ]

    @classmethod
    def of_rows(cls, mailbox_id: int, uidvalidity: int,
                rows: Iterable[tuple[int, int, bool]]) -> Maildrop:
        """From (UID, size, seen) in UID order (``MailStore.list_maildrop``)."""
        drop = cls(mailbox_id, uidvalidity, ())
        drop.entries = [Entry(n, uid, size, bool(seen))
                        for n, (uid, size, seen) in enumerate(rows, start=1)]
        return drop

    def __len__(self) -> int:
        return len(self.entries)

    def live(self) -> Iterator[Entry]:
        """Messages not marked deleted, in number order."""
        return (e for e in self.entries if not e.deleted)

    def stat(self) -> tuple[int, int]:
        """(count, total octets) of the messages not marked deleted."""
        count = total = 0
        for entry in self.live():
            count += 1
            total += entry.size
        return count, total

    def get(self, text: str) -> Entry:
        """The live message ``text`` names, or ``NoSuchMessage`` with the reason."""
        number = parse_number(text)
        if number is None:
            raise NoSuchMessage(f"Invalid message number {text[:20]!r}")
        if not 1 <= number <= len(self.entries):
            raise NoSuchMessage(f"No such message {number}")
        entry = self.entries[number - 1]
        if entry.deleted:
            raise NoSuchMessage(f"Message {number} already deleted")
        return entry

    def unique_id(self, entry: Entry) -> str:
        return unique_id(self.uidvalidity, entry.uid)

    def reset(self) -> None:
        for entry in self.entries:
            entry.deleted = False

    def deleted_uids(self) -> list[int]:
        return [e.uid for e in self.entries if e.deleted]
