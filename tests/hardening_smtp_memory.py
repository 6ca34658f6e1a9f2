"""Peak memory of a server while parallel SMTP deliveries of big messages run (issue 12 #9).

Run as a script (it starts its own ``mailstead serve`` on loopback)::

    PYTHONPATH=server python tests/hardening_smtp_memory.py --parallel 6 --mib 40

``--server-path`` picks the source tree the server runs from (e.g. an older checkout), so
the same client measures before and after a change. The server's private memory (RssAnon +
RssShmem from /proc/<pid>/status) is sampled every 10 ms while the deliveries run; the
figure is the peak minus the value before the first byte was sent. ``measure`` is also
used by tests/test_hardening_smtp.py with smaller sizes.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import ServerProcess
from fuzzlib import create_users, rss_kb, server_config


class _Server(ServerProcess):
    def __init__(self, root: Path, config: str, server_path: str | None) -> None:
        super().__init__(root, config)
        self.server_path = server_path

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        if self.server_path:
            env["PYTHONPATH"] = self.server_path
        return env


def big_message(mib: int, tag: str) -> bytes:
    line = b"x" * 76 + b"\r\n"  # a base64 attachment's line length
    return f"Subject: big {tag}\r\n\r\n".encode() + line * (mib * 1024 * 1024 // len(line))


def measure(srv: ServerProcess, user: str, parallel: int, mib: int) -> dict[str, int]:
    """Deliver ``parallel`` messages of ``mib`` MiB at once; peak private growth in KiB."""
    assert srv.proc is not None
    pid = srv.proc.pid
    messages = [big_message(mib, str(i)) for i in range(parallel)]
    before = rss_kb(pid)["Private"]
    peak = [before]
    done = threading.Event()
    errors: list[BaseException] = []

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid)["Private"])
            time.sleep(0.01)

    def send(msg: bytes) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=300) as smtp:
                smtp.sendmail("a@example.net", [f"{user}@example.org"], msg)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    sampler = threading.Thread(target=sample)
    sampler.start()
    senders = [threading.Thread(target=send, args=(m,)) for m in messages]
    start = time.monotonic()
    for t in senders:
        t.start()
    for t in senders:
        t.join(600)
    took = time.monotonic() - start
    done.set()
    sampler.join()
    if errors:
        raise errors[0]
    return {"before_kib": before, "peak_kib": peak[0], "growth_kib": peak[0] - before,
            "seconds": int(took)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parallel", type=int, default=6)
    ap.add_argument("--mib", type=int, default=40)
    ap.add_argument("--server-path", help="PYTHONPATH for the server (default: this tree)")
    args = ap.parse_args()
    limit = (args.mib + 2) * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        srv = _Server(Path(tmp), server_config(limits={"max_message_size": limit}),
                      args.server_path).start()
        try:
            create_users(srv, "big")
            result = measure(srv, "big", args.parallel, args.mib)
        finally:
            srv.stop()
    print(f"{args.parallel} x {args.mib} MiB: private memory {result['before_kib'] // 1024} MiB"
          f" -> peak {result['peak_kib'] // 1024} MiB (+{result['growth_kib'] // 1024} MiB)"
          f" in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
