"""Resolvers built from ``[dns]``: the system's, or ``nameservers`` on ``port``.

One place decides how a resolver is configured, for the asyncio side (dnspython's
``asyncresolver``, used on the loop) and for libraries that only resolve synchronously
(pyspf, dkimpy), which run on threads. Neither caches: the upstream resolver does.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.resolver

from .config_sections import DnsSection

# How long one lookup may take, retries included, unless the caller bounds it tighter.
LOOKUP_SECONDS = 10.0


def make_resolver(cfg: DnsSection) -> dns.asyncresolver.Resolver:
    """The system's resolver, or ``[dns] nameservers`` on ``[dns] port``."""
    if cfg.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(cfg.nameservers)
        resolver.port = cfg.port
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = LOOKUP_SECONDS
    return resolver


def make_sync_resolver(cfg: DnsSection) -> dns.resolver.Resolver:
    """The same, for code that runs on a thread."""
    if cfg.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(cfg.nameservers)
        resolver.port = cfg.port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = LOOKUP_SECONDS
    return resolver
