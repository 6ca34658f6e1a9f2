"""``scripts/bench load``: N IMAP clients over M users for a fixed time, an office's random mix
(see bench_load_office.py), one asyncio task per client. Prints per-command rates and latency
percentiles, NO/BAD answers, and the protocol violations the client-side state checker counted
(see bench_load_checker.py).

Without --host it starts our own server (like the other benchmarks) with users bench1..benchM;
with --host/--port/--user/--password it also measures that server (e.g. the Dovecot of
scripts/dovecot-for-bench), where ``--user 'bench%d'`` names the M users bench1..benchM.
Each user's INBOX is topped up to -n messages by APPEND first, and gets an Archive folder.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from bench_load_checker import RecentRegistry, SessionChecker, ViolationLog
from bench_load_conn import Connection, Stats
from bench_load_office import ARCHIVE, LoadOptions, OfficeClient, Shared

MessageMaker = Callable[[int, random.Random], bytes]
POOL_SIZE = 40  # distinct messages the clients APPEND


@dataclass
class LoadTarget:
    label: str
    host: str
    port: int
    users: list[str]
    password: str
    pid: int | None  # the server's process, to read its CPU time
    tls: bool = False


def user_names(pattern: str, count: int) -> list[str]:
    if "%d" in pattern:
        return [pattern % i for i in range(1, count + 1)]
    if count > 1:
        raise SystemExit(f"--users {count} needs a --user pattern with %d, e.g. 'bench%d'")
    return [pattern]


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples, in milliseconds."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def seed_user(target: LoadTarget, user: str, n: int, make: MessageMaker,
                    rng: random.Random, timeout: float) -> int:
    """Create Archive and top INBOX up to ``n`` messages (some read, flagged or labelled);
    returns how many there are."""
    checker = SessionChecker(f"seed/{user}", user, RecentRegistry(), ViolationLog())
    conn = await Connection.open(target.host, target.port, checker, Stats(), timeout,
                                 tls=target.tls)
    try:
        await conn.login(user, target.password)
        await conn.command("create", f"CREATE {ARCHIVE}")  # NO if it exists: fine
        status = await conn.command("status", "STATUS INBOX (MESSAGES)")
        have = next((int(str(r.values[1][1])) for r in status.untagged if r.kind == "STATUS"
                     and isinstance(r.values[1], list) and len(r.values[1]) == 2), 0)
        for i in range(have, n):
            flags = rng.choices(["", "\\Seen", "\\Seen \\Flagged", "\\Seen $Label1", "Work"],
                                weights=[30, 55, 5, 5, 5])[0]
            result = await conn.command("append", f"APPEND INBOX ({flags})",
                                        literal=make(i, rng))
            if not result.ok:
                raise SystemExit(f"{target.label}: seeding {user}: {result.tagged.text}")
        return max(have, n)
    finally:
        await conn.close()


async def run_clients(target: LoadTarget, args: argparse.Namespace,
                      shared: Shared) -> tuple[float, int]:
    """All clients until the deadline; returns the elapsed time and unfinished clients."""
    clients = [OfficeClient(i, target.users[i % len(target.users)], shared, args.seed * 1000 + i)
               for i in range(args.clients)]
    start = time.monotonic()
    deadline = start + args.seconds
    tasks = [asyncio.ensure_future(c.run(deadline)) for c in clients]
    # Every command has a timeout, so this bound is only reached if something is badly stuck.
    _, stuck = await asyncio.wait(tasks, timeout=args.seconds + args.timeout + 15)
    for task in stuck:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return time.monotonic() - start, len(stuck)


def summarize(shared: Shared, elapsed: float) -> dict[str, Any]:
    stats = shared.stats
    commands: dict[str, Any] = {}
    total = no = bad = 0
    for kind, entry in sorted(stats.by_kind.items()):
        ordered = sorted(entry.latencies)
        total, no, bad = total + len(ordered), no + entry.no, bad + entry.bad
        commands[kind] = {"ops": len(ordered), "ops_per_s": round(len(ordered) / elapsed, 1),
                          "p50_ms": percentile(ordered, 0.50),
                          "p95_ms": percentile(ordered, 0.95),
                          "p99_ms": percentile(ordered, 0.99)}
        if entry.no or entry.bad:
            commands[kind].update(no=entry.no, bad=entry.bad, first_errors=entry.texts)
    return {"total_ops": total, "ops_per_second": round(total / elapsed, 1),
            "commands": commands,
            "errors": {"no": no, "bad": bad, "timeouts": stats.timeouts,
                       "disconnects": stats.disconnects,
                       "first_disconnects": stats.disconnect_texts},
            "sessions": stats.sessions,
            # How much \Recent the checker saw (a server that never shows it passes trivially).
            "recent_messages_seen_by_read_write_sessions": len(shared.registry.holders),
            "violations": shared.log.summary()}


def measure(target: LoadTarget, args: argparse.Namespace, make: MessageMaker,
            cpu_seconds: Callable[[int | None], float | None]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    options = LoadOptions(target.host, target.port, target.password, args.n,
                          timeout=args.timeout, logins=args.logins, idle_max=args.idle_max,
                          tls=target.tls)
    shared = Shared(options, [make(10_000 + i, rng) for i in range(POOL_SIZE)])
    shared.log.max_examples = args.examples

    async def seed_all() -> list[int]:
        return await asyncio.gather(*(
            seed_user(target, user, args.n, make, random.Random(f"{args.seed}/{user}"),
                      args.timeout) for user in target.users))

    seed_start = time.monotonic()
    seeded = asyncio.run(seed_all())
    seed_seconds = time.monotonic() - seed_start
    cpu_before, client_before = cpu_seconds(target.pid), time.process_time()
    elapsed, stuck = asyncio.run(run_clients(target, args, shared))
    cpu_after, client_after = cpu_seconds(target.pid), time.process_time()
    result: dict[str, Any] = {
        "server": target.label, "benchmark": "load", "clients": args.clients,
        "users": len(target.users), "logins_mode": args.logins, "tls": target.tls,
        "seconds": round(elapsed, 2),
        "seeded_messages_per_user": dict(zip(target.users, seeded, strict=True)),
        "seed_seconds": round(seed_seconds, 2),
    }
    result.update(summarize(shared, elapsed))
    if stuck:
        result["errors"]["clients_cancelled_at_hard_stop"] = stuck
    result["client_cpu_seconds"] = round(client_after - client_before, 2)
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_seconds"] = round(cpu_after - cpu_before, 2)
    return result


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=20, help="IMAP connections at once")
    p.add_argument("--users", type=int, default=3, help="users the clients are spread over")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    p.add_argument("-n", type=int, default=200,
                   help="messages each INBOX is topped up to before the run (by APPEND)")
    p.add_argument("--seed", type=int, default=1, help="random seed of messages and mixes")
    p.add_argument("--logins", action="store_true",
                   help="log in and out every few commands instead of one session per client")
    p.add_argument("--idle-max", type=float, default=0.5,
                   help="longest IDLE (each lasts 0.05 s to this), in seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="per-command timeout (s)")
    p.add_argument("--examples", type=int, default=5, help="violation examples to print")
    p.add_argument("--workers", type=int, default=1,
                   help="[server] workers of the server the benchmark starts")
    p.add_argument("--tls", action="store_true",
                   help="implicit TLS (IMAPS): ours on its listen_tls port, the other server "
                        "on --port (scripts/dovecot-for-bench: 10993)")
    p.add_argument("--host", help="also measure this server (e.g. Dovecot)")
    p.add_argument("--port", type=int, default=143)
    p.add_argument("--user", default="bench%d", help="user name, %%d: 1..--users")
    p.add_argument("--password", default="bench")
    p.add_argument("--label", default="other")
    p.add_argument("--pid", type=int, help="the other server's main process, for its CPU time")
    p.add_argument("--skip-own", action="store_true",
                   help="measure only the --host server, not a fresh Mailstead")


OwnServer = Callable[..., AbstractContextManager[tuple[dict[tuple[str, bool], int], Any, int]]]


def cmd_load(args: argparse.Namespace, own_server: OwnServer, make: MessageMaker,
             cpu_seconds: Callable[[int | None], float | None],
             compare: Callable[[list[dict[str, Any]], str, bool], dict[str, Any]],
             ) -> dict[str, Any]:
    if args.clients < 1 or args.users < 1 or args.users > args.clients:
        raise SystemExit("need 1 <= --users <= --clients")
    if args.skip_own and not args.host:
        raise SystemExit("--skip-own needs --host")

    def targets() -> Iterator[LoadTarget]:
        if not args.skip_own:
            users = user_names("bench%d", args.users)
            with own_server(users, workers=args.workers, tls=args.tls) as (ports, _, pid):
                yield LoadTarget("mailstead", "127.0.0.1", ports[("imap", args.tls)], users,
                                 "bench", pid, args.tls)
        if args.host:
            yield LoadTarget(args.label, args.host, args.port,
                             user_names(args.user, args.users), args.password, args.pid,
                             args.tls)

    results = [measure(t, args, make, cpu_seconds) for t in targets()]
    return compare(results, "ops_per_second", True)
