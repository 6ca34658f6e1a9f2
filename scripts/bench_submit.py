"""``scripts/bench submit``: outbound throughput with DKIM signing on.

Messages are handed to ``OutboundQueue.enqueue`` (what submission calls once a client's
DATA is in; the submission listener itself is not part of this measurement), each
signed with a 2048-bit RSA key and committed with fsync, then delivered by the queue
runner over STARTTLS to a test MX: an aiosmtpd server in a child process, reached as the
``[relay]`` smarthost so no DNS is needed. Recipients are spread over ``--domains``
domains, so up to that many connections deliver at once (``[queue] concurrency``).
Reported: messages/s enqueued, messages/s from the first enqueue to the last ``250``
at the MX, and this process's CPU seconds per message.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
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
    p.add_argument("--concurrency", type=int, default=8, help="enqueue calls in flight")


def cmd_submit(args: argparse.Namespace,
               realistic_message: Callable[[int, random.Random], bytes]) -> dict[str, Any]:
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
[log]
level = "warn"
""")
            cfg = load_config(root / "mailstead.toml", env={})
            keygen(cfg.data_dir, "bench.test", "bench", "rsa")
            return asyncio.run(_run(args, cfg, realistic_message, count))
        finally:
            sink.kill()
            sink.join(5)


async def _run(args: argparse.Namespace, cfg: Any,
               realistic_message: Callable[[int, random.Random], bytes],
               count: Any) -> dict[str, Any]:
    import os

    from mailstead.outbound.queue import OutboundQueue
    from mailstead.store import open_store

    rng = random.Random(14)
    messages = []
    for i in range(args.messages):
        data = realistic_message(i, rng).replace(b"To: bench@bench.test",
                                                 f"To: r{i}@d{i % args.domains}.test".encode())
        data = data.replace(b"From: ", b"X-Was-From: ", 1)
        messages.append((f"r{i}@d{i % args.domains}.test",
                         b"From: Bench <bench@bench.test>\r\n" + data))
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
