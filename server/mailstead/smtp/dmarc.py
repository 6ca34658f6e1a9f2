"""DMARC (RFC 7489): the From: domain's policy, identifier alignment, the verdict.

SPF and DKIM are the libraries' (``inbound_auth``); this module is only the policy: find
the record (``_dmarc.<From domain>``, else ``_dmarc.<organizational domain>``, §6.6.3),
read its tags, and decide whether an SPF or DKIM pass is *aligned* with the From: domain
(strict: the same name; relaxed: the same organizational domain, ``adkim``/``aspf``).

The organizational domain is the registrable domain under the Public Suffix List, as
RFC 7489 §3.2 says, from the copy of the list the ``publicsuffixlist`` package ships
(no download at run time); a name the list does not know is its own last two labels
(the list's default rule ``*``).

Every record comes from DNS and is untrusted: anything that is not a well-formed DMARC
record is no record, and the tag values are read from a closed vocabulary.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList()  # parses the shipped list once (~50 ms), at import
_POLICIES = ("none", "quarantine", "reject")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A DNS TXT answer is at most 64 KiB; a DMARC record of more than this is not one.
MAX_RECORD = 4096


def normalise_domain(text: str) -> str | None:
    """A domain in lower-case ASCII (IDNA for internationalised names), or None when
    ``text`` is not a plausible host name (then nothing about it is looked up)."""
    name = text.strip().rstrip(".").lower()
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return name if _DOMAIN.match(name) else None


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2) of a normalised domain."""
    return _PSL.privatesuffix(domain) or domain


def aligned(identity: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict ("s") is equality, relaxed ("r") the same org domain."""
    if identity == from_domain:
        return True
    return mode == "r" and org_domain(identity) == org_domain(from_domain)


@dataclass(frozen=True)
class Policy:
    p: str  # "none" | "quarantine" | "reject"
    sp: str  # the policy for subdomains (p when not given)
    adkim: str  # "r" | "s"
    aspf: str
    pct: int  # 0-100


def parse_record(text: str) -> Policy | None:
    """A DMARC record's policy, or None when ``text`` is not a usable record (§6.3).

    An invalid ``p`` makes the record p=none when it names a report address (rua=)
    and no record at all otherwise (§6.6.3 step 6); unknown tags are ignored (§6.3)."""
    if len(text) > MAX_RECORD:
        return None
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        if not eq:
            return None  # a tag without "=": not the tag-value syntax
        tags.setdefault(key, value.strip())
    first = text.split(";", 1)[0].strip().replace(" ", "")
    if first != "v=DMARC1":  # §6.4: "v" first, exactly this value
        return None
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        if not tags.get("rua"):
            return None
        p = "none"
    sp = tags.get("sp", p).lower()
    sp = sp if sp in _POLICIES else p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return Policy(p, sp, adkim if adkim in ("r", "s") else "r",
                  aspf if aspf in ("r", "s") else "r", min(max(pct, 0), 100))


@dataclass(frozen=True)
class Lookup:
    """Where a policy was found: ``policy`` None with ``temporary`` False is "no DMARC"."""

    policy: Policy | None
    at_org: bool  # found at the organizational domain, not the From domain itself
    temporary: bool = False


async def find_policy(
    resolver: dns.asyncresolver.Resolver, domain: str, deadline: float
) -> Lookup:
    """§6.6.3: ``_dmarc.<domain>``, else ``_dmarc.<org domain>``."""
    found = await _record(resolver, domain, deadline)
    if found is not None:  # a record, or a temporary failure (True)
        return _lookup(found, at_org=False)
    org = org_domain(domain)
    if org == domain:
        return Lookup(None, False)
    return _lookup(await _record(resolver, org, deadline), at_org=True)


def _lookup(found: Policy | bool | None, *, at_org: bool) -> Lookup:
    if isinstance(found, bool):  # True: a temporary failure
        return Lookup(None, at_org, temporary=True)
    return Lookup(found, at_org)


async def _record(
    resolver: dns.asyncresolver.Resolver, domain: str, deadline: float
) -> Policy | bool | None:
    """The one DMARC record at ``_dmarc.<domain>``; None for none (or several, §6.6.3
    step 5); True for a temporary failure."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return True
    try:
        answer = await resolver.resolve(f"_dmarc.{domain}.", "TXT", lifetime=remaining,
                                        search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.DNSException, OSError):
        return True
    texts = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]
    records = [t for t in texts if t.replace(" ", "").lower().startswith("v=dmarc1")]
    if len(records) != 1:
        return None
    return parse_record(records[0])


@dataclass(frozen=True)
class Verdict:
    result: str  # RFC 8601 §2.7.1 words: pass, fail, none, temperror
    domain: str  # the From: domain evaluated
    policy: str  # the policy that applies to it ("none" when there is no record)
    disposition: str  # what to do: "none" | "quarantine" | "reject"


def evaluate(
    from_domain: str,
    lookup: Lookup,
    *,
    spf: tuple[str, str],  # (result, the MAIL FROM or HELO domain)
    dkim: list[tuple[str, str]],  # (result, d=) per signature
    rng: random.Random | None = None,
) -> Verdict:
    """The DMARC verdict for one From: domain (RFC 7489 §6.6.2 and §6.6.4)."""
    if lookup.temporary:
        return Verdict("temperror", from_domain, "none", "none")
    policy = lookup.policy
    if policy is None:
        return Verdict("none", from_domain, "none", "none")
    applies = policy.sp if lookup.at_org else policy.p
    spf_result, spf_domain = spf
    spf_aligned = bool(spf_domain) and aligned(spf_domain, from_domain, policy.aspf)
    if spf_result == "pass" and spf_aligned:
        return Verdict("pass", from_domain, applies, "none")
    dkim_aligned = [r for r, d in dkim if d and aligned(d, from_domain, policy.adkim)]
    if "pass" in dkim_aligned:
        return Verdict("pass", from_domain, applies, "none")
    if "temperror" in dkim_aligned or (spf_aligned and spf_result == "temperror"):
        # An aligned identifier could not be checked: not the sender's fault (§6.6.2).
        return Verdict("temperror", from_domain, applies, "none")
    disposition = applies
    # pct (§6.3): the policy applies to that share of failing mail; the rest gets the
    # next milder treatment (reject → quarantine → none).
    if policy.pct < 100 and (rng or random).random() * 100 >= policy.pct:
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(applies, "none")
    return Verdict("fail", from_domain, applies, disposition)
