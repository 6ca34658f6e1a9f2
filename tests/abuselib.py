"""Measuring fairness for the attack battery (``tests/test_abuse.py``).

While an attack runs against a real ``mailstead serve`` process, a second user's session
sends a NOOP every 100 ms and times each round trip (:class:`NoopProbe`), and a sampler
reads the server's private memory every 25 ms (:class:`MemorySampler`). ``under_attack``
joins the two and hands back the figures; the test asserts them against the bounds below.

Private memory is ``Private_Dirty + Private_Hugetlb`` from /proc/PID/smaps_rollup: the
pages only the server holds and has written. ``Private_Clean`` is left out: it is mostly
the clean pages of the database file the store's readers map (``PRAGMA mmap_size``),
page cache that is neither the server's to hold nor lost to anyone.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fuzzlib as F
from conftest import ServerProcess

MiB = 1024 * 1024
NOOP_BOUND = 1.0  # seconds another user's NOOP may take during an attack
MEMORY_BUDGET_MIB = 64  # the server's private memory may grow by at most this much


def password_check_mib() -> float:
    """What one argon2id check in progress holds (its memory cost, 64 MiB by default):
    an attack that makes the server check passwords one at a time is allowed that much
    on top of the budget, since it is the price of any login, bounded by
    ``[limits] max_logins_in_progress``, and given back when the check ends."""
    from mailstead.auth.passwords import make_context

    return make_context().handler("argon2").memory_cost / 1024
PASSWORD = F.PASSWORD


def private_kib(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Private_Dirty", "Private_Hugetlb"):
            total += int(value.split()[0])
    return total


def toml_config(sections: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return "\n".join(
        f"[{name}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )


def base_sections(*, tls: bool = False) -> dict[str, dict[str, Any]]:
    listen = ["127.0.0.1:0"]
    return {
        "server": {"hostname": "mail.test", "data_dir": "data",
                   "domains": ["example.org", "mail.test"], "shutdown_grace": 2},
        "store": {"fsync": False},
        "imap": {"listen": listen, "listen_tls": listen if tls else []},
        "pop3": {"listen": listen, "listen_tls": []},
        "smtp": {"listen": listen},
        "lmtp": {"listen": listen},
        "limits": {"max_message_size": 25 * MiB, "max_connections_per_ip": 60,
                   "max_sessions_per_user": 60},
    }


def find_key(pattern: str, exclude: str = "^$") -> tuple[str, str] | None:
    """(section, key) of the first config key matching ``pattern`` in the code under test:
    limits that other branches add are found whatever they named them."""
    from mailstead.config import SCHEMA

    for section, keys in SCHEMA.items():
        for key in keys:
            if re.search(pattern, key) and not re.search(exclude, key):
                return section, key
    return None


def typed_value(section: str, key: str, value: float) -> float | int:
    """``value`` as the key's type (a float key given an int, or the other way, is an
    error in the config)."""
    from mailstead.config import SCHEMA

    return float(value) if SCHEMA[section][key][0] is float else int(value)


class NoopProbe:
    """A logged-in session of another user timing a NOOP round trip every 100 ms."""

    def __init__(self, port: int, user: str) -> None:
        self.client = F.imap_login(port, user)
        self.latencies: list[float] = []
        self._sent_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                tag = f"P{n}"
                self._sent_at = time.monotonic()
                self.client.imap(tag, "NOOP", timeout=300)
                self.latencies.append(time.monotonic() - self._sent_at)
                self._sent_at = None
                self._stop.wait(0.1)
        except (OSError, TimeoutError, ConnectionError):
            pass  # closed at the end, or the server died: the pending time counts

    def finish(self) -> float:
        """Stop probing; the longest round trip, an unanswered NOOP counting until now."""
        self._stop.set()
        self._thread.join(timeout=1.5)
        pending = self._sent_at
        worst = max(self.latencies, default=0.0)
        if pending is not None and self._thread.is_alive():
            worst = max(worst, time.monotonic() - pending)
        self.client.close()
        return worst


class MemorySampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = private_kib(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, private_kib(self.pid))
            except OSError:
                return
            self._stop.wait(0.025)

    def finish(self) -> float:
        self._stop.set()
        self._thread.join(timeout=1)
        try:
            self.peak = max(self.peak, private_kib(self.pid))
        except OSError:
            pass
        return (self.peak - self.baseline) / 1024


@dataclass
class Figures:
    attack: str
    noop_max: float = 0.0
    growth_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    password_checks: int = 0  # checks the attack makes the server run at the same time

    @property
    def budget_mib(self) -> float:
        return MEMORY_BUDGET_MIB + self.password_checks * password_check_mib()

    def line(self) -> str:
        extra = ("; " + "; ".join(self.notes)) if self.notes else ""
        return (f"abuse {self.attack}: other user's NOOP max {self.noop_max:.2f} s, "
                f"private memory +{self.growth_mib:.1f} MiB (budget {self.budget_mib:.0f})"
                f"{extra}")

    def assert_fair(self) -> None:
        assert self.noop_max < NOOP_BOUND, self.line()
        assert self.growth_mib < self.budget_mib, self.line()


@contextmanager
def under_attack(server: ServerProcess, victim: str, attack: str) -> Iterator[Figures]:
    """Measure the victim's NOOP and the server's memory while the block runs; the
    figures are noted in the terminal summary whatever the outcome."""
    assert server.proc is not None
    fig = Figures(attack)
    probe = NoopProbe(server.port("imap"), victim)
    time.sleep(0.3)
    sampler = MemorySampler(server.proc.pid)
    try:
        yield fig
    finally:
        time.sleep(0.3)  # what the attack left behind still counts
        fig.noop_max = probe.finish()
        fig.growth_mib = sampler.finish()
        F.note(fig.line())


def assert_clean_log(server: ServerProcess) -> None:
    found = F.problems(server.log_text())
    assert not found, "\n\n".join(found[:3])


def connect_from(port: int, source: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))
    sock.settimeout(timeout)
    return sock


def recv_some(sock: socket.socket, timeout: float) -> bytes:
    """What the peer sends within ``timeout`` (b"" on close or silence)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except (TimeoutError, OSError):
        return b""


def closed_within(sock: socket.socket, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False
