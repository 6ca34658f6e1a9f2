"""Protocol fuzzing against a live server: IMAP, POP3, SMTP and LMTP.

One server process for the module, with users that have messages. Every Hypothesis
example is one case: grammar-aware command streams (tags, atoms, quoted strings with
escapes, literals of right and wrong lengths, sequence sets, nested lists, FETCH items,
SEARCH programs, SASL blobs, odd addresses and bodies, over-long lines, random bytes)
or byte-level mutations (flip, insert, delete, duplicate, splice) of valid sessions. A
case connects, sends the stream in random chunks, sends a sentinel command, reads with a
short timeout and closes. After every case a fresh connection must get a greeting and a
NOOP answered (or the test fails at once, naming the case), and the case must not have
put a Traceback or an ERROR record into the server log, nor drawn an "Internal server
error" or a malformed SMTP reply: such findings are collected, and the test fails at its
end listing them with the cases that caused them (``KNOWN_PROBLEMS`` lists findings that
a strict-xfail regression test already pins, so that the fuzzing can go on past them).
At the end of the module, sessions established before the fuzzing must still work and
the whole log must be clean.

The server answers failed logins after 20 ms instead of 0.5 s (``[auth] failure_delay``).
Authenticated IMAP and POP3 cases start on a logged-in connection. A login costs about
50 ms of argon2, so such a connection is reused for up to ``REUSE`` cases when the
previous case left it answering its sentinel (every case first resets the state with
SELECT or UNSELECT); the others open and close their own connection.

Sizes: ``CI_EXAMPLES`` per test (a few thousand in all, in well under two minutes);
``MAILSTEAD_FUZZ_EXAMPLES=N`` sets every test to N examples; ``--runslow`` adds the
``long`` variants (``LONG_FACTOR`` times as many, seeded by ``MAILSTEAD_FUZZ_SEED`` or at
random, the seed is printed). The case counts per protocol are printed at the end of the
run (terminal summary) and recorded as the ``fuzz_cases`` property of each test.
"""

from __future__ import annotations

import base64
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import fuzzlib as F
from conftest import ServerProcess

# --- sizes --------------------------------------------------------------------------------
CI_EXAMPLES = {
    "imap-nonauth": 450,
    "imap-auth": 250,
    "imap-selected": 350,
    "imap-mut-nonauth": 200,
    "imap-mut-auth": 120,
    "imap-mut-selected": 200,
    "pop3-auth": 350,
    "pop3-trans": 200,
    "pop3-mut-auth": 150,
    "pop3-mut-trans": 150,
    "smtp": 350,
    "smtp-mut": 200,
    "lmtp": 250,
    "lmtp-mut": 150,
}
LONG_FACTOR = 20
REUSE = 4  # cases one logged-in connection may serve
MAX_LINE = 8192  # [limits] max_line_length of the fuzz server (smaller: cheaper over-long lines)
MAX_MESSAGE = 1_000_000

MODES = [
    pytest.param("ci", id="ci"),
    pytest.param("long", id="long", marks=pytest.mark.slow),
]

# Server problems already pinned by a strict-xfail regression test: (log regex, test name).
# The fuzzer keeps running past them, so it can find the next bug.
KNOWN_PROBLEMS: list[tuple[str, str]] = []


def examples(name: str, mode: str) -> int:
    env = os.environ.get("MAILSTEAD_FUZZ_EXAMPLES")
    if env:
        return max(1, int(env))
    n = CI_EXAMPLES[name]
    return n * LONG_FACTOR if mode == "long" else n


# --- a case ---------------------------------------------------------------------------------
def _show(data: bytes) -> str:
    """A Python expression for ``data`` with long runs folded (``b'x' * 9000``)."""
    parts: list[str] = []
    i = 0
    plain = bytearray()
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= 40:
            if plain:
                parts.append(repr(bytes(plain)))
                plain.clear()
            parts.append(f"{bytes([data[i]])!r} * {j - i}")
        else:
            plain += data[i:j]
        i = j
    if plain or not parts:
        parts.append(repr(bytes(plain)))
    return " + ".join(parts)


@dataclass
class Case:
    data: bytes
    cuts: list[float] = field(default_factory=list)
    pause: int = 0

    def chunks(self) -> list[bytes]:
        return F.split_chunks(self.data, self.cuts)

    def __repr__(self) -> str:
        return f"Case(data={_show(self.data)}, cuts={self.cuts!r}, pause={self.pause})"


def j(*parts: bytes | st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Concatenate byte strategies (plain bytes stand for themselves)."""
    return st.tuples(*(p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts)).map(
        b"".join
    )


def chars(alphabet: bytes, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map(bytes)


def joined(item: st.SearchStrategy[bytes], sep: bytes = b" ", min_size: int = 0,
           max_size: int = 4) -> st.SearchStrategy[bytes]:
    return st.lists(item, min_size=min_size, max_size=max_size).map(sep.join)


cuts = st.lists(st.floats(0, 1, allow_nan=False), max_size=6)
pauses = st.sampled_from([0, 0, 0, 1, 4])
terminators = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"", b"\r\r\n", b" \r\n"])
garbage = st.one_of(
    st.binary(min_size=1, max_size=40),
    chars(bytes(range(0x20, 0x7F)), 1, 40),
    st.sampled_from([b"\x00", b"\xff\xfe", b"\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01",
                     b"GET / HTTP/1.0", b"\x04", b"\x1b[A"]),
)
INTERESTING = [
    b"{", b"}", b"{0}\r\n", b"{4294967296}\r\n", b"{5+}\r\n", b"~{3}\r\n", b'"', b"\\", b"(",
    b")", b"*", b"%", b"\x00", b"\r", b"\n", b"\r\n", b"\xff", b"4294967295", b"0", b"-1",
    b":", b",", b"$", b"[", b"]", b"<", b">", b" ", b"\t", b".", b"\r\n.\r\n", b"A" * 64,
    b"=", b"@", b"+", b"\xc3\xa9",
]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> Case:
    """1-4 valid streams glued together, then 1-8 byte-level mutations."""
    seeds = draw(st.lists(st.sampled_from(corpus), min_size=1, max_size=4))
    data = bytearray(b"".join(seeds))
    ops = draw(st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "dup", "interesting", "crlf",
                             "truncate", "repeat"]),
            st.floats(0, 1, allow_nan=False), st.integers(1, 24),
            st.binary(min_size=1, max_size=8), st.sampled_from(INTERESTING)),
        min_size=1, max_size=8))
    for op, where, n, payload, token in ops:
        pos = min(int(where * len(data)), len(data))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << (n % 8)
        elif op == "insert":
            data[pos:pos] = payload
        elif op == "delete":
            del data[pos : pos + n]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + n]
        elif op == "interesting":
            data[pos : pos + (n % 3)] = token
        elif op == "crlf":
            data[pos:pos] = b"\r\n"
        elif op == "truncate":
            del data[pos:]
        elif op == "repeat":
            data[pos:pos] = bytes(data[pos : pos + 8]) * (n * 4)
    return Case(bytes(data), draw(cuts), draw(pauses))


def stream_of(items: st.SearchStrategy[bytes], max_items: int = 6) -> st.SearchStrategy[Case]:
    @st.composite
    def build(draw: st.DrawFn) -> Case:
        out = bytearray()
        for item in draw(st.lists(items, min_size=1, max_size=max_items)):
            out += item + draw(terminators)
        return Case(bytes(out), draw(cuts), draw(pauses))

    return build()


# --- IMAP grammar ---------------------------------------------------------------------------
# Most choices are valid (so that cases get past the parser and into the handlers and the
# store); one in four or so is odd.
def mostly(valid: st.SearchStrategy[bytes], odd: st.SearchStrategy[bytes]
           ) -> st.SearchStrategy[bytes]:
    return st.one_of(valid, valid, valid, odd)


ATOM_ALPHABET = bytes(c for c in range(0x21, 0x7F) if c not in b'(){ %*"\\]')
atom = chars(ATOM_ALPHABET, 1, 12)
small_numbers = st.integers(0, 40).map(lambda n: str(n).encode())
msg_numbers = st.integers(1, 8).map(lambda n: str(n).encode())
numbers = mostly(
    small_numbers,
    st.sampled_from([b"0", b"4294967295", b"4294967296", b"18446744073709551615",
                     b"9223372036854775808", b"99999999999999999999999", b"-1", b"01", b"1e3",
                     b""]),
)
tags = mostly(
    st.integers(0, 999).map(lambda n: b"A%d" % n),
    st.one_of(atom, st.sampled_from([b"*", b"+", b"", b"a{1}", b"x]", b"A" * 300, b"\xff",
                                     b't"', b"t%", b"t(", b".", b"UID"])),
)
quoted_piece = st.one_of(
    chars(bytes(c for c in range(0x20, 0x7F) if c not in b'"\\'), 0, 10),
    st.sampled_from([b'\\"', b"\\\\", b"\\x", b"\\", b"\xc3\xa9", b"\x00", b"\r", b"\n",
                     b"\x7f", b"\xff", b'"']),
)
quoted = j(b'"', joined(quoted_piece, b"", 0, 5), st.sampled_from([b'"'] * 6 + [b""]))


@st.composite
def literal(draw: st.DrawFn, data: st.SearchStrategy[bytes] | None = None) -> bytes:
    body = draw(data if data is not None else st.one_of(st.binary(max_size=40), atom))
    kind = draw(st.sampled_from(["sync", "sync", "plus", "plus", "plus", "binary", "binplus"]))
    delta = draw(st.sampled_from([0] * 12 + [-1, 1, 3, -3, 40]))
    size = str(max(0, len(body) + delta)).encode()
    if draw(st.integers(0, 24)) == 0:
        size = draw(st.sampled_from([
            b"4294967296", b"99999999999999999999999", str(MAX_MESSAGE + 1).encode(), b"",
            b"-1", b"00", b"1 ",
        ]))
    plus = b"+" if kind in ("plus", "binplus") else b""
    tilde = b"~" if kind.startswith("bin") else b""
    return tilde + b"{" + size + plus + b"}\r\n" + body


astring = st.one_of(atom, atom, quoted, literal())
mailbox = mostly(
    st.sampled_from([b"INBOX", b"Fuzz", b"Fuzz/Sub", b'"Fuzz Box"', b"&AOk-t&AOk-", b"Trash",
                     b"INBOX/Child", b"inbox", b'"Fuzz/Sub/Deep"', b"{4+}\r\nFuzz"]),
    st.one_of(
        st.sampled_from([
            b"&Jjo", b"&-", b'"a/../b"', b"..", b'"\x01x"', b'""', b"*", b"%", b"Fuzz/", b"/",
            b'"' + b"m" * 300 + b'"', b'"\xc3\xa9t\xc3\xa9"', b"Fuzz%", b'"/".join',
            b'"' + b"d/" * 40 + b'"',
        ]),
        astring,
    ),
)
flag = mostly(
    st.sampled_from([b"\\Seen", b"\\Deleted", b"\\Flagged", b"\\Answered", b"\\Draft",
                     b"$Junk", b"$Forwarded", b"kw1", b"$MDNSent"]),
    st.one_of(st.sampled_from([b"\\Recent", b"\\*", b"\\", b"\\Bogus", b"(", b"\\Seen\\Deleted",
                               b"NIL"]), atom),
)
flag_list = mostly(
    j(b"(", joined(flag), b")"),
    st.one_of(flag, st.sampled_from([b"(", b")", b"((\\Seen))", b"(\\Seen"])),
)
date = mostly(
    st.sampled_from([b"1-Jan-2024", b'"01-Feb-2023"', b"29-Feb-2024", b"01-jan-1900"]),
    st.sampled_from([b"32-Jan-2024", b"1-Foo-2024", b"1-Jan-99999", b"", b"NIL", b'"1-Jan-2024',
                     b"29-Feb-2023"]),
)
date_time = mostly(
    st.sampled_from([b'"01-Jan-2024 10:00:00 +0000"', b'" 1-Jan-2024 10:00:00 -1200"']),
    st.sampled_from([
        b'"31-Feb-2024 25:61:61 +9999"', b'"1-Jan-2024"', b"NIL", b'"' + b"9" * 40 + b'"',
        b'"01-Jan-0000 00:00:00 +0000"', b'"01-Jan-9999 23:59:59 -9999"',
    ]),
)
seq_atom = mostly(st.one_of(msg_numbers, st.just(b"*")),
                  st.sampled_from([b"$", b"4294967295", b"4294967296", b"0", b"40"]))
seqset = mostly(
    joined(st.one_of(seq_atom, j(seq_atom, b":", seq_atom)), b",", 1, 4),
    st.sampled_from([b"1:*", b"*", b"1,,2", b":", b"1:", b",", b"1:*:2", b"*:1",
                     b"1:4294967295", b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20"]),
)
section_spec = mostly(
    st.sampled_from([
        b"", b"HEADER", b"TEXT", b"1", b"1.MIME", b"HEADER.FIELDS (FROM TO)", b"2",
        b"HEADER.FIELDS.NOT (SUBJECT)", b"1.HEADER.FIELDS (X-Foo)", b"2.1", b"2.2.HEADER",
    ]),
    st.one_of(
        st.sampled_from([
            b"MIME", b"0", b"1.0", b"4294967296", b"HEADER.FIELDS ()", b"HEADER.FIELDS",
            b"TEXT.1", b"1.2.3.4.5.6.7.8.9.10", b"HEADER.FIELDS (" + b"X " * 300 + b")",
            b"HEADER.FIELDS ({3}\r\nFOO)", b"HEADER.FIELDS (\"a b\" {1+}\r\nc)",
        ]),
        joined(small_numbers, b".", 1, 4),
    ),
)
partial = st.sampled_from([
    b"", b"", b"", b"", b"", b"<0.10>", b"<5.3>", b"<0.0>", b"<4294967295.4294967295>",
    b"<1.>", b"<.1>", b"<99999999999999999999.1>", b"<0.4294967296>", b"<5>",
])
body_item = j(
    st.sampled_from([b"BODY[", b"BODY.PEEK[", b"BINARY[", b"BINARY.PEEK[", b"BINARY.SIZE[",
                     b"BODY.PEEK[", b"body.peek["]),
    section_spec, st.sampled_from([b"]"] * 10 + [b"", b"]]"]), partial,
)
fetch_att = mostly(
    st.one_of(
        st.sampled_from([
            b"ENVELOPE", b"FLAGS", b"INTERNALDATE", b"RFC822", b"RFC822.HEADER", b"RFC822.SIZE",
            b"RFC822.TEXT", b"BODY", b"BODYSTRUCTURE", b"UID", b"MODSEQ", b"flags",
        ]),
        body_item,
    ),
    st.sampled_from([b"X-GM-MSGID", b"PREVIEW", b"SAVEDATE", b"EMAILID", b"RFC822.PEEK",
                     b"BODY.PEEK", b"BINARY[]", b"ALL"]),
)
fetch_items = mostly(
    st.one_of(j(b"(", joined(fetch_att, b" ", 1, 5), b")"), fetch_att,
              st.sampled_from([b"ALL", b"FAST", b"FULL"])),
    st.sampled_from([b"()", b"(FLAGS", b"FLAGS)", b"ALL FAST", b"(ALL)", b"(FLAGS (UID))"]),
)
fetch_mods = st.sampled_from([
    b"", b"", b"", b"", b"", b" (CHANGEDSINCE 1)", b" (CHANGEDSINCE 0)",
    b" (CHANGEDSINCE 18446744073709551615)", b" (VANISHED)", b" (CHANGEDSINCE 1 VANISHED)",
    b" (", b" ()", b" (CHANGEDSINCE)",
])
search_base = mostly(
    st.one_of(
        st.sampled_from([
            b"ALL", b"ANSWERED", b"DELETED", b"DRAFT", b"FLAGGED", b"NEW", b"OLD", b"RECENT",
            b"SEEN", b"UNANSWERED", b"UNDELETED", b"UNDRAFT", b"UNFLAGGED", b"UNSEEN",
        ]),
        j(st.sampled_from([b"BCC ", b"BODY ", b"CC ", b"FROM ", b"SUBJECT ", b"TEXT ", b"TO ",
                           b"KEYWORD ", b"UNKEYWORD "]), astring),
        j(st.sampled_from([b"BEFORE ", b"ON ", b"SINCE ", b"SENTBEFORE ", b"SENTON ",
                           b"SENTSINCE "]), date),
        j(b"HEADER ", astring, b" ", astring),
        j(st.sampled_from([b"LARGER ", b"SMALLER ", b"MODSEQ "]), numbers),
        j(b"UID ", seqset),
        seqset,
        j(b'MODSEQ "/flags/\\\\Seen" all ', numbers),
    ),
    st.sampled_from([b"UNKEYWORD", b"BOGUS", b"$", b"()", b"NOT", b"OR ALL", b"OLDER 5",
                     b"YOUNGER 5", b"HEADER", b"LARGER"]),
)
search_key = st.recursive(
    search_base,
    lambda inner: st.one_of(
        j(b"NOT ", inner),
        j(b"OR ", inner, b" ", inner),
        j(b"(", joined(inner, b" ", 1, 4), b")"),
    ),
    max_leaves=8,
)
search_program = j(
    st.sampled_from([b"", b"", b"", b"", b"RETURN () ", b"RETURN (MIN MAX) ",
                     b"RETURN (COUNT ALL SAVE) ", b"RETURN (BOGUS) ", b"RETURN ("]),
    st.sampled_from([b"", b"", b"", b"", b"CHARSET UTF-8 ", b"CHARSET US-ASCII ",
                     b"CHARSET KOI8-R ", b"CHARSET "]),
    joined(search_key, b" ", 1, 3),
)
deep = st.tuples(st.sampled_from([8, 63, 64, 65, 200, 2000]),
                 st.sampled_from([b"(", b"NOT ", b"OR ALL "]))
deep_search = deep.map(lambda t: b"SEARCH " + t[1] * t[0] + b"ALL" +
                       (b")" * t[0] if t[1] == b"(" else b""))
deep_list = st.sampled_from([10, 64, 65, 500]).map(lambda n: b"ID " + b"(" * n + b")" * n)

MESSAGES = [
    F.message("lit", 60),
    b"",
    b"x",
    b"Subject: hi\r\n\r\nbody\r\n",
    b"Subject: bare lf\n\nbody\n",
    b"From: a@b\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
    b"one\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
    b"Subject: =?utf-8?B?w6k=?= =?bogus?Q?x?=\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n",
    b"\x00\x01\x02\r\n\r\n\xff",
    b"Header-Without-Colon\r\nSubject: x\r\n\r\n",
    b"Content-Type: multipart/alternative; boundary=\"q\"\r\n\r\n--q\r\n\r\na\r\n--q\r\n"
    b"Content-Type: multipart/mixed; boundary=\"q\"\r\n\r\n--q--\r\n",
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: message/rfc822\r\n\r\nx\r\n",
]
message_data = mostly(st.sampled_from(MESSAGES), st.binary(max_size=120))
append_cmd = j(
    b"APPEND ", mailbox,
    st.one_of(st.just(b""), j(b" ", flag_list)),
    st.one_of(st.just(b""), j(b" ", date_time)),
    b" ", literal(message_data),
    st.sampled_from([b""] * 6 + [b" {3+}\r\nabc", b" (\\Seen) {2+}\r\nhi", b" "]),
)
sasl_blob = st.one_of(
    st.binary(max_size=40).map(base64.b64encode),
    st.sampled_from([
        base64.b64encode(b"\0fuzz\0wrong"), base64.b64encode(b"fuzz\0fuzz\0wrong"),
        base64.b64encode(b"other\0fuzz\0wrong"), b"=", b"*", b"!!!!", b"AAAA=AAA", b"",
        base64.b64encode(b"\0" * 3), base64.b64encode(b"fuzz"),
    ]),
)
authenticate_cmd = j(
    b"AUTHENTICATE ", st.sampled_from([b"PLAIN", b"LOGIN", b"plain", b"CRAM-MD5", b"XOAUTH2",
                                       b"GSSAPI", b"BOGUS"]),
    st.one_of(st.just(b""), j(b" ", sasl_blob)),
    st.one_of(st.just(b""), j(b"\r\n", sasl_blob), j(b"\r\n", sasl_blob, b"\r\n", sasl_blob),
              st.just(b"\r\n*")),
)
any_state = mostly(
    st.one_of(
        st.sampled_from([b"CAPABILITY", b"NOOP", b"ID NIL", b"NAMESPACE", b"ENABLE CONDSTORE",
                         b"IDLE\r\nDONE", b"noop", b"CHECK", b"UNSELECT", b"ENABLE UTF8=ACCEPT"]),
        j(b"ID (", joined(j(quoted, b" ", st.one_of(quoted, st.just(b"NIL"))), b" ", 0, 4),
          b")"),
    ),
    st.one_of(
        st.sampled_from([b"ENABLE", b"IDLE", b"IDLE\r\nX", b"LOGOUT", b"XYZZY",
                         b"capability x", b"STARTTLS"]),
        j(b"ID (", joined(st.one_of(quoted, atom, st.just(b"NIL"), literal()), b" ", 0, 6),
          b")"),
        j(b"ENABLE ", joined(atom, b" ", 1, 3)),
        deep_list,
    ),
)
status_items = j(b"(", joined(
    mostly(st.sampled_from([b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN",
                            b"HIGHESTMODSEQ", b"SIZE", b"DELETED", b"APPENDLIMIT"]),
           st.one_of(atom, st.just(b"()"))), b" ", 0, 5), b")")
auth_state = st.one_of(
    j(st.sampled_from([b"SELECT ", b"EXAMINE "]), mailbox,
      st.sampled_from([b"", b"", b"", b" (CONDSTORE)", b" (QRESYNC (1 2 1:5 (1:3 1:3)))",
                       b" (QRESYNC (0 0))", b" (BOGUS)", b" (", b" ()"])),
    j(b"CREATE ", mailbox, st.sampled_from([b"", b"", b"", b" (USE (\\Drafts))",
                                            b" (USE (\\Bogus))", b" (USE ())", b" (USE"])),
    j(b"DELETE ", mailbox),
    j(b"RENAME ", mailbox, b" ", mailbox),
    j(st.sampled_from([b"SUBSCRIBE ", b"UNSUBSCRIBE "]), mailbox),
    j(st.sampled_from([b"LIST ", b"LSUB ", b"LIST (SUBSCRIBED) ", b"LIST (SPECIAL-USE) ",
                       b"LIST (SUBSCRIBED RECURSIVEMATCH) ", b"LIST (BOGUS) ", b"LIST () "]),
      mostly(st.sampled_from([b'""', b"Fuzz", b'"Fuzz/"']), st.one_of(quoted, atom)), b" ",
      mostly(st.sampled_from([b"*", b"%", b'"*"', b"%/%", b"Fuzz*", b"(* %)", b"INBOX"]),
             st.one_of(quoted, atom, literal())),
      st.sampled_from([b"", b"", b"", b" RETURN (CHILDREN)",
                       b" RETURN (STATUS (MESSAGES UIDNEXT))", b" RETURN (SUBSCRIBED SPECIAL-USE)",
                       b" RETURN (STATUS ())", b" RETURN (BOGUS)", b" RETURN ("])),
    j(b"STATUS ", mailbox, b" ", mostly(status_items, atom)),
    append_cmd,
    append_cmd,
)
selected_state = st.one_of(
    st.sampled_from([b"CLOSE", b"UNSELECT", b"EXPUNGE", b"CHECK", b"NOOP"]),
    j(b"UID EXPUNGE ", seqset),
    j(st.sampled_from([b"SEARCH ", b"UID SEARCH "]), search_program),
    j(st.sampled_from([b"SEARCH ", b"UID SEARCH "]), search_program),
    deep_search,
    j(st.sampled_from([b"FETCH ", b"UID FETCH ", b"fetch "]), seqset, b" ", fetch_items,
      fetch_mods),
    j(st.sampled_from([b"FETCH ", b"UID FETCH ", b"fetch "]), seqset, b" ", fetch_items,
      fetch_mods),
    j(st.sampled_from([b"STORE ", b"UID STORE "]), seqset,
      st.sampled_from([b" "] * 6 + [b" (UNCHANGEDSINCE 1) ", b" (UNCHANGEDSINCE 0) ",
                                    b" (UNCHANGEDSINCE) "]),
      mostly(st.sampled_from([b"FLAGS", b"+FLAGS", b"-FLAGS", b"FLAGS.SILENT", b"+FLAGS.SILENT",
                              b"-FLAGS.SILENT"]), st.sampled_from([b"+FLAG", b"X-GM-LABELS"])),
      b" ", flag_list),
    j(st.sampled_from([b"COPY ", b"MOVE ", b"UID COPY ", b"UID MOVE "]), seqset, b" ", mailbox),
    j(b"UID ", st.sampled_from([b"FOO", b"", b"THREAD", b"SORT (DATE) UTF-8 ALL"])),
)
login_cmd = st.one_of(
    j(b"LOGIN fuzz ", st.one_of(atom, quoted, literal(atom))),
    j(b"LOGIN ", astring, b" ", astring),
    st.sampled_from([b"LOGIN", b"LOGIN fuzz", b'LOGIN "fuzz" {6+}\r\nwrong!',
                     b"LOGIN fuzz secret"]),
)
over_long = st.tuples(
    st.sampled_from([b"NOOP ", b"SEARCH TEXT ", b"APPEND INBOX "]),
    st.sampled_from([MAX_LINE - 10, MAX_LINE, MAX_LINE + 1, MAX_LINE + 2, MAX_LINE * 3]),
    st.sampled_from([b"", b"", b" {5}", b" {5+}\r\nhello", b"\r"]),
).map(lambda t: t[0] + b"x" * t[1] + t[2])


def tagged(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return j(tags, st.sampled_from([b" "] * 20 + [b"", b"  ", b"\t"]), body)


def imap_items(state: str) -> st.SearchStrategy[bytes]:
    """One item of a stream: mostly commands of ``state``, some of other states, garbage,
    and now and then a login, an AUTHENTICATE exchange, an over-long line or a literal."""
    if state == "nonauth":
        # LOGIN/AUTHENTICATE are rarer than they would be: a failure costs an argon2 hash.
        common = [any_state, any_state, any_state, auth_state, selected_state]
        rare = [login_cmd, authenticate_cmd]
    elif state == "auth":
        common = [auth_state, auth_state, auth_state, any_state, selected_state]
        rare = [login_cmd]
    else:
        common = [selected_state, selected_state, selected_state, selected_state, auth_state,
                  any_state]
        rare = [login_cmd]
    return st.one_of(
        *(tagged(x) for x in common),
        st.one_of(
            *(tagged(x) for x in rare),
            tagged(over_long),
            garbage,
            literal(),
        ),
    )


IMAP_CORPUS = {
    "nonauth": [
        b"a1 CAPABILITY\r\n", b"a2 NOOP\r\n", b'a3 ID ("name" "fuzz" "version" "1")\r\n',
        b"a4 AUTHENTICATE PLAIN " + base64.b64encode(b"\0nosuch\0wrong") + b"\r\n",
        b"a5 AUTHENTICATE LOGIN\r\n" + base64.b64encode(b"x") + b"\r\n*\r\n",
        b"a6 STARTTLS\r\n", b"a7 LOGOUT\r\n", b"a8 ENABLE CONDSTORE\r\n",
        b"a9 SELECT INBOX\r\n", b'a10 LOGIN {4}\r\nfuzz {5}\r\nwrong\r\n',
    ],
    "auth": [
        b'b1 LIST "" "*"\r\n',
        b'b2 LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN STATUS (MESSAGES UIDNEXT))\r\n',
        b"b3 STATUS INBOX (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ SIZE)\r\n",
        b"b4 CREATE Fuzz/Sub\r\nb5 RENAME Fuzz/Sub Fuzz/Sub2\r\nb6 DELETE Fuzz/Sub2\r\n",
        b'b7 APPEND INBOX (\\Seen $kw) "01-Jan-2024 10:00:00 +0000" {'
        + str(len(MESSAGES[0])).encode() + b"+}\r\n" + MESSAGES[0] + b"\r\n",
        b"b8 APPEND Fuzz {" + str(len(MESSAGES[6])).encode() + b"}\r\n" + MESSAGES[6] + b"\r\n",
        b"b9 SELECT INBOX (CONDSTORE)\r\n", b"b10 EXAMINE INBOX\r\n", b"b11 NAMESPACE\r\n",
        b"b12 IDLE\r\nDONE\r\n", b"b13 SUBSCRIBE Fuzz\r\nb14 LSUB \"\" \"*\"\r\n",
        b"b15 CREATE &AOk-t&AOk- (USE (\\Archive))\r\n", b"b16 ENABLE CONDSTORE\r\n",
    ],
    "selected": [
        b"c1 FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE INTERNALDATE)\r\n",
        b"c2 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<0.20>)\r\n",
        b"c3 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BODY[1.MIME])\r\n",
        b'c4 SEARCH OR FROM fuzz SUBJECT "x" NOT SEEN\r\n',
        b"c5 UID SEARCH RETURN (MIN MAX COUNT) UID 1:*\r\n",
        b"c6 STORE 1 +FLAGS.SILENT (\\Flagged $kw)\r\n",
        b"c7 UID STORE 1:* (UNCHANGEDSINCE 1) -FLAGS (\\Flagged)\r\n",
        b"c8 COPY 1:2 Fuzz\r\n", b"c9 MOVE 1 Fuzz\r\n", b"c10 UID EXPUNGE 1\r\n",
        b"c11 STORE 2 +FLAGS (\\Deleted)\r\nc12 EXPUNGE\r\n", b"c13 CHECK\r\n",
        b"c14 FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\r\n", b"c15 SEARCH CHARSET UTF-8 TEXT {2+}\r\n"
        b"\xc3\xa9\r\n", b"c16 FETCH * BODY[]<0.100>\r\n", b"c17 UNSELECT\r\n",
    ],
}
IMAP_CORPUS["auth"] += IMAP_CORPUS["nonauth"][:3]
IMAP_CORPUS["selected"] += IMAP_CORPUS["auth"][:6]

# --- POP3 grammar -------------------------------------------------------------------------------
pop3_number = mostly(
    msg_numbers,
    st.sampled_from([b"0", b"+1", b"0x1", b"-1", b"01", b"\xff", b"999999999", b"1000000000",
                     b"4294967296", b"1\x00", b"", b"1 2", b"99999999999999999999"]),
)
pop3_arg = st.one_of(pop3_number, atom)
pop3_command = mostly(
    st.one_of(
        st.sampled_from([b"CAPA", b"STAT", b"LIST", b"UIDL", b"RSET", b"NOOP", b"QUIT"]),
        j(st.sampled_from([b"LIST ", b"UIDL ", b"RETR ", b"DELE ", b"retr "]), pop3_number),
        j(b"TOP ", pop3_number, b" ", mostly(small_numbers, numbers)),
        j(b"USER ", st.sampled_from([b"pfuzz0", b"pfuzz1", b"nosuch", b"pfuzz0@example.org"])),
        j(b"AUTH ", st.sampled_from([b"PLAIN", b"LOGIN", b"plain", b"CRAM-MD5", b"BOGUS", b""]),
          st.one_of(st.just(b""), j(b" ", sasl_blob)),
          st.one_of(st.just(b""), j(b"\r\n", sasl_blob), j(b"\r\n", sasl_blob, b"\r\n",
                                                          sasl_blob), st.just(b"\r\n*"))),
    ),
    st.one_of(
        j(st.sampled_from([b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"CAPA", b"STAT",
                           b"LIST", b"UIDL", b"RETR", b"TOP", b"DELE", b"RSET", b"NOOP",
                           b"XTND", b"LAST", b"", b"RETRR", b"UTF8", b"LANG"]),
          joined(j(st.sampled_from([b" ", b" ", b"  ", b"\t"]), pop3_arg), b"", 0, 3)),
        j(b"USER ", st.sampled_from([b"", b"pfuzz0@foreign.net", b"x" * 400, b"a b"])),
        st.just(b"AUTH PLAIN\r\n" + b"A" * 9000),
        j(b"APOP ", atom, b" ", chars(b"0123456789abcdef", 0, 40)),
        st.just(b"STLS"),
    ),
)
pop3_over_long = st.tuples(
    st.sampled_from([b"NOOP ", b"USER ", b"PASS ", b"LIST ", b"AUTH PLAIN "]),
    st.sampled_from([250, 1020, 1024, 1025, 8190, 8192, 8193, 20000]),
).map(lambda t: t[0] + b"x" * t[1])


def pop3_items(state: str) -> st.SearchStrategy[bytes]:
    # A wrong PASS costs the server a hash: keep it rare.
    rare = st.one_of(j(b"PASS ", st.one_of(atom, st.just(b"secret"), st.just(b""))),
                     pop3_over_long, garbage)
    return st.one_of(pop3_command, pop3_command, pop3_command, pop3_command, rare)


POP3_CORPUS = {
    "auth": [
        b"CAPA\r\n", b"AUTH\r\n", b"STLS\r\n", b"QUIT\r\n", b"USER nosuch\r\n",
        b"AUTH PLAIN " + base64.b64encode(b"\0nosuch\0wrong") + b"\r\n",
        b"AUTH LOGIN\r\n" + base64.b64encode(b"x") + b"\r\n*\r\n",
        b"APOP pfuzz0 c4c9334bac560ecc979e58001b3e22fb\r\n", b"STAT\r\n", b"USER pfuzz5\r\n",
    ],
    "trans": [
        b"STAT\r\n", b"LIST\r\n", b"LIST 1\r\n", b"UIDL\r\n", b"UIDL 2\r\n", b"RETR 1\r\n",
        b"TOP 1 0\r\n", b"TOP 2 5\r\n", b"DELE 1\r\n", b"RSET\r\n", b"NOOP\r\n", b"CAPA\r\n",
        b"RETR 1\r\nRETR 2\r\nRETR 3\r\n", b"DELE 2\r\nQUIT\r\n",
    ],
}

# --- SMTP / LMTP grammar -------------------------------------------------------------------------
address = mostly(
    st.sampled_from([
        b"<sfuzz@example.org>", b"<sfuzz+tag@EXAMPLE.ORG>", b"<sfuzz@mail.test>", b"<>",
        b"<nobody@example.org>", b"<x@foreign.net>", b"<postmaster@example.org>",
        b"<sfuzz@example.org>", b"<a@example.net>",
    ]),
    st.one_of(
        st.sampled_from([
            b'<"quoted local"@example.org>', b"<@route,@other:sfuzz@example.org>",
            b"sfuzz@example.org", b"<sfuzz@[127.0.0.1]>", b"<\xc3\xbc@example.org>",
            b"<" + b"l" * 300 + b"@example.org>", b"<sfuzz@>", b"<@example.org>",
            b"<sfuzz@example.org", b"<<sfuzz@example.org>>", b"<a\x00b@x>", b"<Postmaster>",
            b"<+@example.org>", b"<sfuzz@example.org> <x@y>", b"<\"a\\\"b\"@example.org>",
            b"<nobody@", b"<@", b"sfuzz@",
        ]),
        j(b"<", atom, b"@", st.sampled_from([b"example.org", b"mail.test", b"foo", b""]), b">"),
    ),
)
esmtp_param = mostly(
    st.sampled_from([b"SIZE=100", b"BODY=8BITMIME", b"SMTPUTF8", b"BODY=7BIT"]),
    st.sampled_from([
        b"SIZE=abc", b"SIZE=99999999999999999999", b"SIZE=2000000", b"BODY=BINARYMIME",
        b"BODY=", b"RET=HDRS", b"ENVID=x", b"NOTIFY=NEVER", b"ORCPT=rfc822;x@y", b"AUTH=<>",
        b"FOO=BAR", b"=", b"SIZE", b"X" * 600,
    ]),
)
smtp_body_line = st.one_of(
    chars(bytes(range(0x20, 0x7F)), 0, 30),
    st.sampled_from([b"Subject: fuzzed", b"", b"From: a@b", b"Content-Type: text/plain"]),
    st.sampled_from([
        b".", b"..", b". ", b".\r", b"\x00", b"\xff\xfe", b"bare\nlf", b"bare\rcr", b"x" * 1200,
        b"\r\n.\r\n", b".\n", b"..x", b"Content-Type: multipart/mixed; boundary=x", b"--x",
    ]),
    st.binary(max_size=30),
)
smtp_data = j(
    b"DATA\r\n",
    joined(smtp_body_line, b"\r\n", 0, 8),
    st.sampled_from([b"\r\n.\r\n"] * 8 + [b"\r\n.", b"\n.\n", b".\r\n", b"", b"\r\n..\r\n"]),
)


def smtp_items(lmtp: bool) -> st.SearchStrategy[bytes]:
    hello_verb = mostly(st.just(b"LHLO" if lmtp else b"EHLO"),
                        st.sampled_from([b"HELO", b"ehlo", b"LHLO", b"EHLO", b"HELO"]))
    hello = j(hello_verb, mostly(st.just(b" client.test"),
                                 st.sampled_from([b"", b" ", b" [127.0.0.1]", b" \xff",
                                                  b" a b c", b" " + b"h" * 600])))
    mail = j(mostly(st.just(b"MAIL FROM:"), st.sampled_from([b"MAIL FROM: ", b"mail from:",
                                                             b"MAIL FROM", b"MAIL TO:"])),
             address, joined(j(b" ", esmtp_param), b"", 0, 2))
    rcpt = j(mostly(st.just(b"RCPT TO:"), st.sampled_from([b"RCPT TO: ", b"rcpt to:",
                                                           b"RCPT FROM:"])),
             address, joined(j(b" ", esmtp_param), b"", 0, 1))
    # A mostly well-ordered transaction, so that DATA is reached and bodies delivered.
    transaction = j(
        st.one_of(j(hello, b"\r\n"), st.just(b"")),
        mail, b"\r\n",
        joined(rcpt, b"\r\n", 1, 3), b"\r\n",
        smtp_data,
    )
    command = st.one_of(
        hello, mail, rcpt, smtp_data,
        j(b"BDAT ", st.sampled_from([b"0", b"5", b"5 LAST", b"x", b"99999999999"]),
          st.sampled_from([b"", b"\r\nhello"])),
        j(st.sampled_from([b"VRFY ", b"EXPN ", b"HELP ", b"NOOP ", b"RSET ", b"AUTH PLAIN ",
                           b"STARTTLS ", b"XCLIENT ", b"ETRN "]), pop3_arg),
        st.sampled_from([b"RSET", b"NOOP", b"DATA", b"VRFY", b"HELP", b"QUIT", b"STARTTLS",
                         b"AUTH LOGIN", b"XYZZY", b"", b"MAIL", b"RCPT"]),
    )
    long_line = st.sampled_from([511, 512, 513, 1000, 1001, 5000]).map(
        lambda n: b"NOOP " + b"x" * n)
    return st.one_of(transaction, transaction, command, command, command,
                     st.one_of(garbage, long_line))


def smtp_corpus(lmtp: bool) -> list[bytes]:
    hello = b"LHLO" if lmtp else b"EHLO"
    msg = F.message("smtpmut", 80)
    txn = (hello + b" client.test\r\nMAIL FROM:<a@example.net> SIZE=300 BODY=8BITMIME\r\n"
           b"RCPT TO:<sfuzz@example.org>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n"
           + msg + b".\r\n")
    return [
        txn, hello + b" x\r\n", b"HELO x\r\n", b"MAIL FROM:<a@example.net>\r\n",
        b"RCPT TO:<sfuzz@example.org>\r\n", b"DATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\n",
        b"RSET\r\n", b"NOOP\r\n", b"VRFY sfuzz\r\n", b"HELP\r\n", b"QUIT\r\n",
        b"MAIL FROM:<> SMTPUTF8\r\n",
    ]


# --- the fuzzing harness ---------------------------------------------------------------------
USERS = ["fuzz", "keeper", "pkeep", "palive", "sfuzz"] + [f"pfuzz{i}" for i in range(6)]


class Findings(Exception):
    pass


class Fuzzer:
    """The module's server, its logged-in connection pools and its bookkeeping."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.watch = F.LogWatcher(server)
        self.case_no = 0
        self.imap_pool: dict[str, list[tuple[F.LineClient, int]]] = {"auth": [], "selected": []}
        self.pop3_pool: list[tuple[F.LineClient, int]] = []
        self.pop3_next_user = 0
        self.findings: list[str] = []
        self.known: list[str] = []
        self.imap_auth_cases = 0
        self.logins = 0
        self.keepers: dict[str, F.LineClient] = {}
        self.last_keepalive = time.monotonic()
        self.slowest: tuple[float, str] = (0.0, "")
        # What the server answered, per test: evidence that the cases get past the parser.
        self.replies: dict[str, Counter[str]] = defaultdict(Counter)

    # -- bookkeeping ----------------------------------------------------------------------
    def _tag(self) -> str:
        self.case_no += 1
        return f"ZZ{self.case_no}"

    def after_case(self, label: str, proto: str, case: Case, got: bytes, started: float) -> None:
        F.count_case(proto, label)
        self.tally(label, proto, got)
        took = time.monotonic() - started
        if took > self.slowest[0]:
            self.slowest = (took, label)
        problems = []
        if b"Internal server error" in got or b"[SERVERBUG]" in got:
            problems.append("response: " + _excerpt(got, [b"Internal server error",
                                                          b"[SERVERBUG]"]))
        if proto in ("smtp", "lmtp"):
            bad = [ln for ln in got.split(b"\r\n")[:-1] if not re.match(rb"\d{3}[ -]", ln)]
            if bad:
                problems.append(f"malformed SMTP reply lines: {bad[:3]!r}")
        problems += self.watch.new_problems()
        try:
            F.alive(self.server, proto, "palive" if self.case_no % 40 == 0 else None)
            if self.case_no % 25 == 0:
                for other in ("imap", "pop3", "smtp", "lmtp"):
                    F.alive(self.server, other)
        except Exception as exc:
            text = self.watch.new_text()[-3000:]
            raise AssertionError(
                f"server not answering after {label} case {case!r}: {exc!r}\nlog tail:\n{text}"
            ) from exc
        for problem in problems:
            known = [name for pattern, name in KNOWN_PROBLEMS if re.search(pattern, problem)]
            if known:
                self.known.append(known[0])
                continue
            self.findings.append(f"[{label}] {case!r}\n{problem}")
        if time.monotonic() - self.last_keepalive > 60:
            self.keepalive()

    def tally(self, label: str, proto: str, got: bytes) -> None:
        counts = self.replies[label]
        if proto == "imap":
            for m in _IMAP_TAGGED.finditer(got):
                counts[m.group(1).decode()] += 1
        elif proto == "pop3":
            counts["+OK"] += got.count(b"+OK")
            counts["-ERR"] += got.count(b"-ERR")
        else:
            for m in _SMTP_REPLY.finditer(got):
                counts[m.group(1).decode()[0] + "xx"] += 1

    def reply_summary(self, label: str) -> str:
        counts = self.replies[label]
        return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))

    def raise_findings(self, label: str) -> None:
        mine = [f for f in self.findings if f.startswith(f"[{label}")]
        if mine:
            raise Findings(f"{len(mine)} problem(s) found:\n\n" + "\n\n".join(mine[:10]))

    # -- keepers: valid sessions that live through the whole module -------------------------
    def start_keepers(self) -> None:
        srv = self.server
        imap = F.imap_login(srv.port("imap"), "keeper", "INBOX")
        pop3 = F.pop3_login(srv.port("pop3"), "pkeep")
        smtp = F.LineClient(srv.port("smtp"))
        assert smtp.smtp_reply()[0].startswith(b"220")
        assert smtp.smtp("EHLO keeper.test")[-1].startswith(b"250")
        lmtp = F.LineClient(srv.port("lmtp"))
        assert lmtp.smtp_reply()[0].startswith(b"220")
        assert lmtp.smtp("LHLO keeper.test")[-1].startswith(b"250")
        self.keepers = {"imap": imap, "pop3": pop3, "smtp": smtp, "lmtp": lmtp}

    def keepalive(self) -> None:
        """NOOP on every keeper (a valid client does that; it also beats idle timers)."""
        self.last_keepalive = time.monotonic()
        k = self.keepers
        r = k["imap"].imap("KA", "NOOP")
        assert r[-1].startswith(b"KA OK"), r
        assert k["pop3"].cmd("NOOP").startswith(b"+OK")
        assert k["smtp"].smtp("NOOP")[-1].startswith(b"250")
        assert k["lmtp"].smtp("NOOP")[-1].startswith(b"250")

    # -- IMAP ---------------------------------------------------------------------------------
    def _imap_login(self) -> F.LineClient:
        self.logins += 1
        return F.imap_login(self.server.port("imap"), "fuzz")

    def imap_session(self, state: str) -> tuple[F.LineClient, int]:
        """A logged-in connection reset to ``state`` (``auth`` or ``selected``)."""
        self.imap_auth_cases += 1
        if self.imap_auth_cases % 100 == 0:
            self.imap_cleanup()
        pool = self.imap_pool[state]
        while pool:
            conn, uses = pool.pop()
            try:
                return self._imap_reset(conn, state), uses
            except (OSError, ConnectionError, AssertionError):
                conn.close()
        return self._imap_reset(self._imap_login(), state), 0

    def _imap_reset(self, conn: F.LineClient, state: str) -> F.LineClient:
        if state == "auth":
            r = conn.imap("R1", "UNSELECT")
            assert r[-1].startswith((b"R1 OK", b"R1 BAD")), r
            return conn
        r = conn.imap("R1", "SELECT INBOX")
        assert r[-1].startswith(b"R1 OK"), r
        exists = [int(m.group(1)) for line in r if (m := re.match(rb"\* (\d+) EXISTS", line))]
        count = exists[-1] if exists else 0
        if count > 150:  # COPY 1:* INBOX doubles it; keep FETCH 1:* cheap
            conn.imap("R2", "STORE 1:* +FLAGS.SILENT (\\Deleted)")
            conn.imap("R3", "EXPUNGE")
            count = 0
        if count < 4:
            for i in range(6):
                data = MESSAGES[0] if i % 2 else F.message("imap", 300 * i)
                conn.send(b"R4 APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
                assert conn.imap_collect("R4")[-1].startswith(b"R4 OK")
            conn.imap("R5", "NOOP")
        return conn

    def imap_cleanup(self) -> None:
        """Delete the mailboxes the fuzzing created (COPY into them could grow without end)."""
        with F.imap_login(self.server.port("imap"), "fuzz") as conn:
            r = conn.imap("CL", 'LIST "" "*"')
            names = []
            for line in r[:-1]:
                m = re.match(rb'\* LIST \([^)]*\) (?:"[^"]*"|NIL) (.*)$', line, re.DOTALL)
                if m and m.group(1).upper() not in (b"INBOX", b'"INBOX"'):
                    names.append(m.group(1))
            for name in sorted(names, key=len, reverse=True):
                lit = re.match(rb"\{(\d+)\}\r\n(.*)$", name, re.DOTALL)
                if lit:
                    name = b"{%d+}\r\n" % len(lit.group(2)) + lit.group(2)
                conn.send(b"CD DELETE " + name + b"\r\n")
                conn.imap_collect("CD")

    def imap_case(self, state: str, label: str, case: Case) -> None:
        started = time.monotonic()
        uses = 0
        if state == "nonauth":
            conn = F.LineClient(self.server.port("imap"))
            assert conn.line().startswith(b"* OK")
        else:
            conn, uses = self.imap_session(state)
        tag = self._tag().encode()
        F.send_stream(conn.sock, case.chunks(), pause_every=case.pause)
        F.send_stream(conn.sock, [b"\r\n" + tag + b" NOOP\r\n"])
        marker = b"\n" + tag + b" "
        got = F.read_response(conn.sock, marker)
        answered = marker + b"OK" in b"\n" + got
        if state != "nonauth" and answered and uses + 1 < REUSE:
            conn.buf = b""
            self.imap_pool[state].append((conn, uses + 1))
        else:
            conn.close()
        self.after_case(label, "imap", case, got, started)

    # -- POP3 ---------------------------------------------------------------------------------
    def pop3_session(self) -> tuple[F.LineClient, int]:
        while self.pop3_pool:
            conn, uses = self.pop3_pool.pop()
            return conn, uses
        for _ in range(12):
            user = f"pfuzz{self.pop3_next_user % 6}"
            self.pop3_next_user += 1
            snapshot = F.store_snapshot(self.server, user)
            if len(snapshot) < 3:
                F.append_messages(self.server, user, [F.message("pop", 150 * i + 10)
                                                      for i in range(6)])
            conn = F.LineClient(self.server.port("pop3"))
            assert conn.line().startswith(b"+OK")
            assert conn.cmd(f"USER {user}").startswith(b"+OK")
            self.logins += 1
            reply = conn.cmd(f"PASS {F.PASSWORD}")
            if reply.startswith(b"+OK"):
                return conn, 0
            conn.close()
            assert b"[IN-USE]" in reply, reply
        raise AssertionError("no POP3 fuzz user could log in")

    def pop3_case(self, state: str, label: str, case: Case) -> None:
        started = time.monotonic()
        uses = 0
        self._tag()
        if state == "auth":
            conn = F.LineClient(self.server.port("pop3"))
            assert conn.line().startswith(b"+OK")
            sentinel, marker = b"\r\nCAPA\r\n", b"IMPLEMENTATION Mailstead\r\n.\r\n"
        else:
            conn, uses = self.pop3_session()
            number = b"%d" % (900_000_000 + self.case_no)
            sentinel, marker = b"\r\nLIST " + number + b"\r\n", b"message " + number
        F.send_stream(conn.sock, case.chunks(), pause_every=case.pause)
        F.send_stream(conn.sock, [sentinel])
        got = F.read_response(conn.sock, marker)
        if state == "trans" and marker in got and uses + 1 < REUSE:
            conn.buf = b""
            self.pop3_pool.append((conn, uses + 1))
        else:
            conn.close()
        self.after_case(label, "pop3", case, got, started)

    # -- SMTP / LMTP ----------------------------------------------------------------------------
    def smtp_case(self, proto: str, label: str, case: Case) -> None:
        started = time.monotonic()
        self._tag()
        conn = F.LineClient(self.server.port(proto))
        assert conn.smtp_reply()[0].startswith(b"220")
        F.send_stream(conn.sock, case.chunks(), pause_every=case.pause)
        F.send_stream(conn.sock, [b"\r\nQUIT\r\n"])
        got = F.read_response(conn.sock, b"221 ")
        conn.close()
        self.after_case(label, proto, case, got, started)

    def close(self) -> None:
        for pool in self.imap_pool.values():
            for conn, _ in pool:
                conn.close()
        for conn, _ in self.pop3_pool:
            conn.close()
        for conn in self.keepers.values():
            conn.close()


_IMAP_TAGGED = re.compile(rb"(?m)^(?!\* )\S+ (OK|NO|BAD)\b")
_SMTP_REPLY = re.compile(rb"(?m)^(\d{3}) ")


def _excerpt(data: bytes, needles: list[bytes], width: int = 200) -> str:
    for needle in needles:
        at = data.find(needle)
        if at >= 0:
            return repr(data[max(0, at - width) : at + width])
    return repr(data[:width])


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
         ) -> Iterator[Fuzzer]:
    F.register_summary(request.config)
    # TLS listeners so that STARTTLS/STLS are offered; failed logins answered fast (the
    # delay is what the throttling tests are about, not this one).
    config = F.server_config(tls=True, auth={"failure_delay": 0.02}, limits={
        "max_connections_per_ip": 500, "max_sessions_per_user": 500,
        "max_line_length": MAX_LINE, "max_message_size": MAX_MESSAGE,
    })
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz"), config).start()
    fz: Fuzzer | None = None
    try:
        fz = Fuzzer(srv)
        F.create_users(srv, *USERS)
        F.append_messages(srv, "fuzz", [F.message("fuzz", 100 * i) for i in range(8)])
        F.append_messages(srv, "keeper", [F.message("keeper", 100) for _ in range(3)])
        F.append_messages(srv, "pkeep", [F.message("pkeep", 100) for _ in range(3)])
        for i in range(6):
            F.append_messages(srv, f"pfuzz{i}", [F.message("pop", 120 * k) for k in range(6)])
        fz.start_keepers()
        yield fz
    finally:
        if fz is not None:
            fz.close()
        if srv.proc is not None and srv.proc.poll() is None:
            try:
                srv.stop()
            finally:
                srv.kill()


def run_fuzz(fz: Fuzzer, label: str, mode: str, strategy: st.SearchStrategy[Case],
             body: Callable[[Case], None], record_property: Callable[[str, object], None]
             ) -> None:
    n = examples(label, mode)
    before = F.LABELS[label]
    phases = [Phase.explicit, Phase.generate]
    if os.environ.get("MAILSTEAD_FUZZ_SHRINK"):
        phases.append(Phase.shrink)
    long = mode == "long"

    @settings(max_examples=n, deadline=None, database=None, derandomize=not long,
              phases=phases, suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def inner(case: Case) -> None:
        body(case)

    if long:
        chosen = int(os.environ.get("MAILSTEAD_FUZZ_SEED") or random.randrange(2**32))
        F.note(f"{label} long run: seed {chosen} (MAILSTEAD_FUZZ_SEED={chosen} repeats it)")
        inner = seed(chosen)(inner)
    started = time.monotonic()
    try:
        inner()
    finally:
        ran = F.LABELS[label] - before
        record_property("fuzz_cases", ran)
        print(f"{label}: {ran} cases in {time.monotonic() - started:.1f}s")
        F.note(f"{label}: {ran} cases in {time.monotonic() - started:.1f}s; replies: "
               f"{fz.reply_summary(label)}")
    fz.raise_findings(label)


# --- the tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", ["nonauth", "auth", "selected"])
def test_imap_grammar_fuzz(fuzz: Fuzzer, state: str, mode: str, record_property) -> None:
    label = f"imap-{state}"
    run_fuzz(fuzz, label, mode, stream_of(imap_items(state)),
             lambda case: fuzz.imap_case(state, label, case), record_property)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", ["nonauth", "auth", "selected"])
def test_imap_mutation_fuzz(fuzz: Fuzzer, state: str, mode: str, record_property) -> None:
    label = f"imap-mut-{state}"
    run_fuzz(fuzz, label, mode, mutated(IMAP_CORPUS[state]),
             lambda case: fuzz.imap_case(state, label, case), record_property)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", ["auth", "trans"])
def test_pop3_grammar_fuzz(fuzz: Fuzzer, state: str, mode: str, record_property) -> None:
    label = f"pop3-{state}"
    run_fuzz(fuzz, label, mode, stream_of(pop3_items(state)),
             lambda case: fuzz.pop3_case(state, label, case), record_property)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", ["auth", "trans"])
def test_pop3_mutation_fuzz(fuzz: Fuzzer, state: str, mode: str, record_property) -> None:
    label = f"pop3-mut-{state}"
    run_fuzz(fuzz, label, mode, mutated(POP3_CORPUS[state]),
             lambda case: fuzz.pop3_case(state, label, case), record_property)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
def test_smtp_lmtp_grammar_fuzz(fuzz: Fuzzer, proto: str, mode: str, record_property) -> None:
    run_fuzz(fuzz, proto, mode, stream_of(smtp_items(proto == "lmtp"), max_items=8),
             lambda case: fuzz.smtp_case(proto, proto, case), record_property)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
def test_smtp_lmtp_mutation_fuzz(fuzz: Fuzzer, proto: str, mode: str, record_property) -> None:
    label = f"{proto}-mut"
    run_fuzz(fuzz, label, mode, mutated(smtp_corpus(proto == "lmtp")),
             lambda case: fuzz.smtp_case(proto, label, case), record_property)


def test_fuzzing_never_dropped_a_valid_client_and_logged_no_error(fuzz: Fuzzer) -> None:
    """Runs last: the sessions opened before the fuzzing still work, and the log is clean."""
    srv = fuzz.server
    assert srv.proc is not None and srv.proc.poll() is None
    k = fuzz.keepers
    r = k["imap"].imap("K1", "NOOP")
    assert r[-1].startswith(b"K1 OK"), r
    r = k["imap"].imap("K2", "FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert r[-1].startswith(b"K2 OK") and len(r) >= 4, r
    assert k["pop3"].cmd("NOOP").startswith(b"+OK")
    assert k["pop3"].cmd("STAT").startswith(b"+OK 3 ")
    # The SMTP and LMTP keepers still deliver, and the IMAP keeper hears of it at once.
    for proto in ("smtp", "lmtp"):
        c = k[proto]
        assert c.smtp("MAIL FROM:<k@example.net>")[-1].startswith(b"250")
        assert c.smtp("RCPT TO:<keeper@example.org>")[-1].startswith(b"250")
        assert c.smtp("DATA")[-1].startswith(b"354")
        assert c.smtp(F.message("kept", 50) + b".")[-1].startswith(b"250")
    r = k["imap"].imap("K3", "NOOP")
    assert b"* 5 EXISTS" in r, r
    for proto in ("imap", "pop3", "smtp", "lmtp"):
        F.alive(srv, proto)
    F.alive(srv, "pop3", "palive")
    text = srv.log_text()
    found = F.problems(text)
    unknown = [p for p in found if not any(re.search(pat, p) for pat, _ in KNOWN_PROBLEMS)]
    if fuzz.known:
        F.note("fuzzing hit known (xfail-pinned) problems: " + ", ".join(
            f"{name} x{n}" for name, n in Counter(fuzz.known).items()))
    F.note(f"fuzz server: {fuzz.case_no} cases, {fuzz.logins} logins, slowest case "
           f"{fuzz.slowest[0]:.2f}s ({fuzz.slowest[1]}), peak RSS "
           f"{F.rss_kb(srv.proc.pid)['VmHWM'] // 1024} MiB")
    assert not unknown, "\n\n".join(unknown[:10])


# --- regressions for what the fuzzing found ------------------------------------------------------
def test_smtp_starttls_followed_by_plaintext_logs_no_traceback(fuzz: Fuzzer) -> None:
    watch = F.LogWatcher(fuzz.server)
    with F.LineClient(fuzz.server.port("smtp")) as c:
        assert c.smtp_reply()[0].startswith(b"220")
        assert c.smtp("EHLO client.test")[-1].startswith(b"250")
        assert c.smtp("STARTTLS")[0].startswith(b"220")
        c.send(b"this is not a TLS ClientHello\r\n")
        assert c.eof(5.0)
    F.alive(fuzz.server, "smtp")
    time.sleep(0.2)
    found = watch.new_problems()
    assert not found, "\n".join(found)


@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
@pytest.mark.parametrize("command", ["MAIL FROM:<a@", "RCPT TO:<nobody@"])
def test_address_ending_in_at_sign_gets_a_syntax_error_not_a_traceback(fuzz: Fuzzer, proto: str,
                                                            command: str) -> None:
    watch = F.LogWatcher(fuzz.server)
    with F.LineClient(fuzz.server.port(proto)) as c:
        assert c.smtp_reply()[0].startswith(b"220")
        hello = "LHLO" if proto == "lmtp" else "EHLO"
        assert c.smtp(f"{hello} client.test")[-1].startswith(b"250")
        if command.startswith("RCPT"):
            assert c.smtp("MAIL FROM:<a@example.net>")[-1].startswith(b"250")
        reply = c.smtp(command)
        assert c.smtp("NOOP")[-1].startswith(b"250")
    time.sleep(0.2)
    found = watch.new_problems()
    # RFC 5321 §4.2.3: 553 "mailbox syntax incorrect" (aiosmtpd's answer) or 501.
    assert reply[-1].startswith((b"501 ", b"553 5.1.3")), reply
    assert not found, "\n".join(found)
