"""The embedded SQLite store (WAL mode): one writer thread with group commit, pooled readers.

Writes are jobs queued to a single writer thread (``writer.py``). It takes every job
that is waiting, runs each inside its own SAVEPOINT of one transaction and commits once
(one fsync for many deliveries), then hands results and change events back to the loop
in one callback so the ``ChangeHub`` sees batches strictly in commit order, and only
after commit. Reads run on a small thread pool, each thread with its own connection
(WAL lets readers run beside the writer). New messages are parsed before their job is
queued, so the writer only writes rows (``messages.py``). Message octets, the header
block and the parse result live in ``blobs``, shared by copies of a message;
``messages`` holds per-mailbox state.

Modules: ``schema`` (tables and upgrades), ``base`` (connections and the loop hop),
``users``, ``aliases``, ``mailboxes``, ``messages`` (writes), ``reads``, ``view_reads``
(SELECT's snapshot, from the copy of the rows in ``store/mailbox_rows.py``), ``queue``
(outbound), ``rows`` (value conversions), ``writer`` (the writer thread) and ``external``
(other processes' commits).
"""

from __future__ import annotations

from .aliases import AliasesMixin
from .messages import MessagesMixin
from .queue import QueueMixin
from .reads import ReadsMixin
from .users import UsersMixin
from .view_reads import ViewReadsMixin

__all__ = ["SqliteStore"]


class SqliteStore(UsersMixin, AliasesMixin, ViewReadsMixin, MessagesMixin, ReadsMixin,
                  QueueMixin):
    """``MailStore`` on one SQLite database file in WAL mode."""
