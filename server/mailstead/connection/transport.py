"""The TCP transport of IMAP, POP3 and HTTP connections: Twisted's, with a write that
goes straight to the socket while nothing is queued.

Twisted's ``FileDescriptor.write`` never sends at once: it queues the octets, registers
the socket for writability (an ``epoll_ctl``), sends on the next loop iteration and
unregisters again (another ``epoll_ctl``); under load that was about a sixth of the
loop thread for one response per command. ``DirectServer.write`` sends on the socket
when Twisted holds nothing for it (so nothing can be overtaken), and hands only what
the kernel did not take to Twisted's own ``write``: the queue, back-pressure (a full
buffer pauses the registered producer), closing and error handling stay Twisted's.

TLS: implicit TLS (``TLSMemoryBIOProtocol`` above this transport) writes its records
through ``DirectServer.write`` and gets the same path; STARTTLS goes through
``_newtls.startTLS`` with a bypass class whose ``write`` is the direct one.

Every Twisted internal this relies on (``dataBuffer``, ``_tempDataLen``,
``_writeDisconnected``, ``_writeDisconnecting``, ``connected``, ``disconnecting``,
``_aborting``, ``socket``) is checked once at import; if one is missing (another Twisted version),
``DIRECT_WRITES`` is False and the listeners use Twisted's own ``tcp.Port``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.abstract import FileDescriptor

try:
    from twisted.internet import _newtls
except ImportError:  # pragma: no cover - pyOpenSSL is a dependency
    _newtls = None  # type: ignore[assignment]

# What one read takes from the socket: Twisted reads ``bufferSize`` octets, which
# TransportOutput raises to 256 KiB for its write-buffer bound; a recv of that size
# allocates (and shrinks) a 256 KiB string for every command line.
READ_SIZE = 64 * 1024

_STATE = ("dataBuffer", "_tempDataLen", "_writeDisconnected", "_writeDisconnecting",
          "connected", "disconnecting")


def _has_twisted_internals() -> bool:
    probe = FileDescriptor(reactor=object())  # type: ignore[arg-type]
    return (
        all(hasattr(probe, name) for name in _STATE)
        and isinstance(probe.dataBuffer, bytes)
        and isinstance(probe._tempDataLen, int)
        and hasattr(tcp.Connection, "_dataReceived")
        and hasattr(tcp.Connection, "_aborting")
        and getattr(tcp.Port, "transport", None) is tcp.Server
    )


DIRECT_WRITES = _has_twisted_internals()


def direct_write(fd: Any, data: bytes) -> None:
    """Send ``data`` now if Twisted holds nothing for ``fd``; queue the rest with Twisted.

    ``fd`` is a ``tcp.Connection``. Twisted's buffers are looked at first: octets
    queued there must go out before these, so then the write is Twisted's. A closing or
    aborted connection and a non-bytes argument are Twisted's too (it drops, holds or
    rejects them as it always did).
    """
    if (
        fd.dataBuffer or fd._tempDataLen or not fd.connected or fd.disconnecting
        or fd._aborting or fd._writeDisconnecting or fd._writeDisconnected
        or type(data) is not bytes
    ):
        FileDescriptor.write(fd, data)
        return
    try:
        sent = fd.socket.send(data)
    except OSError:
        # EAGAIN: the kernel's buffer is full. Any other error: Twisted's write path
        # meets it again on its send and closes the connection its own way.
        sent = 0
    if sent < len(data):
        FileDescriptor.write(fd, data[sent:] if sent else data)


class _DirectBypass(FileDescriptor):
    """The base ``_newtls`` sends STARTTLS records through (used unbound, never made)."""

    def write(self, data: bytes) -> None:
        direct_write(self, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        direct_write(self, b"".join(iovec))


class DirectServer(tcp.Server):
    """A server-side TCP connection whose writes go straight to the socket when they can."""

    def write(self, data: bytes) -> None:
        if self.TLS:  # after STARTTLS: through the TLS layer, which sends via _DirectBypass
            super().write(data)
        else:
            direct_write(self, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        if self.TLS:
            super().writeSequence(iovec)
        else:
            direct_write(self, b"".join(iovec))

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        if _newtls is None:  # pragma: no cover
            super().startTLS(ctx, normal)
            return
        _newtls.startTLS(self, ctx, normal, _DirectBypass)

    def doRead(self) -> Any:
        try:
            data = self.socket.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        return self._dataReceived(data)


class DirectPort(tcp.Port):
    """A listening TCP port whose connections are ``DirectServer``s."""

    transport = DirectServer


def listen_tcp(reactor: Any, port: int, factory: Any, backlog: int, interface: str) -> Any:
    """``reactor.listenTCP`` with direct writes where this Twisted allows them."""
    if not DIRECT_WRITES:
        return reactor.listenTCP(port, factory, backlog=backlog, interface=interface)
    listening = DirectPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening


def adopt_port(reactor: Any, fileno: int, family: int, factory: Any) -> Any:
    """``reactor.adoptStreamPort`` (TCP) with direct writes where this Twisted allows them."""
    if not DIRECT_WRITES:
        return reactor.adoptStreamPort(fileno, family, factory)
    listening = DirectPort._fromListeningDescriptor(reactor, fileno, family, factory)
    listening.startListening()
    return listening
