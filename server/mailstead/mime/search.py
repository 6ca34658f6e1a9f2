"""Decoded text of a message for IMAP SEARCH (RFC 3501 §6.4.4).

SEARCH BODY/TEXT/SUBJECT/FROM/HEADER compare against *decoded* text: RFC 2047 encoded
words in headers, base64/quoted-printable bodies and their charsets. Matching itself
(case-insensitive substring) is the caller's business; this module only produces text,
and never raises: a message that cannot be decoded must still be searchable as far as it
can be. Encoded words are decoded by ``encoded_words`` in linear time, within a budget
per header block (``DEFAULT_BUDGET`` characters), so a hostile header costs a bounded,
proportional amount of work.
"""

from __future__ import annotations

import binascii
import re

from mailstead.mime.encoded_words import DecodeBudget, decode_encoded_words
from mailstead.mime.headers import header_units
from mailstead.mime.model import BodyPart, ParsedMessage

__all__ = ["body_text", "decode_header_value", "header_values", "search_text"]

_NON_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
# Declared ASCII with 8-bit bytes in it is, in practice, UTF-8 or a Latin charset, which
# the fallback guess handles better than the ascii codec's replacement characters.
_ASCII_NAMES = frozenset({"us-ascii", "ascii", "us", "ansi_x3.4-1968", "646", ""})


def _guess_text(data: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 when it is valid, else Windows-1252 (Latin-1 superset)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _decode_charset(data: bytes, charset: str | None) -> str:
    if charset is not None:
        # RFC 2231 allows "utf-8*en" (charset*language) inside encoded words.
        name = charset.split("*", 1)[0].strip().strip('"').lower()
        if name not in _ASCII_NAMES:
            try:
                return data.decode(name, "replace")
            except Exception:  # unknown or non-text codec ("base64", "rot13"...)
                pass
    return _guess_text(data)


def decode_header_value(value: bytes, budget: DecodeBudget | None = None) -> str:
    """Unfolded raw header value with RFC 2047 encoded words decoded.

    ``budget`` is shared by the values of one header block; once it is spent, values are
    returned undecoded (still searchable as raw text).
    """
    value = value.replace(b"\r\n", b"")
    if b"=?" not in value:
        return _guess_text(value)
    # latin-1 maps each byte to one code point, so the unencoded stretches come back as
    # exactly the original bytes.
    chunks = decode_encoded_words(value.decode("latin-1"), budget)
    if chunks is None:
        return _guess_text(value)
    return "".join(_decode_charset(data, charset) for data, charset in chunks)


def header_values(header_block: bytes, name: str) -> list[str]:
    """Decoded values of every ``name`` field in a header block, in order."""
    try:
        wanted = name.encode("latin-1", "replace").lower()
        budget = DecodeBudget()
        out: list[str] = []
        for field, unit in header_units(header_block):
            if field == wanted:
                out.append(decode_header_value(_value(unit), budget).strip())
        return out
    except Exception:  # input is untrusted; a search must not crash the session
        return []


def _value(unit: bytes) -> bytes:
    return unit[unit.find(b":") + 1 :].replace(b"\r\n", b"").strip(b" \t")


def _decoded_header_block(header_block: bytes) -> str:
    budget = DecodeBudget()
    lines: list[str] = []
    for field, unit in header_units(header_block):
        if field is None:
            lines.append(_guess_text(unit.replace(b"\r\n", b"")))
        else:
            colon = unit.find(b":")
            value = decode_header_value(_value(unit), budget)
            lines.append(_guess_text(unit[:colon]) + ": " + value)
    return "\n".join(lines)


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    if encoding == "BASE64":
        # Lenient: drop line breaks and junk, repair the padding, instead of failing.
        clean = _NON_BASE64.sub(b"", data)
        extra = len(clean) % 4
        if extra == 1:
            clean = clean[:-1]  # a lone trailing sextet carries no whole byte
        elif extra:
            clean += b"=" * (4 - extra)
        return binascii.a2b_base64(clean)
    if encoding == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    return data


def _collect(raw: bytes, part: BodyPart, out: list[str]) -> None:
    if part.is_multipart:
        for child in part.parts:
            _collect(raw, child, out)
    elif part.is_message:
        inner = part.parts[0]
        # An attached message's header is part of the outer message's body text.
        out.append(_decoded_header_block(raw[inner.header_start : inner.header_end]))
        _collect(raw, inner, out)
    elif part.type == "text":
        try:
            data = _decode_transfer(raw[part.body_start : part.body_end], part.encoding)
        except Exception:  # e.g. binascii.Error: search the undecoded bytes instead
            data = raw[part.body_start : part.body_end]
        out.append(_decode_charset(data, part.param("charset")))


def search_text(raw: bytes, parsed: ParsedMessage) -> tuple[str, str]:
    """(decoded top-level header, decoded text of all text/* parts). Never raises.

    Non-text parts (images, archives) are skipped: matching their bytes would only produce
    false hits. HTML is searched as is, tags included. SEARCH itself takes the header part
    from what delivery stored (``header_text.HeaderText.text``) and only the body from here.
    """
    root = parsed.root
    try:
        headers = _decoded_header_block(raw[root.header_start : root.header_end])
    except Exception:
        headers = _guess_text(raw[root.header_start : root.header_end])
    return headers, body_text(raw, parsed)


def body_text(raw: bytes, parsed: ParsedMessage) -> str:
    """The decoded text of all text/* parts (the second half of ``search_text``)."""
    root = parsed.root
    out: list[str] = []
    try:
        _collect(raw, root, out)
    except Exception:
        out = [_guess_text(raw[root.body_start : root.body_end])]
    return "\n".join(out)
