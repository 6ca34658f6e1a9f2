"""Issue 13: the listen queue is long enough for a reconnect storm.

With a queue of 128, 2,000 clients reconnecting at once after a restart overflowed it: SYNs
were dropped (the clients retried after 1, 3, 7 ... s), and handshakes the kernel completed
but could not queue left clients waiting for a greeting on connections the server never saw
(`scripts/bench storm`: 494 of 2,000 clients not back after 300 s). Every listener now asks
for ``activation.LISTEN_BACKLOG``; the kernel caps it at ``net.core.somaxconn``.

The queue length of a listening socket is what ``ss -lnt`` shows as Send-Q."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, ServerProcess
from mailstead.activation import LISTEN_BACKLOG

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def _expected() -> int:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    return min(LISTEN_BACKLOG, somaxconn)


def _backlog(port: int) -> int:
    out = subprocess.run(["ss", "-lntH", f"sport = :{port}"], capture_output=True,
                         text=True, check=True, timeout=10).stdout.split()
    return int(out[2])  # State Recv-Q Send-Q ...


@pytest.mark.parametrize("workers", [1, 2])
def test_every_listener_has_a_long_listen_queue(tmp_path: Path, workers: int) -> None:
    assert LISTEN_BACKLOG >= 4096
    config = BASE_CONFIG.replace("shutdown_grace = 5", f"shutdown_grace = 5\nworkers = {workers}")
    srv = ServerProcess(tmp_path / "srv", config).start()
    try:
        assert len(srv.ports) == 6  # IMAP, IMAPS, POP3, POP3S, SMTP, LMTP
        for (protocol, tls), port in srv.ports.items():
            assert _backlog(port) == _expected(), (protocol, tls)
    finally:
        assert srv.stop() == 0
