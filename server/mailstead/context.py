"""What every listener shares: config, store, hub, authentication, TLS and live sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .auth.users import Authenticator
from .config import Config
from .store.api import MailStore
from .store.hub import ChangeHub
from .tls import TLSContexts


class LiveSession(Protocol):
    """A connected client session the daemon can ask to leave at shutdown."""

    def shutdown(self, reason: str) -> None: ...


class SessionRegistry:
    """Every open IMAP/POP3 session, so a graceful stop can say goodbye to each."""

    def __init__(self) -> None:
        self._sessions: set[LiveSession] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, session: LiveSession) -> None:
        self._sessions.add(session)
        self._empty.clear()

    def discard(self, session: LiveSession) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    def close_all(self, reason: str) -> None:
        for session in list(self._sessions):
            session.shutdown(reason)

    async def wait_empty(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass
class ServerContext:
    config: Config
    store: MailStore
    hub: ChangeHub
    auth: Authenticator
    tls: TLSContexts | None
    loop: asyncio.AbstractEventLoop
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    counters: dict[str, int] = field(default_factory=dict)
    # State shared by listeners of one kind (e.g. IMAP's \Recent tracker, per-IP counts).
    shared: dict[str, Any] = field(default_factory=dict)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Prometheus metrics (``metrics.Metrics``), when the daemon set them up.
    metrics: Any = None

    def count(self, name: str, n: int = 1) -> None:
        """Count an event, e.g. ``imap_logins_ok`` (also exported as a metric)."""
        self.counters[name] = self.counters.get(name, 0) + n
        if self.metrics is not None:
            self.metrics.count(name, n)

    def observe(self, name: str, seconds: float, label: str = "") -> None:
        """Record a duration, e.g. ``imap_command`` with label ``FETCH``."""
        if self.metrics is not None:
            self.metrics.observe(name, seconds, label)
