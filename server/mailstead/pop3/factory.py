"""``POP3Factory``: what the daemon binds to each POP3 listener (plain or implicit TLS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import ServerFactory

from .protocol import POP3Protocol
from .settings import POP3Settings

if TYPE_CHECKING:
    from ..context import ServerContext


class POP3Factory(ServerFactory):
    """Builds one ``POP3Protocol`` per connection, all sharing the server context.

    ``implicit_tls`` tells the sessions that the daemon has wrapped this factory in a
    ``TLSMemoryBIOFactory`` (POP3S), so TLS is active from the first octet and STLS is
    refused. Shared by every POP3 listener of one server (through the ``ctx`` fields):
    ``last_login`` (user id → monotonic time of the last successful login), which enforces
    ``[pop3] login_delay``. Admission limits, timeouts and the login policy are shared
    with every IMAP listener too (``ctx.connections``).
    """

    noisy = False  # no "Starting factory" log lines; the daemon logs its listeners

    def __init__(self, ctx: ServerContext, implicit_tls: bool = False) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.settings = POP3Settings.from_config(ctx.config)
        self.last_login: dict[int, float] = ctx.pop3_last_login

    def buildProtocol(self, addr: Any) -> POP3Protocol:
        proto = POP3Protocol(self)
        proto.factory = self
        return proto
