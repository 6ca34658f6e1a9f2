"""The local control channel: how ``mailstead who`` and ``kick`` reach the running server.

A Unix socket, ``<data_dir>/control.sock``, served by the daemon on its own loop. Only
the server's own user (or root) may use it: the socket is made owner-only (0600) and
every connection's peer credentials (``SO_PEERCRED``) are checked as well, so a
permissive umask or a shared data folder does not open it to other local users.

The protocol is JSON lines: each request is one object on one line, each reply one
object on one line, several requests per connection allowed.

===========================================  ===============================================
request                                      reply
===========================================  ===============================================
``{"command": "who"}``                       ``{"ok": true, "sessions": [{"protocol",
                                             "user", "remote", "tls", "since"}, …]}``
``{"command": "kick", "user": "bob"}``       ``{"ok": true, "closed": 2}``
anything else                                ``{"ok": false, "error": "…"}``
===========================================  ===============================================

``since`` is a Unix time in seconds; ``user`` is null before login. Mail itself is never
sent here: the commands that change mail work on the store, which the server watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .context import LiveSession, SessionRegistry

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024  # octets of one request line
REFUSAL_LINGER = 1.0  # seconds a refused client's request is waited for, to be dropped
REQUEST_TIMEOUT = 30.0  # an idle control connection is closed after this
KICK_REASON = "Disconnected by the administrator"


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


class ControlError(Exception):
    """The control channel cannot be used: no server, refused, or a bad answer."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    protocol: str
    user: str | None
    remote: str
    tls: bool
    since: float


def describe(session: LiveSession, since: float) -> SessionInfo:
    """What ``who`` shows of one registered session.

    IMAP and POP3 register their connection protocols (``connection.ConnectionProtocol``:
    ``protocol_name``, ``peer_host``, ``tls_active``), whose ``session`` knows the
    ``user``; anything registered that offers less is still listed, with what is known.
    """
    inner = getattr(session, "session", None)
    user = getattr(session, "user", None) or getattr(inner, "user", None)
    module = type(session).__module__
    protocol = getattr(session, "protocol_name", None) or (
        "imap" if ".imap" in module else "pop3" if ".pop3" in module else "?")
    remote = getattr(session, "peer_host", None) or getattr(session, "peer", "") or ""
    tls = getattr(session, "tls_active", False)
    return SessionInfo(
        protocol=protocol,
        user=getattr(user, "name", None),
        remote=str(remote),
        tls=bool(tls() if callable(tls) else tls),
        since=since,
    )


def who(sessions: SessionRegistry) -> list[SessionInfo]:
    return [describe(session, since) for session, since in sessions.opened()]


def kick(sessions: SessionRegistry, user: str) -> int:
    """Ask every session logged in as ``user`` (any case) to leave; how many were asked."""
    wanted = user.strip().lower()
    chosen = [
        session for session, since in sessions.opened()
        if (describe(session, since).user or "").lower() == wanted
    ]
    for session in chosen:
        session.shutdown(KICK_REASON)
    if chosen:
        log.info("kicked %d session(s) of %s (control channel)", len(chosen), wanted)
    return len(chosen)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


class ControlServer:
    """Serves the control socket for one running server."""

    def __init__(self, sessions: SessionRegistry, path: Path) -> None:
        self.sessions = sessions
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "who": lambda _: {"sessions": [asdict(s) for s in who(self.sessions)]},
            "kick": self._kick,
        }

    async def start(self) -> bool:
        """Listen; False (with a warning) when another live server already answers there."""
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                log.warning("another server answers on %s: no control channel here", self.path)
                return False
            self.path.unlink()  # left by a server that did not stop cleanly
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
            os.chmod(self.path, 0o600)
        except OSError as exc:  # e.g. a data_dir path too long for a Unix socket
            log.warning("no control channel (mailstead who, kick): cannot listen on %s: %s",
                        self.path, exc.strerror or exc)
            await self.stop()
            return False
        return True

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        await server.wait_closed()

    def _kick(self, request: dict[str, Any]) -> dict[str, Any]:
        user = request.get("user")
        if not isinstance(user, str) or not user.strip():
            raise ValueError('kick needs "user"')
        return {"closed": kick(self.sessions, user)}

    def answer(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line (never raises)."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request is not JSON"}
        command = request.get("command") if isinstance(request, dict) else None
        handler = self._handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {str(command)[:40]!r}"}
        try:
            return {"ok": True, **handler(request)}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        try:
            if uid is not None and uid not in (0, os.geteuid()):
                log.warning("control connection from uid %d refused", uid)
                writer.write(b'{"ok": false, "error": "permission denied"}\n')
                await writer.drain()
                await _drop_input(reader)
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                except (TimeoutError, ValueError, ConnectionError):
                    return  # idle, a line over MAX_REQUEST, or gone
                if not line:
                    return
                reply = self.answer(line.strip())
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        except Exception:
            log.exception("control channel: request failed")
        finally:
            writer.close()


async def _drop_input(reader: asyncio.StreamReader) -> None:
    """Read what the refused client sent (a little, briefly) before we close: closing a
    socket with unread input makes the kernel reset the connection, and the reset can
    destroy the refusal before the client has read it."""
    budget = MAX_REQUEST
    try:
        async with asyncio.timeout(REFUSAL_LINGER):
            while budget > 0 and (chunk := await reader.read(min(budget, 4096))):
                budget -= len(chunk)
                if chunk.endswith(b"\n"):
                    return  # the whole request: nothing is left unread
    except (TimeoutError, ConnectionError):
        pass


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def request(data_dir: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the server running on ``data_dir``; its reply (``ok`` true).

    Raises ``ControlError`` worded for the operator: no server, no permission, or the
    server's own error text.
    """
    path = socket_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no server is running on {data_dir} (nothing answers on "
                               f"{path})") from None
        except PermissionError:
            raise ControlError(f"no permission to use {path}: run this as the user the "
                               "server runs as") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the server at {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            answer = sock.makefile("rb").readline(MAX_REQUEST * 16)
        except OSError as exc:
            raise ControlError(f"the server at {path} did not answer: {exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise ControlError(f"the server at {path} gave no answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(f"the server refused: {error or 'no reason given'}")
    return reply
