"""IMAPFactory: builds an IMAPProtocol per connection for one listener."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.protocol import ServerFactory

from ..net import ConnectionLimiter
from .protocol import IMAPProtocol

if TYPE_CHECKING:
    from ..context import ServerContext


class IMAPFactory(ServerFactory[IMAPProtocol]):
    protocol = IMAPProtocol
    noisy = False

    def __init__(self, ctx: ServerContext, *, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        # Shared by every IMAP listener: the per-IP limit counts connections on all ports.
        self.limiter: ConnectionLimiter = ctx.imap_per_ip
