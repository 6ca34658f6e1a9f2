"""Issue 15: signals are handled from the moment the server says it is ready.

systemd (Type=notify) may send SIGTERM the instant it reads READY=1; a server that installed
its handlers later died of the signal's default action and left ``listeners.json`` behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess


def _start_and_term_at_ready(srv: ServerProcess, notify: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(30)
        env = srv.env | {"NOTIFY_SOCKET": str(notify)}
        with srv.log.open("ab") as logfile:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL, env=env,
            )
        try:
            while True:
                message = sock.recv(4096)
                if b"READY=1" in message.split(b"\n"):
                    os.kill(proc.pid, signal.SIGTERM)  # at once, as systemd may
                    break
            return proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_right_after_ready_stops_cleanly(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "srv")
    for attempt in range(3):  # the window was narrow: try it more than once
        notify = tmp_path / f"notify{attempt}"
        status = _start_and_term_at_ready(srv, notify)
        assert status == 0, (status, srv.log_text())
        assert not (srv.data / "listeners.json").exists()
        assert "stopping: SIGTERM" in srv.log_text()
    assert "Traceback" not in srv.log_text()
