"""``scripts/bench idle``: many IMAP sessions that SELECT INBOX and IDLE; the server's private
memory (RssAnon, /proc/PID/status) per session at each count of --sessions (e.g. 1000,5000:
sessions are added up to each count; one session opened first is the baseline), and the
fan-out of one delivered message to all of them: from the LMTP ``250`` to the last session
reading its ``EXISTS``. With --push-one the sessions idle on another mailbox instead and one
more session idles on INBOX: the delivery's latency to that one session among all the others
(``push_one_ms``, one figure per round, and their p50). ``fanout_server_cpu_ms_per_round``:
the server's CPU time (all its threads, and with --workers every worker) per delivery and
fan-out.

The fan-out is timed from the LMTP ``250`` (``fanout_last_ms``, ``fanout_median_ms``: the
server may tell its sessions before it sends the ``250``, so these can be negative) and from
the moment the client has sent the message's final dot (``*_from_data_ms``: that includes
the delivery's commit and fsync, an upper bound of the time from commit to the sessions).
With --not-idle N, N more sessions select the mailbox and do not idle: after each delivery
each sends NOOP, which must report the EXISTS before its tagged OK (``not_idle_missed``
counts those that did not); they are not in the latency figures. With --workers the memory
figures are the supervisor's alone, not its workers'.

It starts its own server (one worker) with the connection limits raised to the largest count,
and raises this process's RLIMIT_NOFILE (inherited by the server) to its hard limit. Each
session is one socket here: the client's own loop reading thousands of EXISTS lines is part
of what the fan-out time measures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench_bigbox import rss_anon_kib, small_message

OPEN_AT_ONCE = 50  # sessions logging in at the same time


# Source addresses the sessions connect from, in turn: one address reaches the server's
# port from at most ~28,000 ephemeral ports (net.ipv4.ip_local_port_range), too few for
# 50,000 sessions. All of 127.0.0.0/8 is loopback on Linux.
SOURCES = itertools.cycle([f"127.0.0.{n}" for n in range(1, 5)])


class Idler:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, verb: bytes = b"SELECT", box: bytes = b"INBOX",
                   create: bool = False, idle: bool = True) -> Idler:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(next(SOURCES), 0))
        idler = cls(reader, writer)
        await reader.readline()
        steps = [(b"l", b'LOGIN "bench" "bench"'), (b"s", verb + b" " + box)]
        if create:
            steps.insert(1, (b"c", b"CREATE " + box))
        for tag, line in steps:
            writer.write(tag + b" " + line + b"\r\n")
            while not (answer := await reader.readline()).startswith(tag + b" "):
                if not answer:
                    raise ConnectionError("closed during " + line.decode())
            if not answer.startswith(tag + b" OK"):
                raise RuntimeError(f"{line!r}: {answer!r}")
        if not idle:
            return idler
        writer.write(b"i IDLE\r\n")
        while not (answer := await reader.readline()).startswith(b"+"):
            if not answer:
                raise ConnectionError("closed before IDLE")
        return idler

    async def next_exists(self) -> float:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed while idling")
            if line.endswith(b" EXISTS\r\n"):
                return time.perf_counter()

    async def noop_reports_exists(self) -> bool:
        """NOOP (not idling): whether an EXISTS came before its tagged OK."""
        self.writer.write(b"n NOOP\r\n")
        seen = False
        while not (line := await self.reader.readline()).startswith(b"n "):
            if not line:
                raise ConnectionError("closed during NOOP")
            seen = seen or line.endswith(b" EXISTS\r\n")
        return seen


async def lmtp_one(port: int, data: bytes) -> tuple[float, float]:
    """Deliver one message; returns when its final dot was sent and when its 250 came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while (line := await reader.readline())[3:4] == b"-":
            pass
        if not line.startswith((b"2", b"3")):
            raise RuntimeError(f"LMTP: {line!r}")
        return line

    await reply()
    for cmd in (b"LHLO bench", b"MAIL FROM:<x@example.net>", b"RCPT TO:<bench@bench.test>",
                b"DATA"):
        writer.write(cmd + b"\r\n")
        await reply()
    writer.write(data + b".\r\n")
    sent = time.perf_counter()
    await reply()
    done = time.perf_counter()
    writer.write(b"QUIT\r\n")
    writer.close()
    return sent, done


async def run(cpu_seconds: Callable[[int], float | None],
              counts: list[int], rounds: int, imap: int, lmtp: int, pid: int,
              verb: bytes, push_one: bool = False, not_idle: int = 0) -> dict[str, Any]:
    import random

    rng = random.Random(1)
    box = b"Idle" if push_one else b"INBOX"
    # One session first: the first login's one-off costs (imports, the password hash's
    # memory, buffers) are not a session's.
    idlers: list[Idler] = [await Idler.open(imap, verb, box, create=push_one)]
    # With --push-one: the one session on INBOX, among all the others on "Idle".
    watcher = await Idler.open(imap, verb) if push_one else None
    busy = [await Idler.open(imap, verb, box, idle=False) for _ in range(not_idle)]
    steps: list[dict[str, Any]] = []
    await asyncio.sleep(1)
    base = prev = rss_anon_kib(pid)
    prev_count = 1
    for count in counts:
        t0 = time.perf_counter()
        while len(idlers) < count:
            todo = min(OPEN_AT_ONCE, count - len(idlers))
            idlers += await asyncio.gather(*(Idler.open(imap, verb, box)
                                             for _ in range(todo)))
        opened = time.perf_counter() - t0
        await asyncio.sleep(1)  # let the server settle (freed login buffers)
        rss = rss_anon_kib(pid)
        step: dict[str, Any] = {
            "sessions": count, "open_seconds": round(opened, 2), "rss_anon_kib": rss,
            "kib_per_session": round((rss - base) / (count - 1), 1) if rss and base else None,
            "kib_per_session_since_last_step":
                round((rss - prev) / (count - prev_count), 1) if rss and prev else None,
        }
        prev, prev_count = rss, count
        if watcher is not None:
            one = []
            for i in range(rounds):
                wait = asyncio.ensure_future(watcher.next_exists())
                _, delivered = await lmtp_one(lmtp, small_message(10**6 + count + i, rng))
                one.append(round((await asyncio.wait_for(wait, 60) - delivered) * 1000, 2))
            step["push_one_ms"] = one
            step["push_one_p50_ms"] = statistics.median(one)
            steps.append(step)
            continue
        last, median, last_data, median_data, missed = [], [], [], [], 0
        cpu0 = cpu_seconds(pid) or 0.0
        for i in range(rounds):
            waits = [asyncio.ensure_future(x.next_exists()) for x in idlers]
            sent, delivered = await lmtp_one(lmtp, small_message(10**6 + count + i, rng))
            arrivals = await asyncio.wait_for(asyncio.gather(*waits), 120)
            for mark, lasts, medians in ((delivered, last, median),
                                         (sent, last_data, median_data)):
                lasts.append(round((max(arrivals) - mark) * 1000, 2))
                medians.append(round((statistics.median(arrivals) - mark) * 1000, 2))
            if busy:
                told = await asyncio.gather(*(x.noop_reports_exists() for x in busy))
                missed += told.count(False)
        # The server's CPU per delivery (clock ticks: use 10 rounds or more), which other
        # load on the machine disturbs far less than the times above.
        step["fanout_server_cpu_ms_per_round"] = round(((cpu_seconds(pid) or 0.0) - cpu0) * 1000
                                                       / rounds, 1)
        step["fanout_last_ms"] = last
        step["fanout_median_ms"] = median
        step["fanout_last_from_data_ms"] = last_data
        step["fanout_median_from_data_ms"] = median_data
        step["fanout_p50_of_last_from_data_ms"] = statistics.median(last_data)
        if busy:
            step["not_idle_sessions"], step["not_idle_missed"] = len(busy), missed
        steps.append(step)
    for x in [*idlers, *busy] if watcher is None else [*idlers, watcher]:
        x.writer.close()
    return {"rss_anon_kib_one_session": base, "steps": steps}


def add_idle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", default="1000,5000",
                   help="session counts to measure at, ascending, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="deliveries timed at each count")
    p.add_argument("--examine", action="store_true",
                   help="EXAMINE instead of SELECT: read-only sessions claim no \\Recent")
    p.add_argument("--workers", type=int, default=1, help="the server's [server] workers")
    p.add_argument("--not-idle", type=int, default=0, metavar="N",
                   help="N more sessions select the mailbox without idling; each sends NOOP "
                   "after each delivery and must be told of it (not timed)")
    p.add_argument("--push-one", action="store_true",
                   help="the sessions idle on another mailbox; time the push to one more "
                   "session idling on INBOX (p50 over --rounds deliveries)")


def cmd_idle(args: argparse.Namespace, own_server: Any,
             cpu_seconds: Callable[[int], float | None]) -> dict[str, Any]:
    """``cpu_seconds``: bench.py's process_cpu_seconds (a process and its children)."""
    counts = sorted(int(x) for x in args.sessions.split(","))
    if counts[0] < 2:
        raise SystemExit("--sessions: counts of 2 or more")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = counts[-1] + args.not_idle + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors "
                         "needed (raise it with ulimit -Hn or in the unit)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    limit = counts[-1] + args.not_idle + 100
    extra = (f"[limits]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\n"
             f"max_sessions_per_user = {limit}\n")
    with own_server(workers=args.workers, extra_config=extra) as (ports, _, pid):
        result: dict[str, Any] = {"server": "mailstead", "benchmark": "idle"}
        result.update(asyncio.run(run(cpu_seconds, counts, args.rounds, ports[("imap", False)],
                                      ports[("lmtp", False)], pid,
                                      b"EXAMINE" if args.examine else b"SELECT",
                                      args.push_one, args.not_idle)))
    return result
