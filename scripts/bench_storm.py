"""``scripts/bench storm``: a reconnect storm, as after a restart with many phones connected.

--clients clients of --users users connect at the same moment, each LOGIN, SELECT INBOX and
IDLE, as a phone does when its connection drops. A client that is refused (``NO`` to LOGIN,
``BYE``, a closed connection) waits --retry seconds (with jitter, as clients back off) and tries
again. Reported: the time until every client is idling again, the distribution of each
client's time to idle, refusals and retries, and the server's CPU time.

Our server is started fresh (a restart: its login cache is empty) with the connection limits
raised to --clients, because here every client comes from 127.0.0.1. A fair comparison with
Dovecot uses the same password scheme on both: ``DOVECOT_BENCH_PASSWORDS=argon2id
scripts/dovecot-for-bench`` gives Dovecot's users an argon2id hash with our default cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

# Seconds a client waits for the server's greeting before it drops the connection and tries
# again (mail clients wait 30-60 s).
GREETING_TIMEOUT = 30.0


@dataclass
class StormStats:
    back_at: list[float] = field(default_factory=list)  # per client, seconds from the start
    refusals: int = 0
    failures: list[str] = field(default_factory=list)  # the first few refusal texts


async def _answer(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
            return line


async def one_client(host: str, port: int, user: str, password: str, start: float,
                     retry: float, deadline: float, rng: random.Random,
                     stats: StormStats) -> list[asyncio.StreamWriter]:
    """``_one_client`` within --timeout: a client the server never answers fails the run."""
    return await asyncio.wait_for(
        _one_client(host, port, user, password, start, retry, deadline, rng, stats),
        max(0.0, deadline - time.perf_counter()))


async def _one_client(host: str, port: int, user: str, password: str, start: float,
                     retry: float, deadline: float, rng: random.Random,
                     stats: StormStats) -> list[asyncio.StreamWriter]:
    """Log in and IDLE, retrying after a refusal; the writer is kept open (idling)."""
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            answer = repr(exc).encode()
        else:
            try:
                # As a client does, give up on a connection that stays silent and retry.
                greeting = await asyncio.wait_for(reader.readline(), GREETING_TIMEOUT)
                answer = greeting
                if greeting.startswith(b"* OK"):
                    writer.write(f'l LOGIN "{user}" "{password}"\r\n'.encode())
                    answer = await _answer(reader, b"l")
                    if answer.startswith(b"l OK"):
                        writer.write(b"s SELECT INBOX\r\ni IDLE\r\n")
                        answer = await _answer(reader, b"s")
                        if answer.startswith(b"s OK"):
                            while not (line := await reader.readline()).startswith(b"+"):
                                if not line:
                                    raise ConnectionError("closed before IDLE")
                            stats.back_at.append(time.perf_counter() - start)
                            return [writer]
            except (ConnectionError, OSError) as exc:
                answer = repr(exc).encode()
            writer.close()
        stats.refusals += 1
        if len(stats.failures) < 5:
            stats.failures.append(answer.decode(errors="replace").strip()[:120])
        if time.perf_counter() > deadline:
            raise TimeoutError("client not back before --timeout")
        await asyncio.sleep(retry * (0.5 + rng.random()))


async def storm(host: str, port: int, users: list[str], password: str, clients: int,
                retry: float, timeout: float, seed: int) -> tuple[StormStats, float]:
    stats = StormStats()
    rng = random.Random(seed)
    start = time.perf_counter()
    deadline = start + timeout
    results = await asyncio.gather(
        *(one_client(host, port, users[i % len(users)], password, start, retry, deadline,
                     random.Random(rng.random()), stats) for i in range(clients)),
        return_exceptions=True)
    elapsed = time.perf_counter() - start
    stats.failures.extend(repr(r)[:120] for r in results if isinstance(r, BaseException))
    for result in results:
        if isinstance(result, list):
            for writer in result:
                writer.close()
    return stats, elapsed


def add_storm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=2000, help="clients reconnecting at once")
    p.add_argument("--users", type=int, default=50, help="users the clients are spread over")
    p.add_argument("--workers", type=int, default=1, help="our server's [server] workers")
    p.add_argument("--retry", type=float, default=1.0,
                   help="seconds a refused client waits before it tries again (with jitter)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--host", help="also measure this server (e.g. Dovecot)")
    p.add_argument("--port", type=int, default=143)
    p.add_argument("--user", default="bench%d", help="user name, %%d: 1..--users")
    p.add_argument("--password", default="bench")
    p.add_argument("--label", default="other")
    p.add_argument("--pid", type=int, help="the other server's main process, for its CPU time")
    p.add_argument("--skip-own", action="store_true", help="measure only --host")


def _result(label: str, args: argparse.Namespace, stats: StormStats, elapsed: float,
            cpu: float | None) -> dict[str, Any]:
    back = sorted(stats.back_at)
    result: dict[str, Any] = {
        "server": label, "benchmark": "storm", "clients": args.clients, "users": args.users,
        "clients_back": len(back),
        "all_back_seconds": round(back[-1], 2) if len(back) == args.clients else None,
        "seconds": round(elapsed, 2),
        "p50_back_seconds": round(statistics.median(back), 2) if back else None,
        "p95_back_seconds": round(back[int(len(back) * 0.95) - 1], 2) if back else None,
        "refusals_retried": stats.refusals, "first_refusals": stats.failures,
    }
    if cpu is not None:
        result["server_cpu_seconds"] = round(cpu, 2)
    return result


def cmd_storm(
    args: argparse.Namespace,
    own_server: Callable[..., AbstractContextManager[tuple[dict[tuple[str, bool], int], Any,
                                                           int]]],
    cpu_seconds: Callable[[int | None], float | None],
    compare: Callable[[list[dict[str, Any]], str, bool], dict[str, Any]],
) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    users = [args.user % (i + 1) for i in range(args.users)]
    results = []

    def run(label: str, host: str, port: int, pid: int | None) -> None:
        before = cpu_seconds(pid)
        stats, elapsed = asyncio.run(storm(host, port, users, args.password, args.clients,
                                           args.retry, args.timeout, args.seed))
        after = cpu_seconds(pid)
        cpu = after - before if before is not None and after is not None else None
        results.append(_result(label, args, stats, elapsed, cpu))

    if not args.skip_own:
        limit = args.clients + 10
        extra = (f"[limits]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\n"
                 f"max_sessions_per_user = {limit}\n")
        with own_server(users, args.workers, extra_config=extra) as (ports, _, pid):
            run("mailstead", "127.0.0.1", ports[("imap", False)], pid)
    if args.host:
        run(args.label, args.host, args.port, args.pid)
    if any(r["all_back_seconds"] is None for r in results):
        return {r["server"]: r for r in results}
    return compare(results, "all_back_seconds", False)

