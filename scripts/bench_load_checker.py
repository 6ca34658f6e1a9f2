"""The client-side state checker of ``scripts/bench load``.

Each IMAP session gets a ``SessionChecker`` that keeps what RFC 3501 / 9051 let a client know:
the message count of the selected mailbox and the UID of each message number it has learned.
It replays every response the session receives and counts, by kind, what a correct server can
never send:

- ``exists_shrank``: ``* n EXISTS`` below the current count (only EXPUNGE may lower it).
- ``expunge_out_of_range``: ``* n EXPUNGE`` with n < 1 or n > count.
- ``fetch_above_count``: ``* n FETCH`` with n > count (a number the client was never told).
- ``search_above_count``: a (non-UID) SEARCH result above the count.
- ``expunge_during_fetch_store_search``: RFC 3501 §7.4.1 forbids it.
- ``uid_changed``: a message number reported with another UID than before.
- ``uids_not_ascending``: a UID not between the UIDs of the known messages around it.
- ``expunged_uid_returned``: a UID reported again after its EXPUNGE.
- ``count_mismatch``: a verifying ``FETCH 1:* (UID FLAGS)`` answered OK returned not exactly
  messages 1..count: the server's count differs from what it told the client.
- ``recent_in_two_sessions``: ``\\Recent`` shown for one message in two read-write sessions
  (tracked per user, mailbox and UIDVALIDITY across all sessions of the run).
- ``select_without_exists``: a SELECT/EXAMINE answered OK without ``* n EXISTS``.
- ``update_while_not_selected``: EXISTS/EXPUNGE/FETCH/RECENT with no mailbox selected.
- ``unparseable_response``: a response the IMAP grammar does not allow.

After a violation the checker adopts the server's word where it can, so that one bug is
counted once rather than on every later response.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bench_load_wire import ParseError, Response, Tagged, Untagged, parse_response

NO_EXPUNGE_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH"})  # not their UID forms
SELECTING = frozenset({"SELECT", "EXAMINE"})
TRANSCRIPT_LINES = 30  # the last lines either way
COMMAND_LINES = 10  # the last client lines, which a long FETCH answer would push out
LINE_CHARS = 240


@dataclass
class Slot:
    """One message of the selected mailbox, as the client knows it."""

    uid: int | None = None
    recent: bool = False
    claimed: bool = False  # its \Recent was registered with the RecentRegistry


@dataclass
class ViolationLog:
    """Violation counts of all sessions, and the first few with the transcript before them."""

    max_examples: int = 5
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, session: str, detail: str, transcript: list[str],
            commands: list[str]) -> None:
        """Count it; keep it as an example if it is the first of its kind or if there are
        fewer than ``max_examples`` yet."""
        self.counts[kind] += 1
        if self.counts[kind] == 1 or len(self.examples) < self.max_examples:
            self.examples.append({"kind": kind, "session": session, "detail": detail,
                                  "recent_commands": commands, "transcript": transcript})

    def summary(self) -> dict[str, Any]:
        return {"total": sum(self.counts.values()), "by_kind": dict(sorted(self.counts.items())),
                "examples": self.examples}


class RecentRegistry:
    """Which read-write sessions were shown ``\\Recent`` for which message, across sessions."""

    def __init__(self) -> None:
        self.holders: dict[tuple[str, str, int, int], set[str]] = {}

    def claim(self, key: tuple[str, str, int, int], connection: str) -> set[str]:
        """Record ``connection`` as holding ``key``; returns the other holders before it."""
        holders = self.holders.setdefault(key, set())
        others = holders - {connection}
        holders.add(connection)
        return others


def render(raw: bytes) -> str:
    """A response for the transcript: literals shown by size, long lines cut."""
    parts = raw.rstrip(b"\r\n").split(b"\r\n")
    text = parts[0].decode("utf-8", "replace")
    if len(parts) > 1:
        text += f" <+{len(raw) - len(parts[0])} octets in literals>"
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS] + "…"


class SessionChecker:
    """Replays one connection's responses; see the module docstring for what it counts."""

    def __init__(self, connection: str, user: str, registry: RecentRegistry,
                 log: ViolationLog) -> None:
        self.connection, self.user = connection, user
        self.registry, self.log = registry, log
        # Client lines as text, server responses as received (rendered only when needed).
        self.transcript: deque[str | bytes] = deque(maxlen=TRANSCRIPT_LINES)
        self.commands: deque[str] = deque(maxlen=COMMAND_LINES)
        self.mailbox: str | None = None  # selected (or being selected) mailbox
        self.selected = False
        self.readonly = False
        self.uidvalidity = 0
        self.slots: list[Slot] = []
        self.top = -1  # no slot above this index has a known UID (a bound, for speed)
        self.expunged_uids: set[int] = set()
        self.command: str | None = None  # the command in progress, e.g. "UID FETCH"
        self.exists_seen = False
        self.verify: dict[int, int | None] | None = None  # msn -> uid of a verifying FETCH
        self.verify_start = 0

    @property
    def count(self) -> int:
        return len(self.slots)

    def uid_of(self, msn: int) -> int | None:
        return self.slots[msn - 1].uid if 1 <= msn <= len(self.slots) else None

    # --- what the client does ----------------------------------------------------------------
    def sent(self, line: str) -> None:
        line = "C: " + (line if len(line) <= LINE_CHARS else line[:LINE_CHARS])
        self.transcript.append(line)
        self.commands.append(line)

    def begin(self, command: str, mailbox: str | None = None, verify: bool = False) -> None:
        """A command is sent. ``verify``: it is ``FETCH 1:* (UID FLAGS)``, to compare counts."""
        self.command = command.upper()
        if self.command in SELECTING:
            # RFC 3501 §6.3.1: SELECT closes the previous mailbox, even when it fails.
            self.mailbox, self.selected = mailbox, False
            self.readonly = self.command == "EXAMINE"
            self.uidvalidity, self.slots, self.top, self.exists_seen = 0, [], -1, False
            self.expunged_uids = set()
        if verify:
            self.verify, self.verify_start = {}, self.count

    def feed(self, raw: bytes) -> Response | None:
        """One response from the server; returns it parsed, or None if it cannot be read."""
        self.transcript.append(raw)
        try:
            response = parse_response(raw)
        except ParseError as e:
            self.violation("unparseable_response", f"{e}: {render(raw)}")
            return None
        if isinstance(response, Untagged):
            self.untagged(response)
        elif isinstance(response, Tagged):
            self.tagged(response)
        return response

    # --- applying responses ------------------------------------------------------------------
    def violation(self, kind: str, detail: str) -> None:
        self.log.add(kind, self.connection, detail, self.recent_lines(), list(self.commands))

    def recent_lines(self) -> list[str]:
        return [x if isinstance(x, str) else "S: " + render(x) for x in self.transcript]

    def untagged(self, r: Untagged) -> None:
        if r.code == "UIDVALIDITY" and r.code_args.isdigit():
            self.uidvalidity = int(r.code_args)
        if r.kind == "SEARCH" and self.command == "SEARCH":
            above = [int(str(v)) for v in r.values if not 1 <= int(str(v)) <= self.count]
            if above:
                self.violation("search_above_count", f"{above[:5]} with count {self.count}")
        if r.number is None:
            return
        if not self.selected and self.command not in SELECTING:
            self.violation("update_while_not_selected", f"* {r.number} {r.kind}")
        elif r.kind == "EXISTS":
            self.exists(r.number)
        elif r.kind == "EXPUNGE":
            self.expunge(r.number)
        elif r.kind == "FETCH":
            self.fetch(r)

    def exists(self, n: int) -> None:
        if self.command in SELECTING and not self.exists_seen:
            self.exists_seen = True
            self.slots, self.top = [Slot() for _ in range(n)], -1
        elif n < self.count:
            # Adopt the lower count, but the messages cut off were not expunged: their UIDs
            # may come back without being a second violation.
            self.violation("exists_shrank", f"* {n} EXISTS with count {self.count}")
            del self.slots[n:]
            self.top = min(self.top, n - 1)
        else:
            self.slots.extend(Slot() for _ in range(n - self.count))

    def expunge(self, n: int) -> None:
        if self.command in NO_EXPUNGE_COMMANDS:
            self.violation("expunge_during_fetch_store_search", f"* {n} EXPUNGE in {self.command}")
        if not 1 <= n <= self.count:
            self.violation("expunge_out_of_range", f"* {n} EXPUNGE with count {self.count}")
            return
        uid = self.slots.pop(n - 1).uid
        if n - 1 <= self.top:
            self.top -= 1
        if uid is not None:
            self.expunged_uids.add(uid)

    def fetch(self, r: Untagged) -> None:
        n = r.number or 0
        if self.verify is not None:
            self.verify[n] = r.uid
        if n > self.count:  # n >= 1: the parser refuses 0
            self.violation("fetch_above_count", f"* {n} FETCH with count {self.count}")
            return
        slot = self.slots[n - 1]
        if r.uid is not None:
            self.learn_uid(n, slot, r.uid)
        if r.flags is not None and any(f.lower() == "\\recent" for f in r.flags):
            slot.recent = True
        self.claim_recent(slot)

    def learn_uid(self, n: int, slot: Slot, uid: int) -> None:
        if uid in self.expunged_uids:
            self.violation("expunged_uid_returned", f"* {n} FETCH (UID {uid}) after its EXPUNGE")
        elif slot.uid is not None:
            if slot.uid != uid:
                self.violation("uid_changed", f"message {n}: UID {slot.uid}, now {uid}")
        else:
            lower, higher = self.known_uid(n - 2, -1) or 0, self.known_uid(n, 1)
            if uid <= lower or (higher is not None and uid >= higher):
                self.violation("uids_not_ascending",
                               f"message {n}: UID {uid} between UIDs {lower} and {higher}")
            else:
                slot.uid = uid
                self.top = max(self.top, n - 1)

    def known_uid(self, index: int, step: int) -> int | None:
        """The first UID known from ``slots[index]`` on, walking by ``step``."""
        slots = self.slots
        if step < 0:
            index = min(index, self.top)
        while 0 <= index <= self.top:
            if slots[index].uid is not None:
                return slots[index].uid
            index += step
        return None

    def claim_recent(self, slot: Slot) -> None:
        # EXAMINE may show \Recent without taking it (RFC 3501 §6.3.2), so only read-write
        # sessions must never share one.
        if not slot.recent or slot.claimed or slot.uid is None or self.readonly:
            return
        slot.claimed = True
        key = (self.user, (self.mailbox or "").upper(), self.uidvalidity, slot.uid)
        others = self.registry.claim(key, self.connection)
        if others:
            self.violation("recent_in_two_sessions",
                           f"UID {slot.uid} of {self.mailbox} also \\Recent in {sorted(others)}")

    def tagged(self, r: Tagged) -> None:
        if self.verify is not None:
            self.check_verify(r)
        if self.command in SELECTING:
            self.selected = r.status == "OK"
            if r.status == "OK":
                self.readonly = self.readonly or r.code == "READ-ONLY"
                if r.code == "READ-WRITE":
                    self.readonly = False
                if not self.exists_seen:
                    self.violation("select_without_exists", f"{self.command} {self.mailbox}")
            else:
                self.slots, self.top, self.mailbox = [], -1, None
        elif self.command in ("CLOSE", "UNSELECT") and r.status == "OK":
            self.selected, self.slots, self.top, self.mailbox = False, [], -1, None
        self.command = None

    def check_verify(self, r: Tagged) -> None:
        """After ``FETCH 1:* (UID FLAGS)`` answered OK, the messages returned must be 1..k
        with k between the count before the command and the count now (EXISTS may come
        during a FETCH, EXPUNGE may not). A NO may leave out expunged ones (RFC 2180 §4.1)."""
        seen, self.verify = self.verify or {}, None
        if r.status != "OK":
            return
        k = max(seen, default=0)
        if len(seen) == k and self.verify_start <= k <= self.count:
            return
        missing = [m for m in range(1, k + 1) if m not in seen]
        self.violation("count_mismatch",
                       f"FETCH 1:* returned {len(seen)} messages up to {k} (missing {missing[:5]})"
                       f" with count {self.verify_start} before and {self.count} after")
        # Adopt the server's view so that the next responses are judged against it.
        old = {s.uid: s for s in self.slots if s.uid is not None}
        self.slots = [(old.get(uid) or Slot(uid)) if uid else Slot()
                      for uid in (seen.get(m) for m in range(1, k + 1))]
        self.top = len(self.slots) - 1
