"""IMAPProtocol: the Twisted protocol that connects a transport to an IMAPSession.

Admission, output, TLS and the login deadline are the shared connection layer's
(``connection.ConnectionProtocol``); this adds the session, the autologout timer
(RFC 3501 §5.4: at least 30 minutes; IDLE counts as activity, RFC 2177) and keepalives
during IDLE.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..connection import GOODBYE_GRACE, ActivityTimer, ConnectionProtocol, Refusal
from ..eventlog import Event
from .session import IMAPSession

if TYPE_CHECKING:
    from .factory import IMAPFactory


# While idling, a short untagged OK now and then keeps NAT and firewalls from
# forgetting the connection (and tells the client we are alive).
IDLE_KEEPALIVE_SECONDS = 120

_REFUSALS = {
    Refusal.SERVER_FULL: b"* BYE [UNAVAILABLE] Server busy: too many connections; "
                         b"try again later\r\n",
    Refusal.PER_IP: b"* BYE [UNAVAILABLE] Too many connections from your address\r\n",
}


class IMAPProtocol(ConnectionProtocol):
    """One IMAP connection; also the ``LiveSession`` the daemon asks to leave."""

    protocol_name = "imap"
    coalesce_writes = True

    def __init__(self, factory: IMAPFactory) -> None:
        super().__init__(factory.ctx, implicit_tls=factory.implicit_tls)
        self.factory = factory
        self.session: IMAPSession | None = None
        self._autologout: ActivityTimer | None = None
        self._keepalive: asyncio.TimerHandle | None = None

    # --- ConnectionProtocol -------------------------------------------------------------
    def refusal_message(self, refusal: Refusal) -> bytes:
        return _REFUSALS[refusal]

    def connection_started(self) -> None:
        ctx = self.ctx
        session = self.session = IMAPSession(
            ctx, self.out, peer=self.peer_host, tls_active=self.tls_active,
            link=self, events=self.events,
        )
        ctx.sessions.add(self)
        ctx.count("connections", protocol="imap")
        self.out.write(session.greeting())
        minutes = max(ctx.config.imap.autologout_minutes, 30)
        self._autologout = ActivityTimer(
            self.loop, minutes * 60.0, self._autologout_expired, busy=lambda: session.idling
        )
        self._keepalive = self.loop.call_later(IDLE_KEEPALIVE_SECONDS, self._keep_alive)

    def data_received(self, data: bytes) -> None:
        session = self.session
        assert session is not None
        # Only input that frames something is activity: octets thrown away (an endless
        # line, a refused literal) must not keep the connection alive.
        if session.data_received(data) and self._autologout is not None:
            self._autologout.touch()

    def login_expired(self) -> None:
        if self.session is not None:
            self.session.leave_now("Autologout; no login within the time allowed")

    def connection_ended(self) -> None:
        if self._autologout is not None:
            self._autologout.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        session = self.session
        if session is not None:
            session.connection_lost()
            self.ctx.sessions.discard(self)

    # --- LiveSession ----------------------------------------------------------------------
    def shutdown(self, reason: str) -> None:
        """Finish the running command, say BYE and close, quickly (the server stops)."""
        self.out.close_grace = GOODBYE_GRACE
        self.out.hurry()  # a close already under way (after LOGOUT) must not hold us up
        if self.session is not None:
            self.session.shutdown(reason)

    # --- timers ---------------------------------------------------------------------------
    def _autologout_expired(self) -> None:
        if self.session is not None:
            self.events.emit(Event.TIMEOUT, "idle")
            self.session.shutdown("Autologout; idle for too long")

    def _keep_alive(self) -> None:
        self._keepalive = None
        if self.out.closed:
            return
        if self.session is not None and self.session.idling:
            self.out.write(b"* OK Still here\r\n")
        self._keepalive = self.loop.call_later(IDLE_KEEPALIVE_SECONDS, self._keep_alive)
