"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3) and the wire-name policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.imap.utf7 import decode_mailbox, decode_mailbox_name, encode_mailbox

KNOWN = [
    ("", b""),
    ("INBOX", b"INBOX"),
    ("&", b"&-"),
    ("A&B", b"A&-B"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("été", b"&AOk-t&AOk-"),
    # The example from RFC 3501 §5.1.3.
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("📧", b"&2D3c5w-"),  # a surrogate pair
    ("a\x00b", b"a&AAA-b"),  # control characters are encoded, not refused, here
]


@pytest.mark.parametrize(("text", "wire"), KNOWN)
def test_known_encodings(text: str, wire: bytes) -> None:
    assert encode_mailbox(text) == wire
    assert decode_mailbox(wire) == text


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"&", "Unterminated"),
        (b"abc&AOk", "Unterminated"),
        (b"&Jjo!-", "Invalid character"),
        (b"&AOk=-", "Invalid character"),
        (b"&A-", "Truncated"),
        (b"&AO-", "Non-canonical"),  # 12 bits: 8 used, 4 non-zero padding bits
        (b"&AOl-", "Non-canonical"),  # 18 bits with stray set bits
        (b"&AA-", "whole UTF-16"),  # a single octet
        (b"&2D0-", "surrogate"),  # a lone high surrogate
        (b"&AEE-", "Printable ASCII"),  # "A" must be sent as itself
        (b"&ACY-", "Printable ASCII"),  # "&" must be "&-"
        (b"a\tb", "Invalid byte 0x09"),
        (b"caf\xc3\xa9", "Invalid byte 0xc3"),
        (b"\x7f", "Invalid byte 0x7f"),
    ],
)
def test_decode_rejects_invalid(wire: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mailbox(wire)


def test_encode_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode_mailbox("a\ud800b")


@pytest.mark.parametrize(
    ("wire", "name"),
    [
        (b"inbox", "INBOX"),
        (b"InBoX", "INBOX"),
        (b"INBOX/sub", "INBOX/sub"),
        (b"Inbox.old", "Inbox.old"),
        ("Entwürfe".encode(), "Entwürfe"),  # raw UTF-8 (UTF8=ACCEPT)
        (b"Entw&APw-rfe", "Entwürfe"),
        ("\u0131nbox".encode(), "\u0131nbox"),  # dotless i: upper()s to INBOX, is not
    ],
)
def test_decode_mailbox_name(wire: bytes, name: str) -> None:
    assert decode_mailbox_name(wire) == name


def test_decode_mailbox_name_without_inbox_normalisation() -> None:
    assert decode_mailbox_name(b"inbox", normalize_inbox=False) == "inbox"


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("Tom & Jerry ü".encode(), "must not contain '&'"),
        (b"caf\xe9", "neither modified UTF-7 nor UTF-8"),
        (b"a&AAA-b", "control character"),
        ("a\u0085b".encode(), "control character"),
        (b"&AOk", "Unterminated"),
    ],
)
def test_decode_mailbox_name_rejects(wire: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mailbox_name(wire)


@given(st.text())
def test_round_trip(text: str) -> None:
    wire = encode_mailbox(text)
    assert all(0x20 <= b <= 0x7E for b in wire)
    assert decode_mailbox(wire) == text


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc"))))
def test_round_trip_as_wire_name(text: str) -> None:
    expected = "INBOX" if text.isascii() and text.upper() == "INBOX" else text
    assert decode_mailbox_name(encode_mailbox(text)) == expected


@given(st.binary(max_size=40))
def test_decode_arbitrary_bytes_only_raises_value_error(data: bytes) -> None:
    try:
        text = decode_mailbox(data)
    except ValueError:
        return
    # Whatever is accepted decodes to a name that encodes back to a decodable form.
    assert decode_mailbox(encode_mailbox(text)) == text


@given(st.text(alphabet="&-ABCDEFGHIabcz0189+,/=", max_size=24))
def test_decode_base64ish_noise(data: str) -> None:
    try:
        text = decode_mailbox(data.encode())
    except ValueError:
        return
    assert decode_mailbox(encode_mailbox(text)) == text
