"""What our SMTP and LMTP listeners change in aiosmtpd's protocol classes.

* DATA is streamed to a spool file (``smtp_DATA`` below), instead of aiosmtpd's list of
  lines joined at the end (~3.3x the message in memory). aiosmtpd offers no hook for the
  reading itself (``handle_DATA`` runs after the whole message is in memory), and its
  documented way to change a command is an ``smtp_<COMMAND>`` method on a subclass; so
  ``smtp_DATA`` is overridden, keeping aiosmtpd's checks and replies, and the handler's
  ``handle_DATA`` hook then stores from the spool.
* Commands are read with ``CommandLineReader`` (see ``commandread``): an over-long command
  line is answered ``500 5.5.2`` as soon as it passes the limit, its rest is dropped as it
  arrives, and past a MiB of one line the client gets 421 and the connection is closed.
* No AUTH on the receiving listeners (SMTP, LMTP): AUTH is neither advertised (the
  handler's ``handle_EHLO`` drops it) nor accepted, with or without TLS. Submission
  (``submission.py``) overrides this.
* Enhanced status codes (RFC 3463) on aiosmtpd's own refusals, one refusal per recipient
  in LMTP, a per-IP connection limit, and no traceback for addresses the stdlib parser
  chokes on.
* With several worker processes the per-IP limit counts every worker's connections: after
  the worker's own count, the supervisor is asked (``shared.SharedCounters``, key
  ``ip:<protocol>:<address>``, as for IMAP and POP3); aiosmtpd sees the connection, and
  the client its greeting, only once the supervisor admitted it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, AnyStr, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from ..connection import ConnectionLimiter
from ..eventlog import Event, SessionEvents
from ..shared import SharedCounters
from .commandread import CommandLineReader
from .dataread import DataEnd, read_data

log = logging.getLogger(__name__)

# Refusals aiosmtpd (and our smtp_DATA) send after the data of DATA: LMTP owes one per
# recipient.
TOO_BIG = "552 Error: Too much mail data"
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
COMMAND_TOO_LONG = "500 Command line too long"  # aiosmtpd's, for a command line
NO_SPOOL_ROOM = "452 4.3.1 Insufficient system storage"
HARD_CAP_SLACK = 64 * 1024 * 1024
# <dot-atom@dot-atom>: what nearly every MAIL FROM and RCPT TO names. The stdlib parser
# aiosmtpd uses costs ~12% of a delivery's loop time; for this form it gives the same.
_PLAIN_ADDRESS = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")
_DATA_REFUSALS = {
    TOO_BIG: "552 5.3.4 Message too big for system",
    LINE_TOO_LONG: "500 5.5.2 Line too long",
    NO_SPOOL_ROOM: NO_SPOOL_ROOM,
}
_REWRITE = {
    **_DATA_REFUSALS,
    COMMAND_TOO_LONG: "500 5.5.2 Line too long",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
}


class MailsteadProtocol(SMTP):
    """Mixed into aiosmtpd's SMTP and LMTP (LMTP is an SMTP); see the module docstring."""

    limiter: ConnectionLimiter | None = None
    max_per_ip = 0
    # The counts every worker shares, when there are several (read at each connection:
    # a worker joins its bus after its listeners start).
    shared: Callable[[], SharedCounters | None] = staticmethod(lambda: None)
    _counted_ip: str | None = None
    _shared_key: str | None = None
    _admitting = False  # the supervisor has not answered yet
    _refused = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # aiosmtpd builds its StreamReader in its __init__, with no hook to choose another;
        # give the stream protocol ours instead before any connection (the reader of the
        # first one was never used).
        proto: Any = self
        reader = CommandLineReader(
            limit=proto.line_length_limit, on_hard_cap=self._line_past_hard_cap, loop=proto.loop
        )
        asyncio.StreamReaderProtocol.__init__(
            self, reader, client_connected_cb=proto._cb_client_connected, loop=proto.loop
        )

    def _line_past_hard_cap(self) -> None:
        proto: Any = self
        log.info("SMTP %r sent a command line of over a MiB: closed", proto.session.peer)
        proto._writer.write(b"421 4.7.0 Line too long, closing connection\r\n")
        proto.transport.close()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):  # aiosmtpd's own replies are text (as are ours)
            if status == COMMAND_TOO_LONG:
                self.event_handler.refused("line_too_long")
            status = _REWRITE.get(status, status)
            envelope = getattr(self, "envelope", None)
            if isinstance(self, LMTP) and status in _DATA_REFUSALS.values() and envelope:
                # RFC 2033 §4.2: after DATA, one reply for each accepted recipient.
                status = "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))
        await super().push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_ADDRESS.match(arg)
        if plain is not None:
            rest = arg[plain.end() :].lstrip(" \t")  # the stdlib parser eats that space
            if not rest.startswith("("):  # a comment: the stdlib parser's business
                address = plain.group(1)
                limit = cast(int, getattr(self, "local_part_limit", 0))
                if limit and len(address.rpartition("@")[0]) > limit:
                    return None, None
                return address, rest
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError):  # e.g. "<user@" trips the stdlib parser
            return None, None

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH is not available: this service only receives mail "
                        "(send through the submission port)")

    async def smtp_DATA(self, arg: str) -> None:
        proto: Any = self  # the aiosmtpd SMTP this is mixed into
        # aiosmtpd's own checks and replies before the data, in its order.
        if await proto.check_helo_needed() or await proto.check_auth_needed("DATA"):
            return
        if not proto.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        try:
            spool = proto.event_handler.open_spool(proto.session, proto.envelope)
        except OSError as exc:
            log.error("cannot create a spool file: %s", exc)
            await self.push("451 4.3.0 Cannot receive mail right now, try again later")
            return
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            limit = proto.data_size_limit or None
            end = await read_data(
                proto._reader, spool.write, max_size=limit, line_limit=proto.line_length_limit,
                # Past the limit the rest is read and dropped (nothing is kept), to answer
                # after the data as RFC 5321 expects; HARD_CAP_SLACK further on, the client
                # gets 552 and goodbye.
                hard_cap=limit + max(limit, HARD_CAP_SLACK) if limit else None,
            )
            if end is not DataEnd.COMPLETE:
                spool.discard()
                proto.event_handler.refused(
                    "line_too_long" if end is DataEnd.LINE_TOO_LONG else "too_big")
                await self.push(LINE_TOO_LONG if end is DataEnd.LINE_TOO_LONG else TOO_BIG)
                proto._set_post_data_state()
                if end is DataEnd.HARD_CAP:
                    log.info("SMTP %r sent far more than the size limit: closed",
                             proto.session.peer)
                    proto.transport.close()
                return
            await spool.flush()
            if spool.error is not None:
                log.error("spool write failed: %s", spool.error)
                proto.event_handler.refused("spool_full")
                await self.push(NO_SPOOL_ROOM)
                proto._set_post_data_state()
                return
            proto.envelope.mailstead_spool = spool
            status = await proto._call_handler_hook("DATA")
        finally:
            spool.close()
        proto._set_post_data_state()
        await self.push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        handler = self.event_handler
        remote = f"[{ip}]:{peer[1]}" if ":" in ip else f"{ip}:{peer[1]}" if ip else "?"
        self.events = SessionEvents(
            handler.metric_protocol, remote, count=handler.count,
            tls=transport.get_extra_info("ssl_object") is not None,
        )
        if self.limiter is not None and self._counted_ip is None:
            if not self.limiter.acquire(ip, self.max_per_ip):
                self._refuse(transport)
                return
            self._counted_ip = ip
            shared = self.shared()
            if shared is not None:
                # Until the supervisor answers, what the client sends waits in the socket.
                cast(asyncio.ReadTransport, transport).pause_reading()
                self._admitting = True
                proto: Any = self
                proto.loop.create_task(self._admit_shared(shared, transport, ip))
                return
        self._start(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        # Counted in rejections_total by the event, as for IMAP and POP3.
        self.events.emit(Event.REFUSED, "per_ip")
        # loop.create_server hands a stream transport, which can write.
        cast(asyncio.WriteTransport, transport).write(
            b"421 4.7.0 Too many connections from your address\r\n"
        )
        transport.close()
        self._refused = True

    async def _admit_shared(
        self, shared: SharedCounters, transport: asyncio.BaseTransport, ip: str
    ) -> None:
        key = f"ip:{self.event_handler.metric_protocol}:{ip}"
        failed = await shared.acquire([(key, self.max_per_ip)])
        if not self._admitting:  # gone meanwhile; connection_lost gave the local count back
            if failed < 0:
                shared.release([key])
            return
        self._admitting = False
        if failed >= 0:
            self._release_local()
            self._refuse(transport)
            return
        self._shared_key = key
        cast(asyncio.ReadTransport, transport).resume_reading()
        self._start(transport)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        handler.count("connections", 1, protocol=handler.metric_protocol)
        self.events.emit(Event.CONNECT)
        super().connection_made(transport)

    def _release_local(self) -> None:
        if self.limiter is not None and self._counted_ip is not None:
            self.limiter.release(self._counted_ip)
            self._counted_ip = None

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._release_local()
        if self._admitting:  # aiosmtpd never saw this connection
            self._admitting = False
            return
        if self._shared_key is not None:
            shared = self.shared()
            if shared is not None:
                shared.release([self._shared_key])
            self._shared_key = None
        self.events.emit(Event.DISCONNECT)
        super().connection_lost(error)


class MailsteadSMTP(MailsteadProtocol, SMTP):
    pass


class MailsteadLMTP(MailsteadProtocol, LMTP):
    pass
