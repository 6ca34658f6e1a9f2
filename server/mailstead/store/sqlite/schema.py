"""The SQLite schema, its version, and the upgrades that bring older databases up to it.

``PRAGMA user_version`` holds the schema version. A new database is created at the
current version; an older one is upgraded step by step, inside one exclusive
transaction, when the store opens (the server or any CLI command: whichever opens it
first). Each step also checks what it changes, so a database whose version was never
recorded (version 0: every database made before versions existed) is upgraded safely.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

# Tables that other tables reference keep their definitions here, because an upgrade
# may have to rebuild them (SQLite cannot add AUTOINCREMENT to an existing table).
# AUTOINCREMENT: an id is never handed out twice, even after its row is deleted, so a
# recreated user or mailbox can never be taken for the old one by a cache keyed by id.
_USERS = """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL
)"""
_MAILBOXES = """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    first_recent_uid INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    UNIQUE (user_id, name)
)"""
# An address ("local@domain", or "@domain" for the domain's catch-all), lower case, and
# one row per user it reaches. A user's deletion removes them from every alias.
_ALIASES = """(
    address TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (address, user_id)
) WITHOUT ROWID"""
_BLOB_SEARCH = """(
    blob_id INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    text TEXT NOT NULL
)"""

# The outbound queue (version 5): a message once, its recipients each with their own state
# ('pending', 'sent', 'bounced'), attempt count, next attempt (Unix time) and the remote's
# last reply. A message leaves the queue in the transaction that settles its last recipient.
_QUEUE = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mail_from TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_recipients (
    queue_id INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_reply TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (queue_id, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_recipients_due ON queue_recipients (state, next_attempt);
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users {_USERS};
CREATE TABLE IF NOT EXISTS mailboxes {_MAILBOXES};
CREATE TABLE IF NOT EXISTS subscriptions (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY,
    refcount INTEGER NOT NULL,
    header BLOB NOT NULL,
    structure TEXT NOT NULL,
    data BLOB NOT NULL,
    dot_lines INTEGER  -- 1 when a line starts with ".", NULL: unknown (older databases)
);
-- The header decoded for SEARCH (mime.header_text.HeaderText as JSON); no row: not
-- decoded yet (messages stored before version 4). Not a column of blobs: a big message's
-- data is written as a zeroblob and then in pieces, and SQLite builds a zeroblob in
-- memory whenever a column after it holds octets (dot_lines 0 or 1 holds none).
CREATE TABLE IF NOT EXISTS blob_search {_BLOB_SEARCH};
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob_id INTEGER NOT NULL REFERENCES blobs(id),
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases {_ALIASES};
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_user ON aliases (user_id);
{_QUEUE}"""


def _add_dot_lines(conn: sqlite3.Connection) -> None:
    """Version 1: blobs record whether a line starts with "." (NULL for older rows)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}
    if "dot_lines" not in columns:
        conn.execute("ALTER TABLE blobs ADD COLUMN dot_lines INTEGER")


def _rebuild(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """Recreate ``table`` with ``definition``, keeping its rows and their ids.

    The caller has foreign keys off, so dropping the old table neither cascades nor
    breaks the tables that reference it: they refer to it by name and find the new one.
    """
    columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
    conn.execute(f"CREATE TABLE {table}_new {definition}")
    conn.execute(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _never_reuse_ids(conn: sqlite3.Connection) -> None:
    """Version 2: user and mailbox ids are AUTOINCREMENT, and UIDVALIDITY only grows.

    An id deleted before this upgrade and above every id still present cannot be known
    any more; from here on, ids only grow."""
    for table, definition in (("users", _USERS), ("mailboxes", _MAILBOXES)):
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()[0]
        if "AUTOINCREMENT" not in sql.upper():
            _rebuild(conn, table, definition)
    # The next UIDVALIDITY must be above every one in use, whatever the clock says.
    conn.execute(
        "INSERT INTO meta (key, value) SELECT 'uidvalidity', MAX(uidvalidity) FROM mailboxes "
        "WHERE true HAVING COUNT(*) > 0 "  # WHERE: SQLite's upsert-after-SELECT rule
        "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)"
    )


def _add_aliases(conn: sqlite3.Connection) -> None:
    """Version 3: addresses that reach users other than by their name (``alias add``)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS aliases {_ALIASES}")
    conn.execute("CREATE INDEX IF NOT EXISTS aliases_by_user ON aliases (user_id)")


def _add_search_text(conn: sqlite3.Connection) -> None:
    """Version 4: blobs keep their header decoded for SEARCH (issue 12 #7).

    Only the (empty) ``blob_search`` table is made, nothing is decoded: constant time,
    whatever the size of the database. Older messages get their text when a SEARCH first
    needs it (``reads.read_header_texts``)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS blob_search {_BLOB_SEARCH}")


def _add_queue(conn: sqlite3.Connection) -> None:
    """Version 5: the outbound queue (``queue``, ``queue_recipients``)."""
    for statement in _QUEUE.split(";"):
        if statement.strip():
            conn.execute(statement)


# Which mailboxes changed, in commit order (version 6): one row per mailbox, holding the
# sequence number of the last commit that bumped its modseq or UIDNEXT, made it or
# deleted it (the row of a deleted mailbox stays: ids are never reused). Triggers write
# it, so every process's commit is recorded, whatever code made it; ``external.py``
# reads the rows above the last number it saw instead of every mailbox of every user.
_BUMPED = "(SELECT coalesce(max(seq), 0) + 1 FROM mailbox_changes)"
_MAILBOX_CHANGES = (
    "CREATE TABLE IF NOT EXISTS mailbox_changes "
    "(mailbox_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS mailbox_changes_by_seq ON mailbox_changes (seq)",
    "CREATE TRIGGER IF NOT EXISTS mailbox_bumped AFTER UPDATE OF highestmodseq, uidnext "
    "ON mailboxes BEGIN INSERT OR REPLACE INTO mailbox_changes (mailbox_id, seq) "
    f"VALUES (NEW.id, {_BUMPED}); END",
    "CREATE TRIGGER IF NOT EXISTS mailbox_made AFTER INSERT ON mailboxes BEGIN "
    f"INSERT OR REPLACE INTO mailbox_changes (mailbox_id, seq) VALUES (NEW.id, {_BUMPED}); END",
    "CREATE TRIGGER IF NOT EXISTS mailbox_deleted AFTER DELETE ON mailboxes BEGIN "
    f"INSERT OR REPLACE INTO mailbox_changes (mailbox_id, seq) VALUES (OLD.id, {_BUMPED}); END",
    # "What changed in this mailbox above modseq N" (another process's commit, a SELECT
    # after a change) reads the changed rows, not every message of the mailbox.
    "CREATE INDEX IF NOT EXISTS messages_by_modseq ON messages (mailbox_id, modseq)",
    "CREATE INDEX IF NOT EXISTS expunged_by_modseq ON expunged (mailbox_id, modseq)",
)


def _add_mailbox_changes(conn: sqlite3.Connection) -> None:
    """Version 6: the record of which mailboxes changed, and the modseq indexes.

    Indexing the messages reads every message once, at this upgrade. (The triggers belong
    to the mailboxes table: an upgrade that rebuilds it must make them again.)"""
    for statement in _MAILBOX_CHANGES:
        conn.execute(statement)


# UPGRADES[n] takes a database from version n to n + 1.
UPGRADES: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _add_dot_lines, _never_reuse_ids, _add_aliases, _add_search_text, _add_queue,
    _add_mailbox_changes,
)
SCHEMA_VERSION = len(UPGRADES)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create the tables of a new database, or upgrade an older one (outside a transaction)."""
    conn.executescript(SCHEMA)
    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"the database has schema version {version}, made by a newer Mailstead "
            f"(this one knows up to {SCHEMA_VERSION})"
        )
    # Foreign keys must be off to rebuild a referenced table, and the pragma is a no-op
    # inside a transaction; the check below stands in for them.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have upgraded it while we waited for the lock.
            for step in UPGRADES[schema_version(conn):]:
                step(conn)
            broken = conn.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise sqlite3.DatabaseError(f"schema upgrade broke a reference: {broken}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
