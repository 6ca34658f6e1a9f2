"""Tests for mailstead.mime: structure offsets, envelopes, header fields, search text."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.mime import (
    MAX_DEPTH,
    Address,
    BodyPart,
    ParsedMessage,
    header_fields,
    header_units,
    header_values,
    normalise_crlf,
    parse_message,
    part_by_number,
    search_text,
)
from mailstead.mime.parse import _parse_strict


def crlf(text: str) -> bytes:
    """Test messages are written with \\n for readability and stored as CRLF."""
    return text.encode("utf-8").replace(b"\n", b"\r\n")


def body_of(raw: bytes, part: BodyPart) -> bytes:
    return raw[part.body_start : part.body_end]


def header_of(raw: bytes, part: BodyPart) -> bytes:
    return raw[part.header_start : part.header_end]


# --------------------------------------------------------------------------- normalise_crlf


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),  # bare CR, then a proper CRLF
        (b"a\n\rb", b"a\r\n\r\nb"),  # LF then CR: two line ends, not one
        (b"", b""),
        (b"\n", b"\r\n"),
    ],
)
def test_normalise_crlf(raw: bytes, expected: bytes) -> None:
    assert normalise_crlf(raw) == expected


@given(st.binary(max_size=300))
def test_normalise_crlf_properties(raw: bytes) -> None:
    out = normalise_crlf(raw)
    assert normalise_crlf(out) == out
    # every CR is followed by LF and every LF preceded by CR
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    assert out.replace(b"\r\n", b"") == raw.replace(b"\r", b"").replace(b"\n", b"")


# --------------------------------------------------------------------------- simple messages

SIMPLE_HEADER = crlf(
    "From: Alice Example <alice@example.com>\n"
    "To: bob@example.org\n"
    "Subject: Lunch\n"
    "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
    "Message-ID: <1@example.com>\n"
    "\n"
)
SIMPLE_BODY = crlf("Hello Bob,\nlunch at noon?\n")
SIMPLE = SIMPLE_HEADER + SIMPLE_BODY


def test_simple_text_structure() -> None:
    p = parse_message(SIMPLE)
    root = p.root
    assert (root.type, root.subtype) == ("text", "plain")
    assert root.params == (("charset", "us-ascii"),)  # RFC 2045 default
    assert root.encoding == "7BIT"
    # header: 41 + 21 + 16 + 38 + 29 octets of fields, plus the 2-octet blank line
    assert len(SIMPLE_HEADER) == 147
    assert (root.header_start, root.header_end) == (0, 147)
    assert (root.body_start, root.body_end) == (147, 147 + 28)
    assert root.body_end == len(SIMPLE)
    assert root.size == 28
    assert root.lines == 2
    assert root.parts == ()
    assert root.envelope is None
    assert body_of(SIMPLE, root) == SIMPLE_BODY


def test_simple_envelope() -> None:
    env = parse_message(SIMPLE).envelope
    alice = Address(b"Alice Example", None, b"alice", b"example.com")
    assert env.date == b"Mon, 1 Jan 2024 10:00:00 +0000"
    assert env.subject == b"Lunch"
    assert env.from_ == (alice,)
    # RFC 3501 §7.4.2: absent Sender / Reply-To default to From
    assert env.sender == (alice,)
    assert env.reply_to == (alice,)
    assert env.to == (Address(None, None, b"bob", b"example.org"),)
    assert env.cc == env.bcc == ()
    assert env.in_reply_to is None
    assert env.message_id == b"<1@example.com>"


def test_last_line_without_crlf_counts_as_a_line() -> None:
    raw = crlf("Subject: x\n\none\ntwo")
    root = parse_message(raw).root
    assert body_of(raw, root) == b"one\r\ntwo"
    assert root.lines == 2
    assert root.size == 8


def test_headers_only_message() -> None:
    raw = crlf("From: a@b.example\nSubject: no body\n")
    root = parse_message(raw).root
    assert root.header_start == 0
    assert root.header_end == root.body_start == root.body_end == len(raw)
    assert root.size == 0
    assert root.lines == 0
    assert parse_message(raw).envelope.subject == b"no body"


def test_headers_only_unterminated_last_line() -> None:
    raw = b"Subject: cut off"
    p = parse_message(raw)
    assert p.root.header_end == p.root.body_start == p.root.body_end == 16
    assert p.envelope.subject == b"cut off"
    # HEADER.FIELDS still yields complete lines plus the blank line
    assert header_fields(raw, [b"subject"], exclude=False) == b"Subject: cut off\r\n\r\n"


def test_message_without_header() -> None:
    # A message that opens with the blank line has an empty header block of two octets.
    raw = crlf("\nJust a body.\n")
    p = parse_message(raw)
    assert (p.root.header_start, p.root.header_end) == (0, 2)
    assert body_of(raw, p.root) == b"Just a body.\r\n"
    assert p.envelope.from_ == () and p.envelope.subject is None


def test_empty_message() -> None:
    p = parse_message(b"")
    assert (p.root.header_start, p.root.header_end, p.root.body_start, p.root.body_end) == (
        0,
        0,
        0,
        0,
    )
    assert (p.root.type, p.root.subtype) == ("text", "plain")


def test_missing_headers_give_nil() -> None:
    raw = crlf("X-Mailer: none\n\nbody\n")
    env = parse_message(raw).envelope
    assert env.date is env.subject is env.in_reply_to is env.message_id is None
    assert env.from_ == env.sender == env.reply_to == env.to == env.cc == env.bcc == ()


def test_empty_subject_is_empty_string_not_nil() -> None:
    env = parse_message(crlf("Subject:\nFrom: a@b.example\n\n")).envelope
    assert env.subject == b""


def test_explicit_sender_and_reply_to_and_in_reply_to() -> None:
    raw = crlf(
        "From: Alice <alice@example.com>\n"
        "Sender: list-bounces@lists.example.com\n"
        "Reply-To: list@lists.example.com\n"
        "In-Reply-To: <0@example.com>\n"
        "Bcc: hidden@example.com\n"
        "\n"
    )
    env = parse_message(raw).envelope
    assert env.sender == (Address(None, None, b"list-bounces", b"lists.example.com"),)
    assert env.reply_to == (Address(None, None, b"list", b"lists.example.com"),)
    assert env.bcc == (Address(None, None, b"hidden", b"example.com"),)
    assert env.in_reply_to == b"<0@example.com>"


def test_empty_reply_to_defaults_to_from() -> None:
    env = parse_message(crlf("From: a@b.example\nReply-To:\n\n")).envelope
    assert env.reply_to == (Address(None, None, b"a", b"b.example"),)


def test_first_occurrence_wins() -> None:
    env = parse_message(crlf("Subject: one\nSubject: two\n\n")).envelope
    assert env.subject == b"one"


def test_folded_and_encoded_subject_is_unfolded_but_not_decoded() -> None:
    raw = crlf("Subject: =?utf-8?q?Caf=C3=A9?=\n\t=?utf-8?q?_au_lait?=\nFrom: x@y.example\n\n")
    env = parse_message(raw).envelope
    # CRLF TAB -> TAB (unfolding keeps the whitespace), encoded words untouched
    assert env.subject == b"=?utf-8?q?Caf=C3=A9?=\t=?utf-8?q?_au_lait?="


def test_eight_bit_header_kept_raw() -> None:
    raw = "Subject: Grüße\nFrom: Jürgen <j@example.de>\n\n".encode().replace(b"\n", b"\r\n")
    env = parse_message(raw).envelope
    assert env.subject == "Grüße".encode()
    assert env.from_ == (Address("Jürgen".encode(), None, b"j", b"example.de"),)
    latin1 = b"Subject: caf\xe9\r\n\r\n"
    assert parse_message(latin1).envelope.subject == b"caf\xe9"


def test_bare_lf_input_normalised() -> None:
    raw = b"Subject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nA\n--z--\n"
    norm = normalise_crlf(raw)
    p = parse_message(norm)
    (child,) = p.root.parts
    assert p.root.header_end == len(
        b"Subject: lf\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n"
    )
    assert header_of(norm, child) == b"\r\n"
    assert body_of(norm, child) == b"A"


# --------------------------------------------------------------------------- addresses


def addrs(field: str) -> tuple[Address, ...]:
    return parse_message(crlf(f"To: {field}\n\n")).envelope.to


def test_address_display_names_raw_and_unquoted() -> None:
    assert addrs('"Doe, John" <john@example.com>') == (
        Address(b"Doe, John", None, b"john", b"example.com"),
    )
    assert addrs('"say \\"hi\\"" <h@example.com>') == (
        Address(b'say "hi"', None, b"h", b"example.com"),
    )
    assert addrs("=?iso-8859-1?q?J=F6rg?= <joerg@example.de>") == (
        Address(b"=?iso-8859-1?q?J=F6rg?=", None, b"joerg", b"example.de"),
    )
    assert addrs("John Q. Public <jqp@example.com>") == (
        Address(b"John Q. Public", None, b"jqp", b"example.com"),
    )


def test_address_list_several_and_empty_elements() -> None:
    assert addrs("a@x.example, , B <b@y.example>,") == (
        Address(None, None, b"a", b"x.example"),
        Address(b"B", None, b"b", b"y.example"),
    )


def test_address_comment_used_as_name() -> None:
    assert addrs("jd@example.com (John Doe)") == (
        Address(b"John Doe", None, b"jd", b"example.com"),
    )
    # a comment inside the angle brackets or after a display name is ignored
    assert addrs("Jane <jane@example.com> (work)") == (
        Address(b"Jane", None, b"jane", b"example.com"),
    )


def test_address_source_route_is_adl() -> None:
    assert addrs("Old <@relay1.example,@relay2.example:user@host.example>") == (
        Address(b"Old", b"@relay1.example,@relay2.example", b"user", b"host.example"),
    )


def test_address_missing_parts() -> None:
    assert addrs("root") == (Address(None, None, b"root", b"MISSING_DOMAIN"),)
    assert addrs("<>") == (Address(None, None, b"", b""),)
    assert addrs('"quoted local"@example.com') == (
        Address(None, None, b'"quoted local"', b"example.com"),
    )


def test_group_syntax() -> None:
    group_end = Address(None, None, None, None)
    assert addrs("undisclosed-recipients:;") == (
        Address(None, None, b"undisclosed-recipients", None),
        group_end,
    )
    assert addrs('Team: a@x.example, "Bee" <b@x.example>; c@y.example') == (
        Address(None, None, b"Team", None),
        Address(None, None, b"a", b"x.example"),
        Address(b"Bee", None, b"b", b"x.example"),
        group_end,
        Address(None, None, b"c", b"y.example"),
    )
    # an unterminated group is closed so the markers stay balanced
    assert addrs("Open: a@x.example") == (
        Address(None, None, b"Open", None),
        Address(None, None, b"a", b"x.example"),
        group_end,
    )


# --------------------------------------------------------------------------- multipart

ALT_HEADER = crlf(
    "From: a@example.com\n"
    "Subject: alt\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="=_b1"\n'
    "\n"
)
ALT_BODY = crlf(
    "This is a MIME message.\n"  # preamble
    "--=_b1\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Plain text\n"
    "--=_b1 \n"  # transport padding after the boundary is allowed
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>HTML=20text</p>\n"
    "\n"
    "--=_b1--\n"
    "epilogue\n"
)
ALT = ALT_HEADER + ALT_BODY


def test_multipart_alternative_offsets() -> None:
    p = parse_message(ALT)
    root = p.root
    assert (root.type, root.subtype) == ("multipart", "alternative")
    assert root.params == (("boundary", "=_b1"),)
    assert root.header_end == len(ALT_HEADER)
    assert body_of(ALT, root) == ALT_BODY
    assert root.lines is None  # only text and message parts have a line count
    plain, html = root.parts
    # preamble is 25 octets, the first delimiter line 8: the first part starts at 33
    assert plain.header_start == len(ALT_HEADER) + 25 + 8
    assert header_of(ALT, plain) == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    # the CRLF before "--=_b1" belongs to the delimiter, so the body is just "Plain text"
    assert body_of(ALT, plain) == b"Plain text"
    assert (plain.size, plain.lines) == (10, 1)
    assert plain.params == (("charset", "utf-8"),)
    assert html.header_start == plain.body_end + 2 + 9  # CRLF, "--=_b1 " CRLF
    assert body_of(ALT, html) == b"<p>HTML=20text</p>\r\n"
    assert html.encoding == "QUOTED-PRINTABLE"
    assert (html.size, html.lines) == (20, 1)
    assert ALT[html.body_end :] == b"\r\n--=_b1--\r\nepilogue\r\n"


PNG = bytes(range(256)) * 3
PNG_B64 = base64.encodebytes(PNG).replace(b"\n", b"\r\n")
MIXED = (
    crlf(
        "From: Sender <s@example.com>\n"
        "To: r@example.com\n"
        "Subject: report\n"
        "Content-Type: multipart/mixed;\n"
        "\tboundary=outer\n"
        "\n"
        "--outer\n"
        "Content-Type: multipart/alternative; boundary=inner\n"
        "\n"
        "--inner\n"
        "Content-Type: text/plain\n"
        "\n"
        "see attachment\n"
        "--inner\n"
        "Content-Type: text/html\n"
        "\n"
        "<b>see attachment</b>\n"
        "--inner--\n"
        "\n"
        "--outer\n"
        'Content-Type: image/png; name="chart.png"\n'
        'Content-Disposition: attachment; filename="chart.png"\n'
        "Content-Transfer-Encoding: base64\n"
        "Content-ID: <chart@example.com>\n"
        "Content-Description: Sales chart\n"
        "\n"
    )
    + PNG_B64
    + crlf("--outer--\n")
)


def test_multipart_mixed_nested_with_attachment() -> None:
    p = parse_message(MIXED)
    root = p.root
    assert (root.type, root.subtype) == ("multipart", "mixed")
    assert root.params == (("boundary", "outer"),)  # folded header parameter
    alt, png = root.parts
    assert (alt.type, alt.subtype) == ("multipart", "alternative")
    plain, html = alt.parts
    assert body_of(MIXED, plain) == b"see attachment"
    assert plain.params == (("charset", "us-ascii"),)  # RFC 2045 default made explicit
    assert body_of(MIXED, html) == b"<b>see attachment</b>"
    # the inner multipart ends before the CRLF preceding "--outer"; its epilogue is "\r\n"
    assert MIXED[alt.body_end - 11 : alt.body_end] == b"--inner--\r\n"
    assert MIXED[alt.body_end : alt.body_end + 9] == b"\r\n--outer"
    assert (png.type, png.subtype) == ("image", "png")
    assert png.params == (("name", "chart.png"),)
    assert png.disposition == ("attachment", (("filename", "chart.png"),))
    assert png.encoding == "BASE64"
    assert png.id == b"<chart@example.com>"
    assert png.description == b"Sales chart"
    assert png.lines is None
    # the base64 text ends in CRLF and that CRLF precedes "--outer--": it is not body
    assert body_of(MIXED, png) == PNG_B64[:-2]
    assert png.size == len(PNG_B64) - 2
    assert base64.b64decode(body_of(MIXED, png)) == PNG


def test_part_text_without_content_type_defaults() -> None:
    p = parse_message(MIXED)
    plain = p.root.parts[0].parts[0]
    assert (plain.type, plain.subtype) == ("text", "plain")


def test_part_numbers_nested() -> None:
    root = parse_message(MIXED).root
    assert part_by_number(root, []) is root
    assert part_by_number(root, [1]) is root.parts[0]
    assert part_by_number(root, [1, 1]) is root.parts[0].parts[0]
    assert part_by_number(root, [1, 2]) is root.parts[0].parts[1]
    assert part_by_number(root, [2]) is root.parts[1]
    assert part_by_number(root, [3]) is None
    assert part_by_number(root, [0]) is None
    assert part_by_number(root, [1, 3]) is None
    assert part_by_number(root, [2, 1]) is None  # a leaf has no sub-parts
    assert part_by_number(root, [1, 1, 1]) is None


def test_part_numbers_single_part() -> None:
    root = parse_message(SIMPLE).root
    assert part_by_number(root, [1]) is root  # part 1 of a non-multipart is its body
    assert part_by_number(root, [2]) is None
    assert part_by_number(root, [1, 1]) is None


INNER = crlf(
    "From: Carol <carol@example.net>\n"
    "To: Dan <dan@example.net>\n"
    "Subject: original\n"
    "Content-Type: multipart/mixed; boundary=in\n"
    "\n"
    "--in\n"
    "\n"
    "first\n"
    "--in\n"
    "Content-Type: text/plain\n"
    "\n"
    "second\n"
    "--in--\n"
)
FORWARD = (
    crlf(
        "From: Bob <bob@example.org>\n"
        "Subject: Fwd: original\n"
        "Content-Type: multipart/mixed; boundary=fwd\n"
        "\n"
        "--fwd\n"
        "\n"
        "See below.\n"
        "--fwd\n"
        "Content-Type: message/rfc822\n"
        "\n"
    )
    + INNER
    + crlf("--fwd--\n")
)


def test_message_rfc822_part() -> None:
    root = parse_message(FORWARD).root
    note, msg = root.parts
    assert body_of(FORWARD, note) == b"See below."
    assert header_of(FORWARD, note) == b"\r\n"  # no MIME header: just the blank line
    assert (msg.type, msg.subtype) == ("message", "rfc822")
    assert header_of(FORWARD, msg) == b"Content-Type: message/rfc822\r\n\r\n"
    assert body_of(FORWARD, msg) == INNER[:-2]  # final CRLF belongs to "--fwd--"
    assert msg.size == len(INNER) - 2
    assert msg.lines == 13
    assert msg.envelope is not None
    assert msg.envelope.subject == b"original"
    assert msg.envelope.from_ == (Address(b"Carol", None, b"carol", b"example.net"),)
    (inner,) = msg.parts
    assert inner.header_start == msg.body_start
    assert header_of(FORWARD, inner) == INNER[: INNER.index(b"\r\n\r\n") + 4]
    assert inner.body_end == msg.body_end
    assert (inner.type, inner.subtype) == ("multipart", "mixed")
    first, second = inner.parts
    assert body_of(FORWARD, first) == b"first"
    assert body_of(FORWARD, second) == b"second"


def test_part_numbers_through_message_rfc822() -> None:
    root = parse_message(FORWARD).root
    msg = root.parts[1]
    assert part_by_number(root, [2]) is msg
    assert part_by_number(root, [2, 1]) is msg.parts[0].parts[0]
    assert part_by_number(root, [2, 2]) is msg.parts[0].parts[1]
    assert part_by_number(root, [2, 3]) is None


def test_part_numbers_message_rfc822_with_single_body() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: message/rfc822\n\nSubject: inner\n\ninner text\n--b--\n"
    )
    root = parse_message(raw).root
    msg = root.parts[0]
    # part 1.1 is the encapsulated message's (non-multipart) body
    assert part_by_number(root, [1, 1]) is msg.parts[0]
    assert body_of(raw, msg.parts[0]) == b"inner text"
    assert part_by_number(root, [1, 2]) is None


def test_multipart_digest_default_type() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nSubject: one\n\nfirst\n"
        "--d\nContent-Type: text/plain\n\nnot a message\n"
        "--d--\n"
    )
    first, second = parse_message(raw).root.parts
    assert (first.type, first.subtype) == ("message", "rfc822")
    assert first.params == ()
    assert first.envelope is not None and first.envelope.subject == b"one"
    assert (second.type, second.subtype) == ("text", "plain")


def test_unterminated_multipart_last_part_runs_to_end() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n")
    one, two = parse_message(raw).root.parts
    assert body_of(raw, one) == b"one"
    assert body_of(raw, two) == b"two\r\n"
    assert two.body_end == len(raw)


def test_boundary_prefix_is_not_a_delimiter() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bX\nstill one\n--b--\n")
    (only,) = parse_message(raw).root.parts
    assert body_of(raw, only) == b"--bX\r\nstill one"


def test_empty_parts() -> None:
    # "--b" CRLF "--b": the first CRLF ends the delimiter line and is also the CRLF that
    # opens the next one, so part 1 has no octets at all; part 2 is one CRLF, i.e. an
    # empty header block and an empty body.
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\n\n--b--\n")
    first, second = parse_message(raw).root.parts
    assert first.header_start == first.header_end == first.body_start == first.body_end
    assert first.size == 0
    assert header_of(raw, second) == b"\r\n"
    assert body_of(raw, second) == b""
    assert second.size == 0


def test_missing_boundary_parameter_is_text() -> None:
    raw = crlf("Content-Type: multipart/mixed\n\n--x\n\nhello\n--x--\n")
    root = parse_message(raw).root
    assert (root.type, root.subtype) == ("text", "plain")
    assert root.parts == ()
    assert body_of(raw, root) == crlf("--x\n\nhello\n--x--\n")


def test_boundary_never_found_is_text() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=nothere\n\nplain words\n")
    root = parse_message(raw).root
    assert (root.type, root.subtype, root.lines) == ("text", "plain", 1)


def test_deep_nesting_is_capped() -> None:
    depth = MAX_DEPTH + 8
    raw = b""
    for i in range(depth):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    raw += b"\r\nleaf\r\n"
    p = _parse_strict(raw)
    part, levels = p.root, 0
    while part.parts:
        (part,) = part.parts
        levels += 1
    assert levels == MAX_DEPTH
    assert (part.type, part.subtype) == ("application", "octet-stream")
    assert raw[part.body_start : part.body_end].endswith(b"leaf\r\n")


def test_deep_message_nesting_is_capped() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 5) + b"Subject: core\r\n\r\nx"
    part, levels = _parse_strict(raw).root, 0
    while part.parts:
        (part,) = part.parts
        levels += 1
    assert levels == MAX_DEPTH
    assert part.type == "application"


def test_encoded_message_rfc822_is_opaque() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        "U3ViamVjdDogaGkNCg0KaGk=\n--b--\n"
    )
    (part,) = parse_message(raw).root.parts
    assert (part.type, part.subtype, part.envelope, part.parts) == (
        "application",
        "octet-stream",
        None,
        (),
    )
    assert part.encoding == "BASE64"


def test_invalid_content_type_is_text_plain() -> None:
    root = parse_message(crlf("Content-Type: garbage\n\nx\n")).root
    assert (root.type, root.subtype, root.params) == ("text", "plain", (("charset", "us-ascii"),))


def test_mime_fields() -> None:
    raw = crlf(
        'Content-Type: Text/HTML; CHARSET="ISO-8859-1"; format=flowed (old comment)\n'
        "Content-Transfer-Encoding: 8bit (raw)\n"
        "Content-Language: en, de (German)\n"
        "Content-Location: http://example.com/page.html\n"
        "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
        'Content-Disposition: INLINE; filename*0="long"; filename*1="name.html"\n'
        "\n<p>x</p>\n"
    )
    root = parse_message(raw).root
    assert (root.type, root.subtype) == ("text", "html")
    assert root.params == (("charset", "ISO-8859-1"), ("format", "flowed"))
    assert root.param("Charset") == "ISO-8859-1"
    assert root.encoding == "8BIT"
    assert root.language == ("en", "de")
    assert root.location == b"http://example.com/page.html"
    assert root.md5 == b"Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert root.disposition == ("inline", (("filename", "longname.html"),))


def test_rfc2231_extended_parameters_left_encoded() -> None:
    raw = crlf(
        "Content-Type: application/pdf;\n name*0*=utf-8''%E2%82%AC; name*1*=uro.pdf; x=1\n\n"
    )
    assert parse_message(raw).root.params == (("name*", "utf-8''%E2%82%ACuro.pdf"), ("x", "1"))


def test_eight_bit_parameter_value_survives() -> None:
    raw = b'Content-Type: text/plain; name="\xe9t\xe9.txt"\r\n\r\n'
    ((_name, value),) = parse_message(raw).root.params
    assert value.encode("utf-8", "surrogateescape") == b"\xe9t\xe9.txt"


# --------------------------------------------------------------------------- header_fields

FIELDS_BLOCK = crlf(
    "Received: from a\n"
    "\tby b\n"
    "Subject: Hello\n"
    "  world\n"
    "from: x@example.com\n"
    "not a header line\n"
    "X-Empty:\n"
    "Received: from c\n"
    "\n"
)


def test_header_fields_include() -> None:
    assert header_fields(FIELDS_BLOCK, [b"SUBJECT", b"From"], exclude=False) == crlf(
        "Subject: Hello\n  world\nfrom: x@example.com\n\n"
    )
    assert header_fields(FIELDS_BLOCK, [b"received"], exclude=False) == crlf(
        "Received: from a\n\tby b\nReceived: from c\n\n"
    )


def test_header_fields_exclude() -> None:
    assert header_fields(FIELDS_BLOCK, [b"received", b"subject"], exclude=True) == crlf(
        "from: x@example.com\nnot a header line\nX-Empty:\n\n"
    )


def test_header_fields_no_match_is_blank_line() -> None:
    assert header_fields(FIELDS_BLOCK, [b"cc"], exclude=False) == b"\r\n"
    assert header_fields(b"", [b"cc"], exclude=True) == b"\r\n"


def test_header_fields_stops_at_blank_line() -> None:
    assert header_fields(SIMPLE, [b"subject"], exclude=False) == b"Subject: Lunch\r\n\r\n"
    assert header_fields(SIMPLE, [], exclude=True) == SIMPLE_HEADER


def test_header_units() -> None:
    assert header_units(FIELDS_BLOCK)[:2] == [
        (b"received", b"Received: from a\r\n\tby b\r\n"),
        (b"subject", b"Subject: Hello\r\n  world\r\n"),
    ]
    assert header_units(FIELDS_BLOCK)[3] == (None, b"not a header line\r\n")


# --------------------------------------------------------------------------- JSON


def test_json_round_trip() -> None:
    for raw in (SIMPLE, ALT, MIXED, FORWARD, b"Subject: \xff\xfe\r\n\r\n"):
        p = parse_message(raw)
        s = p.to_json()
        assert ParsedMessage.from_json(s) == p
        assert s.startswith("[1,[") and "\n" not in s  # compact separators


@pytest.mark.parametrize("junk", ["", "[]", "[2, [], []]", "{}", "[1, 2, 3]", "nonsense"])
def test_from_json_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        ParsedMessage.from_json(junk)


# --------------------------------------------------------------------------- search


def test_search_text_decodes_headers_and_bodies() -> None:
    html_qp = "<p>Pr=C3=BCfung</p>"
    latin_b64 = base64.b64encode("Grüße aus Köln".encode("latin-1")).decode()
    raw = crlf(
        "From: =?utf-8?b?SsO8cmdlbg==?= <j@example.de>\n"
        "Subject: =?iso-8859-1?q?R=E9union?= demain\n"
        "Content-Type: multipart/mixed; boundary=b\n"
        "\n--b\n"
        "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        f"{html_qp}\n"
        "--b\n"
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\n"
        f"{latin_b64}\n"
        "--b\n"
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        f"{base64.b64encode(b'SECRETBLOB').decode()}\n"
        "--b\n"
        "Content-Type: message/rfc822\n\nSubject: =?utf-8?q?inner_=E2=82=AC?=\n\ninside\n"
        "--b--\n"
    )
    headers, body = search_text(raw, parse_message(raw))
    assert "From: Jürgen <j@example.de>" in headers
    assert "Subject: Réunion demain" in headers
    assert "<p>Prüfung</p>" in body
    assert "Grüße aus Köln" in body
    assert "SECRETBLOB" not in body and "U0VDUkVU" not in body
    assert "Subject: inner €" in body
    assert "inside" in body


def test_search_text_survives_bad_encodings() -> None:
    raw = crlf(
        "Subject: =?x-unknown?q?abc?= =?utf-8?b?!!!?=\n"
        "Content-Type: text/plain; charset=no-such-charset\n"
        "Content-Transfer-Encoding: base64\n\n"
        "aGVsbG8gd29ybGQ\n"  # missing padding
    )
    headers, body = search_text(raw, parse_message(raw))
    assert "Subject:" in headers
    assert body == "hello world"


def test_search_text_undeclared_eight_bit() -> None:
    raw = b"Subject: caf\xc3\xa9\r\n\r\nna\xefve\r\n"
    headers, body = search_text(raw, parse_message(raw))
    assert headers == "Subject: café"
    assert body == "naïve\r\n"


def test_header_values() -> None:
    block = crlf(
        "To: a@example.com\nSubject: =?utf-8?q?=C3=A9t=C3=A9?=\n =?utf-8?q?_2024?=\n"
        "to: b@example.com\n\n"
    )
    assert header_values(block, "TO") == ["a@example.com", "b@example.com"]
    assert header_values(block, "subject") == ["été 2024"]
    assert header_values(block, "cc") == []


# --------------------------------------------------------------------------- properties

# Building blocks that make random messages hit the interesting code paths (boundaries,
# nesting, encapsulated messages, odd headers) far more often than random bytes would.
_FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/alternative; boundary="c"\r\n',
    b"Content-Type: multipart/digest; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=utf-8; name*0=a; name*1*=b\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b'Content-Disposition: attachment; filename="x"\r\n',
    b"From: A <a@b>, (c) d@e, G: h@i;\r\n",
    b'To: "x\\\r\n',
    b"Subject: =?utf-8?q?x?=\r\n",
    b" continued\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"--c\r\n",
    b"--c--\r\n",
    b"--b",
    b"\r\n",
    b"\r\n\r\n",
    b"text line\r\n",
    b"\x00\xff\r",
    b"(",
    b"<",
]
mime_soup = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=8)), max_size=40
).map(b"".join)
any_message = st.one_of(st.binary(max_size=400), mime_soup).map(normalise_crlf)


def _check_part(part: BodyPart, lo: int, hi: int) -> None:
    assert lo <= part.header_start <= part.header_end <= part.body_start <= part.body_end <= hi
    assert part.header_end == part.body_start
    assert part.size == part.body_end - part.body_start
    prev = part.body_start
    for child in part.parts:
        assert child.header_start >= prev  # children in order, not overlapping
        _check_part(child, part.body_start, part.body_end)
        prev = child.body_end
    if part.is_message:
        assert part.parts[0].header_start == part.body_start
    if part.type == "multipart":
        assert part.parts  # every multipart that is reported as one has parts


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_parse_never_raises_and_offsets_are_sane(raw: bytes) -> None:
    p = _parse_strict(raw)  # bypass parse_message's safety net: bugs must show here
    assert p.root.header_start == 0
    assert p.root.body_end == len(raw)
    _check_part(p.root, 0, len(raw))
    assert ParsedMessage.from_json(p.to_json()) == p
    search_text(raw, p)


@settings(max_examples=100)
@given(st.binary(max_size=300))
def test_parse_message_accepts_unnormalised_bytes(raw: bytes) -> None:
    p = parse_message(raw)
    _check_part(p.root, 0, len(raw))


@settings(max_examples=200)
@given(any_message, st.lists(st.sampled_from([b"subject", b"FROM", b"to", b"x"]), max_size=3))
def test_header_fields_partition(raw: bytes, names: list[bytes]) -> None:
    block = raw[: parse_message(raw).root.header_end]
    included = header_fields(block, names, exclude=False)
    excluded = header_fields(block, names, exclude=True)
    assert included.endswith(b"\r\n") and excluded.endswith(b"\r\n")
    units = [unit for _, unit in header_units(block)]
    inc = [u for n, u in header_units(block) if n in {x.lower() for x in names}]
    exc = [u for n, u in header_units(block) if n not in {x.lower() for x in names}]
    assert included == b"".join(inc) + b"\r\n"
    assert excluded == b"".join(exc) + b"\r\n"
    assert sorted(inc + exc) == sorted(units)
    # the units are the block's own bytes up to the blank line; a CRLF is added only to
    # an unterminated last line
    head = block[:-2] if block.endswith(b"\r\n\r\n") or block == b"\r\n" else block
    if head and not head.endswith(b"\r\n"):
        head += b"\r\n"
    assert b"".join(units) == head
