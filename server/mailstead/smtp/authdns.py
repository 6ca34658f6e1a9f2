"""DNS for the synchronous checking libraries, bounded per message.

pyspf and dkimpy resolve synchronously, so their checks run on threads (``inbound_auth``)
and resolve through ``BudgetedDns``: the configured resolver (``[dns]``), every lookup
cut to what is left of the message's deadline, and a cap on how many lookups one check
may make. A timeout, SERVFAIL or exhausted budget is a temporary failure; a name that
cannot even be a DNS name (``s=`` and ``d=`` of a signature are the sender's text) is
"no such record".

pyspf has no resolver parameter; its own tests replace its module-level ``DNSLookup``
function, and so do we (``install_spf_lookup``): ours answers through the
``BudgetedDns`` the current check set in a context variable, and falls back to pyspf's
own when none is set.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.resolver
import spf


class DnsTemporary(Exception):
    """The lookup failed for now (timeout, SERVFAIL, budget spent)."""


class BudgetedDns:
    """Lookups for one check, all ending by ``deadline`` (``time.monotonic``)."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float, max_queries: int
                 ) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.max_queries = max_queries
        self.queries = 0
        self.temporary = False  # some lookup failed temporarily
        self.missing = False  # the last DKIM key lookup found nothing

    def resolve(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, or None when there is no such record (NXDOMAIN, no data, a name
        that is no DNS name); raises DnsTemporary."""
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.queries >= self.max_queries:
            self.temporary = True
            raise DnsTemporary("lookup budget exhausted")
        self.queries += 1
        try:
            return self.resolver.resolve(qname, rdtype, lifetime=remaining, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.DNSException, OSError) as exc:
            self.temporary = True
            raise DnsTemporary(type(exc).__name__) from None

    def dkim_txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the first TXT record of the key's name, joined."""
        self.missing = False
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            self.missing = True
            return None
        try:
            answer = self.resolve(text, "TXT")
        except DnsTemporary as exc:
            raise dkim.DnsTimeoutError(str(exc)) from None
        for rdata in answer or ():
            return b"".join(rdata.strings)
        self.missing = True
        return None


_CURRENT: contextvars.ContextVar[BudgetedDns | None] = contextvars.ContextVar(
    "mailstead_spf_dns", default=None
)
_PYSPF_LOOKUP = spf.DNSLookup


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> list[Any]:
    """pyspf's ``DNSLookup`` contract: ``[((name, qtype), value), ...]``, raising
    ``spf.TempError`` for a temporary failure."""
    budget = _CURRENT.get()
    if budget is None:
        return list(_PYSPF_LOOKUP(name, qtype, strict, timeout))
    try:
        answer = budget.resolve(name, qtype)
    except DnsTemporary as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out: list[Any] = []
    for rdata in answer or ():
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def install_spf_lookup() -> None:
    spf.DNSLookup = _spf_lookup


@contextmanager
def spf_dns(budget: BudgetedDns) -> Iterator[None]:
    """pyspf resolves through ``budget`` inside this block (on this thread)."""
    token = _CURRENT.set(budget)
    try:
        yield
    finally:
        _CURRENT.reset(token)
