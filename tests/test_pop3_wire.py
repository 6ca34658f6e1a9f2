"""POP3 pure parts: line framing, command parsing, dot-stuffing, TOP, maildrop, CAPA."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.mime import has_dot_lines
from mailstead.pop3.maildrop import Maildrop, NoSuchMessage, unique_id
from mailstead.pop3.settings import POP3Settings, capabilities
from mailstead.pop3.wire import (
    LineBuffer,
    Overlong,
    err,
    multiline,
    multiline_parts,
    ok,
    parse_command,
    parse_number,
    top,
    unstuff,
)
from mailstead.store.api import MessageInfo


# --- framing -------------------------------------------------------------------------------
def test_line_buffer_splits_crlf_and_bare_lf_across_feeds() -> None:
    buf = LineBuffer(100)
    assert buf.feed(b"STAT\r\nLI") == [b"STAT"]
    assert buf.feed(b"ST 1\r") == []
    assert buf.feed(b"\nNOOP\nQUIT\r\n") == [b"LIST 1", b"NOOP", b"QUIT"]
    assert buf.pending == 0


def test_line_buffer_discards_overlong_lines_in_place() -> None:
    buf = LineBuffer(10)
    out = buf.feed(b"NOOP\r\n" + b"x" * 25)
    # The over-long line is reported as soon as it passes the cap, not when it ends.
    assert out[0] == b"NOOP" and isinstance(out[1], Overlong) and out[1].length == 25
    out = buf.feed(b"y" * 1000)
    assert out == [] and buf.pending == 0  # dropped, not kept
    out = buf.feed(b"zz\r\nSTAT\r\n" + b"a" * 11 + b"\r\n" + b"b" * 10 + b"\r\n")
    assert [type(x) for x in out] == [bytes, Overlong, bytes]
    assert out[0] == b"STAT" and out[2] == b"b" * 10
    assert not any(isinstance(x, Overlong) and x.fatal for x in out)
    buf.feed(b"partial")
    buf.clear()
    assert buf.feed(b"\r\n") == [b""]


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20),
       st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_line_buffer_is_independent_of_chunking(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    buf = LineBuffer(20)
    out: list[object] = []
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += buf.feed(data[pos:pos + step])
        pos += step
        i += 1
    got = [x if isinstance(x, bytes) else None for x in out]
    assert got == [line if len(line) <= 20 else None for line in lines]


# --- commands --------------------------------------------------------------------------
def test_parse_command() -> None:
    cmd = parse_command(b"retr 1")
    assert (cmd.name, cmd.args) == ("RETR", ("1",))
    cmd = parse_command(b"PASS  two words ")
    assert cmd.name == "PASS" and cmd.rest == " two words " and cmd.args == ("two", "words")
    assert parse_command(b"CAPA").args == ()
    for bad in (b"", b"   ", b" STAT", b"12 3", b"\xff\xfe"):
        with pytest.raises(ValueError):
            parse_command(bad)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("007", 7), ("123456789", 123456789), ("0", 0), ("", None), ("-1", None),
     ("+1", None), ("1.0", None), (" 1", None), ("\u0661", None), ("1234567890", None)],
)
def test_parse_number(text: str, value: int | None) -> None:
    assert parse_number(text) == value


def test_response_lines() -> None:
    assert ok() == b"+OK\r\n"
    assert ok("2 320") == b"+OK 2 320\r\n"
    assert err("Maildrop already locked", "IN-USE") == b"-ERR [IN-USE] Maildrop already locked\r\n"


# --- dot-stuffing ------------------------------------------------------------------------
def test_multiline_stuffs_every_line_and_terminates() -> None:
    assert multiline(b"") == b".\r\n"
    assert multiline(b"a\r\n") == b"a\r\n.\r\n"
    assert multiline(b"a") == b"a\r\n.\r\n"
    assert multiline(b".\r\n") == b"..\r\n.\r\n"
    assert multiline(b".a\r\n..b\r\nc.d\r\n.") == b"..a\r\n...b\r\nc.d\r\n..\r\n.\r\n"
    assert multiline(b"\r\n.\r\n") == b"\r\n..\r\n.\r\n"


_crlf_text = st.lists(
    st.sampled_from([b".", b"..", b"a", b".a", b"", b" .", b"\t", b"x" * 50]), max_size=40
).map(lambda parts: b"\r\n".join(parts))


@given(_crlf_text, st.booleans())
def test_multiline_round_trips(body: bytes, final_crlf: bool) -> None:
    data = body + b"\r\n" if final_crlf else body
    wire = multiline(data)
    assert wire.endswith(b".\r\n")
    lines = wire.split(b"\r\n")[:-2]
    assert all(not ln.startswith(b".") or ln.startswith(b"..") for ln in lines)
    expected = data if not data or data.endswith(b"\r\n") else data + b"\r\n"
    assert unstuff(wire) == expected


@given(_crlf_text)
def test_dot_line_mark_agrees_with_the_lines(data: bytes) -> None:
    lines = data.split(b"\r\n")
    assert has_dot_lines(data) == any(line.startswith(b".") for line in lines)
    # The mark the store keeps only spares the scan: the wire form is the same.
    assert b"".join(multiline_parts(data, has_dot_lines(data))) == multiline(data)


# --- TOP ------------------------------------------------------------------------------------
def test_top() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3"
    assert top(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top(msg, 1) == b"A: 1\r\nB: 2\r\n\r\nl1\r\n"
    assert top(msg, 3) == msg
    assert top(msg, 99) == msg
    assert top(b"A: 1\r\nno body", 5) == b"A: 1\r\nno body"
    assert top(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"
    assert top(b"", 3) == b""


# --- maildrop --------------------------------------------------------------------------------
def _info(uid: int, size: int, flags: frozenset[str] = frozenset()) -> MessageInfo:
    return MessageInfo(uid, 1, flags, datetime.now(UTC), size)


def test_maildrop_numbers_marks_and_errors() -> None:
    drop = Maildrop(7, 1234, [_info(3, 100), _info(5, 200, frozenset({"\\Seen"})), _info(9, 50)])
    assert drop.stat() == (3, 350)
    assert drop.get("2").uid == 5 and drop.get("2").seen
    assert drop.unique_id(drop.get("3")) == "1234.9" == unique_id(1234, 9)
    drop.get("1").deleted = True
    assert drop.stat() == (2, 250)
    assert [e.number for e in drop.live()] == [2, 3]
    assert drop.deleted_uids() == [3]
    for text, reason in (("1", "already deleted"), ("0", "No such message 0"),
                         ("4", "No such message 4"), ("x", "Invalid message number")):
        with pytest.raises(NoSuchMessage, match=reason):
            drop.get(text)
    drop.reset()
    assert drop.stat() == (3, 350) and drop.deleted_uids() == []


# --- capabilities ---------------------------------------------------------------------------
def test_capabilities_follow_settings_and_connection_state() -> None:
    s = POP3Settings()
    assert capabilities(s, login_allowed=True, stls=True) == [
        "TOP", "USER", "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
        "UIDL", "EXPIRE NEVER", "STLS", "IMPLEMENTATION Mailstead",
    ]
    s = POP3Settings(expire="30", login_delay=900)
    assert capabilities(s, login_allowed=False, stls=False) == [
        "TOP", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UIDL", "EXPIRE 30",
        "LOGIN-DELAY 900", "IMPLEMENTATION Mailstead",
    ]


