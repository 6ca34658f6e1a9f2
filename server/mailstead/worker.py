"""A worker process of ``[server] workers = N``: an ordinary server joined to its bus.

``daemon.Mailstead`` runs the same way in a worker as alone, except that the supervisor
(``supervisor.py``) holds the data folder's lock, the listening sockets, the control
socket and ``listeners.json``. ``attach`` connects what must span the workers to the
worker's bus (``bus.py``):

* each commit's mailbox ids go out as a hint; a hint from another worker makes the store
  look at the database at once (``look_outside_soon``) instead of at its next poll;
* POP3 maildrop locks become flocks under ``<data_dir>/run/maildrop`` as well;
* connection caps (SMTP, LMTP and submission ones too), sessions per user, failed-login
  throttling and submitted messages per hour are counted by the supervisor
  (``shared.SharedCounters``, ``shared.SharedThrottle``, ``shared.SharedRate``);
* only worker 0 runs the outbound queue (two runners would send a message twice); a
  worker that queues mail wakes it over the bus;
* ``mailstead who``/``kick`` arrive over the bus and are answered from this worker's
  sessions;
* end-of-file on the bus (the supervisor is gone) stops the worker gracefully.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .bus import BusClient, WorkerSetup
from .control import ControlServer, socket_path
from .files import private_dir
from .store.sqlite.base import SqliteBase

if TYPE_CHECKING:
    from .daemon import Mailstead


def name_logs(index: int) -> None:
    """Tag this worker's log records (``mailstead[w1]: …``): the workers share stderr."""

    def tag(record: logging.LogRecord) -> bool:
        record.name = f"{record.name}[w{index}]"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


async def attach(app: Mailstead, setup: WorkerSetup) -> BusClient:
    """Connect ``app`` (started up to its listeners) to the supervisor's bus."""
    ctx = app.ctx
    bus = BusClient(setup)
    await bus.connect()
    store = ctx.store
    if isinstance(store, SqliteBase):
        lock_dir = app.config.data_dir / "run" / "maildrop"
        private_dir(lock_dir.parent)
        private_dir(lock_dir)
        store.maildrop_lock_dir = lock_dir
        store.on_commit = bus.hint
        bus.on_hint = store.look_outside_soon
    ctx.worker_index = setup.index
    if app.outbound is not None:  # worker 0 runs the queue; the others wake it
        app.outbound.on_enqueue = bus.queued
        bus.on_queue = app.outbound.wake
    ctx.connections.shared = bus
    ctx.connections.logins.shared = bus
    ctx.auth.shared_throttle = bus
    ctx.submission_rate.shared = bus
    bus.on_block = ctx.auth.throttle.block_ip
    bus.on_control = ControlServer(ctx.sessions, socket_path(app.config.data_dir)).answer
    bus.on_lost = lambda: app.request_stop("the supervisor is gone")
    return bus
