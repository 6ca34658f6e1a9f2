"""The mailbox store: ``api`` (the interface), ``sqlite`` (the embedded backend), ``hub``.

``open_store`` is the one way an entry point gets a store — the daemon and every CLI
command — so all of them apply the same configured limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from .hub import ChangeHub
    from .sqlite import SqliteStore


def build_store(config: Config, hub: ChangeHub | None = None) -> SqliteStore:
    """The configured store, not yet opened: backend, durability and every limit."""
    from .api import StoreUnavailable
    from .sqlite import SqliteStore

    backend = config.store.backend
    if backend != "sqlite":
        raise StoreUnavailable(f"store backend {backend!r} is not available")
    limits = config.limits
    return SqliteStore(
        config.db_path,
        hub,
        fsync=config.store.fsync,
        max_mailboxes=limits.max_mailboxes_per_user,
        max_depth=limits.max_mailbox_depth,
        max_bytes=limits.max_store_bytes,
    )


def prepare_store(config: Config) -> None:
    """Create or upgrade the database once, before several worker processes open it
    (``supervisor.py``); raises ``StoreError`` when it cannot be done."""
    import sqlite3

    from ..files import prepare_sqlite, private_dir
    from .api import StoreUnavailable
    from .sqlite.schema import create_or_upgrade

    build_store(config)  # the backend check
    try:
        private_dir(config.db_path.parent)
        prepare_sqlite(config.db_path)
        conn = sqlite3.connect(config.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            create_or_upgrade(conn)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot open the mail store {config.db_path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


async def open_store(config: Config, hub: ChangeHub | None = None) -> SqliteStore:
    """``build_store`` and open it; raises ``StoreError`` when it cannot be opened.

    The data folder and the database are created owner-only first (``files``): SQLite
    would create them with the umask's mode, and its -wal/-shm files follow the database."""
    from ..files import prepare_sqlite, private_dir
    from .api import StoreUnavailable

    store = build_store(config, hub)
    try:
        private_dir(config.db_path.parent)
        prepare_sqlite(config.db_path)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the mail store {config.db_path}: {exc.strerror or exc}"
        ) from None
    await store.open()
    return store
