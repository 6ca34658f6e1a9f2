"""Mail submission (RFC 6409) on aiosmtpd: the server's own users send mail here.

``[submission] listen`` (587) offers STARTTLS, ``listen_tls`` (465) speaks TLS from the
first byte (RFC 8314). What differs from the receiving listeners (``delivery``):

* AUTH PLAIN and LOGIN, only over TLS, or from loopback when ``[auth]
  plaintext_on_loopback`` allows it (before that, EHLO does not offer AUTH and AUTH
  answers ``538 5.7.11``). The credentials go through the login policy of IMAP and POP3
  (``auth/policy.py``: authzid rule, throttling, failures per connection, the verified
  login cache). aiosmtpd's ``authenticator`` callable is synchronous, and a password
  check must not block the loop, so the handler provides aiosmtpd's other hook, the
  ``auth_<MECHANISM>`` coroutines, decoding with ``auth/sasl.py``. Submission holds no
  IMAP/POP3 session slot: the slot a login takes is given back at once.
* MAIL FROM needs AUTH (``530 5.7.0``) and must be the user's own address: mail to it
  reaches them (their name in any served domain, a ``+tag`` form, an alias they are in,
  a catch-all they own; ``addresses.AddressBook.owns``). So must every ``From:``
  address, checked after DATA. Else ``550 5.7.1``.
* RCPT: a local address goes into the store (the users of ``AddressBook``), any other
  into the outbound queue (``ServerContext.outbound``); without a queue remote
  recipients get ``451 4.3.0``. At most ``max_recipients`` per message (``452 4.5.3``).
* Limits: ``[limits] max_message_size`` (the same DATA reading and spool as SMTP), and
  ``max_messages_per_hour`` per user (``ratelimit``), checked at MAIL FROM.
* DATA completes the header (``submitted``: From, Date, Message-ID) and stores one copy
  per local user in one ``store.deliver`` call (one commit, fsync), then hands the
  remote recipients to the queue, which commits before it returns; ``250`` only after
  both. Local first: if the queue then fails, the client's retry can only duplicate a
  copy in a local mailbox, never mail already on its way to someone else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..connection import ConnectionLimiter
from ..shared import SharedCounters
from ..store.api import StorageFull, StoreError, User
from .addresses import Unknown
from .delivery import DeliveryHandler
from .spool import Spool, make_spool_folder
from .submission_auth import MailsteadSubmission, SubmissionAuth, is_tls, peer_ip, safe_text
from .submitted import completion_headers, header_facts, received_header

log = logging.getLogger(__name__)

# A remote address's domain: a host name, or an address literal in brackets.
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# Messages up to this size have their header read on the loop (microseconds); bigger ones
# may be all header, up to the size limit, and are read on a thread.
INLINE_PARSE = 64 * 1024
# Each From: address is looked up in the store; a message names a few authors at most.
MAX_FROM_ADDRESSES = 50


class SubmissionHandler(SubmissionAuth, DeliveryHandler):
    """The hooks of the submission listeners; local delivery as ``DeliveryHandler``.

    (No method name may start with ``auth_`` but the mechanisms: aiosmtpd offers every
    ``auth_*`` method of a handler as a SASL mechanism.)"""

    @property
    def metric_protocol(self) -> str:
        return "submission"

    def __init__(self, ctx: Any, *, spool_dir: Path | None = None) -> None:
        cfg = ctx.config
        super().__init__(
            ctx.store, hostname=cfg.hostname, domains=cfg.domains, lmtp=False,
            count=ctx.count, spool_dir=spool_dir, memory=ctx.delivery_memory,
            postmaster=cfg.smtp.postmaster,
        )
        self.ctx = ctx
        self.settings = cfg.submission
        self.plaintext_on_loopback = cfg.auth.plaintext_on_loopback

    # --- the envelope ------------------------------------------------------------------
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        user = _user(session)
        if user is None:
            return "530 5.7.0 Authentication required"
        if not await self.ctx.submission_rate.check(user.id):
            self.refused("rate_limited")
            log.info("submission from %s refused: %d messages in the last hour", user.name,
                     self.settings.max_messages_per_hour)
            return (f"451 4.7.1 You sent {self.settings.max_messages_per_hour} messages in "
                    "the last hour, the most allowed: try again later")
        refusal = await self._not_theirs(user, address, "sender", "Sender")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mailstead_local = {}  # type: ignore[attr-defined]  # user id -> User
        envelope.mailstead_remote = []  # type: ignore[attr-defined]
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        limit = self.settings.max_recipients
        if len(envelope.rcpt_tos) >= limit:
            self.refused("too_many_recipients")
            return f"452 4.5.3 Too many recipients: at most {limit} per message"
        local: dict[int, User] = envelope.mailstead_local  # type: ignore[attr-defined]
        remote: list[str] = envelope.mailstead_remote  # type: ignore[attr-defined]
        if self.addresses.is_local(address):
            try:
                found = await self.addresses.users_for(address)
            except StoreError:
                return "451 4.3.0 Mail store temporarily unavailable"
            if isinstance(found, Unknown):
                self.refused("no_such_user")
                return "550 5.1.1 No such user here"
            for user in found:
                local.setdefault(user.id, user)
        else:
            _, at, domain = address.rpartition("@")
            if not at or not _DOMAIN.fullmatch(domain) or len(address) > 254:
                return f"553 5.1.3 <{safe_text(address)}> is not a valid address"
            if self.ctx.outbound is None:
                self.refused("no_outbound")
                return ("451 4.3.0 This server cannot send to other domains right now (no "
                        "outbound queue): only local recipients are accepted")
            remote.append(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def _not_theirs(self, user: User, address: str, what: str, shown: str) -> str:
        """"" when ``address`` is ``user``'s own (``AddressBook.owns``), else the reply."""
        try:
            owned = await self.addresses.owns(user, address)
        except StoreError:
            return "451 4.3.0 Mail store temporarily unavailable"
        if owned:
            return ""
        self.refused(f"{what}_not_owned")
        log.info("submission by %s refused: %s %s is not theirs", user.name, what,
                 safe_text(address))
        return (f"550 5.7.1 {shown} <{safe_text(address)}> is not yours: use your own address, "
                "a +tag form of it, or an alias you are in")

    def open_spool(self, session: Session, envelope: Envelope) -> Spool:
        folder = self.spool_dir or Path(tempfile.gettempdir())
        return Spool(make_spool_folder(folder), b"")

    # --- the message -------------------------------------------------------------------
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        spool: Spool = envelope.mailstead_spool  # type: ignore[attr-defined]
        user = _user(session)
        assert user is not None and envelope.mail_from  # MAIL FROM needed both
        local: dict[int, User] = envelope.mailstead_local  # type: ignore[attr-defined]
        remote: list[str] = envelope.mailstead_remote  # type: ignore[attr-defined]
        async with self.memory.hold(spool.size):
            body = await spool.message()
            # A big message may be all header: parse it off the loop (pure, thread-safe).
            facts = (header_facts(body) if len(body) <= INLINE_PARSE else
                     await asyncio.to_thread(header_facts, body))
            if len(facts.from_addresses) > MAX_FROM_ADDRESSES:
                self.refused("from_not_owned")
                return (f"550 5.7.1 More than {MAX_FROM_ADDRESSES} From: addresses; "
                        "send as yourself")
            for address in facts.from_addresses:
                refusal = await self._not_theirs(user, address, "from", "From: address")
                if refusal:
                    return refusal
            queue_id = secrets.token_hex(6)
            client = None
            if self.settings.received_header:
                client = (session.host_name or "unknown", peer_ip(session))
            data = received_header(
                hostname=self.hostname, tls=is_tls(server), queue_id=queue_id, client=client,
            ) + completion_headers(
                facts, hostname=self.hostname, mail_from=envelope.mail_from
            ) + body
            del body
            if local:
                failure = await self._store_local(envelope.mail_from, list(local.values()),
                                                  data)
                if failure:
                    return failure
            queued = None
            if remote:
                outbound = self.ctx.outbound
                if outbound is None:  # it went away (reload) since RCPT
                    return "451 4.3.0 Cannot queue mail for other domains now, try again later"
                try:
                    queued = await outbound.enqueue(envelope.mail_from, list(remote), data)
                except Exception:
                    log.exception("queueing a message of %s failed", user.name)
                    self.refused("queue_error")
                    return "451 4.3.0 Temporary failure queueing the message"
        self.ctx.submission_rate.record(user.id)
        self.count("submitted", 1)
        log.info("submitted by %s: %d local, %d remote recipient(s), id %s%s", user.name,
                 len(local), len(remote), queue_id,
                 f", queued as {queued}" if queued is not None else "")
        if queued is not None:
            return f"250 2.0.0 Message accepted, queued as {queued}"
        return "250 2.0.0 Message accepted for delivery"

    async def _store_local(self, mail_from: str, users: list[User], data: bytes) -> str:
        """One copy per local user, one store call (one commit); "" or the failure reply."""
        trace = f"Return-Path: <{safe_text(mail_from)}>\r\n".encode()
        try:
            inboxes = []
            for user in users:
                inbox = await self.store.get_mailbox(user.id, "INBOX")
                if inbox is None:
                    inbox = await self.store.create_mailbox(user.id, "INBOX")
                inboxes.append(inbox.id)
            await self.store.deliver(inboxes, trace + data)
        except StorageFull:
            self.refused("store_full")
            return "452 4.3.1 Insufficient system storage"
        except StoreError as exc:
            log.error("local delivery of a submitted message failed: %s", exc)
            self.refused("store_error")
            return "451 4.3.0 Temporary failure storing the message"
        self.count("delivered", len(users))
        self.count("delivered_bytes", len(data) * len(users))
        return ""


def _user(session: Session) -> User | None:
    data = session.auth_data if session.authenticated else None
    return data if isinstance(data, User) else None


def submission_factory(
    handler: SubmissionHandler,
    *,
    hostname: str,
    max_size: int,
    tls_context: Any = None,
    limiter: ConnectionLimiter | None = None,
    max_per_ip: int = 0,
    shared: Callable[[], SharedCounters | None] | None = None,  # several workers' counts
) -> Any:
    """A protocol factory for ``loop.create_server`` (hostname given: no DNS per connection).

    aiosmtpd's own TLS rule for AUTH is off (``auth_require_tls=False``): it knows only
    STARTTLS, not a connection that began in TLS (465), and it has no loopback exception;
    ``MailsteadSubmission.smtp_AUTH`` and ``handle_EHLO`` apply ours.
    """

    def make() -> SMTP:
        proto = MailsteadSubmission(
            handler,
            hostname=hostname,
            ident="Mailstead ESMTP submission",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            auth_require_tls=False,
        )
        proto.limiter = limiter
        proto.max_per_ip = max_per_ip
        if shared is not None:
            proto.shared = shared
        return proto

    return make


def listener_factory(ctx: Any, *, implicit_tls: bool) -> Any:
    """The protocol factory of one submission listener of the daemon: STARTTLS on a plain
    one (when there is a certificate), none on an implicit-TLS one (465)."""
    cfg = ctx.config
    return submission_factory(
        SubmissionHandler(ctx, spool_dir=cfg.data_dir / "spool"),
        hostname=cfg.hostname,
        max_size=cfg.limits.max_message_size,
        tls_context=ctx.tls.stdlib if ctx.tls is not None and not implicit_tls else None,
        limiter=ctx.submission_per_ip,
        max_per_ip=cfg.limits.max_connections_per_ip,
        shared=lambda: ctx.connections.shared,
    )
