"""``ConnectionProtocol``: the Twisted protocol side every IMAP and POP3 connection shares.

It admits or refuses the connection (the global cap and the per-address cap, each with a
clear refusal in the protocol's own words), owns the connection's ``TransportOutput``,
starts TLS (STARTTLS/STLS) and watches every TLS handshake, implicit or not, with a
deadline, and ends a connection that has not logged in within ``login_timeout`` of
connecting (RFC 3501 §5.4 and RFC 1939 §3 let a server close unauthenticated idle
connections). A subclass adds the session: ``connection_started`` (greet),
``data_received``, ``login_expired`` (say goodbye) and ``connection_ended`` (clean up).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..eventlog import Event, SessionEvents
from .limits import Refusal
from .output import GOODBYE_GRACE, TransportOutput, set_nodelay
from .services import ConnectionServices

if TYPE_CHECKING:
    from ..context import ServerContext



@implementer(IHandshakeListener)
class ConnectionProtocol(Protocol):
    protocol_name: ClassVar[str] = "?"  # "imap" or "pop3": logs, limits, metrics
    coalesce_writes: ClassVar[bool] = False
    out: TransportOutput

    def __init__(self, ctx: ServerContext, *, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.loop: asyncio.AbstractEventLoop = ctx.loop
        self.services: ConnectionServices = ctx.connections
        self.peer_host = ""
        self.peer = "?"  # host:port, for logs
        self.tls_active = implicit_tls
        self.admitted = False
        self.logged_in = False
        self._login_deadline: asyncio.TimerHandle | None = None
        self._handshake_deadline: asyncio.TimerHandle | None = None
        # Replaced in connectionMade, once the peer is known.
        self.events = SessionEvents(self.protocol_name, "?", tls=implicit_tls)

    # --- for subclasses -------------------------------------------------------------
    def refusal_message(self, refusal: Refusal) -> bytes:
        """The refusal in the protocol's own words (``* BYE …`` / ``-ERR …``).

        Every protocol overrides it (IMAPProtocol and POP3Protocol do); there is no
        protocol-neutral wording to fall back on."""
        raise NotImplementedError

    def connection_started(self) -> None:
        """The connection was admitted: make the session and greet."""

    def data_received(self, data: bytes) -> None:
        """Octets from an admitted, open connection."""

    def login_expired(self) -> None:
        """No login within ``login_timeout``: say goodbye and close."""
        self.out.close(GOODBYE_GRACE)

    def connection_ended(self) -> None:
        """The connection is gone (called once, only for admitted connections)."""

    def output_drained(self) -> None:
        """The client has read what was buffered."""

    # --- for sessions -----------------------------------------------------------------
    def begin_tls(self) -> None:
        """Start TLS after everything written so far (STARTTLS, STLS)."""
        tls = self.ctx.tls
        assert tls is not None
        self.out.start_tls(tls.creator())
        self.tls_active = True
        self.events.tls = True
        self.events.emit(Event.TLS_STARTED)
        self._watch_handshake()

    def login_succeeded(self) -> None:
        """The session is authenticated: the login deadline no longer applies."""
        self.logged_in = True
        if self._login_deadline is not None:
            self._login_deadline.cancel()
            self._login_deadline = None

    # --- Twisted ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        transport: Any = self.transport
        addr = transport.getPeer()
        self.peer_host = str(getattr(addr, "host", ""))
        port = getattr(addr, "port", None)
        host = f"[{self.peer_host}]" if ":" in self.peer_host else self.peer_host
        self.peer = f"{host}:{port}" if port is not None else host
        set_nodelay(transport)
        self.out = TransportOutput(
            transport, self.loop, coalesce=self.coalesce_writes,
            on_resume=self.output_drained,
        )
        name = self.protocol_name
        self.events = SessionEvents(name, self.peer, tls=self.tls_active, count=self.ctx.count)
        refusal = self.services.gate.admit(name, self.peer_host)
        if refusal is not None:
            self.events.emit(Event.REFUSED, refusal.code, detail=refusal.value)
            self.out.write(self.refusal_message(refusal))
            self.out.close(GOODBYE_GRACE)
            return
        self.admitted = True
        if self.tls_active:  # implicit TLS: the handshake has just begun
            self._watch_handshake()
        self._login_deadline = self.loop.call_later(
            self.services.settings.login_timeout, self._login_timed_out
        )
        self.events.emit(Event.CONNECT)
        self.connection_started()

    def dataReceived(self, data: bytes) -> None:
        if self.admitted and not self.out.closed:
            self.data_received(data)

    def handshakeCompleted(self) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for handle in (self._login_deadline, self._handshake_deadline):
            if handle is not None:
                handle.cancel()
        self._login_deadline = self._handshake_deadline = None
        self.out.connection_lost()
        if self.admitted:
            self.services.gate.release(self.protocol_name, self.peer_host)
            self.connection_ended()
            self.events.emit(Event.DISCONNECT)

    # --- internals ----------------------------------------------------------------------
    def _watch_handshake(self) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
        self._handshake_deadline = self.loop.call_later(
            self.services.settings.tls_handshake_timeout, self._handshake_timed_out
        )

    def _handshake_timed_out(self) -> None:
        self._handshake_deadline = None
        if not self.out.lost:
            self.events.emit(Event.TIMEOUT, "tls_handshake")
            self.out.abort()

    def _login_timed_out(self) -> None:
        self._login_deadline = None
        if not self.logged_in and not self.out.closed:
            self.events.emit(Event.TIMEOUT, "login_deadline")
            self.login_expired()
