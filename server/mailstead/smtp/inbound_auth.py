"""Sender authentication of mail arriving on the public SMTP listener.

For a client outside ``[smtp] trusted_networks``, at the end of DATA and before the
reply: SPF (RFC 7208, pyspf) of the MAIL FROM domain (the HELO name for a null sender),
each DKIM signature (RFC 6376, dkimpy; at most ``MAX_SIGNATURES``), and the DMARC policy
(RFC 7489, ``dmarc``) of each From: domain. The outcome is one Authentication-Results
field (RFC 8601, ``authresults``) at the top of every stored copy, where any field
already carrying our authserv-id (``[server] hostname``) is removed as a forgery.
A failure under ``p=reject`` is refused with ``550 5.7.1`` (``[smtp] dmarc_reject``);
under ``p=quarantine`` (or ``p=reject`` not refused) the message goes to the user's
``\\Junk`` mailbox (``[smtp] dmarc_quarantine = "junk"``, the default) or the INBOX.

pyspf and dkimpy are synchronous and DKIM hashes the whole message, so both run on a
small pool of their own; DMARC's TXT lookups use dnspython's asyncio resolver on the
loop. All three share one deadline (``[smtp] inbound_auth_seconds``): whatever has not
finished by then is ``temperror``, which never refuses a message. DNS answers are the
sender's (or anyone's) data: malformed records and signatures become permerror/none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
import spf
from aiosmtpd.smtp import Envelope, Session

from ..config_rules import parse_network
from ..config_sections import Config, DnsSection
from ..dnsresolver import make_resolver, make_sync_resolver
from . import dmarc
from .authdns import BudgetedDns, install_spf_lookup, spf_dns
from .authresults import (
    MAX_FROM_DOMAINS,
    Field,
    forged_results,
    format_header,
    from_domains,
    header_fields,
    safe_value,
    short_b,
    without,
)
from .spool import DeliveryMemory, Spool

log = logging.getLogger(__name__)

MAX_SIGNATURES = 5  # DKIM signatures verified per message; the rest are not reported
# SPF's own limits (RFC 7208 §4.6.4: 10 terms that query, 10 names per mx/ptr, 2 void
# lookups) are pyspf's; this caps the queries of one check on top of them.
MAX_SPF_QUERIES = 120
_SPF_RESULTS = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="inbound-auth")
install_spf_lookup()


class _Quiet:
    """dkimpy logs every bad signature at ERROR; from the Internet that is routine."""

    def __getattr__(self, name: str) -> Any:
        return lambda msg, *args, **kw: log.debug("dkimpy: " + str(msg), *args)

    def isEnabledFor(self, level: int) -> bool:
        return False


@dataclass(frozen=True)
class DkimResult:
    result: str
    domain: str = ""
    selector: str = ""
    b: str = ""

    def text(self) -> str:
        props = [f"header.d={safe_value(self.domain)}" if self.domain else "",
                 f"header.s={safe_value(self.selector)}" if self.selector else "",
                 f"header.b={safe_value(self.b)}" if self.b else ""]
        return " ".join([f"dkim={self.result}", *filter(None, props)])


@dataclass(frozen=True)
class AuthOutcome:
    """What the checks decided for one message."""

    authserv_id: str
    header: bytes  # our Authentication-Results field, CRLF-terminated
    refuse: str | None  # the SMTP reply that refuses the message, or None
    quarantine: bool  # deliver to the Junk mailbox
    # Every stored copy has ``head`` in place of the first ``replaces`` octets of the
    # data: our field, then that part of the header less the forged fields.
    head: bytes = b""
    replaces: int = 0

    def apply(self, data: bytes) -> bytes:
        """``data`` as stored (for tests and callers holding the message whole)."""
        head, replaces = head_edit(data, header_fields(data), self.header, self.authserv_id)
        return head + data[replaces:]


def head_edit(data: bytes, fields: list[Field], header: bytes, our_id: str
              ) -> tuple[bytes, int]:
    """(what replaces the start of ``data``, how many octets it replaces): ``header``
    first, and the fields naming ``our_id`` (forgeries) removed."""
    forged = forged_results(data, fields, our_id)
    end = max((f.end for f in forged), default=0)
    return header + without(data[:end], forged), end


class InboundAuth:
    def __init__(
        self,
        *,
        authserv_id: str,
        dns_cfg: DnsSection,
        seconds: float = 10.0,
        dmarc_reject: bool = True,
        quarantine_to_junk: bool = True,
        trusted_networks: Iterable[str] = (),
    ) -> None:
        self.authserv_id = authserv_id
        self.resolver = make_resolver(dns_cfg)
        self.sync_resolver = make_sync_resolver(dns_cfg)
        self.seconds = seconds
        self.dmarc_reject = dmarc_reject
        self.quarantine_to_junk = quarantine_to_junk
        self.trusted = [parse_network(n) for n in trusted_networks]

    @classmethod
    def from_config(cls, cfg: Config) -> InboundAuth | None:
        """None when ``[smtp] inbound_auth`` is off."""
        if not cfg.smtp.inbound_auth:
            return None
        return cls(authserv_id=cfg.hostname, dns_cfg=cfg.dns,
                   seconds=cfg.smtp.inbound_auth_seconds,
                   dmarc_reject=cfg.smtp.dmarc_reject,
                   quarantine_to_junk=cfg.smtp.dmarc_quarantine == "junk",
                   trusted_networks=cfg.smtp.trusted_networks)

    def client_ip(self, session: Session) -> str | None:
        """The client's address when its mail is to be evaluated, else None."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else ""
        try:
            addr = ipaddress.ip_address(str(peer).split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.trusted):
            return None
        return str(addr)

    async def evaluate(
        self, session: Session, envelope: Envelope, spool: Spool, memory: DeliveryMemory
    ) -> AuthOutcome | None:
        """The delivery handler's one call: None for a trusted client."""
        ip = self.client_ip(session)
        if ip is None:
            return None
        async with memory.hold(spool.size):
            try:
                data = await spool.message(data_only=True)  # as sent, without our trace
            except OSError as exc:
                log.error("cannot read the spool for the sender checks: %s", exc)
                return AuthOutcome(self.authserv_id, b"", "451 4.3.0 Temporary failure "
                                   "reading the message, try again later", False)
            return await self.check(ip=ip, helo=session.host_name or "",
                                    mail_from=envelope.mail_from or "", data=data)

    async def check(self, *, ip: str, helo: str, mail_from: str, data: bytes) -> AuthOutcome:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.seconds
        spf_domain = dmarc.normalise_domain(
            mail_from.rpartition("@")[2] if mail_from else helo) or ""
        spf_job = loop.run_in_executor(_POOL, self._spf, ip, helo, mail_from, deadline)
        dkim_job = loop.run_in_executor(_POOL, self._dkim, data, deadline)
        scan_job = loop.run_in_executor(_POOL, header_fields, data)
        policy_job = loop.create_task(self._policies(data, scan_job, deadline))
        jobs: list[asyncio.Future[Any]] = [spf_job, dkim_job, scan_job, policy_job]
        # The lookups end at the deadline themselves; the slack lets them say so.
        await asyncio.wait(jobs, timeout=self.seconds + 0.5)
        for job in (spf_job, dkim_job, policy_job):
            job.cancel()  # a job still queued for the pool never starts
        spf_result: str = _result(spf_job, "temperror")
        dkim_results: list[DkimResult] = _result(dkim_job, [DkimResult("temperror")])
        signatures = [(r.result, r.domain) for r in dkim_results]
        found: tuple[list[tuple[str, dmarc.Lookup]], bool] | None = _result(policy_job, None)
        policies, usable = found if found is not None else ([], True)
        verdicts = [dmarc.evaluate(d, lookup, spf=(spf_result, spf_domain), dkim=signatures)
                    for d, lookup in policies]
        note = ("dmarc=temperror" if found is None
                else None if usable else "dmarc=permerror (no usable From domain)")
        outcome = self._outcome(mail_from, helo, spf_result, spf_domain, dkim_results,
                                verdicts, note, ip)
        # Forgeries go whatever happened, so the scan (bounded: HEADER_SCAN_LIMIT octets)
        # is waited for past the deadline; it and the edit stay off the loop.
        fields = await scan_job
        head, replaces = await loop.run_in_executor(
            _POOL, head_edit, data, fields, outcome.header, self.authserv_id)
        return dataclasses.replace(outcome, head=head, replaces=replaces)

    async def _policies(self, data: bytes, scan: asyncio.Future[list[Field]],
                        deadline: float) -> tuple[list[tuple[str, dmarc.Lookup]], bool]:
        """The DMARC policy of each From: domain that can be a domain, and whether every
        one could (False too when there is no From: address at all)."""
        raw = from_domains(data, await asyncio.shield(scan))[:MAX_FROM_DOMAINS]
        domains = [d for d in map(dmarc.normalise_domain, raw) if d]
        lookups = await asyncio.gather(
            *(dmarc.find_policy(self.resolver, d, deadline) for d in domains))
        return list(zip(domains, lookups, strict=True)), bool(raw) and len(domains) == len(raw)

    def _outcome(
        self, mail_from: str, helo: str, spf_result: str, spf_domain: str,
        dkim_results: list[DkimResult], verdicts: list[dmarc.Verdict], note: str | None,
        ip: str,
    ) -> AuthOutcome:
        identity = "smtp.mailfrom" if mail_from else "smtp.helo"
        shown = spf_domain or (mail_from.rpartition("@")[2] if mail_from else helo)
        results = [f"spf={spf_result} {identity}={safe_value(shown)}" if shown
                   else f"spf={spf_result}"]
        results += [r.text() for r in dkim_results] or ["dkim=none"]
        results += [
            f"dmarc={v.result} (p={v.policy} dis={v.disposition}) header.from={v.domain}"
            if v.result != "none" else f"dmarc=none header.from={v.domain}"
            for v in verdicts
        ]
        if note is not None:  # no verdict: no usable From domain, or out of time
            results.append(note)
        refuse = None
        rejecting = [v for v in verdicts if v.disposition == "reject"]
        if rejecting and self.dmarc_reject:
            refuse = (f"550 5.7.1 Message refused: it fails the DMARC policy of "
                      f"{rejecting[0].domain} (p=reject): neither SPF nor DKIM "
                      f"authenticated that domain")
        quarantine = self.quarantine_to_junk and refuse is None and any(
            v.disposition in ("quarantine", "reject") for v in verdicts)
        log.info("inbound auth from %s: %s%s", ip, "; ".join(results),
                 " -> refused" if refuse else " -> Junk" if quarantine else "")
        return AuthOutcome(self.authserv_id, format_header(self.authserv_id, results),
                           refuse, quarantine)

    def _spf(self, ip: str, helo: str, mail_from: str, deadline: float) -> str:
        """On the pool: pyspf's verdict for the MAIL FROM (or HELO) identity."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "temperror"
        budget = BudgetedDns(self.sync_resolver, deadline, MAX_SPF_QUERIES)
        try:
            with spf_dns(budget):
                result, _explanation = spf.check2(
                    i=ip, s=mail_from, h=helo or "unknown", timeout=remaining,
                    querytime=remaining)
        except Exception as exc:  # the library choking on the sender's data is not theirs
            log.warning("SPF check failed for %s: %s: %s", ip, type(exc).__name__, exc)
            return "temperror"
        result = str(result).lower()
        return result if result in _SPF_RESULTS else "permerror"

    def _dkim(self, data: bytes, deadline: float) -> list[DkimResult]:
        """On the pool: one result per DKIM-Signature (the first MAX_SIGNATURES)."""
        try:
            verifier = dkim.DKIM(data, logger=_Quiet(), minkey=1024)
        except Exception:  # a message dkimpy cannot parse carries no checkable signature
            return [DkimResult("permerror")]
        signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
        results = []
        for idx, raw in enumerate(signatures[:MAX_SIGNATURES]):
            domain, selector, b_tag = _signature_tags(raw)
            if time.monotonic() >= deadline:  # each signature hashes the whole body again
                results.append(DkimResult("temperror", domain, selector, b_tag))
                continue
            budget = BudgetedDns(self.sync_resolver, deadline, 1)  # one key per signature
            verifier.pk = None
            try:
                verified = bool(verifier.verify(idx=idx, dnsfunc=budget.dkim_txt))
            except Exception as exc:  # dkimpy raises for a bad signature and a bad hash
                log.debug("DKIM signature %d: %s: %s", idx, type(exc).__name__, exc)
                verified = False
            if verified:
                result = "pass"
            elif budget.temporary:
                result = "temperror"
            elif budget.missing or verifier.pk is None:
                # A malformed signature (refused before its key is fetched), no key, or
                # an unusable key.
                result = "permerror"
            else:
                result = "fail"  # the key was fetched: the hashes did not match
            results.append(DkimResult(result, domain, selector, b_tag))
        return results


def _signature_tags(raw: bytes) -> tuple[str, str, str]:
    """d= (normalised, "" if unusable), s= and the start of b= of a signature."""
    try:
        tags = dkim.util.parse_tag_value(raw)
    except Exception:
        return "", "", ""

    def text(key: bytes) -> str:
        return bytes(tags.get(key, b"")).decode("ascii", "replace")

    selector = text(b"s")
    return (dmarc.normalise_domain(text(b"d")) or "",
            selector if dmarc.normalise_domain(selector) else "", short_b(text(b"b")))


def _result(job: asyncio.Future[Any], default: Any) -> Any:
    if not job.done() or job.cancelled():
        return default
    exc = job.exception()
    if exc is not None:
        log.warning("inbound auth check failed: %s: %s", type(exc).__name__, exc)
        return default
    return job.result()
