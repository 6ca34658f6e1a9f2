"""Twisted's asyncio reactor without the legacy log context around every socket event.

``AsyncioSelectorReactor`` registers each reader and writer with the asyncio loop as
``callWithLogger(selectable, _readOrWrite, ...)``: every read or write event then pushes
and pops a ``twisted.python.context`` dictionary (the ``system`` field of Twisted's
legacy log) before ``doRead``/``doWrite`` runs, about a tenth of the loop thread under
load. Mailstead logs with ``logging``, so that context is never read: ``LeanAsyncioReactor``
registers ``_readOrWrite`` itself, which still catches and logs what ``doRead`` or
``doWrite`` raise and disconnects the selectable as before. A registration the loop
refuses (a file epoll cannot watch) is left to Twisted's own ``addReader``/``addWriter``,
which fall back to polling.

The internals used (``_asyncioEventloop``, ``_readers``, ``_writers``,
``_continuousPolling``, ``_readOrWrite``, ``_unregisterFDInAsyncio``) are checked on the
instance; without them ``make_reactor`` returns Twisted's reactor unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from twisted.internet.asyncioreactor import AsyncioSelectorReactor

log = logging.getLogger("mailstead")

_INTERNALS = ("_asyncioEventloop", "_readers", "_writers", "_continuousPolling",
              "_readOrWrite", "_unregisterFDInAsyncio")


class LeanAsyncioReactor(AsyncioSelectorReactor):
    def addReader(self, reader: Any) -> None:
        if reader in self._readers or self._continuousPolling.isReading(reader):
            return
        fd = reader.fileno()
        try:
            self._asyncioEventloop.add_reader(fd, self._readOrWrite, reader, True)
        except BaseException:
            self._unregisterFDInAsyncio(fd)
            super().addReader(reader)  # its own handling: polling, or the error
            return
        self._readers[reader] = fd

    def addWriter(self, writer: Any) -> None:
        if writer in self._writers or self._continuousPolling.isWriting(writer):
            return
        fd = writer.fileno()
        try:
            self._asyncioEventloop.add_writer(fd, self._readOrWrite, writer, False)
        except BaseException:
            self._unregisterFDInAsyncio(fd)
            super().addWriter(writer)
            return
        self._writers[writer] = fd


def make_reactor(loop: asyncio.AbstractEventLoop) -> AsyncioSelectorReactor:
    """The reactor to install on ``loop``: the lean one if this Twisted has its internals."""
    reactor = LeanAsyncioReactor(loop)
    if all(hasattr(reactor, name) for name in _INTERNALS):
        return reactor
    return AsyncioSelectorReactor(loop)  # pragma: no cover - another Twisted version


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The serving loop: asyncio's; uvloop's with ``MAILSTEAD_EVENT_LOOP=uvloop`` (and uvloop
    installed). Under Twisted's reactor uvloop measured no better than asyncio's loop with
    the lean reactor and direct writes (server CPU per command, docs/architecture.md), so
    it is there to measure again, not the default."""
    if os.environ.get("MAILSTEAD_EVENT_LOOP", "") == "uvloop":
        import importlib

        try:  # not a dependency: imported by name, so type checks need not have it
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            log.warning("MAILSTEAD_EVENT_LOOP=uvloop, but uvloop is not installed")
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def install_reactor(loop: asyncio.AbstractEventLoop) -> Any:
    """Install Twisted's asyncio reactor on ``loop`` (once per process) and return it:
    the lean one (``connection.reactor``), without a log context per socket event."""
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet.main import installReactor

        installReactor(make_reactor(loop))
    from twisted.internet import reactor

    if not reactor.running:
        reactor.startRunning(installSignalHandlers=False)
    return reactor
