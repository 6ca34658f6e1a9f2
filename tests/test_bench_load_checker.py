"""The state checker of ``scripts/bench load`` counts exactly the violations a stream has.

Synthetic, hand-written response streams (correct ones and broken ones, each breaking one rule
of RFC 3501 / 9051) are fed to the checker as a session would feed them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_load_checker import RecentRegistry, SessionChecker, ViolationLog
from bench_load_conn import command_name
from bench_load_wire import ParseError, Untagged, parse_response, parse_values, read_response

SELECT_3 = ["> SELECT INBOX", "* FLAGS (\\Seen \\Deleted)", "* 3 EXISTS", "* 0 RECENT",
            "* OK [UIDVALIDITY 7] UIDs valid", "* OK [UIDNEXT 14] next", "t OK [READ-WRITE] done",
            "> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 10 FLAGS (\\Seen))",
            "* 2 FETCH (UID 11 FLAGS ())", "* 3 FETCH (UID 13 FLAGS ($Label1))", "t OK done"]
EXAMINE_3 = [s.replace("SELECT", "EXAMINE").replace("READ-WRITE", "READ-ONLY") for s in SELECT_3]


def session(name: str = "a", registry: RecentRegistry | None = None,
            log: ViolationLog | None = None) -> SessionChecker:
    return SessionChecker(name, "bench1", registry or RecentRegistry(), log or ViolationLog())


def play(checker: SessionChecker, steps: list[str]) -> dict[str, int]:
    """``> TEXT`` sends a command (``!`` at the end: it is a verifying FETCH 1:*); anything
    else is a response line from the server. Returns the violation counts so far."""
    for step in steps:
        if step.startswith("> "):
            text = step[2:].rstrip("!")
            words = text.split()
            mailbox = words[1] if command_name(text) in ("SELECT", "EXAMINE") else None
            checker.sent(text)
            checker.begin(command_name(text), mailbox, verify=step.endswith("!"))
        else:
            checker.feed(step.encode() + b"\r\n")
    return dict(checker.log.counts)


def test_a_correct_stream_has_no_violation() -> None:
    c = session()
    counts = play(c, [*SELECT_3,
                      "> NOOP", "* 2 EXPUNGE", "* 3 EXISTS", "* 3 FETCH (FLAGS (\\Seen))",
                      "* 1 FETCH (FLAGS ())", "t OK NOOP done",
                      "> UID FETCH 13:* (UID FLAGS)", "* 2 FETCH (UID 13 FLAGS ($Label1))",
                      "* 3 FETCH (UID 14 FLAGS (\\Seen))", "t OK done",
                      "> SEARCH UNSEEN", "* SEARCH 1 2", "t OK done",
                      "> IDLE", "+ idling", "* 1 EXPUNGE", "* 3 EXISTS", "t OK done",
                      "> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 13 FLAGS ())",
                      "* 2 FETCH (UID 14 FLAGS (\\Seen))", "* 3 FETCH (UID 15 FLAGS ())",
                      "t OK done"])
    assert counts == {}
    assert c.count == 3 and [c.uid_of(n) for n in (1, 2, 3)] == [13, 14, 15]


def test_fetch_above_the_count() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> NOOP", "* 4 FETCH (FLAGS (\\Seen))", "t OK done"]) == {
        "fetch_above_count": 1}


def test_exists_skipped_after_expunge_and_new_mail() -> None:
    # Defect 1 of issue 11: one update carries an EXPUNGE and a new message, no EXISTS.
    c = session()
    counts = play(c, [*SELECT_3, "> NOOP", "* 1 EXPUNGE", "t OK done",
                      "> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 11 FLAGS ())",
                      "* 2 FETCH (UID 13 FLAGS ())", "* 3 FETCH (UID 14 FLAGS ())", "t OK done"])
    assert counts == {"fetch_above_count": 1, "count_mismatch": 1}
    # The checker adopted the server's view: a consistent stream after it adds nothing.
    assert c.count == 3 and c.uid_of(3) == 14
    assert play(c, ["> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 11 FLAGS ())",
                    "* 2 FETCH (UID 13 FLAGS ())", "* 3 FETCH (UID 14 FLAGS ())",
                    "t OK done"]) == counts


def test_verify_allows_exists_during_fetch_and_expunged_messages_left_out_with_no() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 10 FLAGS ())",
                    "* 2 FETCH (UID 11 FLAGS ())", "* 3 FETCH (UID 13 FLAGS ())",
                    "* 4 EXISTS", "t OK done",
                    "> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 10 FLAGS ())",
                    "* 3 FETCH (UID 13 FLAGS ())",
                    "t NO [EXPUNGEISSUED] Some messages were expunged"]) == {}
    # ... but an OK with a message left out is a count the server does not share.
    assert play(c, ["> FETCH 1:* (UID FLAGS)!", "* 1 FETCH (UID 10 FLAGS ())",
                    "* 2 FETCH (UID 11 FLAGS ())", "* 3 FETCH (UID 13 FLAGS ())",
                    "t OK done"]) == {"count_mismatch": 1}


def test_exists_shrinking_and_expunge_out_of_range() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> NOOP", "* 2 EXISTS", "* 3 EXPUNGE", "* 0 EXPUNGE",
                    "t OK done"]) == {"exists_shrank": 1, "expunge_out_of_range": 2}
    assert c.count == 2


def test_expunge_during_fetch_store_search_but_not_their_uid_forms() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> UID FETCH 1:* (FLAGS)", "* 3 EXPUNGE", "t OK done",
                    "> STORE 1 +FLAGS (\\Seen)", "* 1 EXPUNGE", "t OK done",
                    "> UID STORE 11 +FLAGS (\\Seen)", "* 1 EXPUNGE", "t OK done"]) == {
        "expunge_during_fetch_store_search": 1}
    assert c.count == 0


def test_uid_map_rules() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> NOOP", "* 2 FETCH (UID 12 FLAGS ())", "t OK done",
                    "> NOOP", "* 1 EXPUNGE", "* 3 EXISTS", "* 3 FETCH (UID 9 FLAGS ())",
                    "* 3 FETCH (UID 10 FLAGS ())", "t OK done"]) == {
        "uid_changed": 1, "uids_not_ascending": 1, "expunged_uid_returned": 1}
    # Far from the nearest known message, below and above.
    c = session()
    assert play(c, [*SELECT_3, "> NOOP", "* 6 EXISTS", "* 6 FETCH (UID 12 FLAGS ())",
                    "* 5 FETCH (UID 20 FLAGS ())", "* 4 FETCH (UID 20 FLAGS ())",
                    "* 4 FETCH (UID 19 FLAGS ())", "t OK done"]) == {"uids_not_ascending": 2}


def test_recent_in_two_read_write_sessions() -> None:
    registry, log = RecentRegistry(), ViolationLog()
    recent = ["> NOOP", "* 4 EXISTS", "t OK done", "> FETCH 4 (UID FLAGS)",
              "* 4 FETCH (UID 14 FLAGS (\\Recent))", "t OK done"]
    a, b, examiner = (session(n, registry, log) for n in ("a", "b", "e"))
    assert play(a, [*SELECT_3, *recent]) == {}
    # EXAMINE may show \Recent without taking it; the same connection selecting again is
    # not a second session to the checker.
    assert play(examiner, EXAMINE_3 + recent) == {}
    assert play(a, [*SELECT_3, *recent]) == {}
    assert play(b, [*SELECT_3, *recent]) == {"recent_in_two_sessions": 1}
    # Known by MSN first, its UID learned later: claimed then.
    c = session("c", registry, log)
    assert play(c, [*SELECT_3, "> NOOP", "* 4 EXISTS", "* 4 FETCH (FLAGS (\\Recent))",
                    "t OK done"]) == {"recent_in_two_sessions": 1}
    assert play(c, ["> FETCH 4 (UID)", "* 4 FETCH (UID 14)", "t OK done"]) == {
        "recent_in_two_sessions": 2}
    # Another UIDVALIDITY is another mailbox.
    d = session("d", registry, log)
    assert play(d, [s.replace("UIDVALIDITY 7", "UIDVALIDITY 8") for s in SELECT_3]
                + recent) == {"recent_in_two_sessions": 2}
    assert log.examples[0]["kind"] == "recent_in_two_sessions"
    assert "C: FETCH 4 (UID FLAGS)" in log.examples[0]["recent_commands"]


def test_select_rules_and_updates_without_a_mailbox() -> None:
    c = session()
    assert play(c, ["> SELECT INBOX", "* OK [UIDVALIDITY 3] x", "t OK done",
                    "> SELECT Nowhere", "t NO no such mailbox", "> NOOP", "* 1 EXISTS",
                    "* 1 FETCH (FLAGS ())", "t OK done"]) == {
        "select_without_exists": 1, "update_while_not_selected": 2}


def test_search_results_above_the_count() -> None:
    c = session()
    assert play(c, [*SELECT_3, "> SEARCH ALL", "* SEARCH 1 2 3 4", "t OK done",
                    "> UID SEARCH ALL", "* SEARCH 10 11 13", "t OK done"]) == {
        "search_above_count": 1}


@pytest.mark.parametrize("line", [
    "* 3 FROB", "* 1 FETCH (UID)", "* 1 FETCH (UID 5 FLAGS (\\Seen)", "* 1 FETCH (UID x)",
    "* OK [UIDVALIDITY 1 text", "* 0 FETCH (FLAGS ())", "* 2 EXISTS now", "* FLAGS \\Seen",
    "* SEARCH 1 two", "* 1 FETCH (BODY[] {10}\r\nab)", 'A1 MAYBE done', "* WHAT",
    '* 1 FETCH (ENVELOPE ("a\\b"))',
])
def test_unparseable_responses(line: str) -> None:
    c = session()
    play(c, SELECT_3)
    before = c.count
    c.feed(line.encode() + b"\r\n")
    assert dict(c.log.counts) == {"unparseable_response": 1}
    assert c.count == before


def test_parser_reads_literals_sections_and_nil() -> None:
    body = b"a)b(c\r\n{3}\r\n"
    r = parse_response(b"* 2 FETCH (UID 9 BODY[HEADER.FIELDS (FROM TO)]<0> {%d}\r\n%s"
                       b" FLAGS (\\Seen NIL) X-GM NIL)\r\n" % (len(body), body))
    assert isinstance(r, Untagged) and r.number == 2 and r.uid == 9
    assert r.flags == ["\\Seen", "NIL"]
    assert r.values[3] == body and r.values[-1] is None
    assert parse_values(b'"q \\" \\\\" (a (b)) NIL') == ['q " \\', ["a", ["b"]], None]
    with pytest.raises(ParseError):
        parse_values(b"(a))")


def test_reader_returns_whole_responses_with_literals() -> None:
    async def read_all() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"* 1 FETCH (BODY[] {4}\r\n}\r\n\r UID 1)\r\n* 2 EXISTS\r\n")
        reader.feed_eof()
        out = [await read_response(reader), await read_response(reader)]
        with pytest.raises(ConnectionError):
            await read_response(reader)
        return out

    first, second = asyncio.run(read_all())
    assert first == b"* 1 FETCH (BODY[] {4}\r\n}\r\n\r UID 1)\r\n"
    assert second == b"* 2 EXISTS\r\n"
    assert parse_response(first).uid == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("line", [
    "* 1 FETCH (UID 5 FLAGS (\\Seen $Label1))", "* 12 FETCH (FLAGS ())",
    "* 3 FETCH (FLAGS (\\Deleted NIL nil) UID 77)", "* 3 FETCH (FLAGS (\\Recent))",
    "* 0 FETCH (UID 5 FLAGS ())", "* 1 FETCH (UID 0 FLAGS ())", "* 1 FETCH (UID 5 FLAGS (a  b))",
    "* 1 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (9))", "* 01 FETCH (FLAGS ())",
])
def test_fast_fetch_path_agrees_with_the_full_parser(line: str) -> None:
    raw = line.encode() + b"\r\n"
    outcomes = []
    for fast in (True, False):
        try:
            outcomes.append(parse_response(raw, fast=fast))
        except ParseError:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
