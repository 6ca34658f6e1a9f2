"""IMAPProtocol: the Twisted protocol that connects a transport to an IMAPSession."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from ..net import IdleTimer, TransportOutput, set_nodelay
from ..twisted_types import StreamTransport
from .session import IMAPSession

if TYPE_CHECKING:
    from .factory import IMAPFactory

log = logging.getLogger("mailstead.imap")

# While idling, a short untagged OK now and then keeps NAT and firewalls from
# forgetting the connection (and tells the client we are alive).
IDLE_KEEPALIVE_SECONDS = 120


class SessionOutput(TransportOutput):
    def __init__(self, proto: IMAPProtocol) -> None:
        super().__init__(proto.transport, proto.factory.ctx.loop)
        self._proto = proto

    def start_tls(self) -> None:
        ctx = self._proto.factory.ctx
        assert ctx.tls is not None
        self.flush()  # the OK to STARTTLS goes out in the clear, before the handshake
        self.transport.startTLS(ctx.tls.creator())


class IMAPProtocol(Protocol):
    factory: IMAPFactory
    transport: StreamTransport  # type: ignore[assignment]  # Twisted: ITransport | None, see twisted_types

    def __init__(self) -> None:
        self.session: IMAPSession | None = None
        self.out: SessionOutput | None = None
        self.ip = ""
        self._timer: IdleTimer | None = None
        self._keepalive: IdleTimer | None = None
        self._counted = False

    def connectionMade(self) -> None:
        ctx = self.factory.ctx
        self.ip = self.transport.getPeer().host
        set_nodelay(self.transport)
        self.out = SessionOutput(self)
        limit = ctx.config.limits.max_connections_per_ip
        if not self.factory.limiter.acquire(self.ip, limit):
            self.out.write(b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
            self.out.close()
            return
        self._counted = True
        self.session = IMAPSession(
            ctx, self.out, peer=self.ip, tls_active=self.factory.implicit_tls
        )
        ctx.sessions.add(self.session)
        ctx.count("connections", protocol="imap")
        log.info("IMAP connection from %s%s", self.ip, " (TLS)" if self.factory.implicit_tls
                 else "")
        self.out.write(self.session.greeting())
        minutes = ctx.config.imap.autologout_minutes
        self._timer = IdleTimer(ctx.loop, max(minutes, 30) * 60, self._autologout)
        self._keepalive = IdleTimer(ctx.loop, IDLE_KEEPALIVE_SECONDS, self._keep_alive)

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            return
        if self._timer is not None:
            self._timer.touch()
        self.session.data_received(data)

    def _autologout(self) -> None:
        if self.session is None:
            return
        if self.session.idling:  # IDLE counts as activity (RFC 2177)
            assert self._timer is not None
            self._timer.touch()
            return
        self.session.shutdown("Autologout; idle for too long")

    def _keep_alive(self) -> None:
        if self.session is not None and self.session.idling and self.out is not None:
            self.out.write(b"* OK Still here\r\n")
        if self._keepalive is not None and not (self.out and self.out.closed):
            self._keepalive.touch()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for timer in (self._timer, self._keepalive):
            if timer is not None:
                timer.cancel()
        if self.out is not None:
            self.out.lost()
        if self.session is not None:
            self.session.connection_lost()
            self.factory.ctx.sessions.discard(self.session)
            user = self.session.user.name if self.session.user else "-"
            log.info("IMAP connection from %s closed (user %s)", self.ip, user)
        if self._counted:
            self.factory.limiter.release(self.ip)


