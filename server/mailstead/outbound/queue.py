"""The outbound queue's runner: messages from the store's queue to remote servers.

``OutboundQueue.enqueue`` normalises line ends, signs (``dkim.py``) and commits the
message with its recipients (``store.queue_add``, fsync included) before it returns the
id. The runner, a task on the server's loop, reads due recipients from the store, groups
them per destination domain and delivers each domain on its own task: one route lookup
(``mx.py``), one connection reused for every message of that domain, all recipients of a
message at that domain in one SMTP transaction (``client.py``, on the outbound threads).

After each transaction the outcome of every recipient (sent, bounced, or deferred with
its next attempt) and the bounce it produced are recorded in one store transaction before
the next message is sent. So a crash loses nothing queued, and the only mail that can go
out twice is the one transaction whose ``250`` came back in the moment before its record
was committed: at most one message's recipients at one domain. (An outcome the store
refuses, a full disk, is kept in memory and recorded at a later look, and its recipients
are not attempted until then.) Retries back off from
``[queue] retry_first`` doubling to ``retry_max``; a recipient still failing at
``queue_lifetime`` bounces. The runner rereads due entries every ``poll_seconds``, so a
``mailstead queue retry`` from another process is picked up within that time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ..config import Config
from ..store.api import MailStore, StoreError
from ..store.queue_api import BOUNCED, PENDING, SENT, Bounce, Outcome, QueuedMessage
from ..usernames import resolve_user_name
from .client import Reply, Session, SessionFailure, Target, TLSFailure
from .dkim import DkimError, DkimSigner
from .dsn import Failure, build_dsn
from .mx import DnsFailure, MxResolver

log = logging.getLogger("mailstead.outbound")

_DUE_BATCH = 1000
# Messages up to this size get their line ends fixed on the loop (cheaper than a thread
# hop); bigger ones, and every message to be signed, on an outbound thread.
_INLINE_BYTES = 64 * 1024
Count = Callable[..., None]


def crlf(data: bytes) -> bytes:
    """Line ends as SMTP and DKIM need them: every bare LF (or CR) becomes CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


class OutboundQueue:
    """Satisfies ``context.OutboundSink``; ``start``/``stop`` run the delivery runner."""

    def __init__(self, store: MailStore, config: Config, *, count: Count | None = None) -> None:
        self.store = store
        self.config = config
        self.q = config.queue
        self._count = count
        self.signer = DkimSigner(config.data_dir)
        self.resolver = MxResolver(config.dns)
        self._threads = ThreadPoolExecutor(max_workers=self.q.concurrency + 1,
                                           thread_name_prefix="outbound")
        self._wake = asyncio.Event()
        self._busy: set[tuple[int, str]] = set()  # (queue id, address) being attempted
        self._domains: dict[str, asyncio.Task[None]] = {}
        self._open: set[Session] = set()  # connections in use, aborted by a late stop
        # Attempts whose record the store refused (full disk): queue id -> what to record.
        self._unrecorded: dict[int, tuple[list[Outcome], Bounce | None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.pending = 0  # recipients pending at the last look (the queue-size gauge)

    # --- the sink ----------------------------------------------------------------------
    async def enqueue(self, mail_from: str, recipients: list[str], data: bytes) -> int:
        if self.signer.has_keys() or len(data) > _INLINE_BYTES:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self._threads, self._prepare, data)
        else:
            data = crlf(data)
        queue_id = await self.store.queue_add(mail_from, recipients, data)
        log.info("outbound: queued %d from <%s> to %d recipients (%d octets)",
                 queue_id, mail_from, len(recipients), len(data))
        self._event("outbound_queued")
        self._wake.set()
        return queue_id

    def _prepare(self, data: bytes) -> bytes:
        """CRLF line ends, then the DKIM signatures (on an outbound thread)."""
        data = crlf(data)
        try:
            return self.signer.sign(data)
        except DkimError as exc:  # a broken key must not stop mail; say so loudly
            log.error("outbound: not DKIM-signed: %s", exc)
            return data

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking work; let deliveries in flight record their outcome for ``grace``
        seconds (one cut short is retried after the restart)."""
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        tasks = list(self._domains.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for session in list(self._open):
                session.abort()  # a thread blocked on a silent remote returns at once
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait = self.q.poll_seconds
            try:
                next_due = await self._scan()
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - time.time()))
            except StoreError as exc:
                log.warning("outbound: cannot read the queue: %s", exc)
            except Exception:  # the runner must outlive any one bad scan
                log.exception("outbound: queue scan failed")
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _scan(self) -> float | None:
        """Start a delivery for every domain with due recipients; the next due time."""
        for queue_id, (outcomes, bounce) in list(self._unrecorded.items()):
            try:
                await self.store.queue_record(queue_id, outcomes, bounce)
            except StoreError as exc:
                log.warning("outbound: still cannot record the attempt of %d: %s",
                            queue_id, exc)
                continue
            del self._unrecorded[queue_id]
        held = {(queue_id, out.address)
                for queue_id, (outcomes, _) in self._unrecorded.items() for out in outcomes}
        now = time.time()
        due = await self.store.queue_due(now, _DUE_BATCH)
        self.pending = await self.store.queue_pending()
        groups: dict[str, list[tuple[int, str]]] = {}
        for rcpt in due:
            key = (rcpt.queue_id, rcpt.address)
            if key not in self._busy and key not in held:
                groups.setdefault(rcpt.domain, []).append(key)
        for domain, keys in groups.items():
            if domain in self._domains or len(self._domains) >= self.q.concurrency:
                continue  # picked up when that domain's delivery ends (it wakes the runner)
            self._busy.update(keys)
            task = asyncio.get_running_loop().create_task(self._deliver_domain(domain, keys))
            self._domains[domain] = task
        if self._domains or held:
            return None  # (a domain's end wakes the runner; held ones wait a poll)
        return await self.store.queue_next_due()

    # --- one destination domain --------------------------------------------------------
    async def _deliver_domain(self, domain: str, keys: list[tuple[int, str]]) -> None:
        by_message: dict[int, list[str]] = {}
        for queue_id, address in keys:
            by_message.setdefault(queue_id, []).append(address)
        session: Session | None = None
        try:
            try:
                targets = await self._targets(domain)
                failure: str | None = None
            except DnsFailure as exc:
                targets, failure = [], exc.reply
                if exc.permanent:
                    log.info("outbound: %s: %s", domain, exc.reply)
                    for queue_id, rcpts in by_message.items():
                        message = await self.store.queue_message(queue_id)
                        if message is not None:
                            await self._settle(message, rcpts, {}, exc.reply, None,
                                               permanent=exc.reason)
                    return
            for queue_id, rcpts in by_message.items():
                if self._stopping:
                    return
                if session is None and failure is None:
                    session, failure = await self._connect(targets)
                replies: dict[str, Reply] = {}
                error = failure
                message = await self.store.queue_message(queue_id)
                if message is None:
                    continue  # deleted meanwhile (mailstead queue delete)
                if session is not None:
                    data = await self.store.queue_data(queue_id)
                    if data is None:
                        continue
                    try:
                        replies = await self._in_thread(
                            session.send, message.mail_from, rcpts, data)
                    except SessionFailure as exc:
                        error = f"451 4.4.2 connection to {session.target} lost: {exc}"
                        self._open.discard(session)
                        await self._in_thread(session.close)
                        session = None
                await self._settle(message, rcpts, replies, error,
                                   str(session.target) if session else None)
        except StoreError as exc:
            log.error("outbound: %s: the queue could not be updated: %s", domain, exc)
        except Exception:  # a bug here must not stop the other domains; retried later
            log.exception("outbound: delivery to %s failed", domain)
        finally:
            if session is not None:
                self._open.discard(session)
                await self._in_thread(session.close)
            self._busy.difference_update(keys)
            self._domains.pop(domain, None)
            self._wake.set()

    async def _targets(self, domain: str) -> list[Target]:
        relay = self.config.relay
        if relay.host:
            ca_file = str(relay.ca_file) if relay.ca_file else None
            return [Target(relay.host, relay.host, relay.port, relay.tls, relay.tls_verify,
                           ca_file, relay.username, relay.password)]
        return [Target(host.name, address, self.q.mx_port)
                for host in await self.resolver.route(domain) for address in host.addresses]

    async def _connect(self, targets: list[Target]) -> tuple[Session | None, str | None]:
        """The first host that answers, in order (RFC 5321 §5.1), or the last error."""
        error = "451 4.4.1 no host to try"
        tries = list(reversed(targets))
        while tries:
            target = tries.pop()
            try:
                session = await self._in_thread(
                    Session.open, target, helo=self.config.hostname,
                    connect_timeout=self.q.connect_timeout,
                    command_timeout=self.q.command_timeout,
                )
            except SessionFailure as exc:
                error = f"451 4.4.1 {target}: {exc}"
                log.info("outbound: cannot use %s:%d: %s", target, target.port, exc)
                if isinstance(exc, TLSFailure) and target.tls == "opportunistic":
                    tries.append(replace(target, tls="none"))  # the same host, in plain
                continue
            self._open.add(session)
            return session, None
        return None, error

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: fn(*args, **kwargs))

    # --- recording an attempt ----------------------------------------------------------
    async def _settle(self, message: QueuedMessage, rcpts: list[str],
                      replies: dict[str, Reply], error: str | None, remote: str | None, *,
                      permanent: str | None = None) -> None:
        """Record one attempt for ``rcpts`` of ``message`` (as read before the attempt:
        only this runner changes its recipients' states), with its bounce, in one go."""
        queue_id = message.id
        states = {r.address: r for r in message.recipients}
        now = time.time()
        outcomes: list[Outcome] = []
        failures: list[Failure] = []
        for address in rcpts:
            known = states.get(address)
            if known is None or known.state != PENDING:
                continue
            reply = replies.get(address)
            text = str(reply) if reply is not None else (error or "451 4.3.0 not attempted")
            self._event("outbound_attempts")
            if reply is not None and reply.ok:
                outcomes.append(Outcome(address, SENT, text))
                self._event("outbound_delivered")
                reason = None
            elif permanent is not None or (reply is not None and reply.permanent):
                reason = permanent or "rejected"
                outcomes.append(Outcome(address, BOUNCED, text))
                failures.append(Failure(address, text, remote))
            else:
                expiry = message.created + self.q.queue_lifetime
                if now >= expiry:
                    reason = "expired"
                    outcomes.append(Outcome(address, BOUNCED, text))
                    failures.append(Failure(address, text, remote, expired=True))
                else:
                    reason = None
                    delay = min(self.q.retry_first * 2 ** known.attempts, self.q.retry_max)
                    outcomes.append(Outcome(address, PENDING, text, min(now + delay, expiry)))
                    self._event("outbound_deferred")
            if reason is not None:
                self._event("outbound_bounces", reason=reason)
            verdict = outcomes[-1].state if reason != "expired" else "expired"
            log.info("outbound: %d <%s> -> <%s> via %s: %s (%s, attempt %d)", queue_id,
                     message.mail_from, address, remote or "-", text,
                     "deferred" if verdict == PENDING else verdict, known.attempts + 1)
        bounce = await self._bounce(message, failures) if failures else None
        try:
            await self.store.queue_record(queue_id, outcomes, bounce)
        except StoreError:
            # Kept until the store takes it (each look at the queue tries again), and
            # these recipients are not attempted meanwhile: one the remote acknowledged
            # is not sent again because the disk was full when it answered.
            self._unrecorded[queue_id] = (outcomes, bounce)
            raise

    async def _bounce(self, message: QueuedMessage, failures: list[Failure]) -> Bounce | None:
        """The DSN for ``failures``: into the sender's INBOX when the sender is ours, queued
        to the sender otherwise; none for a null sender (a bounce never bounces)."""
        sender = message.mail_from
        if not sender:
            return None
        data = await self.store.queue_data(message.id)
        dsn = build_dsn(hostname=self.config.hostname, sender=sender, original=data or b"",
                        arrival=message.created, failures=failures)
        local, _, domain = sender.rpartition("@")
        if domain.lower() not in self.config.domains:
            return Bounce(dsn, remote=sender)
        name = resolve_user_name(local.split("+", 1)[0], self.config.domains)
        user = await self.store.get_user(name) if name else None
        inbox = await self.store.get_mailbox(user.id, "INBOX") if user else None
        if inbox is None:
            log.warning("outbound: no local user for the bounce to <%s>; dropped", sender)
            return None
        return Bounce(dsn, mailbox_id=inbox.id)

    def _event(self, event: str, **labels: Any) -> None:
        if self._count is not None:
            self._count(event, **labels)
