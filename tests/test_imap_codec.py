"""The IMAP command framer (CommandReader) and parser (parse_command), and the
round trip through the tests' client-side formatting (imap_format)."""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imap_format import format_command, format_fetch_attribute, verb
from mailstead.imap.dates import format_date, format_internaldate, parse_date, parse_datetime
from mailstead.imap.handlers.fetch_items import response_name
from mailstead.imap.syntax import parse_command
from mailstead.imap.syntax.auth import Authenticate, Login, StartTLS
from mailstead.imap.syntax.fetch import (
    FETCH_MACROS,
    FETCH_SIMPLE,
    Fetch,
    FetchAttribute,
    FetchSection,
)
from mailstead.imap.syntax.mailbox import (
    STATUS_ITEMS,
    Create,
    Delete,
    List,
    QResync,
    Rename,
    Select,
    Status,
    Subscribe,
    Unsubscribe,
)
from mailstead.imap.syntax.message import (
    Append,
    AppendMessage,
    Check,
    Close,
    Copy,
    Expunge,
    Move,
    Unselect,
)
from mailstead.imap.syntax.reader import (
    CommandReader,
    Continue,
    Fatal,
    Literal,
    RawCommand,
    RawLine,
    ReaderEvent,
    Reject,
)
from mailstead.imap.syntax.search import (
    SEARCH_RETURN_OPTIONS,
    AddressKey,
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    Search,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from mailstead.imap.syntax.sequence import SequenceSet
from mailstead.imap.syntax.session import (
    Capability,
    Enable,
    Id,
    Idle,
    Logout,
    Namespace,
    Noop,
)
from mailstead.imap.syntax.store import Store
from mailstead.imap.syntax.tokens import (
    MAX_NUMBER,
    MAX_NUMBER64,
    Command,
    ParseError,
    UnusableName,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def feed_all(reader: CommandReader, data: bytes) -> list[ReaderEvent]:
    return reader.feed(data)


def feed_bytewise(reader: CommandReader, data: bytes) -> list[ReaderEvent]:
    events: list[ReaderEvent] = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return events


def parse(data: bytes) -> Command:
    result = parse_command(data)
    assert not isinstance(result, ParseError), result
    return result


def error(data: bytes) -> ParseError:
    result = parse_command(data)
    assert isinstance(result, ParseError), result
    return result


def ss(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


# ---------------------------------------------------------------------------
# CommandReader: framing
# ---------------------------------------------------------------------------


def test_reader_single_command() -> None:
    events = CommandReader().feed(b"a1 NOOP\r\n")
    assert events == [RawCommand(b"a1", (b"a1 NOOP",), (), b"NOOP")]


def test_reader_several_commands_in_one_feed_and_partial_tail() -> None:
    reader = CommandReader()
    events = reader.feed(b"a NOOP\r\nb CHECK\r\nc LOG")
    assert [e.tag for e in events if isinstance(e, RawCommand)] == [b"a", b"b"]
    assert reader.buffered == 5
    assert reader.feed(b"OUT\r\n") == [RawCommand(b"c", (b"c LOGOUT",), (), b"LOGOUT")]


def test_reader_bare_lf_and_blank_lines() -> None:
    events = CommandReader().feed(b"\r\n  \r\na NOOP\n\r\nb NOOP\r\n")
    assert [e.lines for e in events if isinstance(e, RawCommand)] == [(b"a NOOP",), (b"b NOOP",)]


def test_reader_verb_includes_uid_prefix_word() -> None:
    (event,) = CommandReader().feed(b"x uid fetch 1 FLAGS\r\n")
    assert isinstance(event, RawCommand) and event.verb == b"UID"


def test_reader_sync_literal_sends_continue() -> None:
    reader = CommandReader()
    assert reader.feed(b"a LOGIN {3}\r\n") == [Continue()]
    assert reader.feed(b"bob {6}\r\n") == [Continue()]
    (event,) = reader.feed(b"secret\r\n")
    assert event == RawCommand(
        b"a", (b"a LOGIN ", b" ", b""), (Literal(b"bob"), Literal(b"secret")), b"LOGIN"
    )
    assert parse_command(event) == Login(b"a", b"bob", b"secret")


def test_reader_literal_plus_needs_no_continue() -> None:
    (event,) = CommandReader().feed(b"a LOGIN {3+}\r\nbob {0+}\r\n\r\n")
    assert isinstance(event, RawCommand)
    assert event.literals == (Literal(b"bob"), Literal(b""))
    assert parse_command(event) == Login(b"a", b"bob", b"")


def test_reader_zero_length_sync_literal() -> None:
    reader = CommandReader()
    assert reader.feed(b"a LOGIN {0}\r\n") == [Continue()]
    (event,) = reader.feed(b" x\r\n")
    assert parse_command(event) == Login(b"a", b"", b"x")


def test_reader_binary_literal_marker() -> None:
    (event,) = CommandReader().feed(b"a APPEND INBOX ~{3+}\r\na\x00b\r\n")
    assert isinstance(event, RawCommand)
    assert event.literals == (Literal(b"a\x00b", binary=True),)
    assert event.lines == (b"a APPEND INBOX ", b"")


def test_reader_literal_may_contain_crlf_and_braces() -> None:
    data = b"a APPEND INBOX {12+}\r\n{5}\r\nab\r\n}\r\n\r\nb NOOP\r\n"
    events = CommandReader().feed(data)
    assert len(events) == 2
    assert isinstance(events[0], RawCommand)
    assert events[0].literals[0].data == b"{5}\r\nab\r\n}\r\n"


STREAM = (
    b"a1 LOGIN {3}\r\nbob {4+}\r\npass\r\n"
    b"a2 APPEND INBOX (\\Seen) {5}\r\nhello ~{2+}\r\n\r\n\r\n"
    b"a3 SEARCH CHARSET UTF-8 SUBJECT {4+}\r\n\xc3\xa9t\xc3 TEXT x\r\n"
    b"a4 IDLE\r\n"
)


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_reader_split_at_every_position(split: int) -> None:
    whole = CommandReader().feed(STREAM)
    reader = CommandReader()
    parts = reader.feed(STREAM[:split]) + reader.feed(STREAM[split:])
    assert parts == whole


def test_reader_bytewise_equals_whole() -> None:
    whole = CommandReader().feed(STREAM)
    assert feed_bytewise(CommandReader(), STREAM) == whole
    assert [type(e).__name__ for e in whole] == [
        "Continue", "RawCommand", "Continue", "RawCommand", "RawCommand", "RawCommand",
    ]


# ---------------------------------------------------------------------------
# CommandReader: limits
# ---------------------------------------------------------------------------


def test_reader_overlong_line_is_rejected_at_the_limit_and_not_buffered() -> None:
    reader = CommandReader(max_line=100)
    events = reader.feed(b"t1 SEARCH " + b"x" * 85)
    assert events == []
    # Answered as soon as the line passes the limit, not when it ends.
    assert reader.feed(b"y" * 1000) == [Reject(b"t1", "Command line too long")]
    for _ in range(50):
        assert reader.feed(b"y" * 1000) == []
        assert reader.buffered <= 101
    events = reader.feed(b"zz\r\nt2 NOOP\r\n")
    assert events == [RawCommand(b"t2", (b"t2 NOOP",), (), b"NOOP")]


def test_reader_overlong_complete_line() -> None:
    reader = CommandReader(max_line=20)
    events = reader.feed(b"t1 " + b"x" * 30 + b"\r\nt2 NOOP\r\n")
    assert [type(e) for e in events] == [Reject, RawCommand]
    assert events[0] == Reject(b"t1", "Command line too long")


def test_reader_line_exactly_at_limit_is_accepted() -> None:
    line = b"t NOOP" + b" " * 14
    assert len(line) == 20
    (event,) = CommandReader(max_line=20).feed(line + b"\r\n")
    assert isinstance(event, RawCommand)


def test_reader_overlong_line_without_tag() -> None:
    events = CommandReader(max_line=10).feed(b"+" * 40 + b"\r\n")
    assert events == [Reject(b"*", "Command line too long")]


def test_reader_overlong_continuation_line_keeps_tag_and_skips_literal() -> None:
    reader = CommandReader(max_line=30)
    assert reader.feed(b"t9 LOGIN {2+}\r\nab ") == []
    events = reader.feed(b"q" * 60 + b" {5+}\r\n12345")
    assert events == [Reject(b"t9", "Command line too long")]
    # The five literal octets were skipped, not taken for a command.
    assert reader.feed(b"\r\nt10 NOOP\r\n") == [
        RawCommand(b"t10", (b"t10 NOOP",), (), b"NOOP"),
    ]


def test_reader_overlong_line_ending_in_sync_literal_is_rejected_at_once() -> None:
    reader = CommandReader(max_line=30)
    events = reader.feed(b"t1 LOGIN " + b"q" * 60 + b" {5}\r\n")
    assert events == [Reject(b"t1", "Command line too long")]
    assert reader.feed(b"t2 NOOP\r\n")[0].tag == b"t2"


def test_reader_sync_literal_too_large_is_refused_before_reading() -> None:
    reader = CommandReader(max_other_literal=10)
    events = reader.feed(b"t1 LOGIN {11}\r\n")
    assert events == [Reject(b"t1", "Literal too large")]
    # The client got no "+", so what follows is a new command.
    (event,) = reader.feed(b"t2 NOOP\r\n")
    assert isinstance(event, RawCommand) and event.tag == b"t2"


def test_reader_append_sync_literal_too_large_is_no_toobig() -> None:
    reader = CommandReader(max_literal=1000)
    events = reader.feed(b"A003 APPEND saved-messages (\\Seen) {1001}\r\n")
    assert events == [Reject(b"A003", "Message too large", "NO", "TOOBIG")]
    assert events[0].response() == b"A003 NO [TOOBIG] Message too large\r\n"


def test_reader_append_non_sync_literal_too_large_is_refused_at_once_and_discarded() -> None:
    reader = CommandReader(max_literal=1000, max_line=200)
    assert reader.feed(b"A4 APPEND INBOX {50000+}\r\n") == [
        Reject(b"A4", "Message too large", "BAD", "TOOBIG"),
    ]
    for _ in range(49):
        assert reader.feed(b"x" * 1000) == []
        assert reader.buffered == 0  # discarded, not kept
    assert reader.feed(b"x" * 999) == []
    events = reader.feed(b"x\r\nA5 NOOP\r\n")
    assert events == [RawCommand(b"A5", (b"A5 NOOP",), (), b"NOOP")]


def test_reader_discards_rest_of_refused_multiappend() -> None:
    reader = CommandReader(max_literal=10)
    data = b"m APPEND INBOX {20+}\r\n" + b"a" * 20 + b" {3+}\r\nabc {4}\r\n"
    events = reader.feed(data)
    # The second literal of the refused command is skipped too; the last is
    # synchronising, so the command ends with the rejection there.
    assert events == [Reject(b"m", "Message too large", "BAD", "TOOBIG")]
    assert reader.feed(b"n NOOP\r\n")[0].tag == b"n"


def test_reader_set_literal_limit() -> None:
    reader = CommandReader()
    reader.set_literal_limit(4)
    assert reader.feed(b"a APPEND INBOX {5}\r\n")[0] == Reject(
        b"a", "Message too large", "NO", "TOOBIG"
    )
    assert reader.feed(b"b APPEND INBOX {4}\r\n") == [Continue()]


def test_reader_append_limit_differs_from_other_literals() -> None:
    reader = CommandReader(max_literal=100, max_other_literal=10)
    assert reader.feed(b"a APPEND INBOX {50}\r\n") == [Continue()]
    reader = CommandReader(max_literal=100, max_other_literal=10)
    assert reader.feed(b"a LOGIN {50}\r\n") == [Reject(b"a", "Literal too large")]


def test_reader_too_many_literals() -> None:
    reader = CommandReader(max_literals=2)
    events = reader.feed(b"a ID ({1+}\r\na {1+}\r\nb {1+}\r\nc NIL)\r\nb NOOP\r\n")
    assert events == [
        Reject(b"a", "Too many literals in one command"),
        RawCommand(b"b", (b"b NOOP",), (), b"NOOP"),
    ]


def test_reader_command_too_large() -> None:
    reader = CommandReader(max_line=100, max_literal=100, max_command=150)
    events = reader.feed(b"a APPEND INBOX {90+}\r\n" + b"x" * 90 + b" {90+}\r\n" + b"y" * 90)
    events += reader.feed(b"\r\nb NOOP\r\n")
    assert events == [
        Reject(b"a", "Command too large", "BAD", "TOOBIG"),
        RawCommand(b"b", (b"b NOOP",), (), b"NOOP"),
    ]


def test_reader_huge_literal_size_is_refused() -> None:
    events = CommandReader().feed(b"a LOGIN {99999999999999999999999999}\r\n")
    assert events == [Reject(b"a", "Literal too large")]


def test_reject_response_formats() -> None:
    assert Reject(b"t", "Command line too long").response() == b"t BAD Command line too long\r\n"
    assert Continue().response() == b"+ Ready for literal data\r\n"


# ---------------------------------------------------------------------------
# CommandReader: holds, raw lines (IDLE, AUTHENTICATE), STARTTLS
# ---------------------------------------------------------------------------


def test_idle_done_in_one_feed() -> None:
    reader = CommandReader()
    events = reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert events == [RawCommand(b"a", (b"a IDLE",), (), b"IDLE")]
    assert reader.held
    assert reader.feed(b"c NOOP\r\n") == []  # held: only buffered
    assert reader.expect_line() == [RawLine(b"DONE")]
    assert reader.held
    assert [e.tag for e in reader.resume() if isinstance(e, RawCommand)] == [b"b", b"c"]
    assert not reader.held


def test_idle_done_arriving_later_bytewise() -> None:
    reader = CommandReader()
    assert reader.feed(b"a idle\r\n")[0].verb == b"IDLE"
    assert reader.expect_line() == []
    assert feed_bytewise(reader, b"DONE\r\n") == [RawLine(b"DONE")]
    assert reader.resume() == []
    assert reader.feed(b"b NOOP\r\n")[0].tag == b"b"


def test_raw_line_is_not_parsed_for_literals() -> None:
    reader = CommandReader()
    reader.feed(b"a AUTHENTICATE PLAIN\r\n")
    assert reader.expect_line() == []
    assert reader.feed(b"abc {5}\r\n") == [RawLine(b"abc {5}")]


def test_authenticate_exchange() -> None:
    reader = CommandReader()
    assert parse_command(reader.feed(b"a AUTHENTICATE SCRAM-SHA-256\r\n")[0]) == Authenticate(
        b"a", "SCRAM-SHA-256"
    )
    reader.expect_line()
    assert reader.feed(b"c1\r\n") == [RawLine(b"c1")]
    reader.expect_line()
    assert reader.feed(b"c2\r\nb NOOP\r\n") == [RawLine(b"c2")]
    assert reader.resume()[0].tag == b"b"


def test_raw_line_too_long() -> None:
    reader = CommandReader(max_line=10)
    reader.feed(b"a AUTHENTICATE PLAIN\r\n")
    reader.expect_line()
    assert reader.feed(b"x" * 50) == [RawLine(b"", too_long=True)]  # at the limit
    assert reader.feed(b"y" * 50) == []
    assert reader.buffered == 0  # the rest of that line is thrown away, held or not
    assert reader.feed(b"\r\nb NOOP\r\n") == []
    assert reader.held and reader.buffered == len(b"b NOOP\r\n")
    assert reader.resume()[0].tag == b"b"


def test_starttls_buffer_discarded() -> None:
    reader = CommandReader()
    events = reader.feed(b"a STARTTLS\r\nb LOGIN injected x\r\n")
    assert len(events) == 1 and reader.held
    reader.discard_buffer()
    assert reader.resume() == []
    assert reader.feed(b"c NOOP\r\n")[0].tag == b"c"


def test_held_reader_buffer_is_bounded() -> None:
    reader = CommandReader(max_line=100, max_literal=100, max_command=500)
    reader.feed(b"a IDLE\r\n")
    assert reader.feed(b"x" * 500) == []
    assert reader.feed(b"x") == [Fatal("Too much input while a command was in progress")]
    assert reader.buffered == 0
    assert reader.feed(b"b NOOP\r\n") == []


def test_custom_hold_verbs() -> None:
    reader = CommandReader(hold_verbs=frozenset())
    assert len(reader.feed(b"a IDLE\r\nDONE\r\n")) == 2


# ---------------------------------------------------------------------------
# parse_command: every command
# ---------------------------------------------------------------------------

VALID: list[tuple[bytes, Command]] = [
    (b"a CAPABILITY", Capability(b"a")),
    (b"a noop", Noop(b"a")),
    (b"a LOGOUT", Logout(b"a")),
    (b"a StartTLS", StartTLS(b"a")),
    (b"a CHECK", Check(b"a")),
    (b"a CLOSE", Close(b"a")),
    (b"a IDLE", Idle(b"a")),
    (b"a NAMESPACE", Namespace(b"a")),
    (b"a UNSELECT", Unselect(b"a")),
    (b"a EXPUNGE", Expunge(b"a")),
    (b"a UID EXPUNGE 3000:3002,*", Expunge(b"a", ss("3000:3002,*"))),
    (b"a AUTHENTICATE plain", Authenticate(b"a", "PLAIN")),
    (b"a AUTHENTICATE PLAIN =", Authenticate(b"a", "PLAIN", b"")),
    (b"a AUTHENTICATE PLAIN AHUAcA==", Authenticate(b"a", "PLAIN", b"\x00u\x00p")),
    (b"a LOGIN bob secret", Login(b"a", b"bob", b"secret")),
    (b'a LOGIN "b\\"o\\\\b" "p w"', Login(b"a", b'b"o\\b', b"p w")),
    (b"a LOGIN bo]b {4+}\r\np\xffw\x00", Login(b"a", b"bo]b", b"p\xffw\x00")),
    (b"a SELECT inbox", Select(b"a", "INBOX")),
    (b"a SELECT INBOX/Sub", Select(b"a", "INBOX/Sub")),
    (b"a EXAMINE Archive", Select(b"a", "Archive", readonly=True)),
    (b"a SELECT INBOX (CONDSTORE)", Select(b"a", "INBOX", condstore=True)),
    (
        b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1:5 7:11)))",
        Select(
            b"a", "INBOX",
            qresync=QResync(67890007, 20050715194045000, ss("41,43:211"), (ss("1:5"), ss("7:11"))),
        ),
    ),
    (
        b"a SELECT INBOX (QRESYNC (1 0 (1 2)))",
        Select(b"a", "INBOX", qresync=QResync(1, 0, None, (ss("1"), ss("2")))),
    ),
    (
        b"a EXAMINE INBOX (CONDSTORE QRESYNC (5 7))",
        Select(b"a", "INBOX", True, True, QResync(5, 7)),
    ),
    (b'a SELECT "&AOk-t&AOk-"', Select(b"a", "été")),
    ("a SELECT \"Entwürfe\"".encode(), Select(b"a", "Entwürfe")),
    ("a SELECT Entwürfe".encode(), Select(b"a", "Entwürfe")),
    (b"a SELECT {5+}\r\ninBOX", Select(b"a", "INBOX")),
    (b"a CREATE foo/bar", Create(b"a", "foo/bar")),
    (b"a CREATE Sent (USE (\\sent \\Archive))", Create(b"a", "Sent", ("\\Sent", "\\Archive"))),
    (b"a DELETE foo", Delete(b"a", "foo")),
    (b"a RENAME foo \"new name\"", Rename(b"a", "foo", "new name")),
    (b"a SUBSCRIBE foo", Subscribe(b"a", "foo")),
    (b"a UNSUBSCRIBE foo", Unsubscribe(b"a", "foo")),
    (b'a LIST "" *', List(b"a", "", ("*",))),
    (b"a LIST ~/Mail/ %", List(b"a", "~/Mail/", ("%",))),
    (b'a LIST "" inbox', List(b"a", "", ("inbox",))),
    (b'a LIST "" "&AOk-*"', List(b"a", "", ("é*",))),
    (b'a LIST "" foo]bar*', List(b"a", "", ("foo]bar*",))),
    (b'a LSUB "#news." "comp.mail.*"', List(b"a", "#news.", ("comp.mail.*",), lsub=True)),
    (
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" (% "foo/*") RETURN (CHILDREN)',
        List(
            b"a", "", ("%", "foo/*"), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN",),
            extended=True,
        ),
    ),
    (b'a LIST () "" %', List(b"a", "", ("%",), extended=True)),
    (
        b'a LIST (special-use) "" * RETURN (special-use STATUS (messages UNSEEN))',
        List(
            b"a", "", ("*",), ("SPECIAL-USE",), ("SPECIAL-USE", "STATUS"), ("MESSAGES", "UNSEEN"),
            extended=True,
        ),
    ),
    (b'a LIST "" % RETURN ()', List(b"a", "", ("%",), extended=True)),
    (
        b"a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)",
        Status(
            b"a", "INBOX",
            ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"),
        ),
    ),
    (b"a APPEND INBOX {3+}\r\nabc", Append(b"a", "INBOX", (AppendMessage(b"abc"),))),
    (
        b'a APPEND saved (\\Seen $Fwd) " 7-Feb-1994 21:52:25 -0800" {3+}\r\nabc',
        Append(b"a", "saved", (AppendMessage(
            b"abc", ("\\Seen", "$Fwd"),
            datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))),
        ),)),
    ),
    (
        b'a APPEND saved "17-Feb-1994 21:52:25 +0000" {1+}\r\nx',
        Append(b"a", "saved", (AppendMessage(
            b"x", (), datetime(1994, 2, 17, 21, 52, 25, tzinfo=UTC),
        ),)),
    ),
    (
        b"a APPEND INBOX () {1+}\r\nx (\\Draft) ~{2+}\r\n\x00y",
        Append(b"a", "INBOX", (
            AppendMessage(b"x"), AppendMessage(b"\x00y", ("\\Draft",), binary=True),
        )),
    ),
    (b"a SEARCH ALL", Search(b"a", AllKey())),
    (b"a UID SEARCH 1:* NOT DELETED", Search(
        b"a", AndKey((SequenceKey(ss("1:*")), NotKey(FlagKey("\\Deleted")))), uid=True,
    )),
    (b"a SEARCH CHARSET us-ascii TEXT x", Search(b"a", TextKey("TEXT", "x"), "US-ASCII")),
    (b"a SEARCH RETURN (MIN COUNT) UNSEEN", Search(
        b"a", FlagKey("\\Seen", False), return_options=("MIN", "COUNT"),
    )),
    (b"a SEARCH RETURN () ALL", Search(b"a", AllKey(), return_options=("ALL",))),
    (b"a FETCH 1 FLAGS", Fetch(b"a", ss("1"), (FetchAttribute("FLAGS"),))),
    (b"a FETCH 1:* ALL", Fetch(b"a", ss("1:*"), FETCH_MACROS["ALL"])),
    (b"a FETCH 2 fast", Fetch(b"a", ss("2"), FETCH_MACROS["FAST"])),
    (b"a FETCH 2 FULL", Fetch(b"a", ss("2"), FETCH_MACROS["FULL"])),
    (b"a UID FETCH 1:5 (UID FLAGS) (CHANGEDSINCE 12345 VANISHED)", Fetch(
        b"a", ss("1:5"), (FetchAttribute("UID"), FetchAttribute("FLAGS")), True, 12345, True,
    )),
    (b"a FETCH 1 (MODSEQ) (CHANGEDSINCE 0)", Fetch(
        b"a", ss("1"), (FetchAttribute("MODSEQ"),), changedsince=0,
    )),
    (b"a STORE 1 FLAGS (\\SEEN)", Store(b"a", ss("1"), "", False, ("\\Seen",))),
    (b"a STORE 1 +FLAGS \\Deleted foo", Store(b"a", ss("1"), "+", False, ("\\Deleted", "foo"))),
    (b"a UID STORE 1:2 -flags.silent ($Forwarded)", Store(
        b"a", ss("1:2"), "-", True, ("$Forwarded",), uid=True,
    )),
    (b"a STORE 1 FLAGS ()", Store(b"a", ss("1"), "", False, ())),
    (b"a STORE 7 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Draft)", Store(
        b"a", ss("7"), "+", True, ("\\Draft",), unchangedsince=320162338,
    )),
    (b"a COPY 2:4 MEETING", Copy(b"a", ss("2:4"), "MEETING")),
    (b"a UID COPY 2:4 inbox", Copy(b"a", ss("2:4"), "INBOX", uid=True)),
    (b"a MOVE 1 Trash", Move(b"a", ss("1"), "Trash")),
    (b"a uid move 1,3 Trash", Move(b"a", ss("1,3"), "Trash", uid=True)),
    (b"a ID NIL", Id(b"a", None)),
    (b"a ID ()", Id(b"a", ())),
    (b'a ID ("name" "sodr" "version" NIL)', Id(b"a", (("name", "sodr"), ("version", None)))),
    (b"a ENABLE CONDSTORE qresync", Enable(b"a", ("CONDSTORE", "QRESYNC"))),
    (b"a]b NOOP", Noop(b"a]b")),
]
VALID_IDS = [v[0][:40].decode("latin-1") for v in VALID]


@pytest.mark.parametrize(("line", "expected"), VALID, ids=VALID_IDS)
def test_parse_valid(line: bytes, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(("line", "expected"), VALID, ids=VALID_IDS)
def test_format_of_parsed_parses_back(line: bytes, expected: Command) -> None:
    for literal_plus in (True, False):
        assert parse_command(format_command(expected, literal_plus=literal_plus)) == expected


def test_verbs() -> None:
    assert verb(parse(b"a EXAMINE x")) == "EXAMINE"
    assert verb(parse(b"a UID FETCH 1 UID")) == "UID FETCH"
    assert verb(parse(b"a UID EXPUNGE 1")) == "UID EXPUNGE"
    assert verb(parse(b"a LSUB x y")) == "LSUB"
    assert verb(parse(b"a NOOP")) == "NOOP"


def test_format_examples() -> None:
    assert format_command(Select(b"t", "été", condstore=True)) == (
        b"t SELECT &AOk-t&AOk- (CONDSTORE)\r\n"
    )
    assert format_command(Login(b"t", b"u", "pässword".encode()), literal_plus=False) == (
        b"t LOGIN u {9}\r\np\xc3\xa4ssword\r\n"
    )
    assert format_command(Store(b"t", ss("1:*"), "+", True, ("\\Seen",), uid=True)) == (
        b"t UID STORE 1:* +FLAGS.SILENT (\\Seen)\r\n"
    )
    assert format_command(Id(b"t", (("name", "x"), ("v", None)))) == (
        b't ID ("name" "x" "v" NIL)\r\n'
    )
    msg = AppendMessage(b"hi", ("\\Seen",), datetime(2026, 11, 5, 9, 3, 1, tzinfo=UTC))
    assert format_command(Append(b"t", "INBOX", (msg,))) == (
        b't APPEND INBOX (\\Seen) " 5-Nov-2026 09:03:01 +0000" {2+}\r\nhi\r\n'
    )


# ---------------------------------------------------------------------------
# parse_command: errors
# ---------------------------------------------------------------------------

ERRORS: list[tuple[bytes, bytes, str]] = [
    # (line, tag of the error, message it must contain)
    (b"", b"*", "Expected exactly one complete command"),
    (b"+a NOOP", b"*", "Missing or invalid tag"),
    (b"a+ NOOP", b"*", "Missing or invalid tag"),
    (b"(x NOOP", b"*", "Missing or invalid tag"),
    (b"a", b"a", "Missing command"),
    (b"a ", b"a", "Missing command"),
    (b"a FOO", b"a", "Unknown command FOO"),
    (b"a UID NOOP", b"a", "Unknown command UID NOOP"),
    (b"a UID", b"a", "Missing UID command"),
    (b"a NOOP now", b"a", "Unexpected argument after NOOP"),
    (b"a  NOOP", b"a", "Invalid command"),
    (b"a SELECT", b"a", "Missing mailbox name"),
    (b"a SELECT ", b"a", "Missing mailbox name"),
    (b"a SELECT INBOX extra", b"a", "Unexpected argument after mailbox name"),
    (b"a SELECT INBOX (FOO)", b"a", "Unknown SELECT parameter FOO"),
    (b"a SELECT INBOX (QRESYNC (0 1))", b"a", "Invalid UIDVALIDITY: 0"),
    (b'a SELECT "unterminated', b"a", "Invalid quoted string"),
    (b'a SELECT "bad\\escape"', b"a", "Invalid quoted string"),
    (b"a SELECT {3}", b"*", "Expected exactly one complete command"),
    (b"a LOGIN bob", b"a", "Missing password"),
    (b"a LOGIN", b"a", "Missing user name"),
    (b"a LOGIN (bob) x", b"a", "Invalid user name"),
    (b"a AUTHENTICATE", b"a", "Missing authentication mechanism"),
    (b"a AUTHENTICATE PLAIN !!!!", b"a", "Invalid base64 in initial response"),
    (b"a AUTHENTICATE PLAIN AHU", b"a", "Invalid base64 in initial response"),
    (b"a CREATE x (FOO (bar))", b"a", "Unknown CREATE parameter FOO"),
    (b"a RENAME x", b"a", "Missing new mailbox name"),
    (b"a LIST", b"a", "Missing reference name"),
    (b'a LIST ""', b"a", "Missing mailbox pattern"),
    (b'a LIST (RECURSIVEMATCH) "" *', b"a", "RECURSIVEMATCH needs another selection option"),
    (b'a LIST (BOGUS) "" *', b"a", "Unknown LIST selection option BOGUS"),
    (b'a LIST "" * RETURN (BOGUS)', b"a", "Unknown LIST return option BOGUS"),
    (b'a LIST "" * FOO (x)', b"a", "Expected RETURN"),
    (b'a LIST "" ()', b"a", "Invalid mailbox pattern"),
    (b"a STATUS INBOX", b"a", "Missing status items"),
    (b"a STATUS INBOX ()", b"a", "Invalid status item"),
    (b"a STATUS INBOX (MESSAGES BOGUS)", b"a", "Unknown status item BOGUS"),
    (b"a APPEND INBOX", b"a", "Missing message literal"),
    (b"a APPEND INBOX (\\Seen)", b"a", "Missing message literal"),
    (b"a APPEND INBOX hello", b"a", "Invalid message literal: hello"),
    (b"a APPEND INBOX (\\Recent) {1+}\r\nx", b"a", "\\Recent flag cannot be set"),
    (b'a APPEND INBOX "5-Nov-2026" {1+}\r\nx', b"a", "Invalid date-time"),
    (b'a APPEND INBOX "35-Nov-2026 10:00:00 +0000" {1+}\r\nx', b"a", "Invalid date-time"),
    (b"a APPEND INBOX {1+}\r\nx junk", b"a", "Invalid message literal: junk"),
    (b"a FETCH 0 FLAGS", b"a", "Invalid sequence set: 0"),
    (b"a FETCH 4294967296 FLAGS", b"a", "Invalid sequence set: 4294967296"),
    (b"a FETCH 1:0 FLAGS", b"a", "Invalid sequence set: 1:0"),
    (b"a FETCH 1,,2 FLAGS", b"a", "Invalid sequence set"),
    (b"a FETCH 1: FLAGS", b"a", "Invalid sequence set"),
    (b"a FETCH x FLAGS", b"a", "Invalid sequence set: x"),
    (b"a FETCH $ FLAGS", b"a", "SEARCHRES ($) is not supported"),
    (b"a FETCH 1", b"a", "Missing fetch attributes"),
    (b"a FETCH 1 ()", b"a", "Invalid fetch attribute"),
    (b"a FETCH 1 (FLAGS", b"a", "Expected ')' to end fetch attributes"),
    (b"a FETCH 1 BOGUS", b"a", "Unknown fetch attribute BOGUS"),
    (b"a FETCH 1 (FLAGS ALL)", b"a", "Unknown fetch attribute ALL"),
    (b"a FETCH 1 BODY.PEEK", b"a", "BODY.PEEK needs a section"),
    (b"a FETCH 1 BODY[FOO]", b"a", "Invalid section: FOO"),
    (b"a FETCH 1 BODY[0]", b"a", "Invalid section part number: 0"),
    (b"a FETCH 1 BODY[1.]", b"a", "Invalid section: 1."),
    (b"a FETCH 1 BODY[MIME]", b"a", "MIME section needs a part number"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]", b"a", "space before header field names"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", b"a", "Invalid header field name"),
    (b"a FETCH 1 BODY[TEXT", b"a", "Expected ']' to end the section"),
    (b"a FETCH 1 BODY[]<5>", b"a", "Invalid partial range"),
    (b"a FETCH 1 BODY[]<0.0>", b"a", "Invalid partial range"),
    (b"a FETCH 1 BINARY[HEADER]", b"a", "Invalid section"),
    (b"a FETCH 1 FLAGS (FOO)", b"a", "Unknown FETCH modifier FOO"),
    (b"a FETCH 1 FLAGS (VANISHED)", b"a", "VANISHED is only allowed with UID FETCH"),
    (b"a UID FETCH 1 FLAGS (VANISHED)", b"a", "VANISHED needs CHANGEDSINCE"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE x)", b"a", "Invalid mod-sequence: x"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", b"a", "too large"),
    (b"a STORE 1 FLAGS (\\Recent)", b"a", "\\Recent flag cannot be set by clients"),
    (b"a STORE 1 FLAGS (\\Bogus)", b"a", "Unknown system flag \\Bogus"),
    (b"a STORE 1 FLAGS", b"a", "Missing flags"),
    (b"a STORE 1 FLAGS (\\Seen", b"a", "Expected ')' to end flag list"),
    (b"a STORE 1 *FLAGS (\\Seen)", b"a", "Invalid store item"),
    (b"a STORE 1 LABELS (\\Seen)", b"a", "Invalid store item: LABELS"),
    (b"a STORE 1 (FOO 1) FLAGS (\\Seen)", b"a", "Unknown STORE modifier FOO"),
    (b"a STORE 1 FLAGS (a%b)", b"a", "Expected ')' to end flag list"),
    (b"a COPY 1", b"a", "Missing mailbox name"),
    (b"a MOVE", b"a", "Missing sequence set"),
    (b"a UID EXPUNGE", b"a", "Missing UID set"),
    (b"a SEARCH", b"a", "Missing search criteria"),
    (b"a SEARCH ALL ", b"a", "Missing search key"),
    (b"a SEARCH BOGUS", b"a", "Unknown search key BOGUS"),
    (b"a SEARCH FROM", b"a", "Missing FROM string"),
    (b"a SEARCH HEADER X-Foo", b"a", "Missing header value"),
    (b"a SEARCH SINCE 31-Feb-2020", b"a", "Invalid date: 31-Feb-2020"),
    (b"a SEARCH SINCE 1-Foo-2020", b"a", "Invalid date"),
    (b"a SEARCH BEFORE 2020-01-01", b"a", "Invalid date"),
    (b"a SEARCH LARGER big", b"a", "Invalid size: big"),
    (b"a SEARCH OR SEEN", b"a", "Missing search key"),
    (b"a SEARCH NOT", b"a", "Missing search key"),
    (b"a SEARCH (SEEN", b"a", "Expected ')' to end search group"),
    (b"a SEARCH ()", b"a", "Invalid search key"),
    (b"a SEARCH KEYWORD \\Seen", b"a", "Invalid keyword"),
    (b"a SEARCH SUBJECT \xff", b"a", "Invalid UTF-8 in SUBJECT string"),
    (b"a SEARCH UID 0", b"a", "Invalid sequence set: 0"),
    (b"a SEARCH MODSEQ \"/flags/\\\\Seen\" bogus 5", b"a", "Invalid MODSEQ entry type"),
    (b"a SEARCH RETURN (SAVE) ALL", b"a", "SEARCHRES (RETURN SAVE) is not supported"),
    (b"a SEARCH RETURN (BOGUS) ALL", b"a", "Unknown SEARCH return option BOGUS"),
    (b"a SEARCH ALL SEEN)", b"a", "Unexpected argument after search criteria"),
    (b"a ID", b"a", "Missing ID parameters"),
    (b"a ID foo", b"a", "Invalid ID parameters"),
    (b"a ID (\"name\")", b"a", "Expected a space before ID field value"),
    (b"a ENABLE", b"a", "Missing capability"),
    (b"a LOGIN ~{1+}\r\nx y", b"a", "binary literal is not allowed for user name"),
    (b"a NOOP {1+}\r\nx", b"a", "Unexpected argument after NOOP"),
    (b"a SELECT x\x00y", b"a", "Unexpected argument after mailbox name"),
]
ERROR_IDS = [e[0][:40].decode("latin-1") for e in ERRORS]


@pytest.mark.parametrize(("line", "tag", "message"), ERRORS, ids=ERROR_IDS)
def test_parse_errors(line: bytes, tag: bytes, message: str) -> None:
    err = error(line)
    assert err.tag == tag
    assert message in err.message
    assert err.status == "BAD"
    assert err.code is None
    assert b"\r" not in err.message.encode() and b"\n" not in err.message.encode()


@pytest.mark.parametrize(("line", "reason"), [
    (b"a SELECT &AOk", "Invalid mailbox name: Unterminated"),
    (b'a SELECT "a&b\xc3\xa9"', "must not contain '&'"),
    (b'a SELECT "x\ty"', "Invalid byte 0x09"),
    (b'a SELECT "\xc3\xa9\ty"', "control character"),
])
def test_a_name_that_is_good_syntax_but_no_valid_name_parses(line: bytes, reason: str) -> None:
    """Not BAD (RFC 3501 §7.1.3): the command parses, its handler answers NO."""
    cmd = parse(line)
    assert isinstance(cmd, Select)
    assert isinstance(cmd.mailbox, UnusableName)
    assert reason in cmd.mailbox.reason


def test_unusable_names_in_rename_and_list_parse_too() -> None:
    rename = parse(b"a RENAME INBOX &Jjo")
    assert isinstance(rename, Rename) and rename.old == "INBOX"
    assert isinstance(rename.new, UnusableName)
    assert "new mailbox name" in rename.new.reason
    listing = parse(b'a LIST &AOk ("&" INBOX)')
    assert isinstance(listing, List)
    assert isinstance(listing.reference, UnusableName)
    assert [isinstance(p, UnusableName) for p in listing.patterns] == [True, False]
    # The syntax around such a name is still checked: an error after it is BAD.
    assert error(b"a SELECT &AOk extra").message == "Unexpected argument after mailbox name"


def test_badcharset_is_no_with_code() -> None:
    err = error(b"A284 SEARCH CHARSET ISO-2022-JP TEXT x")
    assert err == ParseError(
        b"A284", "Unsupported charset ISO-2022-JP", "BADCHARSET (UTF-8 US-ASCII)", "NO"
    )
    assert err.response() == (
        b"A284 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset ISO-2022-JP\r\n"
    )


def test_unknown_special_use_is_no_use_attr() -> None:
    err = error(b"a CREATE x (USE (\\Bogus))")
    assert (err.status, err.code) == ("NO", "USEATTR")
    assert err.message == "Unsupported special-use attribute \\Bogus"


def test_error_on_tagless_line_uses_star() -> None:
    assert error(b"\x01 NOOP").tag == b"*"


def test_nesting_depth_is_bounded() -> None:
    deep = b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200
    assert "Too deeply nested" in error(deep).message
    nots = b"a SEARCH " + b"NOT " * 500 + b"ALL"
    assert "Too deeply nested" in error(nots).message
    ok = b"a SEARCH " + b"NOT " * 30 + b"ALL"
    assert isinstance(parse(ok), Search)


def test_argument_count_is_bounded() -> None:
    many = b"a SEARCH " + b" ".join([b"ALL"] * 20_000)
    assert "Too many arguments" in error(many).message


def test_atom_length_is_bounded() -> None:
    assert "too long" in error(b"a ENABLE " + b"X" * 2000).message


def test_long_sequence_sets_are_fine() -> None:
    numbers = b",".join(b"%d" % n for n in range(1, 20000, 2))
    cmd = parse(b"a UID FETCH " + numbers + b" FLAGS")
    assert isinstance(cmd, Fetch) and len(cmd.seqset.ranges) == 10000


def test_long_initial_response_is_fine() -> None:
    import base64

    token = base64.b64encode(b"k" * 6000)
    cmd = parse(b"a AUTHENTICATE GSSAPI " + token)
    assert isinstance(cmd, Authenticate) and cmd.initial_response == b"k" * 6000


# ---------------------------------------------------------------------------
# SEARCH trees
# ---------------------------------------------------------------------------


def search_criteria(text: bytes) -> SearchKey:
    cmd = parse(b"a SEARCH " + text)
    assert isinstance(cmd, Search)
    return cmd.criteria


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (b"ANSWERED", FlagKey("\\Answered")),
        (b"unanswered", FlagKey("\\Answered", False)),
        (b"DELETED", FlagKey("\\Deleted")),
        (b"UNDELETED", FlagKey("\\Deleted", False)),
        (b"DRAFT", FlagKey("\\Draft")),
        (b"UNDRAFT", FlagKey("\\Draft", False)),
        (b"FLAGGED", FlagKey("\\Flagged")),
        (b"UNFLAGGED", FlagKey("\\Flagged", False)),
        (b"SEEN", FlagKey("\\Seen")),
        (b"UNSEEN", FlagKey("\\Seen", False)),
        (b"RECENT", FlagKey("\\Recent")),
        (b"OLD", FlagKey("\\Recent", False)),
        (b"NEW", AndKey((FlagKey("\\Recent"), FlagKey("\\Seen", False)))),
        (b"KEYWORD $Forwarded", FlagKey("$Forwarded")),
        (b"UNKEYWORD Junk", FlagKey("Junk", False)),
        (b"BCC bob", AddressKey("bcc", "bob")),
        (b"CC bob", AddressKey("cc", "bob")),
        (b'FROM "Bob Smith"', AddressKey("from", "Bob Smith")),
        (b"TO {3+}\r\nb b", AddressKey("to", "b b")),
        (b"HEADER From bob", HeaderKey("from", "bob")),
        (b"SUBJECT \xc3\xa9t\xc3\xa9", HeaderKey("subject", "été")),
        (b"HEADER X-Spam-Flag YES", HeaderKey("x-spam-flag", "YES")),
        (b'HEADER Message-ID ""', HeaderKey("message-id", "")),
        (b"BODY hello", TextKey("BODY", "hello")),
        (b"TEXT hello", TextKey("TEXT", "hello")),
        (b"BEFORE 1-Feb-1994", DateKey("BEFORE", date(1994, 2, 1))),
        (b'ON "01-feb-1994"', DateKey("ON", date(1994, 2, 1))),
        (b"SINCE 29-Feb-2024", DateKey("SINCE", date(2024, 2, 29))),
        (b"SENTBEFORE 1-Jan-2000", DateKey("BEFORE", date(2000, 1, 1), True)),
        (b"SENTON 1-Jan-2000", DateKey("ON", date(2000, 1, 1), True)),
        (b"SENTSINCE 1-Jan-2000", DateKey("SINCE", date(2000, 1, 1), True)),
        (b"LARGER 1024", SizeKey("LARGER", 1024)),
        (b"SMALLER 0", SizeKey("SMALLER", 0)),
        (b"UID 1:*", SequenceKey(ss("1:*"), uid=True)),
        (b"2,4:7,9,12:*", SequenceKey(ss("2,4:7,9,12:*"))),
        (b"*", SequenceKey(ss("*"))),
        (b"MODSEQ 620162338", ModSeqKey(620162338)),
        (b'MODSEQ "/flags/\\\\draft" all 620162338', ModSeqKey(620162338, "/flags/\\draft", "all")),
        (b"NOT SEEN", NotKey(FlagKey("\\Seen"))),
        (b"OR SEEN FLAGGED", OrKey(FlagKey("\\Seen"), FlagKey("\\Flagged"))),
        (b"(SEEN)", FlagKey("\\Seen")),
        (b"((SEEN))", FlagKey("\\Seen")),
        (b"(SEEN FLAGGED)", AndKey((FlagKey("\\Seen"), FlagKey("\\Flagged")))),
        (
            b"OR (FROM a NOT TO b) (OR 1:3 UID 5)",
            OrKey(
                AndKey((AddressKey("from", "a"), NotKey(AddressKey("to", "b")))),
                OrKey(SequenceKey(ss("1:3")), SequenceKey(ss("5"), True)),
            ),
        ),
        (
            b"NOT (DELETED) OR NOT SEEN NOT NOT FLAGGED",
            AndKey((
                NotKey(FlagKey("\\Deleted")),
                OrKey(NotKey(FlagKey("\\Seen")), NotKey(NotKey(FlagKey("\\Flagged")))),
            )),
        ),
    ],
)
def test_search_keys(text: bytes, key: SearchKey) -> None:
    assert search_criteria(text) == key


# ---------------------------------------------------------------------------
# Sequence sets
# ---------------------------------------------------------------------------


def test_sequence_set_parse_and_format() -> None:
    s = ss("1:3,5,7:*,*,9:8")
    assert s.ranges == ((1, 3), (5, 5), (7, None), (None, None), (9, 8))
    assert s.format() == b"1:3,5,7:*,*,9:8"
    assert s.uses_star and not ss("1").uses_star


def test_sequence_set_resolution() -> None:
    assert ss("1:3,5,7:*").resolve(9) == [1, 2, 3, 5, 7, 8, 9]
    assert ss("4:2").resolve(10) == [2, 3, 4]
    assert ss("*").resolve(6) == [6]
    assert ss("1:*").resolve(0) == []
    assert ss("*:4").resolve(2) == [2]  # RFC 3501: n:* includes the last message
    assert ss("5:10,1:6").intervals(100) == [(1, 10)]
    assert ss("1,3,2").intervals(10) == [(1, 3)]
    assert ss("7:9").resolve(5) == []
    assert ss("2:4").contains(3, 10) and not ss("2:4").contains(5, 10)
    assert ss("3:*").contains(10, 10)


def test_sequence_set_matching_uids() -> None:
    uids = [3, 10, 200, 4000]
    assert ss("1:*").matching(uids) == uids
    assert ss("5000:*").matching(uids) == [4000]
    assert ss("4:300").matching(uids) == [10, 200]
    assert ss("1:4294967295").matching([]) == []


def test_sequence_set_of() -> None:
    assert SequenceSet.of([5, 1, 2, 3, 9, 10]).format() == b"1:3,5,9:10"
    with pytest.raises(ValueError):
        SequenceSet.of([])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "Invalid sequence set: 0"),
        ("1:0", "Invalid sequence set: 1:0"),
        ("4294967296", "at most 4294967295"),
        ("99999999999999999999999", "at most"),
        ("", "Invalid sequence set"),
        ("1,", "Invalid sequence set"),
        ("1::2", "Invalid sequence set"),
        ("a", "Invalid sequence set: a"),
        ("-1", "Invalid sequence set"),
        ("$", "SEARCHRES"),
    ],
)
def test_sequence_set_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        ss(text)


# ---------------------------------------------------------------------------
# FETCH attributes
# ---------------------------------------------------------------------------


def body_attr(
    section: FetchSection, partial: tuple[int, int] | None = None, peek: bool = False
) -> FetchAttribute:
    return FetchAttribute("BODY", section, partial, peek)


def fetch_attrs(text: bytes) -> tuple[FetchAttribute, ...]:
    cmd = parse(b"a FETCH 1 " + text)
    assert isinstance(cmd, Fetch)
    return cmd.attributes


@pytest.mark.parametrize(
    ("text", "attr", "response"),
    [
        (b"BODY[]", FetchAttribute("BODY", FetchSection()), b"BODY[]"),
        (b"body.peek[]<0.100>", body_attr(FetchSection(), (0, 100), True), b"BODY[]<0>"),
        (b"BODY[HEADER]", body_attr(FetchSection((), "HEADER")), b"BODY[HEADER]"),
        (b"BODY[1.2.3]", body_attr(FetchSection((1, 2, 3))), b"BODY[1.2.3]"),
        (b"BODY[2.MIME]", body_attr(FetchSection((2,), "MIME")), b"BODY[2.MIME]"),
        (b"BODY[4.1.text]", body_attr(FetchSection((4, 1), "TEXT")), b"BODY[4.1.TEXT]"),
        (
            b"BODY.PEEK[HEADER.FIELDS (DATE From)]<10.20>",
            body_attr(FetchSection((), "HEADER.FIELDS", ("DATE", "From")), (10, 20), True),
            b"BODY[HEADER.FIELDS (DATE From)]<10>",
        ),
        (
            b'BODY[1.HEADER.FIELDS.NOT ("X-A" {3+}\r\nX-B)]',
            body_attr(FetchSection((1,), "HEADER.FIELDS.NOT", ("X-A", "X-B"))),
            b"BODY[1.HEADER.FIELDS.NOT (X-A X-B)]",
        ),
        (b"BINARY[1]", FetchAttribute("BINARY", FetchSection((1,))), b"BINARY[1]"),
        (
            b"BINARY.PEEK[]<5.6>",
            FetchAttribute("BINARY", FetchSection(), (5, 6), True),
            b"BINARY[]<5>",
        ),
        (
            b"BINARY.SIZE[1.2]",
            FetchAttribute("BINARY.SIZE", FetchSection((1, 2))),
            b"BINARY.SIZE[1.2]",
        ),
        (b"RFC822.HEADER", FetchAttribute("RFC822.HEADER"), b"RFC822.HEADER"),
        (b"body", FetchAttribute("BODY"), b"BODY"),
        (b"BodyStructure", FetchAttribute("BODYSTRUCTURE"), b"BODYSTRUCTURE"),
    ],
)
def test_fetch_attributes(text: bytes, attr: FetchAttribute, response: bytes) -> None:
    assert fetch_attrs(text) == (attr,)
    assert response_name(attr) == response


def test_fetch_all_simple_attributes() -> None:
    text = b"(" + b" ".join(n.encode() for n in FETCH_SIMPLE) + b")"
    assert fetch_attrs(text) == tuple(FetchAttribute(n) for n in FETCH_SIMPLE)


def test_fetch_sets_seen() -> None:
    seen = {format_fetch_attribute(a): a.sets_seen for a in fetch_attrs(
        b"(BODY[] BODY.PEEK[] BINARY[1] BINARY.PEEK[1] BINARY.SIZE[1] RFC822 RFC822.TEXT "
        b"RFC822.HEADER BODY FLAGS)"
    )}
    assert seen == {
        b"BODY[]": True, b"BODY.PEEK[]": False, b"BINARY[1]": True, b"BINARY.PEEK[1]": False,
        b"BINARY.SIZE[1]": False, b"RFC822": True, b"RFC822.TEXT": True,
        b"RFC822.HEADER": False, b"BODY": False, b"FLAGS": False,
    }


# ---------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        " 5-Nov-2026 09:03:01 +0000",
        "05-Nov-2026 09:03:01 +0000",
        "5-nov-2026 09:03:01 +0000",
        "5-NOV-2026 09:03:01 +0000",
    ],
)
def test_parse_datetime_lenient_day(text: str) -> None:
    assert parse_datetime(text) == datetime(2026, 11, 5, 9, 3, 1, tzinfo=UTC)


def test_parse_datetime_zone_and_leap_second() -> None:
    parsed = parse_datetime(b"31-Dec-1998 23:59:60 -0330")
    assert parsed.utcoffset() == -timedelta(hours=3, minutes=30)
    assert parsed.second == 59


@pytest.mark.parametrize(
    "text",
    [
        "5-Nov-2026", "5-Nov-2026 9:03:01 +0000", "5-Nov-2026 09:03:01", "5-Nov-2026 09:03:01 0000",
        "5-Nov-2026 24:00:00 +0000", "5-Nov-2026 09:03:01 +2400", "5-Nov-2026 09:03:01 +0060",
        "0-Nov-2026 09:03:01 +0000", "5-Nox-2026 09:03:01 +0000", "5-Nov-0000 09:03:01 +0000",
        "  5-Nov-2026 09:03:01 +0000", "5-Nov-2026 09:03:01 +0000 ",
        "\uff15-Nov-2026 09:03:01 +0000",
    ],
)
def test_parse_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_format_internaldate() -> None:
    dt = datetime(2026, 11, 5, 9, 3, 1, tzinfo=UTC)
    assert format_internaldate(dt) == b" 5-Nov-2026 09:03:01 +0000"
    assert format_internaldate(datetime(2026, 11, 15, 9, 3, 1)) == b"15-Nov-2026 09:03:01 +0000"
    tz = timezone(-timedelta(hours=8, minutes=30))
    assert format_internaldate(datetime(1994, 2, 7, 21, 52, 25, tzinfo=tz)) == (
        b" 7-Feb-1994 21:52:25 -0830"
    )


def test_search_dates() -> None:
    assert parse_date("1-Feb-1994") == date(1994, 2, 1)
    assert parse_date(b"01-FEB-1994") == date(1994, 2, 1)
    assert format_date(date(1994, 2, 1)) == b"1-Feb-1994"
    for bad in ("1-Feb-94", "001-Feb-1994", "1 Feb 1994", "30-Feb-2000", ""):
        with pytest.raises(ValueError):
            parse_date(bad)


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAGMENTS = st.sampled_from([
    b"a ", b"b1 ", b"* ", b"+ ", b" ", b"  ", b"\r\n", b"\n", b"\r", b"{3}\r\n", b"{0+}\r\n",
    b"{2+}\r\n", b"~{1+}\r\n", b"{99999999999}\r\n", b"{5", b"}", b"(", b")", b"((", b"[", b"]",
    b"<", b">", b"<0.5>", b'"', b'\\"', b"\\", b"\x00", b"\xff", b"\xc3\xa9", b"&", b"&AOk-",
    b"NOOP", b"LOGIN", b"SELECT", b"EXAMINE", b"FETCH", b"UID", b"STORE", b"SEARCH", b"LIST",
    b"LSUB", b"STATUS", b"APPEND", b"CREATE", b"COPY", b"MOVE", b"EXPUNGE", b"IDLE", b"DONE",
    b"AUTHENTICATE", b"ID", b"ENABLE", b"RENAME", b"RETURN", b"CHARSET", b"UTF-8", b"NIL",
    b"1", b"0", b"1:*", b"*", b"2,3:4", b"4294967296", b"$", b"FLAGS", b"+FLAGS.SILENT", b"\\Seen",
    b"\\Recent", b"BODY", b"BODY.PEEK", b"BINARY.SIZE", b"HEADER.FIELDS", b"1.2.MIME", b"TEXT",
    b"NOT", b"OR", b"ALL", b"SINCE", b"1-Feb-2020", b"MODSEQ", b"CHANGEDSINCE", b"VANISHED",
    b"QRESYNC", b"CONDSTORE", b"USE", b"\\Sent", b"STATUS (MESSAGES)", b"INBOX", b"x",
])


def drive(reader: CommandReader, chunks: list[bytes]) -> list[ReaderEvent]:
    """Feed chunks as a protocol would, releasing holds, parsing every command."""
    seen: list[ReaderEvent] = []
    for i, chunk in enumerate(chunks):
        events = reader.feed(chunk)
        while True:
            seen += events
            for event in events:
                if isinstance(event, RawCommand):
                    result = parse_command(event)
                    assert isinstance(result, (Command, ParseError))
                    if isinstance(result, ParseError):
                        result.response()
            if not reader.held:
                break
            events = reader.expect_line() if i % 2 else reader.resume()
            if not events:
                break
        if not reader.held:
            assert reader.buffered <= reader.max_line + 1
    return seen


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_random_bytes_never_raise(chunks: list[bytes]) -> None:
    drive(CommandReader(max_line=64, max_literal=40, max_other_literal=20, max_command=200), chunks)


@FUZZ
@given(st.lists(FRAGMENTS, max_size=40), st.data())
def test_fuzz_imapish_never_raise(fragments: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(fragments)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    drive(CommandReader(max_line=100, max_literal=50, max_other_literal=10), chunks)
    # The same soup as a single command handed straight to the parser.
    result = parse_command(stream)
    assert isinstance(result, (Command, ParseError))


@FUZZ
@given(st.lists(FRAGMENTS, max_size=30))
def test_fuzz_parser_on_single_lines(fragments: list[bytes]) -> None:
    line = b"a " + b" ".join(f for f in fragments if b"\n" not in f and b"\r" not in f)
    result = parse_command(RawCommand(b"a", (line,)))
    assert isinstance(result, (Command, ParseError))


# -- strategies for valid values -------------------------------------------

ATOM_ALPHABET = "".join(
    c for c in string.printable if c not in '(){ %*"\\]' and c.isprintable() and c != " "
)
atoms = st.text(ATOM_ALPHABET, min_size=1, max_size=12)
keywords = atoms
seq_values = st.one_of(st.none(), st.integers(1, MAX_NUMBER), st.integers(1, 20))
seqsets = st.lists(st.tuples(seq_values, seq_values), min_size=1, max_size=5).map(
    lambda ranges: SequenceSet(tuple(ranges))
)
texts = st.text(max_size=20)
field_names = st.text(string.ascii_letters + string.digits + "-_ ", min_size=1, max_size=12).map(
    str.lower
)
mailbox_names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16).map(
    lambda n: "INBOX" if n.isascii() and n.upper() == "INBOX" else n
)
system_flags = st.sampled_from(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"])
store_flags = st.lists(st.one_of(system_flags, keywords), max_size=5).map(tuple)
mod_seqs = st.integers(0, MAX_NUMBER64)

search_leaves = st.one_of(
    st.just(AllKey()),
    st.builds(FlagKey, st.one_of(system_flags, st.just("\\Recent"), keywords), st.booleans()),
    st.builds(HeaderKey, field_names, texts),
    st.builds(AddressKey, st.sampled_from(["bcc", "cc", "from", "to"]), texts),
    st.builds(TextKey, st.sampled_from(["BODY", "TEXT"]), texts),
    st.builds(DateKey, st.sampled_from(["BEFORE", "ON", "SINCE"]), st.dates(), st.booleans()),
    st.builds(SizeKey, st.sampled_from(["LARGER", "SMALLER"]), mod_seqs),
    st.builds(SequenceKey, seqsets, st.booleans()),
    st.builds(ModSeqKey, mod_seqs),
    st.builds(
        ModSeqKey, mod_seqs, st.one_of(system_flags, keywords).map(lambda f: "/flags/" + f),
        st.sampled_from(["priv", "shared", "all"]),
    ),
)
search_trees = st.recursive(
    search_leaves,
    lambda kids: st.one_of(
        st.builds(NotKey, kids),
        st.builds(OrKey, kids, kids),
        st.lists(kids, min_size=2, max_size=4).map(lambda ks: AndKey(tuple(ks))),
    ),
    max_leaves=12,
)

part_numbers = st.lists(st.integers(1, MAX_NUMBER), max_size=3).map(tuple)
header_lists = st.lists(
    st.text(string.printable.strip() + " ", min_size=1, max_size=10), min_size=1, max_size=3
).map(tuple)


@st.composite
def body_sections(draw: st.DrawFn) -> FetchSection:
    parts = draw(part_numbers)
    choices = [None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"]
    text = draw(st.sampled_from([*choices, "MIME"] if parts else choices))
    headers = draw(header_lists) if text and text.startswith("HEADER.FIELDS") else ()
    return FetchSection(parts, text, headers)


partials = st.one_of(
    st.none(), st.tuples(st.integers(0, MAX_NUMBER), st.integers(1, MAX_NUMBER))
)
fetch_attributes = st.one_of(
    st.sampled_from(FETCH_SIMPLE).map(FetchAttribute),
    st.builds(FetchAttribute, st.just("BODY"), body_sections(), partials, st.booleans()),
    st.builds(
        FetchAttribute, st.just("BINARY"), part_numbers.map(FetchSection), partials, st.booleans()
    ),
    st.builds(FetchAttribute, st.just("BINARY.SIZE"), part_numbers.map(FetchSection)),
)
tags = st.text(ATOM_ALPHABET.replace("+", "") + "]", min_size=1, max_size=8).map(str.encode)
datetimes = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)


@st.composite
def list_commands(draw: st.DrawFn) -> List:
    tag = draw(tags)
    if draw(st.booleans()):
        return List(tag, draw(mailbox_names), (draw(mailbox_names),), lsub=draw(st.booleans()))
    selection = tuple(draw(st.lists(
        st.sampled_from(["SUBSCRIBED", "REMOTE", "SPECIAL-USE"]), max_size=3, unique=True
    )))
    if set(selection) - {"REMOTE"} and draw(st.booleans()):
        selection += ("RECURSIVEMATCH",)  # needs a base option besides REMOTE
    returns = list(draw(st.lists(
        st.sampled_from(["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"]), max_size=3, unique=True
    )))
    status = None
    if draw(st.booleans()):
        status = tuple(draw(st.lists(st.sampled_from(STATUS_ITEMS), min_size=1, max_size=4)))
        returns.insert(draw(st.integers(0, len(returns))), "STATUS")
    patterns = tuple(draw(st.lists(mailbox_names, min_size=1, max_size=3)))
    return List(
        tag, draw(mailbox_names), patterns, selection, tuple(returns), status, extended=True
    )


qresyncs = st.builds(
    QResync,
    st.integers(1, MAX_NUMBER),
    mod_seqs,
    st.one_of(st.none(), seqsets),
    st.one_of(st.none(), st.tuples(seqsets, seqsets)),
)

commands = st.one_of(
    st.builds(Login, tags, st.binary(max_size=20), st.binary(max_size=20)),
    st.builds(Authenticate, tags, atoms.map(str.upper), st.one_of(st.none(), st.binary())),
    st.builds(Select, tags, mailbox_names, st.booleans(), st.booleans(), st.none() | qresyncs),
    st.builds(
        Create, tags, mailbox_names,
        st.lists(st.sampled_from(["\\Sent", "\\Trash", "\\Junk", "\\All"]), max_size=2).map(tuple),
    ),
    st.builds(Delete, tags, mailbox_names),
    st.builds(Rename, tags, mailbox_names, mailbox_names),
    st.builds(Subscribe, tags, mailbox_names),
    st.builds(Unsubscribe, tags, mailbox_names),
    list_commands(),
    st.builds(Status, tags, mailbox_names, st.lists(
        st.sampled_from(STATUS_ITEMS), min_size=1, max_size=5
    ).map(tuple)),
    st.builds(Append, tags, mailbox_names, st.lists(
        st.builds(
            AppendMessage, st.binary(max_size=30), store_flags, st.none() | datetimes,
            st.booleans(),
        ),
        min_size=1, max_size=3,
    ).map(tuple)),
    st.builds(Expunge, tags, st.none() | seqsets),
    st.builds(
        Search, tags, search_trees, st.sampled_from([None, "UTF-8", "US-ASCII"]), st.booleans(),
        st.none() | st.lists(
            st.sampled_from(SEARCH_RETURN_OPTIONS), min_size=1, max_size=4, unique=True
        ).map(tuple),
    ),
    st.builds(
        lambda tag, seqset, attrs, uid, changed, vanished: Fetch(
            tag, seqset, attrs, uid, changed, vanished and uid and changed is not None
        ),
        tags, seqsets, st.lists(fetch_attributes, min_size=1, max_size=5).map(tuple),
        st.booleans(), st.none() | mod_seqs, st.booleans(),
    ),
    st.builds(
        Store, tags, seqsets, st.sampled_from(["", "+", "-"]), st.booleans(), store_flags,
        st.booleans(), st.none() | mod_seqs,
    ),
    st.builds(Copy, tags, seqsets, mailbox_names, st.booleans()),
    st.builds(Move, tags, seqsets, mailbox_names, st.booleans()),
    st.builds(Id, tags, st.none() | st.lists(
        st.tuples(texts, st.none() | texts), max_size=4
    ).map(tuple)),
    st.builds(Enable, tags, st.lists(atoms.map(str.upper), min_size=1, max_size=3).map(tuple)),
    st.sampled_from([Capability, Noop, Logout, StartTLS, Check, Close, Idle, Namespace,
                     Unselect]).flatmap(lambda cls: tags.map(cls)),
)


@FUZZ
@given(seqsets)
def test_sequence_set_round_trip(seqset: SequenceSet) -> None:
    assert SequenceSet.parse(seqset.format()) == seqset


@FUZZ
@given(seqsets, st.integers(0, 50))
def test_sequence_set_resolution_agrees_with_contains(seqset: SequenceSet, top: int) -> None:
    resolved = seqset.resolve(top)
    assert resolved == sorted(set(resolved))
    assert resolved == [n for n in range(1, top + 1) if seqset.contains(n, top)]
    assert seqset.matching(range(1, top + 1)) == resolved


@FUZZ
@given(seqsets, st.sets(st.integers(1, 60)))
def test_sequence_set_matching_of_sorted_uids_agrees(seqset: SequenceSet, uids: set[int]) -> None:
    ordered = sorted(uids)
    expected = [u for u in ordered if seqset.contains(u, ordered[-1])] if ordered else []
    assert seqset.matching_sorted(ordered) == expected
    assert seqset.matching(reversed(ordered)) == expected


@FUZZ
@given(search_trees, st.booleans())
def test_search_tree_round_trip(tree: SearchKey, literal_plus: bool) -> None:
    cmd = Search(b"t", tree, "UTF-8")
    assert parse_command(format_command(cmd, literal_plus=literal_plus)) == cmd


@FUZZ
@given(st.lists(fetch_attributes, min_size=1, max_size=4))
def test_fetch_attribute_round_trip(attrs: list[FetchAttribute]) -> None:
    cmd = Fetch(b"t", SequenceSet(((1, None),)), tuple(attrs))
    assert parse_command(format_command(cmd)) == cmd
    for attr in attrs:
        name = response_name(attr)
        assert b".PEEK" not in name
        assert name.startswith(attr.name.encode())


@FUZZ
@given(mailbox_names)
def test_mailbox_name_round_trip(name: str) -> None:
    for cmd in (Select(b"t", name), Create(b"t", name), Copy(b"t", SequenceSet(((1, 1),)), name)):
        assert parse_command(format_command(cmd)) == cmd


@FUZZ
@given(commands, st.booleans())
def test_command_round_trip(cmd: Command, literal_plus: bool) -> None:
    assert parse_command(format_command(cmd, literal_plus=literal_plus)) == cmd


@FUZZ
@given(st.lists(commands, min_size=1, max_size=4), st.data())
def test_command_stream_round_trip_in_random_chunks(
    cmds: list[Command], data: st.DataObject
) -> None:
    stream = b"".join(format_command(c, literal_plus=data.draw(st.booleans())) for c in cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = CommandReader(hold_verbs=frozenset())
    events: list[ReaderEvent] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += reader.feed(stream[a:b])
    parsed = [parse_command(e) for e in events if isinstance(e, RawCommand)]
    assert parsed == cmds
    assert all(isinstance(e, (RawCommand, Continue)) for e in events)


@FUZZ
@given(datetimes)
def test_internaldate_round_trip(dt: datetime) -> None:
    text = format_internaldate(dt)
    assert len(text) == 26
    assert parse_datetime(text) == dt
    assert parse_datetime(text).utcoffset() == dt.utcoffset()
