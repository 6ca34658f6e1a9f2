"""Crash safety: SIGKILL the server under a mixed load, restart, and check what survived.

Client threads run SMTP and LMTP deliveries, IMAP APPENDs with STOREs and EXPUNGEs, and
POP3 sessions that DELE and QUIT, against one server. At a moment chosen by a seeded
random generator the server is killed with SIGKILL; every client records exactly which
operations were acknowledged before that (SMTP/LMTP ``250``, ``APPEND OK [APPENDUID v u]``,
``STORE OK``, ``UID EXPUNGE OK``, POP3 ``QUIT +OK``). Then the store must pass SQLite's
integrity check, the server must restart, and:

* every acknowledged message is present exactly once and byte-intact (each message has a
  unique Message-ID), unless an acknowledged deletion removed it;
* an unacknowledged delivery or APPEND is absent or complete and intact: no message with
  other bytes than were sent, none that was never sent, none twice;
* acknowledged flag changes are there; acknowledged expunges and POP3 deletions are in
  effect; an unacknowledged POP3 QUIT applied all of its deletions or none;
* what one restart showed stays so (no message comes back, none disappears by itself);
* UIDs are never reused: UIDNEXT is above every UID seen before the kill, and a new
  APPEND gets a higher UID.

The data folder is kept from one kill point to the next, so later rounds also check the
earlier rounds' mail.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import fuzzlib as F
from conftest import ServerProcess

SEED = int(os.environ.get("MAILSTEAD_CRASH_SEED") or 20240917)
KILL_POINTS = 5
USER = "crash"
RCPT = f"{USER}@example.org"
OP_ERRORS = (OSError, ConnectionError, TimeoutError, AssertionError)


# --- the record of what happened ----------------------------------------------------------------
@dataclass
class Pop3Quit:
    mids: frozenset[str]
    acked: bool


@dataclass
class Model:
    """Everything the clients sent and what the server acknowledged, over all rounds."""

    sent: dict[str, bytes] = field(default_factory=dict)  # mid -> octets as sent
    via: dict[str, str] = field(default_factory=dict)  # mid -> smtp | lmtp | imap
    acked: set[str] = field(default_factory=set)
    uid_of: dict[str, int] = field(default_factory=dict)
    delete_tried: set[str] = field(default_factory=set)
    delete_acked: set[str] = field(default_factory=set)
    flags_acked: dict[str, set[str]] = field(default_factory=dict)
    pop3_quits: list[Pop3Quit] = field(default_factory=list)
    max_uid: int = 0
    present: set[str] = field(default_factory=set)  # present at the last restart
    gone: set[str] = field(default_factory=set)  # absent at some restart
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=dict)
    pop3_top_errors: list[bytes] = field(default_factory=list)

    def bump(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def saw_uid(self, uid: int) -> None:
        with self.lock:
            self.max_uid = max(self.max_uid, uid)


def message(mid_tag: str, rng: random.Random) -> tuple[str, bytes]:
    """A message whose Message-ID names it, with a body of random size and content."""
    mid = f"<{mid_tag}@crash.test>"
    lines = []
    # Mostly small; one in ten about 400 KB, so that some are in flight at the kill.
    count = rng.randint(5000, 6000) if rng.random() < 0.1 else rng.randint(1, 300)
    for _ in range(count):
        n = rng.randint(0, 76)
        lines.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz .,-0123456789")
                             for _ in range(n)).encode())
    body = b"\r\n".join(lines) + b"\r\n"
    head = (f"From: crash@example.net\r\nTo: {RCPT}\r\nSubject: {mid_tag}\r\n"
            f"Message-ID: {mid}\r\n\r\n").encode()
    return mid, head + body


MID_RE = re.compile(rb"^Message-ID: (<[^>\r\n]*>)\r?$", re.MULTILINE | re.IGNORECASE)


def mid_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    m = MID_RE.search(head)
    return m.group(1).decode() if m else None


# --- the clients -------------------------------------------------------------------------------
class Load:
    """The client threads of one round."""

    def __init__(self, server: ServerProcess, model: Model, rnd: int, seed: int) -> None:
        self.server = server
        self.model = model
        self.rnd = rnd
        self.seed = seed
        self.stop = threading.Event()
        self.killing = threading.Event()  # set just before the SIGKILL
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def spawn(self, name: str, fn: Callable[[random.Random], None]) -> None:
        rng = random.Random(f"{self.seed}-{self.rnd}-{name}")

        def run() -> None:
            try:
                fn(rng)
            except OP_ERRORS as exc:
                if not self.killing.is_set():  # failing while the server runs: report it
                    self.errors.append(f"{name}: {exc!r}")
            except Exception as exc:  # a bug in the test: report it
                self.errors.append(f"{name}: {exc!r}")

        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def start(self) -> None:
        self.spawn("smtp", lambda rng: self.deliver(rng, "smtp"))
        self.spawn("lmtp", lambda rng: self.deliver(rng, "lmtp"))
        self.spawn("imapA", lambda rng: self.imap(rng, "A"))
        self.spawn("imapB", lambda rng: self.imap(rng, "B"))
        self.spawn("pop3", self.pop3)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), f"client thread {t.name} hangs"
        assert not self.errors, self.errors

    # -- SMTP / LMTP --------------------------------------------------------------------------
    def deliver(self, rng: random.Random, proto: str) -> None:
        m = self.model
        c = F.LineClient(self.server.port(proto))
        assert c.smtp_reply()[0].startswith(b"220")
        hello = "LHLO" if proto == "lmtp" else "EHLO"
        assert c.smtp(f"{hello} crash.test")[-1].startswith(b"250")
        k = 0
        while not self.stop.is_set():
            k += 1
            mid, data = message(f"{proto}.{self.rnd}.{k}", rng)
            assert c.smtp("MAIL FROM:<load@example.net>")[-1].startswith(b"250")
            assert c.smtp(f"RCPT TO:<{RCPT}>")[-1].startswith(b"250")
            assert c.smtp("DATA")[-1].startswith(b"354")
            with m.lock:
                m.sent[mid] = data
                m.via[mid] = proto
            stuffed = re.sub(rb"(?m)^\.", b"..", data)
            reply = c.smtp(stuffed + b".")
            if reply[-1].startswith(b"250"):
                with m.lock:
                    m.acked.add(mid)
                m.bump(f"{proto} 250")

    # -- IMAP ---------------------------------------------------------------------------------
    def imap(self, rng: random.Random, who: str) -> None:
        m = self.model
        c = F.imap_login(self.server.port("imap"), USER, "INBOX")
        mine: list[tuple[str, int]] = []  # appended by this thread in any round, (mid, uid)
        with m.lock:
            mine += [(mid, uid) for mid, uid in m.uid_of.items()
                     if m.via.get(mid) == f"imap{who}" and mid in m.present
                     and mid not in m.delete_tried]
        k = 0
        while not self.stop.is_set():
            k += 1
            tag = f"{who}{k}"
            roll = rng.random()
            if roll < 0.55 or not mine:
                mid, data = message(f"imap{who}.{self.rnd}.{k}", rng)
                flags = rng.choice(["", "(\\Seen)", "($Label1 \\Draft)"])
                with m.lock:
                    m.sent[mid] = data
                    m.via[mid] = f"imap{who}"
                head = f"{tag} APPEND INBOX {flags} {{{len(data)}+}}".replace("  ", " ")
                c.send(head.encode() + b"\r\n" + data + b"\r\n")
                r = c.imap_collect(tag)
                ok = re.match(rb"\S+ OK \[APPENDUID (\d+) (\d+)\]", r[-1])
                assert ok, r
                uid = int(ok.group(2))
                m.saw_uid(uid)
                with m.lock:
                    m.acked.add(mid)
                    m.uid_of[mid] = uid
                    if flags:
                        m.flags_acked.setdefault(mid, set()).update(flags[1:-1].split())
                mine.append((mid, uid))
                m.bump("APPEND OK")
            elif roll < 0.85:
                mid, uid = rng.choice(mine)
                kw = f"$k{self.rnd}x{who}{k}"
                flags = f"\\Flagged {kw}" if rng.random() < 0.5 else kw
                r = c.imap(tag, f"UID STORE {uid} +FLAGS.SILENT ({flags})")
                assert r[-1].startswith(f"{tag} OK".encode()), r
                with m.lock:
                    m.flags_acked.setdefault(mid, set()).update(flags.split())
                m.bump("STORE OK")
            else:
                mid, uid = mine.pop(rng.randrange(len(mine)))
                with m.lock:
                    m.delete_tried.add(mid)
                r = c.imap(tag + "s", f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
                assert r[-1].startswith(f"{tag}s OK".encode()), r
                r = c.imap(tag, f"UID EXPUNGE {uid}")
                assert r[-1].startswith(f"{tag} OK".encode()), r
                with m.lock:
                    m.delete_acked.add(mid)
                m.bump("EXPUNGE OK")

    # -- POP3 ---------------------------------------------------------------------------------
    def pop3(self, rng: random.Random) -> None:
        """Sessions that DELE a few SMTP/LMTP-delivered messages and QUIT.

        (The IMAP threads expunge only what they appended, so each message has one
        deleter and an unacknowledged QUIT can be checked for all-or-nothing.)
        """
        m = self.model
        while not self.stop.is_set():
            time.sleep(rng.uniform(0.02, 0.1))
            c = F.LineClient(self.server.port("pop3"))
            try:
                assert c.line().startswith(b"+OK")
                assert c.cmd(f"USER {USER}").startswith(b"+OK")
                reply = c.cmd(f"PASS {F.PASSWORD}")
                if b"[IN-USE]" in reply:
                    continue
                assert reply.startswith(b"+OK"), reply
                assert c.cmd("UIDL").startswith(b"+OK")
                listing = [ln.split() for ln in c.pop3_multi()[:-1]]
                for _, uidl in listing:
                    m.saw_uid(int(uidl.split(b".")[1]))
                rng.shuffle(listing)
                chosen: set[str] = set()
                want = rng.randint(1, 3)
                for number, _ in listing[:12]:
                    if len(chosen) >= want:
                        break
                    reply = c.cmd(b"TOP " + number + b" 0")
                    if not reply.startswith(b"+OK"):
                        # Expunged over IMAP since this session's snapshot was taken.
                        assert reply.startswith(b"-ERR"), reply
                        m.pop3_top_errors.append(reply)
                        continue
                    head = b"\r\n".join(c.pop3_multi()[:-1]) + b"\r\n\r\n"
                    mid = mid_of(head)
                    with m.lock:
                        deliverable = (mid is not None and m.via.get(mid) in ("smtp", "lmtp")
                                       and mid not in m.delete_tried)
                        if deliverable:
                            m.delete_tried.add(mid)
                    if deliverable:
                        assert c.cmd(b"DELE " + number).startswith(b"+OK")
                        chosen.add(mid)
                quit_ = Pop3Quit(frozenset(chosen), acked=False)
                with m.lock:
                    m.pop3_quits.append(quit_)
                if c.cmd("QUIT").startswith(b"+OK"):
                    quit_.acked = True
                    with m.lock:
                        m.delete_acked.update(chosen)
                    m.bump("POP3 QUIT +OK")
            finally:
                c.close()


# --- checking after a restart --------------------------------------------------------------------
@dataclass
class Seen:
    uid: int
    flags: set[str]
    data: bytes


def fetch_all(server: ServerProcess) -> tuple[list[Seen], int, int]:
    """Every INBOX message over IMAP, and the mailbox's UIDNEXT and UIDVALIDITY."""
    with F.imap_login(server.port("imap"), USER) as c:
        r = c.imap("S1", "STATUS INBOX (UIDNEXT UIDVALIDITY MESSAGES)")
        assert r[-1].startswith(b"S1 OK"), r
        uidnext = int(re.search(rb"UIDNEXT (\d+)", r[0]).group(1))
        uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", r[0]).group(1))
        r = c.imap("S2", "EXAMINE INBOX")
        assert r[-1].startswith(b"S2 OK"), r
        r = c.imap("S3", "UID FETCH 1:* (UID FLAGS BODY.PEEK[])", timeout=60)
        assert r[-1].startswith(b"S3 OK"), r
    out = []
    for resp in r[:-1]:
        if not re.match(rb"\* \d+ FETCH \(", resp):
            continue
        lit = re.search(rb"BODY\[\] \{(\d+)\}\r\n", resp)
        assert lit, resp[:300]
        start = lit.end()
        data = resp[start : start + int(lit.group(1))]
        meta = resp[: lit.start()] + resp[start + len(data) :]
        uid = int(re.search(rb"UID (\d+)", meta).group(1))
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode().split())
        out.append(Seen(uid, flags, data))
    return out, uidnext, uidvalidity


def intact(model: Model, mid: str, data: bytes) -> bool:
    sent = model.sent[mid]
    if model.via[mid].startswith("imap"):
        return data == sent
    # SMTP/LMTP: our trace headers, then exactly the octets sent.
    if not data.endswith(sent):
        return False
    trace = data[: len(data) - len(sent)]
    return trace.startswith(b"Return-Path: ") and b"\r\nReceived: from " in trace


def verify(server: ServerProcess, model: Model, rnd: int, max_uid_before: int) -> dict[str, int]:
    seen, uidnext, _ = fetch_all(server)
    problems: list[str] = []
    by_mid: dict[str, list[Seen]] = {}
    for s in seen:
        mid = mid_of(s.data)
        if mid is None or mid not in model.sent:
            problems.append(f"UID {s.uid}: a message nobody sent: {s.data[:200]!r}")
            continue
        by_mid.setdefault(mid, []).append(s)
        if not intact(model, mid, s.data):
            problems.append(f"{mid} (UID {s.uid}): octets differ from what was sent "
                            f"({len(s.data)} stored, {len(model.sent[mid])} sent)")
        known = model.uid_of.get(mid)
        if known is not None and known != s.uid:
            problems.append(f"{mid}: UID {s.uid} now, UID {known} before")
    for mid, copies in by_mid.items():
        if len(copies) > 1:
            problems.append(f"{mid} is there {len(copies)} times (UIDs "
                            f"{[c.uid for c in copies]})")
    present = set(by_mid)
    for mid in sorted(model.acked - model.delete_tried - present):
        problems.append(f"acknowledged {mid} ({model.via[mid]}) is missing")
    for mid in sorted((model.present - model.delete_tried) - present):
        problems.append(f"{mid} was there after the previous restart and is now missing")
    for mid in sorted(model.delete_acked & present):
        problems.append(f"{mid}: its deletion was acknowledged but it is still there")
    for mid in sorted(model.gone & present):
        problems.append(f"{mid} was absent after an earlier restart and is back")
    for mid in sorted(present):
        want = model.flags_acked.get(mid, set())
        have = by_mid[mid][0].flags
        missing = {f for f in want if f.lower() not in {h.lower() for h in have}}
        if missing:
            problems.append(f"{mid}: acknowledged flags {sorted(missing)} missing ({have})")
    for q in model.pop3_quits:
        if not q.acked and q.mids:
            left = q.mids & present
            if left and left != q.mids:
                problems.append(f"unacknowledged POP3 QUIT applied partly: {sorted(q.mids)} "
                                f"deleted, {sorted(left)} still there")
    if uidnext <= max_uid_before:
        problems.append(f"UIDNEXT {uidnext} is not above UID {max_uid_before} seen before "
                        "the kill")
    highest = max((s.uid for s in seen), default=0)
    if uidnext <= highest:
        problems.append(f"UIDNEXT {uidnext} is not above the highest UID {highest}")
    # A new message gets a UID never used before.
    probe_mid, probe = message(f"probe.{rnd}", random.Random(rnd))
    with F.imap_login(server.port("imap"), USER) as c:
        c.send(b"P1 APPEND INBOX {%d+}\r\n" % len(probe) + probe + b"\r\n")
        r = c.imap_collect("P1")
        m = re.match(rb"P1 OK \[APPENDUID \d+ (\d+)\]", r[-1])
        assert m, r
        if int(m.group(1)) <= max(max_uid_before, highest):
            problems.append(f"APPEND after restart got UID {m.group(1).decode()}, not above "
                            f"{max(max_uid_before, highest)}")
    probe_uid = int(m.group(1))
    model.sent[probe_mid] = probe
    model.via[probe_mid] = "imap-probe"
    model.acked.add(probe_mid)
    model.uid_of[probe_mid] = probe_uid
    # The store, read directly, agrees with IMAP.
    snapshot = F.store_snapshot(server, USER)
    by_uid = {s.uid: s.data for s in seen}
    for uid, data in by_uid.items():
        if snapshot.get(uid, (None, None))[1] != data:
            problems.append(f"UID {uid}: the store and IMAP BODY[] differ")
    assert not problems, f"after kill point {rnd}:\n" + "\n".join(problems[:40])

    # What this restart showed becomes the baseline for the next rounds.
    stats = {
        "messages": len(seen),
        "unacked present": len(present - model.acked),
        "unacked absent": len(set(model.sent) - model.acked - present - model.gone),
    }
    for mid, copies in by_mid.items():
        model.uid_of[mid] = copies[0].uid
        model.saw_uid(copies[0].uid)
    model.saw_uid(probe_uid)
    model.gone |= set(model.sent) - present - {probe_mid}
    model.present = present | {probe_mid}
    model.acked |= present
    return stats


def integrity_check(server: ServerProcess) -> str:
    db = sqlite3.connect(server.data / "mailstead.sqlite3", timeout=10)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


# --- the test ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kill_points", [
    pytest.param(KILL_POINTS, id="ci"),
    pytest.param(KILL_POINTS * 6, id="long", marks=pytest.mark.slow),
])
def test_acknowledged_mail_survives_sigkill_at_random_moments(
    fresh_server: ServerProcess, request: pytest.FixtureRequest, record_property,
    kill_points: int,
) -> None:
    F.register_summary(request.config)
    srv = fresh_server
    srv.config.write_text(F.server_config(limits={"max_connections_per_ip": 100}))
    srv.start()
    F.create_users(srv, USER)
    model = Model()
    rng = random.Random(SEED)
    kills = [round(rng.uniform(0.3, 1.5), 3) for _ in range(kill_points)]
    started = time.monotonic()
    survived = 0
    for rnd, delay in enumerate(kills, 1):
        load = Load(srv, model, rnd, SEED)
        before = dict(model.counts)
        load.start()
        time.sleep(delay)
        with model.lock:
            max_uid_before = model.max_uid
        load.killing.set()
        srv.kill()
        killed_at = time.monotonic()
        load.join()
        with model.lock:
            max_uid_before = max(max_uid_before, model.max_uid)
        check = integrity_check(srv)
        assert check == "ok", f"SQLite integrity check after kill point {rnd}: {check}"
        srv.start()
        stats = verify(srv, model, rnd, max_uid_before)
        acked = {k: v - before.get(k, 0) for k, v in model.counts.items()}
        F.note(f"crash kill point {rnd}: SIGKILL after {delay}s of load; acknowledged "
               f"before it: {acked}; after restart {stats} "
               f"({time.monotonic() - killed_at:.1f}s to restart and verify)")
        survived += 1
    if model.pop3_top_errors:
        F.note(f"crash safety: {len(model.pop3_top_errors)} POP3 TOPs of messages expunged over "
               f"IMAP after the POP3 snapshot answered e.g. {model.pop3_top_errors[0]!r}")
    record_property("kill_points_survived", survived)
    F.note(f"crash safety: {survived}/{kill_points} kill points survived in "
           f"{time.monotonic() - started:.1f}s (seed {SEED}); totals {model.counts}")
    assert survived == kill_points
    srv.stop()
    found = F.problems(srv.log_text())
    assert not found, "\n\n".join(found[:10])


def test_dropped_connections_leave_nothing_half_done(
    fresh_server: ServerProcess, request: pytest.FixtureRequest,
) -> None:
    """A client that vanishes mid-command changes nothing: half an APPEND literal, half an
    SMTP/LMTP DATA, and a POP3 session with DELEs but no QUIT (RFC 1939 §6)."""
    F.register_summary(request.config)
    srv = fresh_server
    srv.config.write_text(F.server_config())
    srv.start()
    F.create_users(srv, USER)
    rng = random.Random(SEED)
    kept = [message(f"kept.{i}", rng)[1] for i in range(3)]
    F.append_messages(srv, USER, kept)
    before = F.store_snapshot(srv, USER)

    with F.imap_login(srv.port("imap"), USER, "INBOX") as c:
        c.send(b"A1 APPEND INBOX {100000}\r\n")
        assert c.line().startswith(b"+ ")
        c.send(b"Subject: half\r\n\r\n" + b"x" * 50_000)
    with F.imap_login(srv.port("imap"), USER, "INBOX") as c:
        c.send(b"A2 APPEND INBOX {100000+}\r\nSubject: half\r\n\r\n" + b"y" * 50_000)
    for proto in ("smtp", "lmtp"):
        with F.LineClient(srv.port(proto)) as c:
            assert c.smtp_reply()[0].startswith(b"220")
            hello = "LHLO" if proto == "lmtp" else "EHLO"
            assert c.smtp(f"{hello} x")[-1].startswith(b"250")
            assert c.smtp("MAIL FROM:<a@example.net>")[-1].startswith(b"250")
            assert c.smtp(f"RCPT TO:<{RCPT}>")[-1].startswith(b"250")
            assert c.smtp("DATA")[-1].startswith(b"354")
            c.send(b"Subject: half\r\n\r\nno final dot\r\n")
    with F.pop3_login(srv.port("pop3"), USER) as c:
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 2").startswith(b"+OK")
    # The server notices the closes; then nothing may have changed.
    time.sleep(0.5)
    F.alive(srv, "imap")
    with F.imap_login(srv.port("imap"), USER) as c:
        r = c.imap("S", "STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 3)" in r[0], r
    after = F.store_snapshot(srv, USER)
    assert {u: d for u, (_, d) in after.items()} == {u: d for u, (_, d) in before.items()}
    # And the POP3 maildrop lock was released with the connection.
    F.alive(srv, "pop3", USER)
    srv.stop()
    found = F.problems(srv.log_text())
    assert not found, "\n\n".join(found[:5])
