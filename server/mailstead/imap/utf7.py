"""Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3) and raw UTF-8 (RFC 6855).

Modified UTF-7 keeps printable US-ASCII as itself (``&`` becomes ``&-``) and encodes
every other run of characters as ``&`` + base64 of UTF-16BE + ``-``, with ``,`` in
place of ``/`` and no ``=`` padding.

The decoder is strict about the things that make a name ambiguous (an encoded
printable ASCII character, stray padding bits, broken UTF-16), because two wire
spellings of one name would let a client create look-alike mailboxes.
"""

from __future__ import annotations

import base64
import binascii

_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
_AMP = 0x26
_DASH = 0x2D


def _is_direct(code: int) -> bool:
    """Characters modified UTF-7 must send as themselves (printable US-ASCII)."""
    return 0x20 <= code <= 0x7E


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=").replace(b"/", b",")


def encode_mailbox(name: str) -> bytes:
    """Encode a mailbox name to modified UTF-7.

    Raises ValueError for a name that has no UTF-16 form (a lone surrogate).
    """
    out = bytearray()
    shifted: list[str] = []

    def flush() -> None:
        if not shifted:
            return
        try:
            utf16 = "".join(shifted).encode("utf-16-be")
        except UnicodeEncodeError as exc:
            raise ValueError("Mailbox name contains a lone surrogate") from exc
        out.extend(b"&" + _b64encode(utf16) + b"-")
        shifted.clear()

    for char in name:
        code = ord(char)
        if _is_direct(code):
            flush()
            out.extend(b"&-" if code == _AMP else bytes((code,)))
        else:
            shifted.append(char)
    flush()
    return bytes(out)


def _decode_shifted(chunk: bytes) -> str:
    """Decode the base64 between ``&`` and ``-`` (never empty here)."""
    if any(c not in _B64_CHARS for c in chunk):
        raise ValueError("Invalid character in modified UTF-7 mailbox name")
    if len(chunk) % 4 == 1:
        # Six bits cannot complete an octet: the run was truncated.
        raise ValueError("Truncated modified UTF-7 sequence in mailbox name")
    std = chunk.replace(b",", b"/")
    try:
        utf16 = base64.b64decode(std + b"=" * (-len(std) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - excluded by the checks above
        raise ValueError("Invalid modified UTF-7 sequence in mailbox name") from exc
    if _b64encode(utf16) != chunk:
        # Non-zero padding bits: a second spelling of the same octets.
        raise ValueError("Non-canonical modified UTF-7 sequence in mailbox name")
    if len(utf16) % 2:
        raise ValueError("Modified UTF-7 sequence in mailbox name is not whole UTF-16")
    try:
        text = utf16.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise ValueError("Invalid UTF-16 (broken surrogate pair) in mailbox name") from exc
    if any(_is_direct(ord(c)) for c in text):
        raise ValueError("Printable ASCII must not be encoded in a modified UTF-7 mailbox name")
    return text


def decode_mailbox(data: bytes) -> str:
    """Decode a modified UTF-7 mailbox name, raising ValueError if it is not valid."""
    out: list[str] = []
    i = 0
    size = len(data)
    while i < size:
        code = data[i]
        if not _is_direct(code):
            raise ValueError(f"Invalid byte 0x{code:02x} in modified UTF-7 mailbox name")
        if code != _AMP:
            # Copy the whole run of direct characters at once.
            amp = data.find(b"&", i)
            end = size if amp < 0 else amp
            run = data[i:end]
            bad = next((b for b in run if not _is_direct(b)), None)
            if bad is not None:
                raise ValueError(f"Invalid byte 0x{bad:02x} in modified UTF-7 mailbox name")
            out.append(run.decode("ascii"))
            i = end
            continue
        dash = data.find(b"-", i + 1)
        if dash < 0:
            raise ValueError("Unterminated '&' sequence in modified UTF-7 mailbox name")
        chunk = data[i + 1 : dash]
        out.append(_decode_shifted(chunk) if chunk else "&")
        i = dash + 1
    return "".join(out)


def _has_control(name: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)


def decode_mailbox_name(raw: bytes, *, normalize_inbox: bool = True) -> str:
    """Turn a mailbox name as received from a client into a str.

    Pure US-ASCII is modified UTF-7. Anything with 8-bit octets is taken as UTF-8
    (RFC 6855 UTF8=ACCEPT clients) provided it is valid and has no ``&``, since a
    name mixing both encodings cannot be read unambiguously. Control characters are
    refused either way. ``INBOX`` in any ASCII case becomes ``"INBOX"``, also as the
    first level of a hierarchy (``inbox/sub`` is ``INBOX/sub``), so LIST patterns, which
    match INBOX case-insensitively, find what CREATE made.
    """
    if raw.isascii():
        name = decode_mailbox(raw)
    else:
        if b"&" in raw:
            raise ValueError("A UTF-8 mailbox name must not contain '&'")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("Mailbox name is neither modified UTF-7 nor UTF-8") from exc
    if _has_control(name):
        raise ValueError("Mailbox name contains a control character")
    head = name[:5]
    if normalize_inbox and head.isascii() and head.upper() == "INBOX" and name[5:6] in ("", "/"):
        return "INBOX" + name[5:]
    return name
