"""The session stream rule, checked on the bytes a selected mailbox sends.

``SelectedMailbox`` keeps the client's message-sequence map; ``StreamChecker`` keeps a
second copy of it built only from the untagged lines the view emits, and compares each
new line with it: every number mentioned is at most the count the client was told, EXISTS
never shrinks the count and covers exactly the messages it announces (new UIDs only,
ascending), each EXPUNGE names a message the client knows and takes one off, FETCH names a
message the client knows and shows only keywords announced by FLAGS, no EXPUNGE where the
command forbids it, and after each update the client's map equals the view's.

A violation is a server bug. With ``MAILSTEAD_CHECK_INVARIANTS`` set (the test suite sets
it) it raises ``StreamViolation``, an ``AssertionError``; otherwise it is logged and the
checker adopts the view's map so one bug is reported once, not on every later line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from itertools import pairwise

log = logging.getLogger("mailstead.imap.stream")

CHECK_ENV = "MAILSTEAD_CHECK_INVARIANTS"


def invariants_strict() -> bool:
    """Whether violations raise (tests, debugging) instead of being logged."""
    return os.environ.get(CHECK_ENV, "").strip().lower() not in ("", "0", "false", "no")


class StreamViolation(AssertionError):
    """The selected-mailbox stream broke its rule (see the module docstring)."""


def _number(line: bytes, kind: bytes) -> int:
    """N of ``* N KIND ...``; a malformed line is itself a violation (-1)."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[0] != b"*" or parts[2] != kind or not parts[1].isdigit():
        return -1
    return int(parts[1])


def _ascending(uids: Sequence[int]) -> bool:
    return all(a < b for a, b in pairwise(uids))


def _flag_atoms(line: bytes) -> list[bytes]:
    """The flags of ``FLAGS (...)`` in a FETCH line (none when there is no FLAGS item)."""
    start = line.find(b"FLAGS (")
    if start < 0:
        return []
    end = line.find(b")", start)
    return line[start + 7 : end].split()


class StreamChecker:
    """A client's view of one selected mailbox, rebuilt from the lines it is sent."""

    def __init__(self, *, strict: bool | None = None, label: str = "") -> None:
        self.strict = invariants_strict() if strict is None else strict
        self.label = label
        self.client_uids: list[int] = []
        self.top_uid = 0  # highest UID ever announced: new messages must be above it
        self.keywords: set[bytes] = set()
        self.violations = 0

    # --- the lines -------------------------------------------------------------------
    def opened(self, exists_line: bytes, uids: Sequence[int], keywords: Iterable[str]) -> None:
        """SELECT/EXAMINE told the client ``* N EXISTS`` and the keyword list."""
        n = _number(exists_line, b"EXISTS")
        self._require(n == len(uids), f"SELECT says {exists_line!r} for {len(uids)} messages")
        self._require(_ascending(uids), "SELECT's UIDs are not ascending")
        self.client_uids = list(uids)
        self.top_uid = uids[-1] if uids else 0
        self.keywords = {k.encode("utf-8") for k in keywords}

    def flags(self, keywords: Iterable[str]) -> None:
        """A ``* FLAGS`` update: the keywords the client may now see."""
        announced = {k.encode("utf-8") for k in keywords}
        self._require(self.keywords <= announced, "FLAGS dropped keywords already announced")
        self.keywords |= announced

    def exists(self, line: bytes, new_uids: Sequence[int]) -> None:
        n = _number(line, b"EXISTS")
        count = len(self.client_uids)
        self._require(n >= count, f"{line!r} shrinks the count {count}")
        self._require(n == count + len(new_uids),
                      f"{line!r} after {count} does not cover exactly {len(new_uids)} new")
        self._require((not new_uids or new_uids[0] > self.top_uid) and _ascending(new_uids),
                      f"{line!r} announces UIDs {list(new_uids)[:5]} not above {self.top_uid}")
        self.client_uids.extend(new_uids)
        if new_uids:
            self.top_uid = max(self.top_uid, new_uids[-1])

    def recent(self, line: bytes) -> None:
        n = _number(line, b"RECENT")
        self._require(0 <= n <= len(self.client_uids),
                      f"{line!r} above the count {len(self.client_uids)}")

    def expunge(self, line: bytes, uid: int, *, allowed: bool) -> None:
        n = _number(line, b"EXPUNGE")
        self._require(allowed, f"{line!r} where EXPUNGE is not allowed")
        if self._require(1 <= n <= len(self.client_uids),
                         f"{line!r} outside 1..{len(self.client_uids)}"):
            self._require(self.client_uids[n - 1] == uid,
                          f"{line!r} is UID {self.client_uids[n - 1]} to the client, not {uid}")
            del self.client_uids[n - 1]

    def fetch(self, line: bytes, uid: int) -> None:
        n = _number(line, b"FETCH")
        if self._require(1 <= n <= len(self.client_uids),
                         f"{line!r} outside 1..{len(self.client_uids)}"):
            self._require(self.client_uids[n - 1] == uid,
                          f"{line!r} is UID {self.client_uids[n - 1]} to the client, not {uid}")
        unknown = [f for f in _flag_atoms(line)
                   if not f.startswith(b"\\") and f not in self.keywords]
        self._require(not unknown, f"{line!r} shows keywords {unknown} before FLAGS")

    def settled(self, view_uids: Sequence[int]) -> None:
        """End of an update: the client's map must be the view's."""
        # No copy of a list: this runs after every command, on views of 100,000 UIDs.
        same = self.client_uids == (view_uids if isinstance(view_uids, list)
                                    else list(view_uids))
        if not self._require(same,
                             f"client has {len(self.client_uids)} messages, view "
                             f"{len(view_uids)}"):
            self.client_uids = list(view_uids)  # report once, then follow the view

    # --- failing -----------------------------------------------------------------------
    def _require(self, ok: bool, what: str) -> bool:
        if ok:
            return True
        self.violations += 1
        message = f"IMAP stream rule broken{' in ' + self.label if self.label else ''}: {what}"
        if self.strict:
            raise StreamViolation(message)
        log.error("%s", message)
        return False
