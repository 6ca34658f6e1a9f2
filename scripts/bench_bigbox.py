"""``scripts/bench bigbox``: one INBOX of -n messages; times SELECT, ``UID FETCH 1:* (FLAGS)``,
``UID SEARCH UNSEEN``, STATUS and POP3 STAT/UIDL, and the server's private memory (RssAnon)
that sessions holding the mailbox selected cost.

Our own server is filled through the store directly (``store.append`` in batches, before
it starts), because delivering 100,000 messages over LMTP would take far longer than what
is measured. With --host/--port it also measures that server (e.g. the Dovecot of
scripts/dovecot-for-bench), filled with the same messages and flags by IMAP MULTIAPPEND
(``--fill append``, the default: LITERAL+, 500 messages a command), or over LMTP
(``--fill lmtp`` with --lmtp-port: every message then unseen, so ``UID SEARCH UNSEEN``
finds all of them, not one in 20 as in ours), unless --no-deliver.

Memory: ``rss_anon_kib`` is read from /proc/PID/status of the server (one worker, so the
pid is the process serving the sessions): after one session logged in without a mailbox
selected, after it SELECTs, and after --sessions more sessions SELECT too; the per-session
view cost is the growth over those extra sessions divided by their number (the first
SELECT's temporaries leave free heap behind that later sessions reuse, so the first step
alone overstates it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MessageMaker = Callable[[int, random.Random], bytes]
BATCH = 2000  # messages per store transaction while filling
SUBJECT_WORDS = ["report", "meeting", "invoice", "notes", "draft", "review", "budget"]


def small_message(i: int, rng: random.Random) -> bytes:
    """A plain mail of about 600 octets: 100,000 of them fill a store in minutes."""
    subject = " ".join(rng.choices(SUBJECT_WORDS, k=4))
    body = " ".join(rng.choices(SUBJECT_WORDS, k=60))
    return (
        f"From: Sender {i % 97} <sender{i % 97}@example.net>\r\n"
        f"To: bench@bench.test\r\nSubject: {subject} {i}\r\n"
        f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <big.{i}@example.net>\r\nContent-Type: text/plain\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def flags_of(i: int) -> frozenset[str]:
    """Like a real INBOX: most read, some answered or flagged, a few with a keyword,
    one in 20 unread (what UID SEARCH UNSEEN finds)."""
    flags = set() if i % 20 == 0 else {"\\Seen"}
    if i % 7 == 0:
        flags.add("\\Answered")
    if i % 50 == 0:
        flags.add("\\Flagged")
    if i % 11 == 0:
        flags.add("$Forwarded")
    return frozenset(flags)


def fill_store(config_path: Path, n: int, seed: int) -> float:
    """Append ``n`` messages to bench's INBOX through the store; returns the seconds."""
    from mailstead.config import load_config
    from mailstead.store import open_store
    from mailstead.store.api import NewMessage

    async def fill() -> None:
        store = await open_store(load_config(config_path))
        try:
            user = await store.get_user("bench")
            assert user is not None
            inbox = await store.get_mailbox(user.id, "INBOX")
            assert inbox is not None
            rng = random.Random(seed)
            for start in range(0, n, BATCH):
                batch = [NewMessage(small_message(i, rng), flags_of(i))
                         for i in range(start, min(n, start + BATCH))]
                await store.append(inbox.id, batch)
        finally:
            await store.close()

    t0 = time.perf_counter()
    asyncio.run(fill())
    return time.perf_counter() - t0


APPEND_BATCH = 500  # messages per MULTIAPPEND command when filling another server


async def imap_fill(host: str, port: int, user: str, password: str, n: int,
                    seed: int) -> float:
    """Append the messages ``fill_store`` stores, with the same flags, over IMAP
    (MULTIAPPEND, RFC 3502, with LITERAL+); returns the seconds."""
    from bench import ImapClient

    t0 = time.perf_counter()
    client = await ImapClient.connect(host, port, user, password)
    caps = b" ".join(await client.command("CAPABILITY")).upper()
    if b"MULTIAPPEND" not in caps or b"LITERAL+" not in caps:
        raise SystemExit("--fill append needs MULTIAPPEND and LITERAL+: use --fill lmtp")
    rng = random.Random(seed)
    for start in range(0, n, APPEND_BATCH):
        parts = [b"f APPEND INBOX"]
        for i in range(start, min(n, start + APPEND_BATCH)):
            data = small_message(i, rng)
            flags = " ".join(sorted(flags_of(i))).encode()
            parts.append(b" (%s) {%d+}\r\n%s" % (flags, len(data), data))
        client.writer.write(b"".join(parts) + b"\r\n")
        while not (line := await client.read_response()).startswith(b"f "):
            pass
        if not line.startswith(b"f OK"):
            raise RuntimeError(f"APPEND at message {start}: {line!r}")
    await client.close()
    return time.perf_counter() - t0


def rss_anon_kib(pid: int | None) -> int | None:
    """The private (anonymous) resident memory of a process, Linux /proc."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return None


async def timed(steps: dict[str, list[float]], name: str, coro: Any) -> Any:
    t0 = time.perf_counter()
    result = await coro
    steps.setdefault(name, []).append(round(time.perf_counter() - t0, 4))
    return result


async def pop3_stat_uidl(host: str, port: int, user: str, password: str,
                         steps: dict[str, list[float]]) -> int:
    """Log in to POP3, STAT, UIDL, QUIT; returns the UIDL entry count."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 26)

    async def ok(line: str | None) -> bytes:
        if line is not None:
            writer.write(line.encode() + b"\r\n")
        answer = await reader.readline()
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"POP3 {line!r}: {answer!r}")
        return answer

    try:
        await ok(None)
        await ok(f"USER {user}")
        await timed(steps, "pop3_login", ok(f"PASS {password}"))
        await timed(steps, "pop3_stat", ok("STAT"))

        async def uidl() -> int:
            await ok("UIDL")
            body = await reader.readuntil(b"\r\n.\r\n")
            return body.count(b"\r\n") - 1

        entries: int = await timed(steps, "pop3_uidl", uidl())
        await ok("QUIT")
        return entries
    finally:
        writer.close()


async def measure(host: str, port: int, pop3_port: int | None, user: str, password: str,
                  pid: int | None, rounds: int, sessions: int) -> dict[str, Any]:
    from bench import ImapClient

    steps: dict[str, list[float]] = {}
    out: dict[str, Any] = {}
    client = await ImapClient.connect(host, port, user, password)
    # The login itself and its first buffers are not what a view costs.
    await client.command("NOOP")
    rss: dict[str, int | None] = {"logged_in": rss_anon_kib(pid)}
    for r in range(rounds):
        lines = await timed(steps, "select", client.command("SELECT INBOX"))
        if r == 0:
            rss["one_session_selected"] = rss_anon_kib(pid)
            out["exists"] = next(int(x.split()[1]) for x in lines if x.endswith(b"EXISTS\r\n"))
        fetched = await timed(steps, "uid_fetch_flags", client.command("UID FETCH 1:* (FLAGS)"))
        out["fetch_lines"] = len(fetched)
        found = await timed(steps, "uid_search_unseen", client.command("UID SEARCH UNSEEN"))
        out["unseen"] = sum(len(x.split()) - 2 for x in found if x.startswith(b"* SEARCH"))
    other = await ImapClient.connect(host, port, user, password)
    for _ in range(rounds):
        await timed(steps, "status", other.command(
            "STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)"))
    await other.close()
    if pop3_port is not None:
        for _ in range(rounds):
            out["uidl_entries"] = await pop3_stat_uidl(host, pop3_port, user, password, steps)
    if sessions:
        extra = [await ImapClient.connect(host, port, user, password) for _ in range(sessions)]
        for c in extra:
            await c.command("NOOP")
        rss["extra_sessions_logged_in"] = rss_anon_kib(pid)
        for c in extra:
            await c.command("EXAMINE INBOX")  # no \Recent claims: the same view otherwise
        rss["extra_sessions_selected"] = rss_anon_kib(pid)
        for c in extra:
            await c.close()
        before, after = rss["extra_sessions_logged_in"], rss["extra_sessions_selected"]
        if before is not None and after is not None:
            out["view_kib_per_session"] = round((after - before) / sessions, 1)
    await client.close()
    out["rss_anon_kib"] = rss
    out["seconds"] = {k: {"first": v[0], "median": statistics.median(v), "all": v}
                      for k, v in steps.items()}
    return out


def add_bigbox_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=int, default=10_000, help="messages in the INBOX")
    p.add_argument("--rounds", type=int, default=3,
                   help="times each command runs (the first and the median are reported)")
    p.add_argument("--sessions", type=int, default=10,
                   help="extra sessions that EXAMINE the INBOX, for the per-view memory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--host", help="also measure this server (e.g. Dovecot)")
    p.add_argument("--port", type=int, default=143)
    p.add_argument("--pop3-port", type=int, help="the other server's POP3 port")
    p.add_argument("--lmtp-port", type=int, help="the other server's LMTP port, to fill it")
    p.add_argument("--rcpt", default="bench", help="the other server's LMTP recipient")
    p.add_argument("--user", default="bench")
    p.add_argument("--password", default="bench")
    p.add_argument("--label", default="other")
    p.add_argument("--pid", type=int, help="the other server's process that serves IMAP, "
                   "for its RssAnon (Dovecot: one imap process per session, so not summed)")
    p.add_argument("--no-deliver", action="store_true",
                   help="the other server has the messages already")
    p.add_argument("--fill", choices=("append", "lmtp"), default="append",
                   help="how to fill the other server: IMAP MULTIAPPEND with our flags, "
                   "or LMTP (--lmtp-port; every message unseen)")
    p.add_argument("--concurrency", type=int, default=8, help="LMTP connections to fill it")


def cmd_bigbox(args: argparse.Namespace, own_server: Any, lmtp_deliver: Any) -> dict[str, Any]:
    results = []
    filled: dict[str, float] = {}

    def prepare(config: Path) -> None:
        filled["seconds"] = fill_store(config, args.n, args.seed)

    with own_server(prepare=prepare) as (ports, _, pid):
        result: dict[str, Any] = {"server": "mailstead", "benchmark": "bigbox",
                                  "messages": args.n,
                                  "fill_seconds": round(filled["seconds"], 1)}
        result.update(asyncio.run(measure("127.0.0.1", ports[("imap", False)],
                                          ports[("pop3", False)], "bench", "bench", pid,
                                          args.rounds, args.sessions)))
        results.append(result)
    if args.host:
        other_fill: float | None = None
        if not args.no_deliver and args.fill == "append":
            other_fill = asyncio.run(imap_fill(args.host, args.port, args.user, args.password,
                                               args.n, args.seed))
        elif not args.no_deliver:
            if args.lmtp_port is None:
                raise SystemExit("--lmtp-port is needed to fill the other server over LMTP")
            t0 = time.perf_counter()
            rng = random.Random(args.seed)
            messages = [small_message(i, rng) for i in range(args.n)]
            asyncio.run(lmtp_deliver(args.host, args.lmtp_port, args.rcpt, messages,
                                     args.concurrency))
            other_fill = time.perf_counter() - t0
        result = {"server": args.label, "benchmark": "bigbox", "messages": args.n}
        if other_fill is not None:
            result["fill_seconds"] = round(other_fill, 1)
        result.update(asyncio.run(measure(args.host, args.port, args.pop3_port, args.user,
                                          args.password, args.pid, args.rounds, 0)))
        results.append(result)
    return {r["server"]: r for r in results}
