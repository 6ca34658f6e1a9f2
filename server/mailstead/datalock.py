"""One server per data folder: an exclusive ``flock`` on ``<data_dir>/mailstead.lock``.

Two servers on one folder would both hand out POP3 maildrop locks, both write
``listeners.json`` and the one that stops would delete the other's. The lock is taken
before anything in the folder is touched and held for the life of the process; the
kernel drops it when the process ends however it ends, so a crash never leaves a stale
lock to clean up (the file itself stays: deleting it at exit would let a starting server
lock a new file while another still holds the old one). It keeps the holder's pid, for
the message the second server prints. A supervisor that forks workers passes the held
descriptor on with the fork (``flock`` belongs to the open file, which the children
share). Command-line tools
(``user add``, imports) take no lock: they are meant to run beside the server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .files import open_private

LOCK_FILE = "mailstead.lock"


class DataFolderBusy(Exception):
    """Another live process holds the data folder's lock."""


class DataFolderLock:
    """The exclusive lock of one data folder, held until ``release`` or process exit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; raise ``DataFolderBusy`` naming the holder."""
        if self._fd is not None:
            return
        fd = open_private(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise DataFolderBusy(
                f"data folder {self.path.parent} is in use by another Mailstead server "
                f"({who}): stop it first, or give this server its own [server] data_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def fileno(self) -> int:
        """The held descriptor, for a supervisor to pass to its workers."""
        if self._fd is None:
            raise ValueError("the lock is not held")
        return self._fd

    def adopt(self, fd: int) -> None:
        """Hold the lock through ``fd``, inherited from the supervisor that took it.

        The descriptor must be this folder's lock file, and its open file must hold the
        lock already (``flock`` on an open file that holds it succeeds at once; on any
        other open file of a locked file it would fail), so a worker started by hand with
        a stray descriptor cannot run beside a server."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            if same:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            same = False
        except OSError as exc:
            raise DataFolderBusy(f"the inherited lock of {self.path.parent} is unusable: "
                                 f"{exc.strerror or exc}") from None
        if not same:
            raise DataFolderBusy(f"the inherited descriptor {fd} does not hold the lock of "
                                 f"data folder {self.path.parent}")
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the last descriptor of the open file drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
