"""What a server process sets up about itself, apart from its listeners: the open-files
limit, systemd's readiness notices, one log stream for Twisted and stdlib logging, the
loop's exception handler and the loop's orderly close."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
from typing import Any

log = logging.getLogger("mailstead")


def quiet_client_resets(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A client that reset its connection is no server error: one line, no traceback
    (aiosmtpd can leave such a future unretrieved when a connection ends at a stop)."""
    if isinstance(context.get("exception"), ConnectionError):
        log.info("connection ended by the client: %s", context["exception"])
        return
    loop.default_exception_handler(context)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state, when it is listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one and return it: every connection is a
    descriptor, and the usual soft default (1024) would refuse the 1,000th idle session
    with EMFILE. The hard limit is the operator's (LimitNOFILE= in the systemd unit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still stops at the kernel's fs.nr_open.
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s",
                        soft, target, exc)
    return soft


def shutdown_loop(loop: asyncio.AbstractEventLoop, reactor: Any) -> None:
    try:
        if reactor.running:
            reactor.stop()
            # Run the reactor's shutdown triggers (thread pool stop) on our loop.
            loop.run_until_complete(asyncio.sleep(0.05))
    except Exception:
        pass
    try:
        loop.run_until_complete(loop.shutdown_default_executor())
    except Exception:
        pass
    loop.close()


def route_twisted_logs() -> None:
    """Send Twisted's log events to stdlib logging, so there is one log stream."""
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    # STDLibLogObserver provides ILogObserver through zope's @implementer, which mypy
    # cannot see (it is not a subclass of the interface).
    observer = STDLibLogObserver()
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)  # type: ignore[list-item]
