"""The ``Authentication-Results`` header (RFC 8601) and the header fields it reads.

Pure functions over the octets of a message (no I/O): where its header fields are,
which ``Authentication-Results`` fields claim our authserv-id (forgeries, removed before
storing, RFC 8601 §5), the domains of ``From:`` for DMARC, and the formatting of our own
field. Every value we write comes from a closed vocabulary or is reduced to the
characters of a DNS name, so nothing the sender chose can break out of the field.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

# The header block is scanned this far at most: beyond, a "header" is body to us.
HEADER_SCAN_LIMIT = 1024 * 1024
MAX_FROM_DOMAINS = 5  # DMARC is evaluated for at most this many distinct From: domains
_TOKEN = re.compile(r"^[A-Za-z0-9._@+-]{1,255}$")
_B64 = re.compile(r"[^A-Za-z0-9+/]")
_ID_END = re.compile(r"[;\s(]")


@dataclass(frozen=True)
class Field:
    name: str  # as written, stripped
    start: int  # offset of its first octet
    end: int  # offset after its last line's line end

    def value(self, data: bytes) -> str:
        text = data[self.start : self.end].partition(b":")[2].decode("utf-8", "replace")
        return re.sub(r"\r?\n[ \t]", " ", text).strip()


def header_fields(data: bytes) -> list[Field]:
    """The header fields at the top of ``data`` (CRLF or bare LF line ends)."""
    fields: list[Field] = []
    pos, limit = 0, min(len(data), HEADER_SCAN_LIMIT)
    while pos < limit:
        eol = data.find(b"\n", pos, limit)
        end = limit if eol < 0 else eol + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = Field(last.name, last.start, end)
        elif b":" in line:
            fields.append(Field(line.split(b":", 1)[0].decode("latin-1").strip(), pos, end))
        else:
            break  # not a header line: the header block ended without a blank line
        pos = end
    return fields


def authserv_id(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with (comments skipped)."""
    text = value.lstrip()
    while text.startswith("("):  # a comment (CFWS, RFC 5322 §3.2.2), nesting allowed
        text = text[_comment_end(text) :].lstrip()
    if text.startswith('"'):
        return text[1:].split('"', 1)[0].strip()
    return _ID_END.split(text, 1)[0]


def _comment_end(text: str) -> int:
    """Where the comment ``text`` starts with ends (its length if it never does)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return i + 1
    return len(text)


def forged_results(data: bytes, fields: list[Field], our_id: str) -> list[Field]:
    """The Authentication-Results fields naming ``our_id``: only we may add those."""
    ours = our_id.lower()
    return [f for f in fields if f.name.lower() == "authentication-results"
            and authserv_id(f.value(data)).lower() == ours]


def without(data: bytes, drop: Iterable[Field]) -> bytes:
    """``data`` less the octets of the fields in ``drop``."""
    pieces, pos = [], 0
    for f in sorted(drop, key=lambda f: f.start):
        pieces.append(data[pos : f.start])
        pos = f.end
    if not pieces:
        return data
    pieces.append(data[pos:])
    return b"".join(pieces)


def from_domains(data: bytes, fields: list[Field]) -> list[str]:
    """The distinct domains of every address in every ``From:`` field, in order (raw;
    ``dmarc.normalise_domain`` decides which can be looked up)."""
    values = [f.value(data) for f in fields if f.name.lower() == "from"]
    found: list[str] = []
    for _, address in email.utils.getaddresses(values):
        domain = address.rpartition("@")[2].strip().lower()
        if address and domain and domain not in found:
            found.append(domain)
    return found


def safe_value(text: str) -> str:
    """A property value (RFC 8601 §2.2): a token when ``text`` is one, else a quoted
    string holding only printable ASCII (no quote, no backslash)."""
    if _TOKEN.match(text):
        return text
    cleaned = "".join(ch for ch in text if " " <= ch <= "~" and ch not in '"\\')[:255]
    return f'"{cleaned}"'


def short_b(b_tag: str) -> str:
    """The first 8 characters of a signature's ``b=`` (RFC 6008 ``header.b``)."""
    return _B64.sub("", b_tag)[:8]


def format_header(authserv_id: str, results: list[str]) -> bytes:
    """One Authentication-Results field, folded one result per line."""
    body = ";\r\n\t".join([authserv_id, *results]) if results else f"{authserv_id}; none"
    return f"Authentication-Results: {body}\r\n".encode("ascii", "replace")
