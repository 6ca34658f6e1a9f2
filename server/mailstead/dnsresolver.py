"""Resolvers built from ``[dns]``: the system's, or ``nameservers`` on ``port``.

One place decides how a resolver is configured, for the asyncio side (dnspython's
``asyncresolver``, used on the loop: outbound MX routes, DMARC policies) and for
libraries that only resolve synchronously (pyspf, dkimpy), which run on threads. Neither
caches: the upstream resolver does. A system without a usable /etc/resolv.conf gets a
resolver with no name servers (every lookup fails temporarily, and the log says why)
rather than a server that does not start.
"""

from __future__ import annotations

import logging

import dns.asyncresolver
import dns.resolver

from .config_sections import DnsSection

log = logging.getLogger(__name__)

# How long one lookup may take, retries included, unless the caller bounds it tighter.
LOOKUP_SECONDS = 10.0


def make_resolver(cfg: DnsSection) -> dns.asyncresolver.Resolver:
    """The system's resolver, or ``[dns] nameservers`` on ``[dns] port``."""
    if cfg.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(cfg.nameservers)
        resolver.port = cfg.port
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            _unconfigured()
            resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.lifetime = LOOKUP_SECONDS
    return resolver


def make_sync_resolver(cfg: DnsSection) -> dns.resolver.Resolver:
    """The same, for code that runs on a thread."""
    if cfg.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(cfg.nameservers)
        resolver.port = cfg.port
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            _unconfigured()
            resolver = dns.resolver.Resolver(configure=False)
    resolver.lifetime = LOOKUP_SECONDS
    return resolver


def _unconfigured() -> None:
    log.warning("no DNS resolver configured on this system (/etc/resolv.conf): DNS "
                "lookups will fail until [dns] nameservers is set")
