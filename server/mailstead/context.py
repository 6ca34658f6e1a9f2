"""What every listener shares: config, store, hub, authentication, TLS and live sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .auth.users import Authenticator
from .config import Config
from .connection.limits import ConnectionLimiter
from .connection.services import ConnectionServices
from .imap.expensive import ExpensiveWork
from .smtp.ratelimit import SubmissionRate
from .smtp.spool import DeliveryMemory
from .store.api import MailStore
from .store.hub import ChangeHub
from .tls import TLSContexts

if TYPE_CHECKING:
    from .metrics import Metrics  # prometheus_client is imported only when metrics are set up


class LiveSession(Protocol):
    """A connected client session the daemon can ask to leave at shutdown."""

    def shutdown(self, reason: str) -> None: ...


class SessionRegistry:
    """Every open IMAP/POP3 session, so a graceful stop can say goodbye to each, and
    since when (wall-clock seconds), for ``mailstead who``."""

    def __init__(self) -> None:
        self._sessions: dict[LiveSession, float] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, session: LiveSession) -> None:
        self._sessions.setdefault(session, time.time())
        self._empty.clear()

    def discard(self, session: LiveSession) -> None:
        self._sessions.pop(session, None)
        if not self._sessions:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    def opened(self) -> list[tuple[LiveSession, float]]:
        """(session, time it was added) for every open session, oldest first."""
        return sorted(self._sessions.items(), key=lambda item: item[1])

    def close_all(self, reason: str) -> None:
        for session in list(self._sessions):
            session.shutdown(reason)

    async def wait_empty(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True


class OutboundSink(Protocol):
    async def enqueue(self, mail_from: str, recipients: list[str], data: bytes) -> int: ...


# (protocol, "plain"|"tls", host, port) of every listener as really bound (port 0 resolved).
BoundListeners = Callable[[], list[tuple[str, str, str, int]]]


@dataclass
class ServerContext:
    config: Config
    store: MailStore
    hub: ChangeHub
    auth: Authenticator
    tls: TLSContexts | None
    loop: asyncio.AbstractEventLoop
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    # Process-wide state of the listeners, one field per service (every listener of a
    # protocol shares it, whatever port it is bound to; \Recent is claimed in the store):
    # IMAP and POP3: admission (the global cap, per client IP), the login policy with the
    # sessions per user, and the connection settings (``connection.services``).
    connections: ConnectionServices = field(init=False)
    # SMTP/LMTP/submission connections per client IP ([limits] max_connections_per_ip).
    smtp_per_ip: ConnectionLimiter = field(default_factory=ConnectionLimiter)
    lmtp_per_ip: ConnectionLimiter = field(default_factory=ConnectionLimiter)
    submission_per_ip: ConnectionLimiter = field(default_factory=ConnectionLimiter)
    # User id -> monotonic time of the last POP3 login ([pop3] login_delay).
    pop3_last_login: dict[int, float] = field(default_factory=dict)
    # Octets of messages the SMTP and LMTP listeners together hold in memory for the store.
    delivery_memory: DeliveryMemory = field(init=False)
    # Per-user turns for expensive IMAP commands and the threads they match on
    # ([limits] max_expensive_commands_per_user).
    imap_expensive: ExpensiveWork = field(init=False)
    # Set by the daemon once it has bound; the web site falls back to the config without it.
    bound_listeners: BoundListeners | None = None
    # Prometheus metrics, when the daemon (or the web site) set them up.
    metrics: Metrics | None = None
    # Where submission hands mail for remote recipients: ``enqueue`` commits the message
    # durably and returns its queue id; submission answers 250 only after that. None: no
    # outbound queue, remote recipients are refused at RCPT (451).
    outbound: OutboundSink | None = None
    # Messages each user submitted in the last hour ([submission] max_messages_per_hour).
    submission_rate: SubmissionRate = field(init=False)

    def __post_init__(self) -> None:
        self.connections = ConnectionServices.from_config(self.config, self.auth)
        self.delivery_memory = DeliveryMemory.for_message_size(
            self.config.limits.max_message_size
        )
        self.imap_expensive = ExpensiveWork(self.config.limits.max_expensive_commands_per_user)
        self.submission_rate = SubmissionRate(self.config.submission.max_messages_per_hour)

    def count(
        self, event: str, n: int = 1, *, protocol: str | None = None,
        command: str | None = None, result: str | None = None, reason: str | None = None,
    ) -> None:
        """Count an event; see ``Metrics.count`` for the names and their labels."""
        if self.metrics is not None:
            self.metrics.count(
                event, n, protocol=protocol, command=command, result=result, reason=reason
            )

    def observe(
        self, name: str, seconds: float, *, protocol: str | None = None,
        command: str | None = None, op: str | None = None, label: str = "",
    ) -> None:
        """Record a duration; see ``Metrics.observe`` for the names and their labels."""
        if self.metrics is not None:
            self.metrics.observe(
                name, seconds, protocol=protocol, command=command, op=op, label=label
            )
