"""The session stream rule, checked on the bytes a selected mailbox sends.

``SelectedMailbox`` keeps the client's message-sequence map; ``StreamChecker`` keeps a
second copy of it built only from the untagged lines the view emits, and compares each
new line with it: every number mentioned is at most the count the client was told, EXISTS
never shrinks the count and covers exactly the messages it announces (new UIDs only,
ascending), each EXPUNGE names a message the client knows and takes one off, FETCH names a
message the client knows and shows only keywords announced by FLAGS, no EXPUNGE where the
command forbids it, and after each update the client's map equals the view's.

The copy is 4 octets a message (``array('I')``). Outside tests it is kept only for views of
up to ``COPY_UP_TO`` messages; a larger view is checked on counts alone (every number within
the count, EXISTS and EXPUNGE counting right, new UIDs ascending above the last one), so a
view of 100,000 messages does not pay 400 KB for a second copy of its UID list.

A violation is a server bug. With ``MAILSTEAD_CHECK_INVARIANTS`` set (the test suite sets
it) it raises ``StreamViolation``, an ``AssertionError``; otherwise it is logged and the
checker adopts the view's map so one bug is reported once, not on every later line.
"""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Iterable, Sequence
from itertools import pairwise

log = logging.getLogger("mailstead.imap.stream")

CHECK_ENV = "MAILSTEAD_CHECK_INVARIANTS"
COPY_UP_TO = 20_000  # messages: a larger view outside tests is checked on counts alone


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

    def __init__(self, *, strict: bool | None = None, label: str = "",
                 copy_up_to: int | None = None) -> None:
        self.strict = invariants_strict() if strict is None else strict
        self.label = label
        # Strict checking (tests) always keeps the copy of the client's UIDs.
        self.copy_up_to = (copy_up_to if copy_up_to is not None
                           else None if self.strict else COPY_UP_TO)
        self.client_uids: array[int] | None = None  # None: counts only (see the docstring)
        self.count = 0  # messages the client was told of
        self.top_uid = 0  # highest UID ever announced: new messages must be above it
        self.keywords: set[bytes] = set()
        self.violations = 0

    # --- the lines -------------------------------------------------------------------
    def opened(self, exists_line: bytes, uids: Sequence[int], keywords: Iterable[str]) -> None:
        """SELECT/EXAMINE told the client ``* N EXISTS`` and the keyword list."""
        n = _number(exists_line, b"EXISTS")
        self._require(n == len(uids), f"SELECT says {exists_line!r} for {len(uids)} messages")
        self.count = len(uids)
        self.top_uid = uids[-1] if uids else 0
        self.keywords = {k.encode("utf-8") for k in keywords}
        if self.copy_up_to is None or len(uids) <= self.copy_up_to:
            self.client_uids = array("I", uids)
            self._require(_ascending(self.client_uids), "SELECT's UIDs are not ascending")
        else:
            self.client_uids = None

    def flags(self, keywords: Iterable[str]) -> None:
        """A ``* FLAGS`` update: the keywords the client may now see."""
        announced = {k.encode("utf-8") for k in keywords}
        self._require(self.keywords <= announced, "FLAGS dropped keywords already announced")
        self.keywords |= announced

    # The checks below run for every line a fan-out writes (1,000 sessions on a mailbox:
    # 1,000 EXISTS), so their messages are made only when a check fails.
    def exists(self, line: bytes, new_uids: Sequence[int]) -> None:
        n = _number(line, b"EXISTS")
        count = self.count
        if n < count:
            self._fail(f"{line!r} shrinks the count {count}")
        if n != count + len(new_uids):
            self._fail(f"{line!r} after {count} does not cover exactly {len(new_uids)} new")
        if not ((not new_uids or new_uids[0] > self.top_uid) and _ascending(new_uids)):
            self._fail(f"{line!r} announces UIDs {list(new_uids)[:5]} not above {self.top_uid}")
        self.count += len(new_uids)
        if self.client_uids is not None:
            self.client_uids.extend(new_uids)
        if new_uids:
            self.top_uid = max(self.top_uid, new_uids[-1])

    def recent(self, line: bytes) -> None:
        n = _number(line, b"RECENT")
        if not 0 <= n <= self.count:
            self._fail(f"{line!r} above the count {self.count}")

    def expunge(self, line: bytes, uid: int, *, allowed: bool) -> None:
        n = _number(line, b"EXPUNGE")
        self._require(allowed, f"{line!r} where EXPUNGE is not allowed")
        if self._require(1 <= n <= self.count, f"{line!r} outside 1..{self.count}"):
            self._is_uid(line, n, uid)
            if self.client_uids is not None:
                del self.client_uids[n - 1]
            self.count -= 1

    def fetch(self, line: bytes, uid: int) -> None:
        n = _number(line, b"FETCH")
        if 1 <= n <= self.count:
            self._is_uid(line, n, uid)
        else:
            self._fail(f"{line!r} outside 1..{self.count}")
        unknown = [f for f in _flag_atoms(line)
                   if not f.startswith(b"\\") and f not in self.keywords]
        if unknown:
            self._fail(f"{line!r} shows keywords {unknown} before FLAGS")

    def _is_uid(self, line: bytes, n: int, uid: int) -> None:
        """Message ``n`` is ``uid`` to the client (when the copy is kept)."""
        if self.client_uids is not None and self.client_uids[n - 1] != uid:
            self._fail(f"{line!r} is UID {self.client_uids[n - 1]} to the client, not {uid}")

    def settled(self, view_uids: Sequence[int]) -> None:
        """End of an update: the client's map must be the view's."""
        # Compared in C when both are arrays: this runs after every command, on views of
        # 100,000 UIDs.
        mine = self.client_uids
        if mine is None:
            same = self.count == len(view_uids)
        else:
            same = mine == (view_uids if isinstance(view_uids, array)
                            else array("I", view_uids))
        if not same:
            self._fail(f"client has {self.count} messages, view {len(view_uids)}")
            # Report once, then follow the view.
            self.count = len(view_uids)
            if mine is not None:
                self.client_uids = array("I", view_uids)

    # --- failing -----------------------------------------------------------------------
    def _require(self, ok: bool, what: str) -> bool:
        if ok:
            return True
        self._fail(what)
        return False

    def _fail(self, what: str) -> None:
        self.violations += 1
        message = f"IMAP stream rule broken{' in ' + self.label if self.label else ''}: {what}"
        if self.strict:
            raise StreamViolation(message)
        log.error("%s", message)
