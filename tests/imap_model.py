"""A careful IMAP client's picture of one session, rebuilt from the server's responses.

``SessionModel`` replays each untagged response exactly as RFC 3501 asks a client to
(EXISTS adds messages, EXPUNGE removes one and renumbers, FETCH carries UID/FLAGS/MODSEQ,
FLAGS/PERMANENTFLAGS, RECENT, VANISHED) and checks, after every response, what a client can
check on its own: every message number is within the count it has been told, EXISTS never
shrinks the count, UIDs ascend with the message number and never change, ``\\Recent`` never
changes within a selection, MODSEQ never goes back, keywords in use are announced by FLAGS,
no EXPUNGE during FETCH/STORE/SEARCH or outside a command. Given the server's truth (a
``Truth``: the mailbox as the store had published it when the tagged line was written), it
also checks at the points where every pending change must have been reported (NOOP, CHECK,
SELECT, EXAMINE, IDLE…DONE and UID commands): the count, the UIDs and the flags all equal
the truth. Then it fills in what it did not know (UIDs and flags of new messages) from the
truth, so later omissions are caught too.

Pure bookkeeping, no I/O: the in-process model test and the socket client both use it.
"""

from __future__ import annotations

import os
import re
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imap_wire import parse_fetch, parse_values

RECENT = "\\Recent"
# Commands after whose tagged OK every change must have been reported (see module doc).
SYNC_VERBS = frozenset({"NOOP", "CHECK", "SELECT", "EXAMINE", "IDLE"})
# RFC 3501 §7.4.1: no EXPUNGE while these run (their UID forms may have them).
NO_EXPUNGE_VERBS = frozenset({"FETCH", "STORE", "SEARCH"})

_NUMBERED = re.compile(rb"\* (\d+) (EXISTS|RECENT|EXPUNGE|FETCH)\b")
_CODE = re.compile(rb"\[([A-Z-]+)(?: ([^\]]*))?\]")
_TRANSCRIPT = 60


# Kinds to count instead of raising (SYNC_MODEL_IGNORE=a,b): to look past a known defect.
IGNORED = frozenset(k for k in os.environ.get("SYNC_MODEL_IGNORE", "").split(",") if k)
TOLERATED: Counter[str] = Counter()


def tolerate(v: Violation) -> None:
    """Raise ``v`` unless its kind is ignored; then only count it."""
    if v.kind not in IGNORED:
        raise v
    TOLERATED[v.kind] += 1


class Violation(AssertionError):
    """A response that a correct server could not have sent at that point."""

    def __init__(self, kind: str, session: str, response: str, expected: str,
                 transcript: list[str], context: str = "") -> None:
        self.kind = kind
        self.session = session
        self.response = response
        self.expected = expected
        self.transcript = transcript
        self.context = context
        super().__init__(self.render())

    def render(self) -> str:
        tail = "\n".join("    " + t for t in self.transcript[-20:])
        head = f"{self.context}\n" if self.context else ""
        return (f"{head}[{self.kind}] session {self.session}\n  response: {self.response}\n"
                f"  expected: {self.expected}\n  last lines of {self.session}:\n{tail}")

    def with_context(self, context: str) -> Violation:
        return Violation(self.kind, self.session, self.response, self.expected,
                         self.transcript, context)


@dataclass(frozen=True, slots=True)
class Truth:
    """One mailbox as the store had published it at one moment."""

    mailbox: str
    uids: tuple[int, ...]
    flags: dict[int, frozenset[str]]


@dataclass(slots=True)
class Entry:
    """One message as the client knows it (None: not told yet)."""

    uid: int | None = None
    flags: frozenset[str] | None = None
    recent: bool | None = None
    modseq: int | None = None


@dataclass(slots=True)
class SilentStore:
    """A ``STORE … .SILENT`` in progress: the client applies its own change."""

    mode: str  # "+", "-" or ""
    flags: frozenset[str]
    targets: list[Entry]
    by_uid: bool


@dataclass(slots=True)
class Cmd:
    """What the session is running, as far as the model needs to know."""

    tag: bytes
    verb: str  # "UID FETCH", "SELECT", …
    text: str
    mailbox: str | None = None
    silent: SilentStore | None = None

    @property
    def base(self) -> str:
        return self.verb.removeprefix("UID ")

    @property
    def uid(self) -> bool:
        return self.verb.startswith("UID ")


@dataclass(slots=True)
class Completion:
    """The tagged line of one command and what it carried."""

    cmd: Cmd
    status: str
    codes: dict[str, str] = field(default_factory=dict)


def flag_set(value: object) -> frozenset[str]:
    assert isinstance(value, list), value
    return frozenset(v.decode() for v in value if isinstance(v, bytes))


def codes_of(line: bytes) -> dict[str, str]:
    return {m.group(1).decode(): (m.group(2) or b"").decode() for m in _CODE.finditer(line)}


def number_set(text: str) -> set[int]:
    """A sequence set without ``*`` (as servers send them in COPYUID, MODIFIED)."""
    out: set[int] = set()
    for part in text.split(","):
        if ":" in part:
            a, b = sorted(int(x) for x in part.split(":"))
            out.update(range(a, b + 1))
        elif part:
            out.add(int(part))
    return out


class SessionModel:
    """The client-side state of one connection; see the module docstring."""

    def __init__(self, name: str, *,
                 on_recent: Callable[[SessionModel, str, int], None] | None = None) -> None:
        self.name = name
        self.on_recent = on_recent  # a message of a read-write selection showed \Recent
        self.transcript: deque[str] = deque(maxlen=_TRANSCRIPT)
        self.selected: str | None = None
        self.readonly = False
        self.entries: list[Entry] = []
        self.recent_count: int | None = None
        self.defined: frozenset[str] | None = None  # the last FLAGS
        self.uidvalidity: dict[str, int] = {}
        self.cmd: Cmd | None = None
        self.expunged_uids: set[int | None] = set()
        self.idling = False
        self.seen_exists = self.seen_recent = False
        self.search: list[int] = []
        self.status: dict[str, dict[str, int]] = {}
        self.copyuid: str | None = None
        self.bye = False

    # --- bookkeeping ---------------------------------------------------------------------
    def fail(self, kind: str, response: bytes | str, expected: str) -> Violation:
        text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
        return Violation(kind, self.name, text[:300], expected, list(self.transcript))

    def violation(self, kind: str, response: bytes | str, expected: str) -> None:
        tolerate(self.fail(kind, response, expected))

    def note(self, direction: str, line: bytes | str) -> None:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        self.transcript.append(f"{direction} {text[:200]}")

    @property
    def count(self) -> int:
        return len(self.entries)

    def known_uids(self) -> set[int]:
        return {e.uid for e in self.entries if e.uid is not None}

    def unknown_intervals(self) -> list[tuple[int, float]]:
        """Open UID intervals in which the messages of unknown UID must lie."""
        out: list[tuple[int, float]] = []
        low = 0
        pending = False
        for e in self.entries:
            if e.uid is None:
                pending = True
            else:
                if pending:
                    out.append((low, e.uid))
                low, pending = e.uid, False
        if pending:
            out.append((low, float("inf")))
        return out

    # --- commands ------------------------------------------------------------------------
    def begin(self, cmd: Cmd) -> None:
        self.note("C:", cmd.tag + b" " + cmd.text.encode())
        self.cmd = cmd
        self.search, self.status, self.copyuid = [], {}, None
        self.expunged_uids: set[int | None] = set()  # by this command (None: UID not known)
        if cmd.verb in ("SELECT", "EXAMINE"):
            # The previous mailbox is closed before the new one is reported (RFC 3501 §6.3.1).
            self._deselect()
            self.selected = cmd.mailbox
            self.readonly = cmd.verb == "EXAMINE"
            self.seen_exists = self.seen_recent = False

    def _deselect(self) -> None:
        self.selected, self.entries, self.recent_count, self.defined = None, [], None, None

    def continuation(self, line: bytes) -> None:
        self.note("S:", line)
        if self.cmd is not None and self.cmd.verb == "IDLE":
            self.idling = True

    # --- untagged responses ---------------------------------------------------------------
    def untagged(self, line: bytes) -> None:
        self.note("S:", line)
        m = _NUMBERED.match(line)
        if m is not None:
            n, what = int(m.group(1)), m.group(2)
            if self.selected is None:
                raise self.fail("response-without-mailbox", line, "no message data while no "
                                "mailbox is selected")
            if what == b"EXISTS":
                self._exists(line, n)
            elif what == b"RECENT":
                self._recent(line, n)
            elif what == b"EXPUNGE":
                self._expunge(line, n)
            else:
                self._fetch(line, n)
            return
        word = line[2:].split(b" ", 1)[0].upper()
        if word == b"FLAGS":
            self.defined = flag_set(parse_values(line[8:])[0])
        elif word in (b"OK", b"NO"):
            self._response_codes(line)
        elif word == b"SEARCH":
            self._search(line)
        elif word == b"STATUS":
            self._status(line)
        elif word == b"VANISHED":
            self._vanished(line)
        elif word == b"BYE":
            self.bye = True
        elif word == b"BAD":
            raise self.fail("untagged-bad", line, "no BAD for a well-formed command")
        elif word not in (b"CAPABILITY", b"ENABLED", b"ID", b"NAMESPACE", b"LIST", b"LSUB",
                          b"ESEARCH"):
            raise self.fail("unknown-response", line, "a response RFC 3501 defines")

    def _in_range(self, line: bytes, n: int) -> bool:
        if 1 <= n <= self.count:
            return True
        self.violation("msn-out-of-range", line, f"a message number in 1..{self.count} "
                       "(the count this session was told; RFC 3501 §2.3.1.2, §7.4)")
        return False

    def _exists(self, line: bytes, n: int) -> None:
        if n < self.count:
            self.violation("exists-decreased", line, f"EXISTS >= {self.count}: only EXPUNGE "
                           "lowers the count (RFC 3501 §7.3.1)")
            del self.entries[n:]
        self.entries.extend(Entry() for _ in range(n - self.count))
        self.seen_exists = True

    def _recent(self, line: bytes, n: int) -> None:
        if n > self.count:
            self.violation("recent-out-of-range", line, f"RECENT <= {self.count} messages")
        known = sum(1 for e in self.entries if e.recent)
        if n < known:
            self.violation("recent-count", line, f"RECENT >= {known}: that many messages of "
                            "this selection showed \\Recent")
        self.recent_count = n
        self.seen_recent = True

    def _expunge(self, line: bytes, n: int) -> None:
        if not self._in_range(line, n):
            return
        cmd = self.cmd
        if cmd is None and not self.idling:
            self.violation("expunge-without-command", line, "no EXPUNGE while no command is in "
                            "progress (RFC 3501 §7.4.1)")
        if cmd is not None and not cmd.uid and cmd.verb in NO_EXPUNGE_VERBS:
            self.violation("expunge-during-" + cmd.verb.lower(), line, f"no EXPUNGE during "
                            f"{cmd.verb} (RFC 3501 §7.4.1)")
        gone = self.entries.pop(n - 1)
        self.expunged_uids.add(gone.uid)
        if self.recent_count is not None:
            if gone.recent:
                self.recent_count -= 1
            elif gone.recent is None:
                self.recent_count = None

    def _fetch(self, line: bytes, n: int) -> None:
        if not self._in_range(line, n):
            return
        try:
            _, items = parse_fetch(line)
        except (AssertionError, ValueError, IndexError):
            raise self.fail("unparsable-response", line, "a well-formed FETCH") from None
        entry = self.entries[n - 1]
        if b"UID" in items:
            raw = items[b"UID"]
            assert isinstance(raw, bytes)
            self._learn_uid(line, n, entry, int(raw))
        if b"FLAGS" in items:
            flags = flag_set(items[b"FLAGS"])
            recent = RECENT in flags
            if entry.recent is not None and entry.recent != recent:
                was = "set" if entry.recent else "unset"
                self.violation("recent-changed", line, f"\\Recent {was} as before: it "
                                "cannot change within a selection (RFC 3501 §2.3.2)")
            entry.flags, entry.recent = flags - {RECENT}, recent
            self._check_keywords(line, entry.flags)
            if recent and entry.uid is not None:
                self._recent_seen(entry.uid)
        if b"MODSEQ" in items:
            value = items[b"MODSEQ"]
            modseq = int(value[0]) if isinstance(value, list) and value else 0  # type: ignore[arg-type]
            if entry.modseq is not None and modseq < entry.modseq:
                self.violation("modseq-decreased", line, f"MODSEQ >= {entry.modseq} (RFC 7162 "
                                "§3.1.2: a message's mod-sequence only grows)")
            entry.modseq = modseq

    def _learn_uid(self, line: bytes, n: int, entry: Entry, uid: int) -> None:
        if entry.uid is not None and entry.uid != uid:
            self.violation("uid-changed", line, f"UID {entry.uid} for message {n}, as told "
                           "before (RFC 3501 §2.3.1.1)")
            return
        before = [e.uid for e in self.entries[: n - 1] if e.uid is not None]
        after = [e.uid for e in self.entries[n:] if e.uid is not None]
        if (before and before[-1] >= uid) or (after and after[0] <= uid):
            self.violation("uid-order", line, f"a UID between {before[-1:]} and {after[:1]}: "
                           "UIDs ascend with message numbers (RFC 3501 §2.3.1.1)")
            return
        if entry.uid is None:
            entry.uid = uid
            if entry.recent:
                self._recent_seen(uid)

    def _recent_seen(self, uid: int) -> None:
        if self.on_recent is not None and not self.readonly and self.selected is not None:
            self.on_recent(self, self.selected, uid)

    def _check_keywords(self, line: bytes, flags: frozenset[str]) -> None:
        if self.defined is not None and not flags <= self.defined:
            missing = sorted(flags - self.defined)
            self.violation("keyword-not-in-flags", line, f"{missing} announced by an "
                            "untagged FLAGS before use (RFC 3501 §7.2.6)")

    def _response_codes(self, line: bytes) -> None:
        codes = codes_of(line)
        if "UNSEEN" in codes:
            self._in_range(line, int(codes["UNSEEN"]))
        if "UIDVALIDITY" in codes and self.selected is not None:
            value = int(codes["UIDVALIDITY"])
            if self.uidvalidity.setdefault(self.selected, value) != value:
                self.violation("uidvalidity-changed", line,
                                f"UIDVALIDITY {self.uidvalidity[self.selected]} as before")
        if "UIDNEXT" in codes:
            top = max(self.known_uids(), default=0)
            if int(codes["UIDNEXT"]) <= top:
                self.violation("uidnext-too-low", line, f"UIDNEXT > {top}, a UID it reported")
        if "COPYUID" in codes:
            self.copyuid = codes["COPYUID"]

    def _search(self, line: bytes) -> None:
        numbers = [int(x) for x in line[8:].split(b"(")[0].split()]
        if self.cmd is not None and not self.cmd.uid:
            for n in numbers:
                self._in_range(line, n)
        self.search = numbers

    def _status(self, line: bytes) -> None:
        values = parse_values(line[9:])
        name, items = values[0], values[1]
        assert isinstance(name, bytes) and isinstance(items, list), line
        pairs = {items[i].decode(): int(items[i + 1])  # type: ignore[union-attr, arg-type]
                 for i in range(0, len(items), 2)}
        self.status[name.decode()] = pairs

    def _vanished(self, line: bytes) -> None:
        rest = line[11:]
        if rest.startswith(b"(EARLIER)"):
            return
        for uid in number_set(rest.decode().strip()):
            hits = [i for i, e in enumerate(self.entries) if e.uid == uid]
            if hits:
                del self.entries[hits[0]]

    # --- the tagged line ----------------------------------------------------------------
    def tagged(self, line: bytes, truth: Truth | Sequence[Truth] | None = None) -> Completion:
        """End the running command; ``truth``: the selected mailbox when the line was written,
        or the states it may be in (see ``sync``)."""
        self.note("S:", line)
        cmd = self.cmd
        if cmd is None or not line.startswith(cmd.tag + b" "):
            raise self.fail("unexpected-tag", line, f"a line tagged {cmd.tag if cmd else None!r}")
        self.cmd, self.idling = None, False
        status = line[len(cmd.tag) + 1:].split(b" ", 1)[0].decode()
        done = Completion(cmd, status, codes_of(line))
        if cmd.verb in ("SELECT", "EXAMINE"):
            self._selected(line, done)
        elif cmd.verb in ("UNSELECT", "CLOSE") and status == "OK":
            self._deselect()
        elif cmd.silent is not None and status == "OK":
            self._apply_silent(cmd.silent, done.codes.get("MODIFIED"))
        if status == "OK" and self.selected is not None and truth is not None and (
                cmd.verb in SYNC_VERBS or cmd.uid):
            self.sync(line, truth)
            if cmd.verb == "UID SEARCH":
                # (It may list messages whose EXPUNGE follows it in the same command.)
                stray = set(self.search) - self.known_uids() - self.expunged_uids
                if stray and None not in self.expunged_uids:
                    self.violation("search-unknown-uid", line, f"no UIDs outside the view "
                                    f"(got {sorted(stray)})")
        return done

    def _agrees(self, truth: Truth) -> bool:
        """The view as told equals ``truth`` (what it was not told yet aside)."""
        if self.count != len(truth.uids):
            return False
        return all((e.uid is None or e.uid == uid)
                   and (e.flags is None or e.flags == truth.flags[uid] - {RECENT})
                   for e, uid in zip(self.entries, truth.uids, strict=True))

    def _selected(self, line: bytes, done: Completion) -> None:
        if done.status != "OK":
            self._deselect()
            return
        if not (self.seen_exists and self.seen_recent):
            self.violation("select-incomplete", line, "EXISTS and RECENT before the tagged OK "
                            "of SELECT/EXAMINE (RFC 3501 §6.3.1, §6.3.2)")
        want = "READ-ONLY" if self.readonly else "READ-WRITE"
        if want not in done.codes:
            self.violation("select-access", line, f"[{want}]")

    def _apply_silent(self, silent: SilentStore, modified: str | None) -> None:
        refused = number_set(modified) if modified else set()
        for e in silent.targets:
            if e not in self.entries or e.flags is None:
                continue
            key = e.uid if silent.by_uid else self.entries.index(e) + 1
            if key is None and refused:
                # MODIFIED names UIDs (RFC 7162 §3.1.3): without this message's UID the
                # client cannot tell whether its change was refused, so it knows nothing.
                e.flags = None
                continue
            if key in refused:
                continue
            if silent.mode == "+":
                e.flags = e.flags | silent.flags
            elif silent.mode == "-":
                e.flags = e.flags - silent.flags
            else:
                e.flags = silent.flags

    def sync(self, line: bytes, truths: Truth | Sequence[Truth]) -> None:
        """Every change was due before ``line``: the view must equal the truth; learn it.

        ``truths`` may hold several states, oldest first: the first is what was published
        when the line was written (every view must have caught up with it), the later ones
        were committed by then, and a view that read the store may show one of those. The
        view must equal one of them; a mismatch is reported against the first.
        """
        candidates = [truths] if isinstance(truths, Truth) else list(truths)
        if not candidates or candidates[0].mailbox != self.selected:
            return
        agreeing = [t for t in candidates if self._agrees(t)] or candidates[:1]
        truth = agreeing[0]
        if self.count != len(truth.uids):
            self.violation("count-mismatch", line, f"{len(truth.uids)} messages (UIDs "
                           f"{list(truth.uids)[-12:]}…) as in the store; this session was "
                           f"told {self.count}")
            self.entries = [Entry() for _ in truth.uids]  # (ignored: start again from the truth)
        for i, (e, uid) in enumerate(zip(self.entries, truth.uids, strict=True), 1):
            if e.uid is not None and e.uid != uid:
                self.violation("uid-mismatch", line, f"message {i} is UID {uid} in the store; "
                               f"this session was told UID {e.uid}")
                e.uid, e.recent = None, None
            want = truth.flags[uid] - {RECENT}
            if e.flags is not None and e.flags != want:
                self.violation("flags-mismatch", line, f"message {i} (UID {uid}) has flags "
                               f"{sorted(want)} in the store; this session was told "
                               f"{sorted(e.flags)}")
        # Learn what the client was not told, where the states it may be in agree: a SELECT
        # that read a commit not yet published tells no flags, so the client's flags are
        # those of the snapshot it cannot name, and they stay unknown until it is told.
        for i, e in enumerate(self.entries):
            uids = {t.uids[i] for t in agreeing}
            if len(uids) != 1:
                continue
            uid = uids.pop()
            if e.uid is None:
                e.uid = uid
                if e.recent:
                    self._recent_seen(uid)
            flags = {t.flags[uid] - {RECENT} for t in agreeing}
            e.flags = flags.pop() if len(flags) == 1 else None
