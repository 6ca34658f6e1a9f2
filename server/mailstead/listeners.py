"""The listening sockets of one server process, whichever framework serves them.

IMAP, POP3 and HTTP are Twisted ports (bound here, or adopted from an inherited socket)
whose connections write straight to the socket when they can (``connection.transport``);
SMTP and LMTP are asyncio servers. ``ListenerService`` hides which.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from .activation import LISTEN_BACKLOG, bind_ipv6
from .config import Listen


class StartupError(Exception):
    """A problem that stops the server from starting, in one clear sentence."""


def _bind_error(proto: str, addr: Listen, exc: BaseException) -> StartupError:
    text = str(exc)
    code = getattr(exc, "socketError", None) or exc
    if getattr(code, "errno", None) == errno.EADDRINUSE or "in use" in text:
        return StartupError(f"cannot listen for {proto} on {addr}: address already in use")
    if getattr(code, "errno", None) == errno.EACCES or "ermission" in text:
        return StartupError(f"cannot listen for {proto} on {addr}: permission denied")
    return StartupError(f"cannot listen for {proto} on {addr}: {text}")


class ListenerService:
    """One bound listener in the service tree, whichever framework serves it."""

    def __init__(
        self, proto: str, kind: str, addr: Listen, sock: socket.socket | None = None
    ) -> None:
        self.proto, self.kind, self.addr = proto, kind, addr
        self.sock = sock  # a listening socket from systemd, used instead of binding
        self.bound: Listen | None = None
        self._stop: Callable[[], Any] | None = None

    async def start_twisted(self, reactor: Any, factory: Any, tls_creator: Any = None) -> None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from .connection.transport import adopt_port, listen_tcp

        if tls_creator is not None:
            factory = TLSMemoryBIOFactory(tls_creator, False, factory)
        if self.sock is None and ":" in self.addr.host:
            # IPv6: bound here with IPV6_V6ONLY (activation.bind_ipv6), adopted below.
            try:
                self.sock = bind_ipv6(self.addr.host, self.addr.port)
            except OSError as exc:
                raise _bind_error(self.proto, self.addr, exc) from None
        if self.sock is not None:
            sock, self.sock = self.sock, None
            try:
                port = adopt_port(reactor, sock.fileno(), sock.family, factory)
            except Exception as exc:
                raise _bind_error(self.proto, self.addr, exc) from None
            finally:
                sock.close()  # Twisted listens on its own duplicate
            self.bound = Listen(self.addr.host, port.getHost().port)
            self._stop = port.stopListening
            return
        try:
            port = listen_tcp(reactor, self.addr.port, factory, LISTEN_BACKLOG, self.addr.host)
        except Exception as exc:
            raise _bind_error(self.proto, self.addr, exc) from None
        self.bound = Listen(self.addr.host, port.getHost().port)
        self._stop = port.stopListening

    async def start_asyncio(self, protocol_factory: Any, ssl_context: Any = None) -> None:
        loop = asyncio.get_running_loop()
        where: dict[str, Any] = (
            {"sock": self.sock} if self.sock is not None
            else {"host": self.addr.host, "port": self.addr.port, "reuse_address": True}
        )
        self.sock = None
        try:
            server = await loop.create_server(
                protocol_factory, ssl=ssl_context, backlog=LISTEN_BACKLOG, **where
            )
        except OSError as exc:
            raise _bind_error(self.proto, self.addr, exc) from None
        self.bound = Listen(self.addr.host, server.sockets[0].getsockname()[1])
        self._stop = server.close

    async def stop(self) -> None:
        if self._stop is None:
            return
        stop, self._stop = self._stop, None
        result = stop()
        if hasattr(result, "asFuture"):
            await result.asFuture(asyncio.get_running_loop())


def bind_listener(addr: Listen, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``addr`` as the workers' listeners would bind it;
    ``reuse_port`` for one of a group that shares the port (SO_REUSEPORT)."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _bind_error("listener", addr, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as the workers' own IPv6 listeners (bind_ipv6)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(where)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise _bind_error("listener", addr, exc) from None
    return sock
