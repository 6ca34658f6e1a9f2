"""What the POP3 session modules share: the states, the connection a session talks to,
the error a command handler raises and the type it returns."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol

from .wire import Line

if TYPE_CHECKING:
    from ..eventlog import SessionEvents


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


class Channel(Protocol):
    """What a session needs from its connection (implemented by ``POP3Protocol``)."""

    @property
    def peer(self) -> str:
        """``host:port`` of the client, for logs."""

    @property
    def peer_host(self) -> str: ...

    @property
    def events(self) -> SessionEvents:
        """The connection's event log (eventlog.py)."""

    @property
    def tls_active(self) -> bool: ...

    @property
    def tls_available(self) -> bool:
        """True when STLS could start TLS now."""

    def send(self, data: bytes) -> None: ...

    def send_parts(self, parts: list[bytes]) -> Awaitable[None] | None:
        """Send a response in pieces; a huge one returns an awaitable that sends it in
        chunks, waiting while the client is not reading."""

    def start_tls(self, reply: bytes) -> None:
        """Drop all buffered input, send ``reply`` in plaintext, then start TLS."""

    def close(self) -> None: ...

    def login_succeeded(self) -> None:
        """Authenticated: the login deadline no longer applies."""

    def queued_lines(self) -> Sequence[Line]:
        """Commands the client pipelined that have not been handled yet."""


class CommandError(Exception):
    """Answer ``-ERR [code] text`` and go on."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


Pending = Awaitable[None] | None  # what a handler returns: None when it is done


def _safe(name: str) -> str:
    """A client-chosen name fit for one log line."""
    return repr(name[:64])
