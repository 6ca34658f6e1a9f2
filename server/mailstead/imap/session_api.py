"""The contract between the session and the command handlers.

Handlers (``imap/handlers/``) are written against :class:`Session`, a small protocol
that ``IMAPSession`` (``imap/session.py``) implements; they never import the session
itself, so ``session.py`` can import the handler table without an import cycle.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..context import ServerContext
    from ..eventlog import SessionEvents
    from ..store.api import User
    from .response import Result
    from .selected import SelectedMailbox
    from .syntax.reader import RawLine


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# The states in which a command may run (see ``handlers.HANDLERS``).
ANY_STATE = frozenset(State) - {State.LOGOUT}
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


class Output(Protocol):
    """Where a session's bytes go (``connection.TransportOutput`` implements it)."""

    def write(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """Send what was written now, not at the end of this loop iteration."""

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class Link(Protocol):
    """The connection a session runs on (``IMAPProtocol``, the shared connection layer)."""

    def begin_tls(self) -> None:
        """Start TLS after everything written so far."""

    def login_succeeded(self) -> None:
        """Authenticated: the login deadline no longer applies."""


class Session(Protocol):
    """What a handler may see and do of its connection's session."""

    ctx: ServerContext
    out: Output
    peer: str
    state: State
    user: User | None
    selected: SelectedMailbox | None
    condstore: bool
    tls_active: bool
    idling: bool  # while set, mailbox changes are pushed as they arrive
    events: SessionEvents  # the connection's event log (eventlog.py)

    @property
    def plaintext_ok(self) -> bool:
        """Whether plaintext logins are allowed (TLS, or loopback when configured)."""
        ...

    def capabilities(self) -> list[str]: ...

    def send(self, line: bytes) -> None:
        """Write one untagged line; CRLF is added."""

    async def send_updates(self, *, allow_expunge: bool) -> None:
        """Report the selected mailbox's pending changes now (``SelectedMailbox`` writes
        them; see ``selected.py`` for the rule)."""

    async def read_line(self) -> RawLine:
        """The next raw line from the client (IDLE's DONE, an AUTHENTICATE response)."""
        ...

    def discard_pending_input(self) -> None:
        """Drop input read but not yet run (plaintext pipelined behind STARTTLS)."""

    def select(self, view: SelectedMailbox, subscription: Any) -> None: ...

    def unselect(self) -> None: ...

    def close(self) -> None: ...

    def start_tls(self) -> None:
        """Start TLS now (after the tagged OK to STARTTLS was written)."""

    async def login(self, login: str, password: str, authzid: str = "",
                    mech: str = "LOGIN") -> Result | None:
        """Apply the login policy (``auth.policy``); None when the connection is gone."""
        ...
