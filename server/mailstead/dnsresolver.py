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
from typing import TypeVar

import dns.asyncresolver
import dns.resolver

from .config_sections import DnsSection

log = logging.getLogger(__name__)

# How long one lookup may take, retries included, unless the caller bounds it tighter.
LOOKUP_SECONDS = 10.0


R = TypeVar("R", bound=dns.resolver.BaseResolver)


def _configured(cls: type[R], cfg: DnsSection) -> R:
    """A ``cls`` resolver: the system's, or ``[dns] nameservers`` on ``[dns] port``."""
    if cfg.nameservers:
        resolver = cls(configure=False)
        resolver.nameservers = list(cfg.nameservers)
        resolver.port = cfg.port
    else:
        try:
            resolver = cls()
        except dns.resolver.NoResolverConfiguration:
            _unconfigured()
            resolver = cls(configure=False)
    resolver.lifetime = LOOKUP_SECONDS
    return resolver


def make_resolver(cfg: DnsSection) -> dns.asyncresolver.Resolver:
    """For code on the loop."""
    return _configured(dns.asyncresolver.Resolver, cfg)


def make_sync_resolver(cfg: DnsSection) -> dns.resolver.Resolver:
    """The same, for code that runs on a thread."""
    return _configured(dns.resolver.Resolver, cfg)


def _unconfigured() -> None:
    log.warning("no DNS resolver configured on this system (/etc/resolv.conf): DNS "
                "lookups will fail until [dns] nameservers is set")
