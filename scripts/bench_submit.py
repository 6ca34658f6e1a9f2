"""``scripts/bench submit``: outbound throughput with DKIM signing on.

``--via submission`` (the default) runs ``mailstead serve`` and sends through its
submission listener on implicit TLS (465-style): ``--concurrency`` clients, each one
connection and one AUTH PLAIN, send their share of the messages; the server signs each
with a 2048-bit RSA key, commits it with fsync before its ``250`` and delivers it over
STARTTLS to a test MX. ``--via queue`` skips the listener and calls
``OutboundQueue.enqueue`` in this process (what submission calls once DATA is in). The
test MX is an aiosmtpd server in a child process, reached as the ``[relay]`` smarthost so
no DNS is needed. Recipients are spread over ``--domains`` domains, so up to that many
connections deliver at once (``[queue] concurrency``). Reported: messages/s accepted
(``250`` to the client, or enqueued), messages/s from the first message to the last
``250`` at the MX, and the server's CPU time per message.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _sink(cert: str, key: str, ready: Any, port: Any, count: Any) -> None:
    """The test MX (child process): accepts everything, counts the messages."""
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            return "250 2.0.0 ok"

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="mx.bench.test", tls_context=ctx), "127.0.0.1", 0)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=400, help="messages to send")
    p.add_argument("--domains", type=int, default=10, help="destination domains")
    p.add_argument("--concurrency", type=int, default=8,
                   help="submission clients (or enqueue calls) at once")
    p.add_argument("--via", choices=("submission", "queue"), default="submission",
                   help="through the submission listener of a server process, or "
                   "straight into the queue in this process")


def cmd_submit(args: argparse.Namespace,
               realistic_message: Callable[[int, random.Random], bytes],
               wait_listeners: Callable[..., dict[tuple[str, bool], int]]) -> dict[str, Any]:
    from mailstead.config import load_config
    from mailstead.outbound.dkim import keygen
    from mailstead.tls import generate_self_signed

    with tempfile.TemporaryDirectory(prefix="mailstead-bench-submit-") as tmp:
        root = Path(tmp)
        cert, key = root / "tls" / "cert.pem", root / "tls" / "key.pem"
        ca = generate_self_signed(cert, key, "localhost")
        ctx = multiprocessing.get_context("spawn")
        ready, port, count = ctx.Event(), ctx.Value("i", 0), ctx.Value("i", 0)
        sink = ctx.Process(target=_sink, args=(str(cert), str(key), ready, port, count),
                           daemon=True)
        sink.start()
        try:
            if not ready.wait(30):
                raise SystemExit("the test MX did not start")
            (root / "mailstead.toml").write_text(f"""
[server]
hostname = "bench.test"
data_dir = "data"
domains = ["bench.test"]
[queue]
poll_seconds = 1
concurrency = {args.domains}
[relay]
host = "localhost"
port = {port.value}
tls = "starttls"
ca_file = "{ca}"
[submission]
listen_tls = ["127.0.0.1:0"]
max_messages_per_hour = 1000000  # the bench sends far more than a person would
[tls]
cert = "{cert}"
key = "{key}"
[log]
level = "warn"
""")
            cfg = load_config(root / "mailstead.toml", env={})
            keygen(cfg.data_dir, "bench.test", "bench", "rsa")
            messages = _messages(args, realistic_message)
            if args.via == "queue":
                return asyncio.run(_run(args, cfg, messages, count))
            return _via_submission(args, root, messages, count, wait_listeners)
        finally:
            sink.kill()
            sink.join(5)


def _messages(args: argparse.Namespace,
              realistic_message: Callable[[int, random.Random], bytes]) -> list[tuple[str, bytes]]:
    """(recipient, message) pairs: the bench's realistic mails, from bench@bench.test."""
    rng = random.Random(14)
    messages = []
    for i in range(args.messages):
        data = realistic_message(i, rng).replace(b"To: bench@bench.test",
                                                 f"To: r{i}@d{i % args.domains}.test".encode())
        data = data.replace(b"From: ", b"X-Was-From: ", 1)
        messages.append((f"r{i}@d{i % args.domains}.test",
                         b"From: Bench <bench@bench.test>\r\n" + data))
    return messages


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _via_submission(args: argparse.Namespace, root: Path, messages: list[tuple[str, bytes]],
                    count: Any, wait_listeners: Callable[..., dict[tuple[str, bool], int]],
                    ) -> dict[str, Any]:
    """Start ``mailstead serve`` on ``root`` and send ``messages`` through submission."""
    import smtplib
    import subprocess
    import sys
    import threading

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "server"))
    cmd = [sys.executable, "-m", "mailstead"]
    config = str(root / "mailstead.toml")
    subprocess.run([*cmd, "user", "add", "bench", "--password-stdin", "-c", config],
                   input="bench\n", text=True, check=True, env=env, capture_output=True)
    with (root / "log").open("wb") as log:
        proc = subprocess.Popen([*cmd, "serve", "-c", config], env=env, stderr=log)
    try:
        port = wait_listeners(root, proc)[("submission", True)]
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the bench's own cert
        shares = [messages[i::args.concurrency] for i in range(args.concurrency)]
        errors: list[str] = []

        def client(share: list[tuple[str, bytes]]) -> None:
            try:
                with smtplib.SMTP_SSL("127.0.0.1", port, context=tls, timeout=60) as conn:
                    conn.login("bench", "bench")
                    for rcpt, data in share:
                        conn.sendmail("bench@bench.test", [rcpt], data)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        cpu0, start = _proc_cpu(proc.pid), time.perf_counter()
        threads = [threading.Thread(target=client, args=(share,)) for share in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = time.perf_counter() - start
        wait_until = time.monotonic() + 600
        while count.value < args.messages and time.monotonic() < wait_until and not errors:
            time.sleep(0.02)
        delivered = time.perf_counter() - start
        cpu = _proc_cpu(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(30)
    if errors:
        raise SystemExit(f"{len(errors)} submission client(s) failed: {errors[0]}")
    return {
        "bench": "submit",
        "via": "submission (implicit TLS, AUTH PLAIN, one connection per client)",
        "messages": args.messages,
        "clients": args.concurrency,
        "domains": args.domains,
        "dkim": "rsa-sha256 2048",
        "route": "relay localhost STARTTLS (aiosmtpd test MX in a child process)",
        "accepted_per_s": round(args.messages / accepted, 1),
        "delivered_per_s": round(count.value / delivered, 1),
        "delivered": count.value,
        "server_cpu_ms_per_message": round(cpu * 1000 / args.messages, 2),
    }


async def _run(args: argparse.Namespace, cfg: Any, messages: list[tuple[str, bytes]],
               count: Any) -> dict[str, Any]:
    from mailstead.outbound.queue import OutboundQueue
    from mailstead.store import open_store

    store = await open_store(cfg)
    queue = OutboundQueue(store, cfg)
    queue.start()
    pending = list(messages)
    cpu0, start = os.times(), time.perf_counter()

    async def worker() -> None:
        while pending:
            rcpt, data = pending.pop()
            await queue.enqueue("bench@bench.test", [rcpt], data)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    enqueued = time.perf_counter() - start
    deadline = time.monotonic() + 600
    while count.value < args.messages and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    delivered = time.perf_counter() - start
    cpu1 = os.times()
    left = await store.queue_pending()
    await queue.stop()
    await store.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "bench": "submit",
        "via": "queue (OutboundQueue.enqueue in the bench's process)",
        "messages": args.messages,
        "domains": args.domains,
        "dkim": "rsa-sha256 2048",
        "route": "relay localhost STARTTLS (aiosmtpd test MX in a child process)",
        "fsync": cfg.store.fsync,
        "enqueued_per_s": round(args.messages / enqueued, 1),
        "delivered_per_s": round(count.value / delivered, 1),
        "delivered": count.value,
        "left_in_queue": left,
        "cpu_ms_per_message": round(cpu * 1000 / args.messages, 2),
    }
