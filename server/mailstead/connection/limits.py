"""Admission of new connections: a global cap across every IMAP and POP3 listener, and a
cap per remote address for each protocol."""

from __future__ import annotations

import enum
from collections import Counter


class ConnectionLimiter:
    """Counts holders per key (a remote address, a user id) against a limit."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def acquire(self, key: str, limit: int) -> bool:
        if self.counts[key] >= limit:
            return False
        self.counts[key] += 1
        return True

    def release(self, key: str) -> None:
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]


class Refusal(enum.Enum):
    """Why a new connection was turned away (the value is for the log)."""

    SERVER_FULL = "the server has its maximum number of connections"
    PER_IP = "too many connections from this address"

    @property
    def code(self) -> str:
        """The reason in the event log and in ``rejections_total``."""
        return self.name.lower()


class ConnectionGate:
    """Admits or refuses each new connection; every admitted one must be released once.

    ``max_total`` counts IMAP and POP3 connections together (one process serves both, so
    they share its memory and its loop); ``max_per_ip`` applies to each protocol on its
    own, so a user's mail client polling POP3 does not lock out the same address's IMAP.
    """

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: dict[str, ConnectionLimiter] = {}

    def admit(self, protocol: str, ip: str) -> Refusal | None:
        if self.total >= self.max_total:
            return Refusal.SERVER_FULL
        limiter = self._per_ip.get(protocol)
        if limiter is None:
            limiter = self._per_ip[protocol] = ConnectionLimiter()
        if not limiter.acquire(ip, self.max_per_ip):
            return Refusal.PER_IP
        self.total += 1
        return None

    def release(self, protocol: str, ip: str) -> None:
        self.total -= 1
        self._per_ip[protocol].release(ip)
