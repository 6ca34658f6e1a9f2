"""IMAPFactory: builds an IMAPProtocol per connection for one listener."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import ServerFactory

from .protocol import IMAPProtocol

if TYPE_CHECKING:
    from ..context import ServerContext


class IMAPFactory(ServerFactory[IMAPProtocol]):
    """``implicit_tls`` tells the sessions that the daemon wrapped this factory in a
    ``TLSMemoryBIOFactory`` (IMAPS). Admission limits, timeouts and the login policy are
    shared with every IMAP and POP3 listener (``ctx.connections``)."""

    noisy = False

    def __init__(self, ctx: ServerContext, *, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> IMAPProtocol:
        proto = IMAPProtocol(self)
        proto.factory = self
        return proto
