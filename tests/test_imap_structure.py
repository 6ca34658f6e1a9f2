"""Tests for ENVELOPE / BODY / BODYSTRUCTURE formatting (RFC 3501 §7.4.2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.imap.structure import format_address_list, format_bodystructure, format_envelope
from mailstead.mime import Address, BodyPart, Envelope, normalise_crlf, parse_message


def crlf(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\n", b"\r\n")


def leaf(type_: str, subtype: str, params: tuple[tuple[str, str], ...], **kw: object) -> BodyPart:
    fields: dict[str, object] = {
        "id": None,
        "description": None,
        "encoding": "7BIT",
        "size": 0,
        "lines": None,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": 0,
        "header_end": 0,
        "body_start": 0,
        "body_end": 0,
        "parts": (),
        "envelope": None,
    }
    fields.update(kw)
    return BodyPart(type_, subtype, params, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- RFC 3501 examples

# The sample message behind RFC 3501's FETCH examples, with a body sized to match them:
# 91 lines of 31 octets plus one of 23, each with CRLF, is 3028 octets in 92 lines.
RFC_MESSAGE = crlf(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev1 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n" + ("x" * 31 + "\n") * 91 + "y" * 23 + "\n"
)


def test_rfc3501_envelope_example() -> None:
    env = parse_message(RFC_MESSAGE).envelope
    assert format_envelope(env) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_rfc3501_body_example() -> None:
    root = parse_message(RFC_MESSAGE).root
    assert format_bodystructure(root, extensible=False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )
    assert format_bodystructure(root, extensible=True) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_rfc3501_multipart_example() -> None:
    # The two-part example of RFC 3501 §7.4.2, rebuilt from its field values.
    first = leaf("text", "plain", (("charset", "US-ASCII"),), size=1152, lines=23)
    second = leaf(
        "text",
        "plain",
        (("charset", "US-ASCII"), ("name", "cc.diff")),
        id=b"<960723163407.20117h@cac.washington.edu>",
        description=b"Compiled diff",
        encoding="BASE64",
        size=4554,
        lines=73,
    )
    mixed = leaf("multipart", "mixed", (), parts=(first, second))
    assert format_bodystructure(mixed, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiled diff" "BASE64" 4554 73) "MIXED")'
    )
    assert format_bodystructure(mixed, extensible=True) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiled diff" "BASE64" 4554 73 '
        b'NIL NIL NIL NIL) "MIXED" NIL NIL NIL NIL)'
    )


# --------------------------------------------------------------------------- parsed messages

ALTERNATIVE = crlf(
    "From: a@example.com\n"
    "Subject: alt\n"
    'Content-Type: multipart/alternative; boundary="b1"\n'
    "\n"
    "--b1\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hi there\n"
    "--b1\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>Hi=20there</p>\n"
    "--b1--\n"
)


def test_multipart_alternative() -> None:
    root = parse_message(ALTERNATIVE).root
    assert format_bodystructure(root, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 8 1)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 17 1) "ALTERNATIVE")'
    )
    assert format_bodystructure(root, extensible=True) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 8 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 17 1 NIL NIL NIL NIL)'
        b' "ALTERNATIVE" ("BOUNDARY" "b1") NIL NIL NIL)'
    )


FORWARD = crlf(
    "From: b@example.org\n"
    "Subject: fwd\n"
    "Content-Type: multipart/mixed; boundary=m\n"
    "\n"
    "--m\n"
    "\n"
    "Note\n"
    "--m\n"
    "Content-Type: message/rfc822\n"
    "Content-Description: original\n"
    "\n"
    'From: "C D" <c@example.net>\n'  # 29 octets with CRLF
    "To: undisclosed-recipients:;\n"  # 30
    "Subject: orig\n"  # 15
    "Message-ID: <o@example.net>\n"  # 29
    "\n"  # 2
    "Body\n"  # 4, the CRLF goes with the delimiter: 109 octets in 6 lines
    "--m--\n"
)

INNER_ENVELOPE = (
    b'(NIL "orig" (("C D" NIL "c" "example.net")) (("C D" NIL "c" "example.net")) '
    b'(("C D" NIL "c" "example.net")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
    b' NIL NIL NIL "<o@example.net>")'
)


def test_message_rfc822_body() -> None:
    root = parse_message(FORWARD).root
    assert format_bodystructure(root, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1)'
        b'("MESSAGE" "RFC822" NIL NIL "original" "7BIT" 109 '
        + INNER_ENVELOPE
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1) 6) "MIXED")'
    )


def test_message_rfc822_bodystructure() -> None:
    root = parse_message(FORWARD).root
    assert format_bodystructure(root, extensible=True) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL "original" "7BIT" 109 '
        + INNER_ENVELOPE
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1 NIL NIL NIL NIL) 6'
        b' NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "m") NIL NIL NIL)'
    )


ATTACHMENT = crlf(
    'Content-Type: application/pdf; name="r.pdf"\n'
    'Content-Disposition: attachment; filename="r.pdf"; size=5\n'
    "Content-Transfer-Encoding: base64\n"
    "Content-Language: en\n"
    "Content-Location: r.pdf\n"
    "Content-MD5: abc=\n"
    "\n"
    "JVBERg==\n"
)


def test_single_part_extension_data() -> None:
    root = parse_message(ATTACHMENT).root
    assert format_bodystructure(root, extensible=False) == (
        b'("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 10)'
    )
    assert format_bodystructure(root, extensible=True) == (
        b'("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 10 "abc=" '
        b'("ATTACHMENT" ("FILENAME" "r.pdf" "SIZE" "5")) ("en") "r.pdf")'
    )


def test_multipart_extension_data_and_nil_params() -> None:
    raw = crlf(
        "Content-Type: multipart/related; boundary=r; type=text/html\n"
        "Content-Disposition: inline\n"
        "Content-Language: de, fr\n"
        "\n"
        "--r\n"
        "Content-Type: image/gif\n"
        "\n"
        "GIF\n"
        "--r--\n"
    )
    root = parse_message(raw).root
    assert format_bodystructure(root, extensible=True) == (
        b'(("IMAGE" "GIF" NIL NIL NIL "7BIT" 3 NIL NIL NIL NIL) "RELATED" '
        b'("BOUNDARY" "r" "TYPE" "text/html") ("INLINE" NIL) ("de" "fr") NIL)'
    )


def test_nested_multipart() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=o\n\n"
        "--o\nContent-Type: multipart/alternative; boundary=i\n\n"
        "--i\n\na\n--i\nContent-Type: text/html\n\n<b>a</b>\n--i--\n"
        "--o\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\nUEs=\n"
        "--o--\n"
    )
    root = parse_message(raw).root
    assert format_bodystructure(root, extensible=False) == (
        b'((("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 1 1)'
        b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 8 1) "ALTERNATIVE")'
        b'("APPLICATION" "ZIP" NIL NIL NIL "BASE64" 4) "MIXED")'
    )


def test_opaque_encoded_message_is_basic() -> None:
    raw = crlf(
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogaGkNCg==\n"
    )
    root = parse_message(raw).root
    assert format_bodystructure(root, extensible=False) == (
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 22)'
    )


# --------------------------------------------------------------------------- strings and NIL


def test_envelope_all_nil() -> None:
    env = Envelope(None, None, (), (), (), (), (), (), None, None)
    assert format_envelope(env) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_envelope_quoting_and_literals() -> None:
    raw = 'Subject: say "hi" \\ bye\nFrom: Jürgen <j@example.de>\n\n'.encode()
    env = parse_message(normalise_crlf(raw)).envelope
    out = format_envelope(env)
    assert out.startswith(
        b'(NIL "say \\"hi\\" \\\\ bye" (({7}\r\nJ\xc3\xbcrgen NIL "j" "example.de"))'
    )


def test_eight_bit_parameter_is_a_literal() -> None:
    raw = b'Content-Type: application/octet-stream; name="\xe9.bin"\r\n\r\nx'
    root = parse_message(raw).root
    assert format_bodystructure(root, extensible=False) == (
        b'("APPLICATION" "OCTET-STREAM" ("NAME" {5}\r\n\xe9.bin) NIL NIL "7BIT" 1)'
    )


def test_address_list_groups() -> None:
    addrs = (
        Address(None, None, b"Team", None),
        Address(b"A", None, b"a", b"x.example"),
        Address(None, None, None, None),
    )
    assert format_address_list(addrs) == (
        b'((NIL NIL "Team" NIL)("A" NIL "a" "x.example")(NIL NIL NIL NIL))'
    )
    assert format_address_list(()) == b"NIL"


# --------------------------------------------------------------------------- properties

_fragments = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: text/plain; a="\xff"\r\n',
        b"From: G: a@b;\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"\r\n",
        b"x\r\n",
    ]
)


def _balanced(data: bytes) -> bool:
    """Parentheses outside quoted strings and literals balance (a cheap syntax check)."""
    depth, i, n = 0, 0, len(data)
    while i < n:
        c = data[i : i + 1]
        if c == b'"':
            i += 1
            while data[i : i + 1] != b'"':
                i += 2 if data[i : i + 1] == b"\\" else 1
        elif c == b"{":
            close = data.index(b"}\r\n", i)
            i = close + 3 + int(data[i + 1 : close])
            continue
        elif c == b"(":
            depth += 1
        elif c == b")":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


@settings(max_examples=150)
@given(st.lists(st.one_of(_fragments, st.binary(max_size=6)), max_size=30).map(b"".join))
def test_formatting_is_well_formed(raw: bytes) -> None:
    p = parse_message(normalise_crlf(raw))
    for extensible in (False, True):
        out = format_bodystructure(p.root, extensible=extensible)
        assert out.startswith(b"(") and _balanced(out)
    assert _balanced(format_envelope(p.envelope))
