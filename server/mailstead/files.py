"""Owner-only files: everything Mailstead writes (store, keys, certificates, exports,
runtime files) is 0700 for folders and 0600 for files, whatever the process umask.

Why modes in code rather than ``os.umask(0o077)`` at start: a umask is process-wide
state that library code, tests embedding the server and tools importing the store
never see set, and it cannot repair what an older version (or a hand-run command
under umask 022) left world-readable. ``os.open``/``mkdir`` with an explicit mode can
only lose bits to the umask, never gain them, so 0600/0700 at creation is exact under
any umask; ``tighten`` then strips group and other bits from what already exists.
SQLite creates ``-wal`` and ``-shm`` with the mode of the database file (and fchmods
them to it), so a 0600 database keeps its companions 0600 too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_GROUP_OTHER = 0o077


def tighten(path: Path) -> bool:
    """Remove group and other permissions from ``path`` if it exists; True if changed.

    A file that is not ours (chmod fails) is reported, not fatal: the folder around it
    is what keeps others out."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # a linked data folder: its target
    except FileNotFoundError:
        return False
    if not mode & _GROUP_OTHER:
        return False
    try:
        os.chmod(path, mode & ~_GROUP_OTHER)
    except PermissionError:
        log.warning("%s is readable by others (mode %04o) and not ours to change", path, mode)
        return False
    log.info("made %s owner-only (was %04o)", path, mode)
    return True


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself owner-only.

    Parents that had to be created get mode 0700 as well; parents that exist are left
    as they are (``/var/lib`` is not ours)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass  # created meanwhile by another process
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    tighten(path)
    return path


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """``os.open`` that creates the file 0600 and tightens an existing one."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & _GROUP_OTHER:
            os.fchmod(fd, mode & ~_GROUP_OTHER)
    except PermissionError:
        log.warning("%s is readable by others and not ours to change", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists (empty if new) and is owner-only."""
    os.close(open_private(path, os.O_RDONLY))
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` in a new 0600 file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an old tmp file left by a crash may be wider
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    os.replace(tmp, path)


def prepare_sqlite(db_path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644 & ~umask),
    and tighten it and its ``-wal``/``-shm``/``-journal`` companions if they exist."""
    private_file(db_path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(db_path.with_name(db_path.name + suffix))


def pread_exact(fileno: int, length: int, offset: int) -> bytes:
    """``length`` octets of an open file from ``offset``, which the file holds (a spool or
    message file being read in windows); ``OSError`` if it ends sooner."""
    data = os.pread(fileno, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:  # a short read (a signal) is rare
        more = os.pread(fileno, length - got, offset + got)
        if not more:
            raise OSError(f"file ended after {offset + got} octets, {length - got} short")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
