"""Mailstead benchmarks. Each prints one JSON object.

Without --host, a benchmark starts its own server (default config, fsync on) in a temporary
folder with a fresh user, so it measures the real daemon end to end. With --host/--port/
--user/--password it measures whatever server is there (e.g. Dovecot on the same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT / "scripts"))

CONFIG = """
[server]
hostname = "bench.test"
data_dir = "data"
domains = ["bench.test"]
workers = {workers}
[imap]
listen = ["127.0.0.1:0"]
listen_tls = {imap_tls}
[pop3]
listen = ["127.0.0.1:0"]
listen_tls = []
[smtp]
listen = ["127.0.0.1:0"]
[lmtp]
listen = ["127.0.0.1:0"]
[log]
level = "warn"
"""

WORDS = [
    "mail",
    "server",
    "store",
    "message",
    "sync",
    "client",
    "folder",
    "invoice",
    "meeting",
    "report",
    "update",
    "project",
    "team",
    "review",
    "draft",
    "schedule",
    "budget",
    "quarterly",
    "release",
    "notes",
    "question",
    "answer",
    "thanks",
]


def realistic_message(i: int, rng: random.Random) -> bytes:
    """Plain, HTML alternative or attachment mails of 1-60 KB, like a real INBOX."""
    msg = EmailMessage()
    msg["From"] = f"Sender {i % 97} <sender{i % 97}@example.net>"
    msg["To"] = "bench@bench.test"
    msg["Subject"] = " ".join(rng.choices(WORDS, k=rng.randint(3, 9))).capitalize()
    msg["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1.7e9 + i * 60))
    msg["Message-ID"] = f"<bench.{i}.{rng.randrange(1 << 30)}@example.net>"
    if i % 3:
        msg["References"] = f"<bench.{i - 1}@example.net>"
    paragraphs = [
        " ".join(rng.choices(WORDS, k=rng.randint(20, 80))) for _ in range(rng.randint(2, 25))
    ]
    text = "\n\n".join(paragraphs) + "\n"
    msg.set_content(text)
    kind = i % 4
    if kind == 1:
        msg.add_alternative(
            "<html><body>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</body></html>",
            subtype="html",
        )
    elif kind == 2:
        msg.add_attachment(
            rng.randbytes(rng.randint(2000, 40000)),
            maintype="application",
            subtype="octet-stream",
            filename=f"file{i}.bin",
        )
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def wait_listeners(root: Path, proc: subprocess.Popen[bytes]) -> dict[tuple[str, bool], int]:
    """The ports of the server started in ``root`` (log in ``root/log``), once it listens."""
    listeners = root / "data" / "listeners.json"
    deadline = time.monotonic() + 30
    while not listeners.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start:\n" + (root / "log").read_text())
        time.sleep(0.05)
    return {(e["protocol"], e["tls"]): e["port"] for e in json.loads(listeners.read_text())}


@contextmanager
def own_server(
    users: Sequence[str] = ("bench",), workers: int = 1, *, extra_config: str = "",
    prepare: Callable[[Path], None] | None = None, tls: bool = False,
) -> Iterator[tuple[dict[tuple[str, bool], int], Path, int]]:
    """A fresh server in a temporary folder with ``users`` (password: bench) and
    ``[server] workers`` processes (the pid is the supervisor's; CPU time counts its
    workers, as it counts every process below the one named). ``extra_config`` is added
    to the configuration (sections it does not have yet); ``prepare(config path)`` runs
    after the users are created and before the server starts (e.g. to fill a mailbox
    through the store directly). ``tls`` adds an IMAPS listener, with the certificate the
    server generates for itself."""
    with tempfile.TemporaryDirectory(prefix="mailstead-bench-") as tmp:
        root = Path(tmp)
        config = CONFIG.replace("{workers}", str(workers)).replace(
            "{imap_tls}", '["127.0.0.1:0"]' if tls else "[]")
        (root / "mailstead.toml").write_text(config + extra_config)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "server"))
        cmd = [sys.executable, "-m", "mailstead"]
        for user in users:
            subprocess.run(
                [*cmd, "user", "add", user, "--password-stdin", "-c",
                 str(root / "mailstead.toml")],
                input="bench\n",
                text=True,
                check=True,
                env=env,
                capture_output=True,
            )
        if prepare is not None:
            prepare(root / "mailstead.toml")
        proc = subprocess.Popen(
            [*cmd, "serve", "-c", str(root / "mailstead.toml")],
            env=env,
            stderr=(root / "log").open("wb"),
        )
        ports = wait_listeners(root, proc)
        try:
            yield ports, root, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def lmtp_deliver(
    host: str, port: int, rcpt: str, messages: list[bytes], concurrency: int,
    *, hello: bytes = b"LHLO",
) -> float:
    """Deliver ``messages`` over ``concurrency`` connections, one transaction at a time
    per connection; the seconds it took. ``hello=b"EHLO"`` speaks SMTP instead."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def reply(reader: asyncio.StreamReader) -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                if not line.startswith((b"2", b"3")):
                    raise RuntimeError(f"LMTP error: {line!r}")
                return line

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        await reply(reader)
        writer.write(hello + b" bench\r\n")
        await reply(reader)
        while not queue.empty():
            data = queue.get_nowait()
            stuffed = b"\r\n".join(
                b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n")
            )
            writer.write(b"MAIL FROM:<bench@example.net>\r\n")
            await reply(reader)
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            await reply(reader)
            writer.write(b"DATA\r\n")
            await reply(reader)
            writer.write(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            await reply(reader)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


@dataclass
class Target:
    """A server to measure: ours (started here) or another one (e.g. Dovecot)."""

    label: str
    host: str
    port: int  # the protocol port of the benchmark (IMAP or POP3)
    lmtp_port: int | None
    user: str
    password: str
    rcpt: str
    pid: int | None = None  # the server's process on this machine, whose CPU time is read
    own: bool = False  # the fresh server the benchmark started


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) used so far by a process, its threads and every process
    below it, living or ended and reaped (Linux /proc). Dovecot's master forks a process
    per login and per session; this counts them all."""
    if pid is None:
        return None
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # After the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(x) for x in fields[11:15])
    if pid not in ticks:
        return None
    tree, total = [pid], 0
    while tree:
        p = tree.pop()
        total += ticks.get(p, 0)
        tree.extend(c for c, pp in parent.items() if pp == p)
    return total / os.sysconf("SC_CLK_TCK")


def targets(args: argparse.Namespace, proto: str) -> Iterator[Target]:
    """Our own fresh server, then the one named by --host, if any."""
    with own_server() as (ports, _, pid):
        yield Target("mailstead", "127.0.0.1", ports[(proto, False)] if proto else 0,
                     ports[("lmtp", False)], "bench", "bench", "bench@bench.test", pid, own=True)
    if args.host:
        # For the delivery benchmark the protocol port is the LMTP port.
        lmtp = args.lmtp_port if proto or args.lmtp_port else args.port
        yield Target(args.label, args.host, args.port, lmtp, args.user, args.password, args.rcpt,
                     args.pid)


def compare(results: list[dict[str, Any]], key: str, higher_is_better: bool) -> dict[str, Any]:
    """All results, and ours relative to the other on ``key`` (>1 means we are better)."""
    out: dict[str, Any] = {r["server"]: r for r in results}
    if len(results) == 2 and results[1].get(key):
        ours, other = results[0][key], results[1][key]
        out["ratio"] = {key: round(ours / other if higher_is_better else other / ours, 3),
                        "meaning": "mailstead relative to " + results[1]["server"]
                        + " (>1: mailstead better)"}
    return out


def deliver_messages(target: Target, messages: list[bytes], concurrency: int) -> float:
    if target.lmtp_port is None:
        raise SystemExit(f"{target.label}: --lmtp-port is needed to deliver messages")
    return asyncio.run(lmtp_deliver(target.host, target.lmtp_port, target.rcpt, messages,
                                    concurrency))


def cmd_deliver(args: argparse.Namespace) -> dict[str, Any]:
    """Delivery throughput: ours over LMTP (or SMTP with ``--smtp``), the other server over
    LMTP, each from a fresh start, with the server's CPU time per message."""
    rng = random.Random(args.seed)
    messages = [realistic_message(i, rng) for i in range(args.n)]
    total = sum(len(m) for m in messages)
    results = []
    for target in deliver_targets(args):
        smtp = target.own and args.smtp
        port = target.port if smtp else target.lmtp_port
        assert port is not None
        cpu_before = process_cpu_seconds(target.pid)
        elapsed = asyncio.run(lmtp_deliver(target.host, port, target.rcpt, messages,
                                           args.concurrency,
                                           hello=b"EHLO" if smtp else b"LHLO"))
        cpu_after = process_cpu_seconds(target.pid)
        result: dict[str, Any] = {
            "server": target.label, "benchmark": "deliver", "protocol":
            "smtp" if smtp else "lmtp", "messages": args.n, "bytes": total,
            "concurrency": args.concurrency, "seconds": round(elapsed, 3),
            "messages_per_second": round(args.n / elapsed, 1),
            "mb_per_second": round(total / elapsed / 1e6, 2),
        }
        if cpu_before is not None and cpu_after is not None:
            # Every thread and process of the server (Dovecot: its lmtp processes too).
            result["server_cpu_seconds"] = round(cpu_after - cpu_before, 2)
            result["server_cpu_us_per_message"] = round(
                (cpu_after - cpu_before) / args.n * 1e6, 1)
        results.append(result)
    return compare(results, "messages_per_second", higher_is_better=True)


def deliver_targets(args: argparse.Namespace) -> Iterator[Target]:
    """Our own fresh server (``--workers``), then the one named by --host (LMTP)."""
    with own_server(workers=args.workers) as (ports, _, pid):
        yield Target("mailstead", "127.0.0.1", ports[("smtp", False)], ports[("lmtp", False)],
                     "bench", "bench", "bench@bench.test", pid, own=True)
    if args.host:
        yield Target(args.label, args.host, args.port, args.lmtp_port or args.port, args.user,
                     args.password, args.rcpt, args.pid)


class ImapClient:
    """A small pipelining-free IMAP client on asyncio streams, for timing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    @classmethod
    async def connect(cls, host: str, port: int, user: str, password: str) -> ImapClient:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        client = cls(reader, writer)
        await reader.readline()
        await client.command(f'LOGIN "{user}" "{password}"')
        return client

    async def read_response(self) -> bytes:
        """One response line with its literals inlined."""
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        out = [line]
        while line.endswith(b"}\r\n"):
            size = int(line[line.rindex(b"{") + 1 : -3].rstrip(b"+"))
            out.append(await self.reader.readexactly(size))
            line = await self.reader.readline()
            out.append(line)
        return b"".join(out)

    async def command(self, text: str, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = f"b{self.n}".encode()
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + b" {%d+}\r\n" % len(literal)
                              + literal + b"\r\n")
        lines = []
        while True:
            line = await self.read_response()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]!r} failed: {line!r}")
                return lines
            lines.append(line)

    async def close(self) -> None:
        try:
            self.writer.write(b"z LOGOUT\r\n")
            await self.writer.drain()
        finally:
            self.writer.close()


HEADER_FIELDS = "From To Cc Subject Date Message-ID References In-Reply-To Content-Type"


async def imap_sync(host: str, port: int, user: str, password: str) -> dict[str, object]:
    client = await ImapClient.connect(host, port, user, password)
    steps: dict[str, float] = {}

    async def timed(name: str, coro: object) -> object:
        start = time.perf_counter()
        result = await coro  # type: ignore[misc]
        steps[name] = round(time.perf_counter() - start, 4)
        return result

    await timed("select", client.command("SELECT INBOX"))
    flags = await timed("uid_fetch_flags", client.command("UID FETCH 1:* (FLAGS)"))
    uids = [int(line.split(b"UID ")[1].split()[0].rstrip(b")")) for line in flags  # type: ignore[union-attr]
            if b" FETCH " in line]
    await timed("uid_fetch_headers", client.command(
        f"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"))

    async def bodies() -> None:
        for uid in uids[-100:]:
            await client.command(f"UID FETCH {uid} (BODY.PEEK[])")

    await timed("fetch_100_bodies", bodies())
    await timed("uid_search_unseen", client.command("UID SEARCH UNSEEN"))
    await timed("uid_store_seen", client.command("UID STORE 1:* +FLAGS.SILENT (\\Seen)"))
    await client.close()
    return {"messages": len(uids), "steps": steps,
            "sync_seconds": round(sum(steps.values()), 4)}


async def idle_latency(host: str, port: int, user: str, password: str,
                       rounds: int = 50) -> dict[str, float]:
    """Time from another session's STORE being sent to the IDLE session's FETCH."""
    idler = await ImapClient.connect(host, port, user, password)
    actor = await ImapClient.connect(host, port, user, password)
    await idler.command("SELECT INBOX")
    await actor.command("SELECT INBOX")
    idler.writer.write(b"i IDLE\r\n")
    while not (await idler.read_response()).startswith(b"+"):
        pass
    samples = []
    for i in range(rounds):
        sign = "+" if i % 2 == 0 else "-"
        start = time.perf_counter()
        actor.n += 1
        actor.writer.write(f"a{i} STORE 1 {sign}FLAGS.SILENT (\\Flagged)\r\n".encode())
        while True:
            line = await asyncio.wait_for(idler.read_response(), 10)
            if b"FETCH" in line:
                break
        samples.append((time.perf_counter() - start) * 1000)
        while not (await actor.read_response()).startswith(f"a{i} ".encode()):
            pass
    idler.writer.write(b"DONE\r\n")
    await idler.read_response()
    await idler.close()
    await actor.close()
    samples.sort()
    return {"idle_latency_ms_median": round(samples[len(samples) // 2], 3),
            "idle_latency_ms_p95": round(samples[int(len(samples) * 0.95) - 1], 3),
            "idle_rounds": rounds}


async def imap_append(host: str, port: int, user: str, password: str,
                      messages: list[bytes]) -> None:
    client = await ImapClient.connect(host, port, user, password)
    for data in messages:
        await client.command("APPEND INBOX", data)
    await client.close()


def wants_delivery(target: Target, args: argparse.Namespace) -> bool:
    """Our own server starts empty, so it always gets the messages; the other one gets
    them unless ``--no-deliver`` says it has them already."""
    return target.own or not args.no_deliver


def cmd_imap_sync(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    messages = [realistic_message(i, rng) for i in range(args.n)]
    results = []
    for t in targets(args, "imap"):
        if wants_delivery(t, args):
            deliver_messages(t, messages, args.concurrency)
        result: dict[str, Any] = {"server": t.label, "benchmark": "imap-sync"}
        result.update(asyncio.run(imap_sync(t.host, t.port, t.user, t.password)))
        result.update(asyncio.run(idle_latency(t.host, t.port, t.user, t.password)))
        results.append(result)
    return compare(results, "sync_seconds", higher_is_better=False)


def cmd_pop3(args: argparse.Namespace) -> dict[str, Any]:
    from bench_pop3 import bench_pop3

    rng = random.Random(args.seed)
    messages = [realistic_message(i, rng) for i in range(args.n)]
    results = []
    for t in targets(args, "pop3"):
        if wants_delivery(t, args):
            deliver_messages(t, messages, args.concurrency)
        result: dict[str, Any] = {"server": t.label, "benchmark": "pop3", "runs": []}
        cpu_before = process_cpu_seconds(t.pid)
        for _ in range(args.runs):
            run = asyncio.run(asyncio.wait_for(
                bench_pop3(t.host, t.port, t.user, t.password, 0, window=args.window), 600))
            result["runs"].append(run["retr_msgs_per_s"])
            result.update(run)
        cpu_after = process_cpu_seconds(t.pid)
        if cpu_before is not None and cpu_after is not None and result["retrieved"]:
            # Whole sessions (login, STAT, UIDL, RETRs, QUIT), all server threads.
            per_message = (cpu_after - cpu_before) / (args.runs * result["retrieved"])
            result["server_cpu_us_per_message"] = round(per_message * 1e6, 1)
        # The first retrieval after a bulk delivery is another thing: cold caches, and the
        # server records every message as seen (\Seen flags, Maildir renames). It is
        # reported on its own; the figure compared is the median of the runs after it.
        result["first_retr_msgs_per_s"] = result["runs"][0]
        steady = sorted(result["runs"][1:] or result["runs"])
        result["retr_msgs_per_s"] = steady[len(steady) // 2]
        results.append(result)
    out = compare(results, "retr_msgs_per_s", higher_is_better=True)
    first = compare(results, "first_retr_msgs_per_s", higher_is_better=True).get("ratio")
    if first is not None:
        out["ratio"]["first_retr_msgs_per_s"] = first["first_retr_msgs_per_s"]
    return out


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_target_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("-n", type=int, default=2000, help="messages to deliver first")
    p.add_argument("--concurrency", type=int, default=8, help="parallel LMTP connections")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--host", help="also measure this server (e.g. Dovecot) and print the ratio")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--user", default="bench")
    p.add_argument("--password", default="bench")
    p.add_argument("--lmtp-port", type=int, help="the other server's LMTP port for delivery")
    p.add_argument("--rcpt", default="bench", help="the other server's LMTP recipient")
    p.add_argument("--label", default="other")
    p.add_argument("--no-deliver", action="store_true",
                   help="do not deliver to the other server: measure what it has already")
    p.add_argument("--pid", type=int,
                   help="the other server's main process on this machine, to report its CPU "
                        "time as ours is (Dovecot: the number in run/master.pid)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("deliver", help="LMTP (or SMTP) delivery throughput")
    add_target_options(p, 24)
    p.add_argument("--smtp", action="store_true",
                   help="deliver to our SMTP listener instead of LMTP (the other server "
                        "still gets LMTP: Dovecot has no SMTP listener)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="our server's [server] workers")
    p.set_defaults(func=cmd_deliver)
    p = sub.add_parser("imap-sync", help="Thunderbird-like first sync and IDLE latency")
    add_target_options(p, 143)
    p.set_defaults(func=cmd_imap_sync)
    p = sub.add_parser("pop3", help="POP3 STAT, UIDL, RETR of every message, QUIT")
    add_target_options(p, 110)
    p.add_argument("--runs", type=positive_int, default=6,
                   help="retrievals: the first is reported on its own, the median of the "
                        "others is compared")
    p.add_argument("--window", type=positive_int, default=32,
                   help="RETR commands in flight (1: one at a time, like poplib)")
    p.set_defaults(func=cmd_pop3)
    from bench_load import add_load_arguments, cmd_load

    p = sub.add_parser("load", help="N IMAP clients of M users doing an office's random mix, "
                       "with rates, latencies and a client-side protocol state checker")
    add_load_arguments(p)
    p.set_defaults(func=lambda a: cmd_load(a, own_server, realistic_message,
                                           process_cpu_seconds, compare))
    from bench_submit import add_submit_arguments, cmd_submit

    p = sub.add_parser("submit", help="sending: through submission (or the queue alone), "
                       "DKIM, delivery over STARTTLS to a test MX")
    add_submit_arguments(p)
    p.set_defaults(func=lambda a: cmd_submit(a, realistic_message, wait_listeners))
    from bench_bigbox import add_bigbox_arguments, cmd_bigbox

    p = sub.add_parser("bigbox", help="one large INBOX: SELECT, UID FETCH FLAGS, UID SEARCH "
                       "UNSEEN, STATUS, POP3 STAT/UIDL, and the memory of a selected view")
    add_bigbox_arguments(p)
    p.set_defaults(func=lambda a: cmd_bigbox(a, own_server, lmtp_deliver))
    from bench_idle import add_idle_arguments, cmd_idle

    p = sub.add_parser("idle", help="N sessions idling on one INBOX: server memory per "
                       "session, fan-out of one delivered message to all of them")
    add_idle_arguments(p)
    p.set_defaults(func=lambda a: cmd_idle(a, own_server, process_cpu_seconds))
    from bench_storm import add_storm_arguments, cmd_storm

    p = sub.add_parser("storm", help="a reconnect storm: N clients LOGIN, SELECT and IDLE at "
                       "once, refused ones retrying; the time until all are back")
    add_storm_arguments(p)
    p.set_defaults(func=lambda a: cmd_storm(a, own_server, process_cpu_seconds, compare))
    args = parser.parse_args()
    print(json.dumps(args.func(args)))


if __name__ == "__main__":
    main()
