"""Checks of single configuration values beyond their type, applied by ``load_config``.

Each check takes the coerced value and raises ``ValueError`` with the reason; the loader
names the key in front of it. So ``serve`` and ``check`` refuse the same things, in the
same words, before anything starts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

# RFC 1123 host names: letters, digits and hyphens, 1-63 per label, 253 in all.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

# Service names of the ports the client documents can advertise (as in /etc/services):
# the listener protocol and whether the port speaks TLS from the first byte. "smtps" is
# 465, which RFC 8314 names "submissions"; "smtp" (25) is accepted and never advertised:
# clients send through submission.
PUBLIC_SERVICES: dict[str, tuple[str, str]] = {
    "imap": ("imap", "plain"),
    "imaps": ("imap", "tls"),
    "pop3": ("pop3", "plain"),
    "pop3s": ("pop3", "tls"),
    "smtp": ("smtp", "plain"),
    "submission": ("submission", "plain"),
    "smtps": ("submission", "tls"),
    "submissions": ("submission", "tls"),
}


def check_hostname(name: str) -> None:
    if not name:
        raise ValueError("must not be empty")
    if len(name) > 253:
        raise ValueError(f"{name[:40]!r}… is longer than 253 characters")
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{name!r} is not a host name (letters, digits and '-' between dots, "
                "no label empty or starting or ending with '-')"
            )


def check_domains(domains: tuple[str, ...]) -> None:
    for domain in domains:
        check_hostname(domain)


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``127.0.0.0/8``, ``::1``, ``10.1.2.3``: an address is a network of one."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an address or network (e.g. 10.0.0.0/8, ::1)"
        ) from None


def check_networks(values: tuple[str, ...]) -> None:
    for value in values:
        parse_network(value)


def parse_public_port(text: str) -> tuple[str, str, int]:
    """``"imaps:993"`` → ``("imap", "tls", 993)``; see ``PUBLIC_SERVICES``."""
    service, sep, port_text = text.strip().partition(":")
    known = PUBLIC_SERVICES.get(service.lower())
    if not sep or known is None:
        raise ValueError(
            f"{text!r} is not SERVICE:PORT with SERVICE one of {', '.join(PUBLIC_SERVICES)}"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} in {text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is out of range 1-65535")
    return known[0], known[1], port


def check_public_ports(values: tuple[str, ...]) -> None:
    for value in values:
        parse_public_port(value)


def check_public_hostname(name: str) -> None:
    if name:  # empty: [server] hostname
        check_hostname(name)


def check_nameservers(values: tuple[str, ...]) -> None:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None


VALUE_CHECKS: dict[tuple[str, str], Callable[[Any], None]] = {
    ("server", "hostname"): check_hostname,
    ("server", "domains"): check_domains,
    ("http", "metrics_allow"): check_networks,
    ("smtp", "trusted_networks"): check_networks,
    ("http", "public_hostname"): check_public_hostname,
    ("http", "public_ports"): check_public_ports,
    ("dns", "nameservers"): check_nameservers,
}
