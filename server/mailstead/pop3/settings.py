"""POP3 settings read once from the configuration, and the RFC 2449 capability list."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..auth.sasl import MECHANISMS
from ..config import Config

log = logging.getLogger("mailstead.pop3")

_EXPIRE = re.compile(r"NEVER|[0-9]{1,5}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class POP3Settings:
    """What the POP3 sessions of one listener need from ``[pop3]``, ``[auth]`` and more."""

    hostname: str = "localhost"
    idle_timeout: float = 600.0  # seconds
    retr_sets_seen: bool = True
    expire: str = "NEVER"
    login_delay: int = 0  # seconds; 0 = not advertised, not enforced
    plaintext_on_loopback: bool = True

    @classmethod
    def from_config(cls, config: Config) -> POP3Settings:
        pop3 = config.pop3
        expire = pop3.expire.strip()
        if not _EXPIRE.fullmatch(expire):
            log.warning("[pop3] expire = %r is not NEVER or a number of days; "
                        "advertising EXPIRE NEVER", expire)
            expire = "NEVER"
        return cls(
            hostname=config.hostname,
            idle_timeout=pop3.idle_timeout_minutes * 60.0,
            retr_sets_seen=pop3.retr_sets_seen,
            expire=expire.upper(),
            login_delay=max(0, pop3.login_delay),
            plaintext_on_loopback=config.auth.plaintext_on_loopback,
        )


def capabilities(settings: POP3Settings, *, login_allowed: bool, stls: bool) -> list[str]:
    """The CAPA lines (RFC 2449 §6), listing only what works on this connection now.

    ``login_allowed`` False (plaintext refused before TLS) hides USER and SASL, the POP3
    equivalent of IMAP's LOGINDISABLED; ``stls`` is True while STLS would succeed.
    """
    caps = ["TOP"]
    if login_allowed:
        caps += ["USER", "SASL " + " ".join(MECHANISMS)]
    caps += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UIDL", f"EXPIRE {settings.expire}"]
    if settings.login_delay > 0:
        caps.append(f"LOGIN-DELAY {settings.login_delay}")
    if stls:
        caps.append("STLS")
    caps.append("IMPLEMENTATION Mailstead")
    return caps
