"""aiosmtpd handlers that deliver SMTP and LMTP mail into users' INBOXes.

The handler hooks stay small: ``handle_RCPT`` decides per recipient (local user, tag
stripped; unknown user 550 5.1.1; foreign domain 550 5.7.1, we are never a relay) and
``handle_DATA`` stores one copy per user, with trace headers, before answering. ``250``
goes out only after the store committed with fsync. LMTP (RFC 2033) answers once per
accepted recipient, in RCPT order.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, AnyStr, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from ..mime.parse import normalise_crlf
from ..net import ConnectionLimiter
from ..store.api import MailStore, StorageFull, StoreError, User

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    user: User


class DeliveryHandler:
    """Hooks shared by the SMTP and LMTP listeners."""

    def __init__(
        self,
        store: MailStore,
        *,
        hostname: str,
        domains: Iterable[str],
        lmtp: bool,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.domains = [d.lower() for d in domains]
        self.lmtp = lmtp
        self.count = count or (lambda name, n: None)

    async def resolve(self, address: str) -> Recipient | str:
        """A local recipient, or the SMTP reply refusing it."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        if domain.lower() not in self.domains:
            return "550 5.7.1 Relaying denied: we only accept mail for our own domains"
        user_name = local.split("+", 1)[0]
        if not user_name:
            return "550 5.1.1 No such user here"
        try:
            user = await self.store.get_user(user_name)
        except StoreError:
            return "451 4.3.0 Mail store temporarily unavailable"
        if user is None:
            return "550 5.1.1 No such user here"
        return Recipient(address, user)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        found = await self.resolve(address)
        if isinstance(found, str):
            return found
        recipients: list[Recipient] = _recipients(envelope)
        recipients.append(found)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    def trace_headers(self, session: Session, envelope: Envelope, rcpt: Recipient) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:200]
        proto = "LMTP" if self.lmtp else ("ESMTP" if session.extended_smtp else "SMTP")
        if session.ssl is not None:
            proto += "S"
        queue_id = secrets.token_hex(6)
        date = email.utils.formatdate(localtime=True)
        mail_from = (envelope.mail_from or "").replace("\r", "").replace("\n", "")
        lines = [
            f"Return-Path: <{mail_from}>",
            f"Delivered-To: {rcpt.address}",
            f"Received: from {helo} ([{peer}])",
            f"\tby {self.hostname} (Mailstead) with {proto} id {queue_id}",
            f"\tfor <{rcpt.address}>; {date}",
        ]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's last resort: one log line, a clear reply, never a traceback to the
        client (a failed STARTTLS handshake is the client's problem, not ours)."""
        if isinstance(error, TLSSetupException):
            log.info("SMTP STARTTLS handshake failed: %s", error.__cause__ or error)
            return "421 4.7.0 TLS negotiation failed"
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return "421 4.3.0 Temporary server error, closing"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        body = normalise_crlf(bytes(envelope.original_content or b""))
        recipients = _recipients(envelope)
        # One stored copy per user, however many of their addresses were named.
        first_for_user: dict[int, int] = {}
        for i, rcpt in enumerate(recipients):
            first_for_user.setdefault(rcpt.user.id, i)

        async def store_one(rcpt: Recipient) -> str:
            data = self.trace_headers(session, envelope, rcpt) + body
            try:
                inbox = await self.store.get_mailbox(rcpt.user.id, "INBOX")
                if inbox is None:
                    inbox = await self.store.create_mailbox(rcpt.user.id, "INBOX")
                await self.store.deliver([inbox.id], data)
            except StorageFull:
                log.error("delivery to %s failed: store full", rcpt.user.name)
                return "452 4.3.1 Insufficient system storage"
            except StoreError as exc:
                log.error("delivery to %s failed: %s", rcpt.user.name, exc)
                return "451 4.3.0 Temporary failure storing the message"
            except Exception:
                log.exception("delivery to %s failed", rcpt.user.name)
                return "451 4.3.0 Temporary failure storing the message"
            self.count("delivered", 1)
            self.count("delivered_bytes", len(data))
            log.info(
                "delivered to %s (%d bytes) via %s", rcpt.user.name, len(data),
                "LMTP" if self.lmtp else "SMTP",
            )
            return "250 2.0.0 Message accepted for delivery"

        unique = [recipients[i] for i in sorted(first_for_user.values())]
        results = await asyncio.gather(*(store_one(r) for r in unique))
        by_user = {r.user.id: res for r, res in zip(unique, results, strict=True)}
        if self.lmtp:
            return "\r\n".join(by_user[r.user.id] for r in recipients)
        failures = [res for res in results if not res.startswith("250")]
        return failures[0] if failures else "250 2.0.0 Message accepted for delivery"


def _recipients(envelope: Envelope) -> list[Recipient]:
    found: list[Recipient] | None = getattr(envelope, "mailstead_recipients", None)
    if found is None:
        found = []
        envelope.mailstead_recipients = found  # type: ignore[attr-defined]
    return found


# Refusals aiosmtpd sends after the data of DATA: LMTP owes one per recipient.
_DATA_REFUSALS = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
}
_REWRITE = {
    **_DATA_REFUSALS,
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
}


class _MailsteadProtocol(SMTP):
    """What our SMTP and LMTP listeners add to aiosmtpd's protocol classes.

    Enhanced status codes (RFC 3463) on aiosmtpd's own refusals, one refusal per
    recipient in LMTP, a per-IP connection limit, and no traceback for addresses the
    stdlib parser chokes on.
    """

    limiter: ConnectionLimiter | None = None
    max_per_ip = 0
    _counted_ip: str | None = None

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):  # aiosmtpd's own replies are text (as are ours)
            status = _REWRITE.get(status, status)
            envelope = getattr(self, "envelope", None)
            if isinstance(self, LMTP) and status in _DATA_REFUSALS.values() and envelope:
                # RFC 2033 §4.2: after DATA, one reply for each accepted recipient.
                status = "\r\n".join([status] * max(1, len(envelope.rcpt_tos)))
        await super().push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError):  # e.g. "<user@" trips the stdlib parser
            return None, None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        if self.limiter is not None and self._counted_ip is None:
            if not self.limiter.acquire(ip, self.max_per_ip):
                log.info("SMTP connection from %s refused: too many from this address", ip)
                # loop.create_server hands a stream transport, which can write.
                cast(asyncio.WriteTransport, transport).write(
                    b"421 4.7.0 Too many connections from your address\r\n"
                )
                transport.close()
                self._refused = True
                return
            self._counted_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if getattr(self, "_refused", False):
            return
        if self.limiter is not None and self._counted_ip is not None:
            self.limiter.release(self._counted_ip)
            self._counted_ip = None
        super().connection_lost(error)


class MailsteadSMTP(_MailsteadProtocol, SMTP):
    pass


class MailsteadLMTP(_MailsteadProtocol, LMTP):
    pass


def smtp_factory(
    handler: DeliveryHandler,
    *,
    hostname: str,
    max_size: int,
    limiter: ConnectionLimiter | None = None,
    max_per_ip: int = 0,
    **kw: Any,
) -> Any:
    """A protocol factory for ``loop.create_server`` (hostname given: no DNS per connection)."""
    cls = MailsteadLMTP if handler.lmtp else MailsteadSMTP
    ident = "Mailstead LMTP" if handler.lmtp else "Mailstead ESMTP"

    def make() -> SMTP:
        proto = cls(
            handler,
            hostname=hostname,
            ident=ident,
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            **kw,
        )
        proto.limiter = limiter
        proto.max_per_ip = max_per_ip
        return proto

    return make
