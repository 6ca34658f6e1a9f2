"""systemd socket activation: listening sockets handed over at start (``sd_listen_fds``).

With a ``mailstead.socket`` unit, systemd binds the ports itself (privileged ones too) and
starts the server with them as file descriptors 3, 4, … (``LISTEN_FDS``, ``LISTEN_PID``).
Each one is used by the configured listener with the same address, so the configuration
stays the one place that says what listens where; a handed-over socket no listener asks
for is reported and closed. A socket whose name (``LISTEN_FDNAMES``) is a listener's
``listener_name`` goes to that listener whatever its address: so the supervisor of
several workers (``supervisor.py``) hands each worker the sockets it bound, ``port = 0``
ones included.

``bind_ipv6`` makes the IPv6 listening sockets the server binds itself, the same way: a
socket bound here is adopted like an inherited one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import MutableMapping

from .config import Listen

log = logging.getLogger("mailstead")

SD_LISTEN_FDS_START = 3


def listener_name(index: int, proto: str, kind: str) -> str:
    """The name of the ``index``-th configured listener's socket (``LISTEN_FDNAMES``)."""
    return f"mailstead-{index}-{proto}-{kind}"


def _key(host: str, port: int) -> tuple[str, int] | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).compressed, port
    except ValueError:
        return None  # a host name: it cannot name one inherited socket


class InheritedSockets:
    """The listening sockets systemd passed to this process, by address."""

    def __init__(
        self,
        sockets: dict[tuple[str, int], socket.socket] | None = None,
        names: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self._sockets = sockets or {}
        self._names = names or {}  # socket name -> its key in _sockets

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None
    ) -> InheritedSockets:
        """Take the sockets named by ``LISTEN_FDS`` when ``LISTEN_PID`` is this process.

        The variables are removed either way, as ``sd_listen_fds(1)`` does, so that no
        child process takes them for its own."""
        env = os.environ if environ is None else environ
        pid, count = env.pop("LISTEN_PID", None), env.pop("LISTEN_FDS", None)
        fdnames = env.pop("LISTEN_FDNAMES", None)
        if pid is None or count is None:
            return cls()
        try:
            if int(pid) != os.getpid():
                return cls()
            n = int(count)
        except ValueError:
            log.warning("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", pid, count)
            return cls()
        sockets: dict[tuple[str, int], socket.socket] = {}
        names: dict[str, tuple[str, int]] = {}
        labels = fdnames.split(":") if fdnames else []
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                log.warning("systemd passed file descriptor %d, which is no socket: %s", fd, exc)
                continue
            name = sock.getsockname()
            key = _key(name[0], name[1]) if isinstance(name, tuple) else None
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.type != socket.SOCK_STREAM or key is None or not listening:
                log.warning("ignoring file descriptor %d from systemd: not a listening TCP "
                            "socket (%r)", fd, name)
                sock.detach()  # not ours to close
                continue
            sock.setblocking(False)
            sockets[key] = sock
            label = labels[fd - SD_LISTEN_FDS_START] if fd - SD_LISTEN_FDS_START < len(
                labels) else ""
            if label.startswith("mailstead-"):
                names[label] = key
        return cls(sockets, names)

    def take(self, addr: Listen, name: str = "") -> socket.socket | None:
        """The inherited socket named ``name``, else the one bound to ``addr``, if there
        is one (it is then ours)."""
        key = self._names.pop(name, None) if name else None
        if key is None:
            key = _key(addr.host, addr.port)
        return None if key is None else self._sockets.pop(key, None)

    def close_unused(self) -> None:
        """Close (and report) the sockets no listener took."""
        for (host, port), sock in self._sockets.items():
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.warning("systemd passed a socket for %s, but no listener in the "
                        "configuration has that address; closing it", shown)
            sock.close()
        self._sockets.clear()

    def __len__(self) -> int:
        return len(self._sockets)


# Connections the kernel may hold for us before we accept them (it caps this at
# net.core.somaxconn, 4096 on current kernels). A restart with thousands of clients
# reconnecting fills a short queue at once: SYNs are dropped (the client retries after
# 1, 3, 7 ... s), and worse, a handshake the kernel completed but could not queue leaves a
# client that waits for a greeting on a connection we never saw. Dovecot asks as much.
LISTEN_BACKLOG = 4096


def bind_ipv6(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening IPv6 TCP socket on ``host``:``port`` with ``IPV6_V6ONLY`` set.

    Twisted's ``TCP6ServerEndpoint`` leaves ``IPV6_V6ONLY`` to the system default (off on
    Linux), so ``[::]:143`` also claims IPv4 and ``0.0.0.0:143`` beside it fails with
    "address in use". With the option on, each family's listener has its own socket, as
    systemd's do (``BindIPv6Only=ipv6-only`` in the socket unit)."""
    host, _, scope = host.partition("%")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted does
        info = socket.getaddrinfo(f"{host}%{scope}" if scope else host, port,
                                  socket.AF_INET6, socket.SOCK_STREAM)[0][4]
        sock.bind(info)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
