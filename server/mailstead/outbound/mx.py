"""Where mail for a domain goes (RFC 5321 §5.1), with dnspython's asyncio resolver.

MX records in preference order, a random order among equal preferences (so the load
spreads as the domain asked); no MX at all means the domain itself (the implicit MX);
a null MX (RFC 7505: one MX ``0 .``) or a domain that does not exist is a permanent
failure, which bounces at once instead of retrying for days. Each host's IPv4 addresses
are tried before its IPv6 ones: a home server often has no IPv6 route, and then every v6
attempt would cost a timeout before the v4 address that works.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.exception
import dns.resolver

from ..config_sections import DnsSection
from ..dnsresolver import LOOKUP_SECONDS, make_resolver

# How long one lookup may take (retries included, before the attempt is deferred) and
# how the resolver is built from [dns] are dnsresolver's, shared with inbound checks.
__all__ = ["LOOKUP_SECONDS", "DnsFailure", "Host", "MxResolver", "make_resolver", "order_mx"]


class DnsFailure(Exception):
    """No route to the domain; ``permanent`` says whether to bounce (else retry later).
    ``reply`` is worded like an SMTP reply, for the DSN and the queue's last reply."""

    def __init__(self, reply: str, *, permanent: bool, reason: str) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent
        self.reason = reason  # a metrics label: "null_mx", "no_domain", "dns"


@dataclass(frozen=True)
class Host:
    name: str  # the MX host name, for logs and the DSN's Remote-MTA
    addresses: tuple[str, ...]


def order_mx(records: list[tuple[int, str]], rng: random.Random | None = None) -> list[str]:
    """Host names by preference, shuffled among equal preferences (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    keyed = [(pref, rng.random(), host) for pref, host in records]
    return [host for _, _, host in sorted(keyed)]


class MxResolver:
    def __init__(self, cfg: DnsSection) -> None:
        self.resolver = make_resolver(cfg)

    async def route(self, domain: str) -> list[Host]:
        """The hosts to try for ``domain``, in order; raises DnsFailure when there are none."""
        try:
            answer = await self.resolver.resolve(domain, "MX")
            records = [(r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                       for r in answer]
        except dns.resolver.NXDOMAIN:
            raise DnsFailure(f"550 5.1.2 domain {domain} does not exist", permanent=True,
                             reason="no_domain") from None
        except dns.resolver.NoAnswer:
            records = [(0, domain)]  # the implicit MX (RFC 5321 §5.1)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsFailure(f"451 4.4.3 cannot look up MX for {domain}: {exc}",
                             permanent=False, reason="dns") from None
        if any(host in ("", ".") for _, host in records):
            # RFC 7505 §3: a null MX is the only record; treat any "." as the domain's word.
            raise DnsFailure(f"556 5.1.10 domain {domain} accepts no mail (null MX)",
                             permanent=True, reason="null_mx")
        hosts: list[Host] = []
        temporary: str | None = None
        for name in order_mx(records):
            addresses: list[str] = []
            for rdtype in ("A", "AAAA"):
                try:
                    answer = await self.resolver.resolve(name, rdtype)
                    addresses += [r.address for r in answer]
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    pass
                except (dns.exception.DNSException, OSError) as exc:
                    temporary = f"cannot look up {rdtype} of {name}: {exc}"
            if addresses:
                hosts.append(Host(name, tuple(addresses)))
        if hosts:
            return hosts
        if temporary is not None:
            raise DnsFailure(f"451 4.4.3 {temporary}", permanent=False, reason="dns")
        raise DnsFailure(f"550 5.4.4 no address for the mail hosts of {domain}",
                         permanent=True, reason="no_address")
