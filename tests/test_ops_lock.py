"""One server per data folder (issue 15 #3): a second ``serve`` on the same folder exits
with one line and a non-zero status, before it touches anything of the first one's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess
from mailstead.datalock import DataFolderBusy, DataFolderLock


def _imap_greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.makefile("rb").readline().startswith(b"* OK")


def _serve(srv: ServerProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                          capture_output=True, text=True, env=srv.env, timeout=60)


def test_a_second_server_on_the_same_folder_exits_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    first = ServerProcess(tmp_path).start()
    try:
        assert first.proc is not None
        listeners = first.data / "listeners.json"
        before = listeners.read_bytes()
        second = _serve(first)  # same config: same data folder, fresh ports (port 0)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"data folder {first.data} is in use by another Mailstead server" in lines[0]
        assert f"(pid {first.proc.pid})" in lines[0]
        assert "Traceback" not in second.stderr
        # The first server's state is untouched: its listeners file, its ports, its health.
        assert listeners.read_bytes() == before
        assert _imap_greets(first.port("imap"))
        # Command-line tools still work beside the running server.
        first.add_user("nina", "pw")
        assert first.cli("user", "list").stdout.split() == ["nina"]
    finally:
        assert first.stop() == 0
    assert not (first.data / "listeners.json").exists()
    # Once the first one has stopped, the folder is free again.
    again = ServerProcess(tmp_path).start()
    try:
        assert _imap_greets(again.port("imap"))
    finally:
        assert again.stop() == 0


def test_a_killed_server_leaves_no_stale_lock(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path).start()
    srv.kill()  # SIGKILL: no cleanup ran, the lock file and listeners.json stay behind
    assert (srv.data / "mailstead.lock").exists()
    srv.start()  # the kernel dropped the flock with the process: nothing to clean up
    try:
        assert _imap_greets(srv.port("imap"))
        assert srv.proc is not None
        assert (srv.data / "mailstead.lock").read_text().strip() == str(srv.proc.pid)
    finally:
        assert srv.stop() == 0


def test_the_lock_is_exclusive_between_holders_and_released(tmp_path: Path) -> None:
    one, two = DataFolderLock(tmp_path), DataFolderLock(tmp_path)
    one.acquire()
    assert one.held
    with pytest.raises(DataFolderBusy, match=rf"in use by another Mailstead server \(pid "
                                             rf"{os.getpid()}\)"):
        two.acquire()
    assert not two.held
    one.release()
    two.acquire()
    assert two.held
    assert (tmp_path / "mailstead.lock").stat().st_mode & 0o777 == 0o600
    two.release()


def test_a_folder_that_cannot_be_used_is_one_clear_line(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    srv.data.write_text("a file where the data folder should be\n")
    res = _serve(srv)
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"cannot use data folder {srv.data}" in res.stderr
    assert "Traceback" not in res.stderr
