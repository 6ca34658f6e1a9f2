"""Delivery status notifications (RFC 3464): the bounce a sender gets when mail fails.

One ``multipart/report; report-type=delivery-status`` per failed attempt of a message:
a human-readable part, the ``message/delivery-status`` part with one block per failed
recipient, and the original header (``text/rfc822-headers``, not the body: the sender
has it, and a bounce should not carry a big attachment back). ``Auto-Submitted`` (RFC
3834) keeps auto-responders from answering it; it is sent, when it must travel, with a
null reverse path, so it can never cause a bounce itself.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

_ENHANCED = re.compile(r"^\d{3}[ -]?([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class Failure:
    recipient: str
    reply: str  # the remote's reply, or ours ("556 5.1.10 ... null MX")
    remote_mta: str | None  # the host that answered, None when none did
    expired: bool = False


def status_of(failure: Failure) -> str:
    """The RFC 3463 status code: the reply's enhanced code, else one from its class."""
    if failure.expired:
        return "4.4.7"  # delivery time expired
    match = _ENHANCED.match(failure.reply)
    if match:
        return match.group(1)
    return "5.0.0" if failure.reply.startswith("5") else "4.0.0"


def _header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_dsn(*, hostname: str, sender: str, original: bytes, arrival: float,
              failures: list[Failure], now: float | None = None) -> bytes:
    """The bounce for ``failures`` of the message ``original``, to ``sender`` (CRLF bytes)."""
    when = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    boundary = f"=_mailstead_{secrets.token_hex(12)}"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(when)}",
        f"Message-ID: {make_msgid('dsn', domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a delivery status notification (RFC 3464).",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to the following recipients:",
        "",
    ]
    for failure in failures:
        why = ("it could not be delivered before the queue lifetime ran out; last reply: "
               if failure.expired else "")
        host = f" (from {failure.remote_mta})" if failure.remote_mta else ""
        lines += [f"<{failure.recipient}>: {why}{_one_line(failure.reply)}{host}", ""]
    lines += [
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"Arrival-Date: {format_datetime(datetime.fromtimestamp(arrival, UTC))}",
    ]
    for failure in failures:
        lines += [
            "",
            f"Final-Recipient: rfc822; {failure.recipient}",
            "Action: failed",
            f"Status: {status_of(failure)}",
        ]
        if failure.remote_mta:
            lines.append(f"Remote-MTA: dns; {failure.remote_mta}")
        lines += [
            f"Diagnostic-Code: smtp; {_one_line(failure.reply)}",
            f"Last-Attempt-Date: {format_datetime(when)}",
        ]
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    text = "\r\n".join(lines).encode() + b"\r\n"
    return text + _header_block(original) + f"\r\n--{boundary}--\r\n".encode()
