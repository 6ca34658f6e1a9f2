"""The model-based sync test over real sockets: one server process, several client processes.

Each client process (``sync_model_client.py``) drives its own seeded random program
against the same user at the same time and checks its own stream with ``imap_model``.
With ``workers = 2`` the clients' sessions are spread over two worker processes (each
client connects until its IMAP ID names the worker it is given; the test checks), so
every change reaches the others through the store and the bus. When all are done and
quiet, the parent reads INBOX from the store and hands it to each client, whose NOOP
must then leave it with exactly that view; finally the parent checks that no two clients
were given ``\\Recent`` for the same message and that the server logged no error.
Seeds: ``SYNC_SOCKET_SEED`` (default 7); the failure message names it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, ServerProcess
from fuzzlib import append_messages, create_users, message, problems, server_config, store_snapshot

CLIENT = Path(__file__).with_name("sync_model_client.py")


class Child:
    """One client process and the lines it printed."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.name = args[2]
        self.proc = subprocess.Popen([sys.executable, str(CLIENT), *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""

    def line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"client {self.name} said nothing in time")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"client {self.name} exited:\n{err[-3000:]}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_clients(tmp_path: Path, clients: int, seconds: float, seed: int,
                workers: int = 1) -> None:
    server = ServerProcess(tmp_path / "srv", server_config(fsync=False, workers=workers)).start()
    children: list[Child] = []
    try:
        create_users(server, "sock")
        append_messages(server, "sock", [message("sock", 80) for _ in range(6)])
        env = {**server.env, "PYTHONPATH": f"{ROOT / 'server'}{os.pathsep}{ROOT / 'tests'}"}
        port = server.port("imap")
        for i in range(clients):
            # With several workers, client i is served by worker i % workers.
            spread = ["secret", str(i % workers)] if workers > 1 else []
            children.append(Child([str(port), "sock", f"p{i}", str(seed * 100 + i),
                                   str(seconds), *spread], env))
        deadline = time.monotonic() + seconds + 30
        for child in children:
            assert child.line(deadline) == "READY"
        if workers > 1:  # the sessions are spread over the workers (the kernel's choice)
            sessions = json.loads(server.cli("who", "--json").stdout)
            served = sorted(s["worker"] for s in sessions if s["user"] == "sock")
            assert served == sorted(i % workers for i in range(clients)), sessions
        # Everyone is quiet now: the store's INBOX is what every NOOP must end up with.
        snapshot = store_snapshot(server, "sock")
        truth = json.dumps({"uids": sorted(snapshot),
                            "flags": {str(u): sorted(f) for u, (f, _) in snapshot.items()}})
        for child in children:
            if child.proc.poll() is None:
                child.send(truth)
        results = [json.loads(child.line(deadline)) for child in children]
    finally:
        for child in children:
            child.stop()
        server.stop()
    context = f"(SYNC_SOCKET_SEED={seed}, {clients} clients, {workers} workers, {seconds} s)"
    failures = [r["violation"] for r in results if r["violation"]]
    assert not failures, f"{context}\n" + "\n\n".join(failures)
    holders: dict[int, str] = {}
    for r in results:
        for uid in r.get("recent", []):
            other = holders.setdefault(uid, r["name"])
            assert other == r["name"], (f"{context} [recent-in-two-sessions] \\Recent of INBOX "
                                        f"UID {uid} shown to {other} and {r['name']}")
    assert sum(r.get("commands", 0) for r in results) > 20 * clients, results
    trouble = problems(server.log_text())
    assert not trouble, "\n".join(trouble)


def _seed() -> int:
    return int(os.environ.get("SYNC_SOCKET_SEED", "7"))


@pytest.mark.parametrize("workers", [1, 2])
def test_socket_clients_keep_a_true_view(tmp_path: Path, workers: int) -> None:
    run_clients(tmp_path, clients=4, seconds=6.0, seed=_seed(), workers=workers)


@pytest.mark.slow
def test_socket_clients_keep_a_true_view_long(tmp_path: Path) -> None:
    run_clients(tmp_path, clients=6, seconds=60.0, seed=_seed(), workers=2)
