"""IMAP date and date-time syntax (RFC 3501 §9: ``date``, ``date-time``).

Months are English three-letter abbreviations whatever the locale, so this module
never uses strftime/strptime.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(MONTHS, start=1)}

# date-text: the day may have one or two digits (date-day = 1*2DIGIT).
_DATE_RE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-time without its quotes. date-day-fixed is (SP DIGIT) / 2DIGIT; clients also
# send a bare single digit, which is accepted too.
_DATETIME_RE = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError("Date contains non-ASCII characters") from exc
    return value


def _month(name: str) -> int:
    try:
        return _MONTH_NUMBER[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown month {name!r}") from None


def parse_date(value: str | bytes) -> date:
    """Parse a SEARCH ``date-text`` such as ``5-Nov-2026`` (without quotes)."""
    text = _text(value)
    match = _DATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid date {text!r}, expected d-Mon-yyyy")
    day, month, year = match.groups()
    try:
        return date(int(year), _month(month), int(day))
    except ValueError as exc:
        raise ValueError(f"Invalid date {text!r}: {exc}") from None


def format_date(value: date) -> bytes:
    """Format a SEARCH date, e.g. ``b"5-Nov-2026"``."""
    return f"{value.day}-{MONTHS[value.month - 1]}-{value.year:04d}".encode("ascii")


def parse_datetime(value: str | bytes) -> datetime:
    """Parse an APPEND ``date-time`` (``dd-Mon-yyyy hh:mm:ss +zzzz``) without its quotes.

    Returns an aware datetime in the zone given by the client.
    """
    text = _text(value)
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid date-time {text!r}, expected dd-Mon-yyyy hh:mm:ss +zzzz")
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    if int(zone_h) > 23 or int(zone_m) > 59:
        raise ValueError(f"Invalid time zone in date-time {text!r}")
    offset = timedelta(hours=int(zone_h), minutes=int(zone_m))
    zone = timezone(-offset if sign == "-" else offset)
    # A leap second (:60) cannot be represented by datetime; keep the message rather
    # than refuse it.
    sec = 59 if int(second) == 60 else int(second)
    try:
        return datetime(
            int(year), _month(month), int(day), int(hour), int(minute), sec, tzinfo=zone
        )
    except ValueError as exc:
        raise ValueError(f"Invalid date-time {text!r}: {exc}") from None


def format_internaldate(value: datetime) -> bytes:
    """INTERNALDATE text with a space-padded day: ``b" 5-Nov-2026 09:03:01 +0000"``.

    This is the content of the quoted ``date-time``; the caller adds the quotes
    (``wire.string``). A naive datetime is taken to be UTC.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset() or timedelta(0)
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60  # the wire form has no room for leftover seconds
    text = (
        f"{value.day:2d}-{MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
    return text.encode("ascii")
