"""Can the server take mail? The store's room, the data folder, the certificate's dates.

``storage_state(config)`` looks, without writing anything, at what a delivery needs: a
data folder the server can write, room in the database under ``[limits]
max_store_bytes`` (SQLite refuses writes past ``max_page_count``, reusing free pages
first), and room on the disk. It blocks (a read-only SQLite connection, ``statvfs``):
call it in a thread. ``/healthz`` and ``/metrics`` both use it.

A store is called full when less room is left than one ordinary message needs
(``ROOM_NEEDED``, or a sixteenth of a very small limit), well before it is at its last
page, because that is when deliveries start to fail with 452.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOM_NEEDED = 1024 * 1024
# os.access on the effective user (the server's), where the platform can.
_EFFECTIVE = os.access in os.supports_effective_ids


@dataclass(frozen=True, slots=True)
class StorageState:
    used_bytes: int  # in use inside the database (free pages not counted)
    file_bytes: int  # the database and its WAL on disk
    limit_bytes: int  # [limits] max_store_bytes; 0 = no limit
    disk_free_bytes: int | None  # for the server's user, in the data folder's file system
    problem: str | None  # why no mail can be taken now, or None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _pages_in_use(db: Path) -> int | None:
    """Bytes of the database's pages that hold data, or None when it cannot be read."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
    except (sqlite3.Error, ValueError):
        return None
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _kib(n: int) -> str:
    return f"{n // 1024:,} KiB"


def storage_state(config: Any) -> StorageState:
    """See the module docstring; ``config`` is the server's ``Config``."""
    data_dir: Path = config.data_dir
    db: Path = config.db_path
    limit = int(config.limits.max_store_bytes)
    needed = min(int(config.limits.max_message_size), ROOM_NEEDED)
    file_bytes = _size(db) + _size(db.with_name(db.name + "-wal"))
    used = _pages_in_use(db) if db.exists() else 0
    try:
        st = os.statvfs(data_dir)
        disk_free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        disk_free = None
    problem = None
    if not os.access(data_dir, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        problem = f"data folder {data_dir} is not writable"
    elif db.exists() and not os.access(db, os.W_OK, effective_ids=_EFFECTIVE):
        problem = f"mail store {db} is not writable"
    elif used is None:
        problem = "mail store cannot be read"
    elif limit and limit - used < min(needed, limit // 16):
        problem = (f"store full: {_kib(max(limit - used, 0))} left of [limits] "
                   f"max_store_bytes {_kib(limit)}")
    elif disk_free is not None and disk_free < needed:
        problem = f"disk full: {_kib(disk_free)} free in {data_dir}"
    return StorageState(used or 0, file_bytes, limit, disk_free, problem)


class CertificateDates:
    """The certificate file's expiry (Unix time), re-read only when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._expiry: float | None = None

    def expiry(self) -> float | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            from cryptography import x509

            try:
                # The first certificate of the chain is the server's own.
                cert = x509.load_pem_x509_certificates(self.path.read_bytes())[0]
                self._expiry = cert.not_valid_after_utc.timestamp()
            except (OSError, ValueError, IndexError):
                self._expiry = None
            self._seen = stamp
        return self._expiry
