"""aiosmtpd handlers that deliver SMTP and LMTP mail into users' INBOXes.

The handler hooks stay small: ``handle_RCPT`` decides per recipient (a local user, tag
stripped, or the users of an alias: ``addresses.AddressBook``; unknown user 550 5.1.1;
foreign domain 550 5.7.1, we are never a relay) and
``handle_DATA`` stores one copy per user, with trace headers, before answering. ``250``
goes out only after the store committed with fsync. LMTP (RFC 2033) answers once per
accepted recipient, in RCPT order.

Local addresses are ``user@<a [server] domain>`` and ``user@<[server] hostname>`` (an
MTA handing mail over by LMTP names the host). ``postmaster`` (RFC 5321 §4.5.1: MUST be
accepted, with or without a domain) goes to the user named by ``[smtp] postmaster``, else
to a user called ``postmaster``, else to the first user created.

On the SMTP listener (never LMTP) ``handle_DATA`` first has ``inbound_auth`` check the
sender (SPF, DKIM, DMARC): its outcome may refuse the message, send it to Junk, and adds
the Authentication-Results field to each stored copy.

The message reaches ``handle_DATA`` in a spool file (``protocol.MailsteadProtocol``
streams DATA there) and the store takes it from that file (``deliver_file``: a big one
is never held whole in memory); each delivery starts only when ``DeliveryMemory`` has
room for what the store will hold of it, so parallel deliveries of many small messages
wait on disk instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from ..connection import ConnectionLimiter
from ..shared import SharedCounters
from ..store.api import Mailbox, MailStore, NotFound, StorageFull, StoreError, User
from .addresses import AddressBook, Unknown
from .inbound_auth import AuthOutcome, InboundAuth
from .protocol import MailsteadLMTP, MailsteadSMTP
from .spool import DeliveryMemory, Spool, make_spool_folder

log = logging.getLogger(__name__)

INBOX_IDS_KEPT = 10_000  # users whose INBOX id a listener remembers


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    user: User
    rcpt: int = 0  # which RCPT named it (an alias names several users at once)


class DeliveryHandler:
    """Hooks shared by the SMTP and LMTP listeners."""

    def __init__(
        self,
        store: MailStore,
        *,
        hostname: str,
        domains: Iterable[str],
        lmtp: bool,
        count: Callable[..., None] | None = None,  # ServerContext.count
        spool_dir: Path | None = None,  # None: the system's temporary folder
        memory: DeliveryMemory | None = None,
        postmaster: str = "",
        inbound: InboundAuth | None = None,  # SPF/DKIM/DMARC (the SMTP listener only)
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.addresses = AddressBook(
            store, hostname=hostname, domains=domains, postmaster=postmaster
        )
        self.domains = self.addresses.domains
        self.local_domains = self.addresses.local_domains
        self.lmtp = lmtp
        self.count = count or (lambda *args, **labels: None)
        self.spool_dir = spool_dir
        self.memory = memory or DeliveryMemory.for_message_size(0)
        self.postmaster = postmaster
        self.inbound = None if lmtp else inbound
        self._inbox_ids: dict[int, int] = {}  # user id -> INBOX id (see _inbox_id)

    @property
    def metric_protocol(self) -> str:
        return "lmtp" if self.lmtp else "smtp"

    def refused(self, reason: str) -> None:
        """Count a refusal (``mailstead_rejections_total{protocol,reason}``)."""
        self.count("rejections", 1, protocol=self.metric_protocol, reason=reason)

    async def resolve(self, address: str) -> list[Recipient] | str:
        """The local recipients ``address`` reaches (an alias may reach several users),
        or the SMTP reply refusing it."""
        try:
            found = await self.addresses.users_for(address)
        except StoreError:
            self.refused("store_unavailable")
            return "451 4.3.0 Mail store temporarily unavailable"
        if found is Unknown.FOREIGN:
            self.refused("relay_denied")
            return "550 5.7.1 Relaying denied: we only accept mail for our own domains"
        if isinstance(found, Unknown):
            self.refused("no_such_user")
            return "550 5.1.1 No such user here"
        return [Recipient(address, user) for user in found]

    async def _junk(self, user: User) -> Mailbox | None:
        """The user's \\Junk mailbox (RFC 6154), for DMARC quarantine; None if none."""
        boxes = await self.store.list_mailboxes(user.id)
        return next((b for b in boxes if b.special_use == "\\Junk"), None)

    async def _inbox_id(self, user: User) -> int:
        """The id of ``user``'s INBOX, made if missing. Remembered per user id (ids are
        never reused, and INBOX stays INBOX through a RENAME): a store read less per
        delivery. A remembered one that was deleted since fails the delivery with
        ``NotFound``, and the caller looks again."""
        known = self._inbox_ids.get(user.id)
        if known is not None:
            return known
        inbox = await self.store.get_mailbox(user.id, "INBOX")
        if inbox is None:
            inbox = await self.store.create_mailbox(user.id, "INBOX")
        if len(self._inbox_ids) >= INBOX_IDS_KEPT:
            self._inbox_ids.clear()
        self._inbox_ids[user.id] = inbox.id
        return inbox.id

    async def _store_copy(
        self, mailbox_id: int, spool: Spool, trace: bytes | None, size: int
    ) -> None:
        """One stored copy, committed: from memory for a small message, else its file."""
        async with self.memory.hold(self.store.delivery_memory(size)):
            data = spool.stored_bytes(trace)
            if data is not None:
                await self.store.deliver([mailbox_id], data)
            else:
                async with spool.message_file(trace) as message:
                    await self.store.deliver_file([mailbox_id], message)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO/LHLO lines without AUTH: nothing can authenticate on a
        receiving listener (users send through submission), before STARTTLS or after."""
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    def open_spool(self, session: Session, envelope: Envelope) -> Spool:
        """A spool for the data of DATA, starting with the first recipient's trace."""
        folder = self.spool_dir or Path(tempfile.gettempdir())
        first = _recipients(envelope)[0]
        return Spool(make_spool_folder(folder), self.trace_headers(session, envelope, first))

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
        index = len(envelope.rcpt_tos)
        recipients.extend(Recipient(r.address, r.user, index) for r in found)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    def trace_headers(self, session: Session, envelope: Envelope, rcpt: Recipient) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:200]
        proto = "LMTP" if self.lmtp else ("ESMTP" if session.extended_smtp else "SMTP")
        if session.ssl is not None:
            proto += "S"
        queue_id = secrets.token_hex(6)
        date = _received_date()
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
        spool: Spool = envelope.mailstead_spool  # type: ignore[attr-defined]
        recipients = _recipients(envelope)
        auth: AuthOutcome | None = None
        if self.inbound is not None:
            auth = await self.inbound.evaluate(session, envelope, spool, self.memory)
            if auth is not None and auth.refuse is not None:
                self.refused("dmarc_reject")
                return auth.refuse
            if auth is not None:
                spool.edit_head(auth.head, auth.replaces)
        # One stored copy per user, however many of their addresses were named.
        first_for_user: dict[int, int] = {}
        for i, rcpt in enumerate(recipients):
            first_for_user.setdefault(rcpt.user.id, i)

        async def store_one(index: int, rcpt: Recipient) -> str:
            size = 0
            try:
                # The spool starts with recipient 0's trace headers: theirs is the spool
                # itself; any other recipient gets their own in front of the data.
                trace = None if index == 0 else self.trace_headers(session, envelope, rcpt)
                size = spool.stored_size(trace)
                if auth is not None and auth.quarantine:
                    junk = await self._junk(rcpt.user)
                    target = junk.id if junk else await self._inbox_id(rcpt.user)
                    await self._store_copy(target, spool, trace, size)
                else:
                    try:
                        await self._store_copy(await self._inbox_id(rcpt.user), spool, trace,
                                               size)
                    except NotFound:  # the INBOX remembered is gone: look it up again
                        self._inbox_ids.pop(rcpt.user.id, None)
                        await self._store_copy(await self._inbox_id(rcpt.user), spool, trace,
                                               size)
            except StorageFull:
                log.error("delivery to %s failed: store full", rcpt.user.name)
                self.refused("store_full")
                return "452 4.3.1 Insufficient system storage"
            except StoreError as exc:
                log.error("delivery to %s failed: %s", rcpt.user.name, exc)
                self.refused("store_error")
                return "451 4.3.0 Temporary failure storing the message"
            except Exception:
                log.exception("delivery to %s failed", rcpt.user.name)
                self.refused("store_error")
                return "451 4.3.0 Temporary failure storing the message"
            self.count("delivered", 1)
            self.count("delivered_bytes", size)
            log.info(
                "delivered to %s (%d bytes) via %s", rcpt.user.name, size,
                "LMTP" if self.lmtp else "SMTP",
            )
            return "250 2.0.0 Message accepted for delivery"

        firsts = sorted(first_for_user.values())
        unique = [recipients[i] for i in firsts]
        results = await asyncio.gather(*(store_one(i, recipients[i]) for i in firsts))
        by_user = {r.user.id: res for r, res in zip(unique, results, strict=True)}
        if self.lmtp:
            # One reply per RCPT (RFC 2033 §4.2): an alias's fails if any of its users'.
            per_rcpt: dict[int, str] = {}
            for r in recipients:
                res = by_user[r.user.id]
                if r.rcpt not in per_rcpt or per_rcpt[r.rcpt].startswith("250"):
                    per_rcpt[r.rcpt] = res  # the first failure wins
            return "\r\n".join(per_rcpt[i] for i in range(len(envelope.rcpt_tos)))
        failures = [res for res in results if not res.startswith("250")]
        return failures[0] if failures else "250 2.0.0 Message accepted for delivery"


_date_cache: tuple[int, str] = (-1, "")


def _received_date() -> str:
    """The Received: date, in local time: made once per second (``formatdate`` with the
    local zone costs ~4 % of a small delivery's loop time)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, localtime=True))
    return _date_cache[1]


def _recipients(envelope: Envelope) -> list[Recipient]:
    found: list[Recipient] | None = getattr(envelope, "mailstead_recipients", None)
    if found is None:
        found = []
        envelope.mailstead_recipients = found  # type: ignore[attr-defined]
    return found


def smtp_factory(
    handler: DeliveryHandler,
    *,
    hostname: str,
    max_size: int,
    limiter: ConnectionLimiter | None = None,
    max_per_ip: int = 0,
    shared: Callable[[], SharedCounters | None] | None = None,  # several workers' counts
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
        if shared is not None:
            proto.shared = shared
        return proto

    return make
