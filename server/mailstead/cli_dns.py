"""``mailstead dns DOMAIN [--check]``: the records a domain needs, and whether DNS has them.

Without ``--check`` it prints ready-to-paste zone-file lines (``dnsrecords``). With it,
each record is looked up (dnspython; ``[dns] nameservers`` and ``port`` when set, else
the system's resolver) and reported ``ok``, ``MISSING`` or ``WRONG`` with the reason;
the exit status is 1 when anything needed is missing or wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.resolver

from .cli_common import CLIError, load
from .config import Config
from .dnsrecords import Record, dkim_keys, expected_records, zone_line
from .dnsresolver import make_sync_resolver

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _resolver(cfg: Config) -> dns.resolver.Resolver:
    resolver = make_sync_resolver(cfg.dns)
    if not resolver.nameservers:
        raise CLIError("no DNS resolver configured on this system: set [dns] nameservers")
    resolver.lifetime = 5.0
    return resolver


class Lookup:
    """Answers as text, None for "no such record" (NXDOMAIN or no data)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def __call__(self, name: str, rtype: str) -> list[str] | None:
        try:
            answer = self.resolver.resolve(name, rtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise CLIError(f"cannot look up {name} {rtype}: {exc}") from None
        if answer.rrset is None:
            return None
        if rtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]


def _name(text: str) -> str:
    return text.rstrip(".").lower()


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, _, value = part.partition("=")
        tags[key.strip().lower()] = "".join(value.split())
    return tags


def verdict(record: Record, lookup: Lookup) -> tuple[str, str]:
    """("ok" | "MISSING" | "WRONG", why) for one expected record."""
    found = lookup(record.name, record.rtype)
    if not found:
        return ("ok", "not offered, not published") if record.optional else ("MISSING", "")
    if record.rtype == "MX":
        want = _name(record.value.split()[1])
        hosts = [_name(v.split()[1]) for v in found]
        if want in hosts:
            return "ok", ""
        return "WRONG", f"the MX hosts are {', '.join(hosts)}, not {want}"
    if record.rtype == "SRV":
        if record.optional:
            return "ok", f"published ({found[0]}), though not offered here"
        want_port, want_host = record.value.split()[2], _name(record.value.split()[3])
        got = [(v.split()[2], _name(v.split()[3])) for v in found]
        if (want_port, want_host) in got:
            return "ok", ""
        return "WRONG", f"points to {', '.join(f'{h}:{p}' for p, h in got)}"
    if record.rtype == "CNAME":
        if _name(found[0]) == _name(record.value):
            return "ok", ""
        return "WRONG", f"points to {_name(found[0])}"
    return _txt_verdict(record, found)


def _txt_verdict(record: Record, found: list[str]) -> tuple[str, str]:
    kind = record.value.split(";", 1)[0].split()[0].lower()  # v=spf1, v=dkim1, v=dmarc1
    mine = [t for t in found if t.lower().replace(" ", "").startswith(kind)]
    if not mine:
        return "MISSING", f"TXT records there, but none is {kind}"
    if kind == "v=spf1":
        if len(mine) > 1:
            return "WRONG", "several SPF records: receivers treat that as an error (RFC 7208)"
        terms = mine[0].lower().split()[1:]
        if any(t in ("+all", "all") for t in terms):
            return "WRONG", "it ends in +all: anyone may send as the domain"
        if not {"mx", "+mx"} & set(terms):
            return "WRONG", f"{mine[0]!r} does not authorize the MX hosts (add mx)"
        return "ok", ""
    if kind == "v=dkim1":
        want = _tags(record.value)["p"]
        if any(_tags(t).get("p") == want for t in mine):
            return "ok", ""
        return "WRONG", "the published p= is not this server's key"
    policy = _tags(mine[0]).get("p", "")
    return "ok", f"p={policy}" if policy != "quarantine" else ""


def cmd_dns(args: argparse.Namespace) -> int:
    cfg = load(args)
    domain = args.domain.strip().rstrip(".").lower()
    if domain not in cfg.domains:
        raise CLIError(f"{domain} is not one of this server's domains ([server] domains: "
                       f"{', '.join(cfg.domains)})")
    host = cfg.http.public_hostname or cfg.hostname
    dkim, problems = dkim_keys(cfg.data_dir, domain)
    records = expected_records(cfg, domain, dkim)
    if not args.check:
        print(f"; DNS records for {domain}, ready to paste into its zone")
        if "." not in host:
            print(f"; WARNING: [server] hostname is {host!r}: set the server's public name "
                  "(and [http] public_hostname if clients reach it under another)")
        print(f"; {host} itself needs A and/or AAAA records with this server's address.")
        if not dkim:
            print(f"; No DKIM key for {domain}: create one with "
                  f"`mailstead dkim keygen {domain}`, then run this again.")
        for problem in problems:
            print(f"; skipped DKIM key {problem}")
        for record in records:
            print(f"; {record.what}\n{zone_line(record)}")
        return 0
    lookup = Lookup(_resolver(cfg))
    failed = 0
    rows = [(r.rtype, r.name, *verdict(r, lookup)) for r in records]
    address = (lookup(host, "A") or []) + (lookup(host, "AAAA") or [])
    rows.append(("A/AAAA", host, "ok" if address else "MISSING", ", ".join(address)))
    if not dkim:
        rows.append(("TXT", f"<selector>._domainkey.{domain}", "MISSING",
                     f"no DKIM key yet: mailstead dkim keygen {domain}"))
    for rtype, name, state, why in rows:
        failed += state != "ok"
        print(f"{state:7} {rtype:6} {name}" + (f": {why}" if why else ""))
    for problem in problems:
        print(f"WRONG   key    {problem}")
    failed += len(problems)
    print(f"{failed} problem(s) found" if failed else "all records are in place")
    return 1 if failed else 0


def add_dns_commands(sub: Any, with_config: WithConfig) -> None:
    p = with_config(sub.add_parser(
        "dns", help="print the DNS records DOMAIN needs (MX, SPF, DKIM, DMARC, SRV, ...)"))
    p.add_argument("domain")
    p.add_argument("--check", action="store_true",
                   help="look the records up and say what is missing or wrong (exit 1)")
    p.set_defaults(func=cmd_dns)
