"""Shared fixtures: a real Mailstead server process on loopback with ephemeral ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from imap_harness import ImapWorld
    from mailstead.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent

# Every test runs with the session stream rule checked: a selected mailbox that breaks it
# raises instead of logging (imap/stream_check.py). Server subprocesses get it too.
CHECK_INVARIANTS = "MAILSTEAD_CHECK_INVARIANTS"
os.environ[CHECK_INVARIANTS] = "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run long fuzz and soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


BASE_CONFIG = """
[server]
hostname = "mail.test"
data_dir = "data"
domains = ["example.org", "mail.test"]
shutdown_grace = 5

[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[pop3]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[smtp]
listen = ["127.0.0.1:0"]

[lmtp]
listen = ["127.0.0.1:0"]

[limits]
max_message_size = 1000000
"""


class ServerProcess:
    """A ``mailstead serve`` subprocess with its own config and data folder."""

    def __init__(self, root: Path, config_text: str = BASE_CONFIG) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "mailstead.toml"
        self.config.write_text(config_text)
        self.data = root / "data"
        self.log = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[tuple[str, bool], int] = {}

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSTEAD_")}
        env["PYTHONPATH"] = str(ROOT / "server")
        env[CHECK_INVARIANTS] = "1"
        return env

    def start(self, timeout: float = 30.0) -> ServerProcess:
        listeners = self.data / "listeners.json"
        if listeners.exists():
            listeners.unlink()
        logfile = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailstead", "serve", "-c", str(self.config)],
            stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL, env=self.env,
        )
        logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if listeners.exists():
                self.ports = {
                    (e["protocol"], e["tls"]): e["port"]
                    for e in json.loads(listeners.read_text())
                }
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def port(self, proto: str, tls: bool = False) -> int:
        return self.ports[(proto, tls)]

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            config: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mailstead", *args]
        if config:
            cmd += ["-c", str(self.config)]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env,
                             timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"{cmd} failed ({res.returncode}): {res.stderr}")
        return res

    def add_user(self, name: str, password: str = "secret") -> None:
        self.cli("user", "add", name, "--password-stdin", input=password + "\n")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def stored_messages(server: ServerProcess, user: str, mailbox: str = "INBOX") -> list[bytes]:
    """The octets of a mailbox's messages as the store keeps them, by ascending UID.

    Read through the store API from the test process, as a second process would.
    """
    import asyncio

    from mailstead.store.sqlite import SqliteStore

    async def read() -> list[bytes]:
        store = SqliteStore(server.data / "mailstead.sqlite3")
        await store.open()
        try:
            u = await store.get_user(user)
            assert u is not None
            mbox = await store.get_mailbox(u.id, mailbox)
            assert mbox is not None
            infos = await store.list_messages(mbox.id)
            found = [await store.read_message(mbox.id, i.uid) for i in infos]
            return [m for m in found if m is not None]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the many tests that only need a running server and fresh users."""
    srv = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text(), srv.log_text()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of one's own, for tests that stop, kill or reconfigure it."""
    srv = ServerProcess(tmp_path / "srv")
    yield srv
    srv.kill()


_user_counter = iter(range(1, 1_000_000))


@pytest.fixture
def user(server: ServerProcess) -> str:
    """A new user on the shared server (password "secret")."""
    name = f"u{os.getpid()}x{next(_user_counter)}"
    server.add_user(name)
    return name


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A fresh SQLite store in the test's folder (no fsync: nothing here survives a crash)."""
    from mailstead.store.hub import ChangeHub
    from mailstead.store.sqlite import SqliteStore

    st = SqliteStore(tmp_path / "db.sqlite3", ChangeHub(), fsync=False)
    await st.open()
    yield st
    await st.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ImapWorld]:
    """An in-process IMAP server on a fresh store (see ``imap_harness``)."""
    from imap_harness import open_world  # it imports this module, so not at the top

    w = await open_world(tmp_path)
    yield w
    await w.close()
    await w.store.close()
