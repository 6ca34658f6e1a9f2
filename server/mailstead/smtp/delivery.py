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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from ..mime.parse import normalise_crlf
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
        domains: list[str],
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


class _SizeReplies:
    """Word aiosmtpd's size refusals with the enhanced status code RFC 3463 asks for."""

    _REWRITE = {
        "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
        "552 Error: message size exceeds fixed maximum message size": (
            "552 5.3.4 Message size exceeds fixed maximum message size"
        ),
    }

    async def push(self, status: str) -> None:
        await super().push(self._REWRITE.get(status, status))  # type: ignore[misc]


class MailsteadSMTP(_SizeReplies, SMTP):
    pass


class MailsteadLMTP(_SizeReplies, LMTP):
    pass


def smtp_factory(handler: DeliveryHandler, *, hostname: str, max_size: int, **kw: Any) -> Any:
    """A protocol factory for ``loop.create_server`` (hostname given: no DNS per connection)."""
    cls = MailsteadLMTP if handler.lmtp else MailsteadSMTP
    ident = "Mailstead LMTP" if handler.lmtp else "Mailstead ESMTP"

    def make() -> SMTP:
        return cls(
            handler,
            hostname=hostname,
            ident=ident,
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            **kw,
        )

    return make
