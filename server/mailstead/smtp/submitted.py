"""What submission reads from and adds to a message's header (pure: bytes in, bytes out).

RFC 6409 §8 lets a submission server complete a message: ``Date`` and ``Message-ID``
are added when missing (§8.2, §8.3), and ``From`` from the envelope sender when missing
(it was checked to be the user's own at MAIL FROM). The client's address goes into a
``Received`` line only when ``[submission] received_header`` asks for it: the usual one
carries a private (home, office) address to every recipient. Without it the line says
only which server took the message and when.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

_HEADER_END = re.compile(rb"\r\n\r\n")
_SAFE = re.compile(r"[^\x21-\x7e]")  # what a HELO name or address may show in a header


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What the sender check and the completion need from a message's header."""

    from_addresses: tuple[str, ...]  # every address in every From: field
    has_from: bool
    has_date: bool
    has_message_id: bool


def header_facts(data: bytes) -> HeaderFacts:
    """Read the header block of ``data`` (CRLF line ends, as the spool keeps them).

    Only the header block is parsed, never the body. A message without a blank line is
    all header (RFC 5322 allows a message without body).
    """
    end = _HEADER_END.search(data)
    block = data[: end.start() + 2] if end else data
    # compat32: the raw field text, never a decoding error for odd bytes (8-bit names).
    msg = BytesHeaderParser(policy=compat32).parsebytes(block)
    froms = [str(v) for v in msg.get_all("From", [])]
    addresses = tuple(addr for _, addr in email.utils.getaddresses(froms))
    return HeaderFacts(
        from_addresses=addresses,
        has_from=bool(froms),
        has_date=msg.get("Date") is not None,
        has_message_id=msg.get("Message-ID") is not None,
    )


def completion_headers(
    facts: HeaderFacts, *, hostname: str, mail_from: str, now: float | None = None
) -> bytes:
    """The fields to put in front of the message: From, Date and Message-ID when missing."""
    lines = []
    if not facts.has_from:
        lines.append(f"From: <{_SAFE.sub('', mail_from)}>")
    if not facts.has_date:
        lines.append(f"Date: {email.utils.formatdate(now, localtime=True)}")
    if not facts.has_message_id:
        lines.append(f"Message-ID: <{secrets.token_hex(12)}@{hostname}>")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def received_header(
    *, hostname: str, tls: bool, queue_id: str, client: tuple[str, str] | None,
    now: float | None = None,
) -> bytes:
    """The ``Received`` line of a submitted message (RFC 5321 §4.4; RFC 3848 "ESMTPSA").

    ``client`` is (HELO name, IP address) when the client may be named
    (``received_header = true``), else None: then no ``from`` clause at all.
    """
    via = "ESMTPSA" if tls else "ESMTPA"
    date = email.utils.formatdate(now, localtime=True)
    if client is None:
        line = f"Received: by {hostname} (Mailstead) with {via} id {queue_id};\r\n\t{date}\r\n"
        return line.encode()
    helo, ip = _SAFE.sub("", client[0])[:200] or "unknown", _SAFE.sub("", client[1])
    return (
        f"Received: from {helo} ([{ip}])\r\n\tby {hostname} (Mailstead) with {via} id "
        f"{queue_id};\r\n\t{date}\r\n"
    ).encode()
