"""One structured event vocabulary for every protocol's session log.

IMAP, POP3, SMTP and LMTP report what happens to a connection with the same event names,
at the same level, with the same fields, so one grep (or one fail2ban filter, or one JSON
query) finds a login failure whatever the protocol:

==============  =======  ===========================================================
event           level    when
==============  =======  ===========================================================
connect         INFO     a connection was admitted
refused         WARNING  a connection or login turned away by a limit (``reason``)
blocked         WARNING  a login not tried: the address is blocked after failures
tls_started     INFO     STARTTLS/STLS began (implicit TLS shows as ``tls`` at connect)
login           INFO     a user authenticated (``user``, ``mech``)
login_failed    WARNING  wrong credentials (``user`` is the name tried, ``reason``)
timeout         INFO     the server ended a connection for a deadline (``reason``)
logout          INFO     the client said LOGOUT / QUIT
disconnect      INFO     the connection is gone (always the session's last event)
==============  =======  ===========================================================

Fields: ``session_id`` (random, unique per connection), ``proto``, ``remote``
(``host:port``), ``user``, ``tls`` (true/false), ``mech`` (LOGIN, PLAIN, USER, …),
``event``, ``reason``. The human form is one line, ``proto event key=value …``; the JSON
form (``[log] format = "json"``) carries each field as a key (``cli.JsonFormatter`` reads
them from the record's ``mailstead_event`` attribute).

Refusals are counted here as well, in ``mailstead_rejections_total{protocol,reason}``,
so the log line and the metric never disagree.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mailstead.events")

FIELDS = ("session_id", "proto", "remote", "user", "tls", "mech", "event", "reason")

Counter = Callable[..., None]  # ServerContext.count


class Event(enum.Enum):
    CONNECT = "connect"
    REFUSED = "refused"
    BLOCKED = "blocked"
    TLS_STARTED = "tls_started"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    TIMEOUT = "timeout"
    LOGOUT = "logout"
    DISCONNECT = "disconnect"


LEVELS: dict[Event, int] = {
    Event.CONNECT: logging.INFO,
    Event.REFUSED: logging.WARNING,
    Event.BLOCKED: logging.WARNING,
    Event.TLS_STARTED: logging.INFO,
    Event.LOGIN: logging.INFO,
    Event.LOGIN_FAILED: logging.WARNING,
    Event.TIMEOUT: logging.INFO,
    Event.LOGOUT: logging.INFO,
    Event.DISCONNECT: logging.INFO,
}

# Refusals, each also counted in ``rejections_total``: every REFUSED and BLOCKED, and the
# deadlines that end a connection before it logged in (an idle logged-in session is not one).
_COUNTED = (Event.REFUSED, Event.BLOCKED)
_COUNTED_TIMEOUTS = ("login_deadline", "tls_handshake")


def new_session_id() -> str:
    """Twelve hex digits: unique enough among a server's connections, short in a log."""
    return secrets.token_hex(6)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    # A client-chosen user name must stay one token of one line.
    if not text or any(c.isspace() or c in '"=\\' or not c.isprintable() for c in text):
        return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return text


class SessionEvents:
    """The event log of one connection: its fixed fields, and ``emit`` for each event."""

    def __init__(self, proto: str, remote: str, *, tls: bool = False,
                 count: Counter | None = None) -> None:
        self.session_id = new_session_id()
        self.proto = proto
        self.remote = remote
        self.tls = tls
        self.user: str | None = None
        self.mech: str | None = None
        self._count = count

    def emit(self, event: Event, reason: str | None = None, *, user: str | None = None,
             mech: str | None = None, detail: str | None = None) -> None:
        """Log ``event``; ``user``/``mech`` given here are for this event only (a failed
        login's name), those set on the object (``user`` after a login) for every later
        one. ``detail`` is free text for humans, kept out of the fixed fields."""
        counted = event in _COUNTED or (event is Event.TIMEOUT and reason in _COUNTED_TIMEOUTS)
        if counted and self._count is not None:
            self._count("rejections", 1, protocol=self.proto, reason=reason or event.value)
        fields: dict[str, Any] = {
            "session_id": self.session_id, "proto": self.proto, "remote": self.remote,
            "user": user if user is not None else self.user, "tls": self.tls,
            "mech": mech if mech is not None else self.mech, "event": event.value,
            "reason": reason,
        }
        if not log.isEnabledFor(LEVELS[event]):
            return
        parts = [self.proto, event.value] + [
            f"{key}={_text(fields[key])}"
            for key in ("session_id", "remote", "user", "tls", "mech", "reason")
            if fields[key] is not None
        ]
        if detail:
            parts.append(f"({detail})")
        entry = {k: v for k, v in fields.items() if v is not None}
        if detail:
            entry["detail"] = detail
        log.log(LEVELS[event], "%s", " ".join(parts), extra={"mailstead_event": entry})
