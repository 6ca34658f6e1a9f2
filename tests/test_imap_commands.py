"""IMAP command transcripts, in process: the real session and store on a memory transport.

Each test sends tagged lines and compares what comes back with what RFC 3501 and the
advertised extensions fix: exact bytes where the RFC fixes them, regexes for values the
server picks (UIDVALIDITY, the current date) and for human-readable response texts.
Each test states the RFC-correct expectation. The server is configured as the socket suite's
(``imap_wire.start_server``): host name, domains, a 1,000,000-octet message limit and TLS
material. What needs a socket (implicit TLS, STARTTLS) is in ``test_imap_socket``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from imap_harness import ImapWorld, MemoryIMAP, running_world
from imap_wire import (
    Reply,
    apply_expunges,
    flags_of,
    literals,
    parse_fetch,
    parse_list,
)

Connect = Callable[..., Awaitable[MemoryIMAP]]

# What the socket suite's server sets (conftest.BASE_CONFIG) and a command can notice; and
# one difference: failed logins wait 50 ms, doubling up to 200 ms, not 0.5 s up to 8 s
# (no test here measures the delay; test_security and test_hardening_auth do).
SERVER_CONFIG = {
    "server": {"hostname": "mail.test", "domains": ["example.org", "mail.test"]},
    "limits": {"max_message_size": 1_000_000},
    "auth": {"failure_delay": 0.05, "failure_delay_max": 0.2},
}


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


SIMPLE = crlf(
    "From: Alice <alice@example.net>\n"
    "To: bob@example.org\n"
    "Subject: first\n"
    "Date: Thu, 05 Nov 2026 09:03:01 +0100\n"
    "Message-ID: <1@example.net>\n"
    "\n"
    "Hello body\n"
)

MULTI_HEADER = crlf(
    """From: Alice Example <alice@example.net>
To: Bob <bob@example.org>, carol@example.org
Cc: Dave <dave@example.com>
Bcc: eve@example.com
Subject: Quarterly report
Date: Thu, 05 Nov 2026 09:03:01 +0100
Message-ID: <multi@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

"""
)
INNER = crlf(
    """From: Carol <carol@example.org>
To: Alice <alice@example.net>
Subject: Inner message
Date: Wed, 04 Nov 2026 10:00:00 +0000
Message-ID: <inner@example.org>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=us-ascii

inner plain
--inner
Content-Type: text/html; charset=us-ascii

<p>inner html</p>
--inner--"""
)
MULTI_TEXT = crlf(
    """This is a multi-part message in MIME format.
--outer
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello Bob,
the report is attached. Grüße
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKCg==
--outer
Content-Type: message/rfc822

"""
) + INNER + crlf("\n--outer--\n")
MULTI = MULTI_HEADER + MULTI_TEXT

MULTI_ENVELOPE = (
    b'("Thu, 05 Nov 2026 09:03:01 +0100" "Quarterly report" '
    b'(("Alice Example" NIL "alice" "example.net")) '
    b'(("Alice Example" NIL "alice" "example.net")) '
    b'(("Alice Example" NIL "alice" "example.net")) '
    b'(("Bob" NIL "bob" "example.org")(NIL NIL "carol" "example.org")) '
    b'(("Dave" NIL "dave" "example.com")) '
    b'((NIL NIL "eve" "example.com")) '
    b'NIL "<multi@example.net>")'
)
INNER_ENVELOPE = (
    b'("Wed, 04 Nov 2026 10:00:00 +0000" "Inner message" '
    b'(("Carol" NIL "carol" "example.org")) (("Carol" NIL "carol" "example.org")) '
    b'(("Carol" NIL "carol" "example.org")) (("Alice" NIL "alice" "example.net")) '
    b'NIL NIL NIL "<inner@example.org>")'
)
MULTI_BODYSTRUCTURE = (
    b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 43 2 NIL NIL NIL NIL)'
    b'("APPLICATION" "PDF" ("NAME" "report.pdf") NIL NIL "BASE64" 24 NIL '
    b'("ATTACHMENT" ("FILENAME" "report.pdf")) NIL NIL)'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 386 ' + INNER_ENVELOPE + b" "
    b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)'
    b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 17 1 NIL NIL NIL NIL) '
    b'"ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL) 17 NIL NIL NIL NIL) '
    b'"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
)
MULTI_BODY = (
    b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 43 2)'
    b'("APPLICATION" "PDF" ("NAME" "report.pdf") NIL NIL "BASE64" 24)'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 386 ' + INNER_ENVELOPE + b" "
    b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 11 1)'
    b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 17 1) "ALTERNATIVE") 17) '
    b'"MIXED")'
)

TEXT = rb"[^\r\n]*"  # a human-readable response text


def msg(subject: str, body: str = "body\n", extra: str = "") -> bytes:
    return crlf(f"From: a@example.net\nTo: b@example.org\nSubject: {subject}\n{extra}\n{body}")


def full(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(pattern, re.DOTALL)


def assert_lines(actual: list[bytes], expected: list[bytes | re.Pattern[bytes]]) -> None:
    """Each actual line equals (bytes) or fully matches (pattern) its expected line."""
    assert len(actual) == len(expected), (actual, expected)
    for got, want in zip(actual, expected, strict=True):
        if isinstance(want, bytes):
            assert got == want
        else:
            assert want.fullmatch(got), (got, want.pattern)


def tagged(reply: Reply, status: bytes, code: bytes | None = None) -> None:
    """The tagged line is ``tag status [code] text``."""
    head = reply.tag + b" " + status + b" "
    if code is not None:
        head += b"[" + code + b"]"
    assert reply.tagged.startswith(head), reply.tagged
    assert re.fullmatch(re.escape(head) + TEXT, reply.tagged), reply.tagged


def caps_of(line: bytes) -> list[bytes]:
    return line.split()


async def fetch_one(c: MemoryIMAP, command: str) -> dict[bytes, object]:
    reply = await c.cmd(command)
    assert reply.ok, reply
    fetches = reply.lines(b"* ")
    assert len(fetches) == 1, reply
    return parse_fetch(fetches[0])[1]


async def uidvalidity(c: MemoryIMAP, mailbox: str) -> int:
    reply = await c.cmd(f'STATUS "{mailbox}" (UIDVALIDITY)')
    m = re.search(rb"UIDVALIDITY (\d+)", reply.untagged[0])
    assert m, reply
    return int(m.group(1))


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def shared_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ImapWorld]:
    """One server for the module, as the socket suite had; each test has users of its own."""
    async with running_world(tmp_path_factory.mktemp("imapcmd"), SERVER_CONFIG, tls=True) as w:
        yield w


@pytest.fixture
async def world(shared_world: ImapWorld) -> AsyncIterator[ImapWorld]:
    yield shared_world
    await shared_world.drop_clients()  # and with them their per-IP and per-user slots
    tracebacks = shared_world.errors.tracebacks()
    shared_world.errors.records.clear()  # reported once, by the test that caused them
    assert tracebacks == [], "\n".join(tracebacks)


@pytest.fixture
def connect(world: ImapWorld) -> Connect:
    async def open_(login: str | None = None) -> MemoryIMAP:
        c = await world.connect()
        if login is not None:
            await c.login(login)
        return c

    return open_


@pytest.fixture
async def acct(world: ImapWorld) -> str:
    return await world.add_user()


@pytest.fixture
async def imap(connect: Connect, acct: str) -> MemoryIMAP:
    return await connect(acct)


# --- CAPABILITY, NOOP, LOGOUT, ID, NAMESPACE, ENABLE ------------------------------------------
async def test_greeting_and_capability_before_login(connect: Connect) -> None:
    c = await connect()
    m = re.fullmatch(rb"\* OK \[CAPABILITY ([^\]]*)\]" + TEXT, c.greeting)
    assert m, c.greeting
    reply = await c.cmd("CAPABILITY")
    tagged(reply, b"OK")
    [line] = reply.untagged
    assert line.startswith(b"* CAPABILITY IMAP4rev1 ")
    caps = caps_of(line)[2:]
    assert caps == caps_of(m.group(1))
    # LITERAL- before login (RFC 7888 §5: small non-synchronising literals only).
    for cap in (b"IMAP4rev1", b"STARTTLS", b"AUTH=PLAIN", b"AUTH=LOGIN", b"LITERAL-",
                b"SASL-IR", b"ID", b"IDLE", b"NAMESPACE", b"ENABLE"):
        assert cap in caps
    assert b"LITERAL+" not in caps
    assert b"LOGINDISABLED" not in caps


async def test_capability_after_login(imap: MemoryIMAP, acct: str, connect: Connect) -> None:
    reply = await imap.cmd("CAPABILITY")
    tagged(reply, b"OK")
    [line] = reply.untagged
    caps = caps_of(line)
    assert caps[:2] == [b"*", b"CAPABILITY"]
    for cap in (b"IMAP4rev1", b"UIDPLUS", b"MOVE", b"UNSELECT", b"SPECIAL-USE",
                b"CREATE-SPECIAL-USE", b"LIST-EXTENDED", b"LIST-STATUS", b"CHILDREN",
                b"ESEARCH", b"IDLE", b"NAMESPACE", b"ID", b"ENABLE", b"APPENDLIMIT=1000000",
                b"LITERAL+"):
        assert cap in caps
    assert b"LITERAL-" not in caps
    assert b"STARTTLS" not in caps and not any(c.startswith(b"AUTH=") for c in caps)
    # The LOGIN completion carries the new list as a response code.
    c = await connect()
    login = await c.cmd(f"LOGIN {acct} secret")
    assert login.tagged.startswith(b"A001 OK [CAPABILITY " + b" ".join(caps[2:]) + b"]")


async def test_noop_in_every_state(connect: Connect, acct: str) -> None:
    c = await connect()
    reply = await c.cmd("NOOP")
    assert reply.untagged == []
    tagged(reply, b"OK")
    await c.login(acct)
    tagged(await c.cmd("NOOP"), b"OK")
    await c.select()
    tagged(await c.cmd("NOOP"), b"OK")


async def test_logout_sends_bye_then_ok_and_closes(connect: Connect, acct: str) -> None:
    for login in (None, acct):
        c = await connect(login)
        reply = await c.cmd("LOGOUT")
        assert_lines(reply.untagged, [full(rb"\* BYE" + TEXT)])
        tagged(reply, b"OK")
        await c.settle()
        assert c.closed_by_server


async def test_id_before_and_after_login(connect: Connect, acct: str) -> None:
    c = await connect()
    for command in ("ID NIL", 'ID ("name" "pytest" "version" "1.0")'):
        reply = await c.cmd(command)
        assert_lines(reply.untagged, [full(rb'\* ID (NIL|\(("[^"]*" ("[^"]*"|NIL) ?)*\))')])
        assert b'"name" "Mailstead"' in reply.untagged[0]
        tagged(reply, b"OK")
    await c.login(acct)
    tagged(await c.cmd("ID NIL"), b"OK")


async def test_namespace(imap: MemoryIMAP) -> None:
    reply = await imap.cmd("NAMESPACE")
    assert reply.untagged == [b'* NAMESPACE (("" "/")) NIL NIL']
    tagged(reply, b"OK")


async def test_enable(connect: Connect, acct: str) -> None:
    c = await connect()
    tagged(await c.cmd("ENABLE CONDSTORE"), b"BAD")  # not authenticated yet
    await c.login(acct)
    reply = await c.cmd("ENABLE CONDSTORE")
    assert reply.untagged == [b"* ENABLED CONDSTORE"]
    tagged(reply, b"OK")
    reply = await c.cmd("ENABLE X-UNKNOWN-EXTENSION")
    assert reply.untagged == [b"* ENABLED"]
    tagged(reply, b"OK")


# --- STARTTLS and authentication ------------------------------------------------------------
async def test_starttls_not_allowed_after_login(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("STARTTLS"), b"BAD")
    tagged(await imap.cmd("NOOP"), b"OK")


async def test_login_good_and_bad(connect: Connect, acct: str) -> None:
    c = await connect()
    tagged(await c.cmd(f"LOGIN {acct} wrong"), b"NO", b"AUTHENTICATIONFAILED")
    tagged(await c.cmd("LOGIN nosuchuser secret"), b"NO", b"AUTHENTICATIONFAILED")
    tagged(await c.cmd("SELECT INBOX"), b"BAD")  # still not authenticated
    reply = await c.cmd_literal(f'LOGIN "{acct}"', b"secret")  # password as a literal
    assert reply.ok, reply
    tagged(await c.cmd(f"LOGIN {acct} secret"), b"BAD")  # already authenticated


async def test_authenticate_plain_with_sasl_ir(connect: Connect, acct: str) -> None:
    c = await connect()
    token = base64.b64encode(f"\0{acct}\0secret".encode()).decode()
    reply = await c.cmd(f"AUTHENTICATE PLAIN {token}")
    assert reply.untagged == []
    tagged(reply, b"OK")
    tagged(await c.cmd("SELECT INBOX"), b"OK", b"READ-WRITE")


async def test_authenticate_plain_with_continuation(connect: Connect, acct: str) -> None:
    c = await connect()
    c.send(b"P1 AUTHENTICATE PLAIN\r\n")
    assert await c.response() == b"+ "
    c.send(base64.b64encode(f"{acct}\0{acct}\0secret".encode()) + b"\r\n")
    reply = await c.collect(b"P1")
    tagged(reply, b"OK")
    # Wrong password over AUTHENTICATE
    d = await connect()
    d.send(b"P2 AUTHENTICATE PLAIN\r\n")
    assert await d.response() == b"+ "
    d.send(base64.b64encode(f"\0{acct}\0nope".encode()) + b"\r\n")
    tagged(await d.collect(b"P2"), b"NO", b"AUTHENTICATIONFAILED")


async def test_authenticate_login(connect: Connect, acct: str) -> None:
    c = await connect()
    c.send(b"L1 AUTHENTICATE LOGIN\r\n")
    assert await c.response() == b"+ " + base64.b64encode(b"Username:")
    c.send(base64.b64encode(acct.encode()) + b"\r\n")
    assert await c.response() == b"+ " + base64.b64encode(b"Password:")
    c.send(base64.b64encode(b"secret") + b"\r\n")
    tagged(await c.collect(b"L1"), b"OK")
    tagged(await c.cmd("SELECT INBOX"), b"OK", b"READ-WRITE")


async def test_authenticate_plain_foreign_authzid_is_refused(world: ImapWorld,
                                                       connect: Connect) -> None:
    a_name, b_name = await world.add_user("za"), await world.add_user("zb")
    c = await connect()
    token = base64.b64encode(f"{b_name}\0{a_name}\0secret".encode()).decode()
    reply = await c.cmd(f"AUTHENTICATE PLAIN {token}")
    assert reply.status == b"NO", reply
    tagged(await c.cmd("SELECT INBOX"), b"BAD")


async def test_authenticate_plain_own_authzid_is_accepted(connect: Connect, acct: str) -> None:
    c = await connect()
    token = base64.b64encode(f"{acct}\0{acct}\0secret".encode()).decode()
    tagged(await c.cmd(f"AUTHENTICATE PLAIN {token}"), b"OK")


async def test_authenticate_cancelled_with_star(connect: Connect, acct: str) -> None:
    c = await connect()
    c.send(b"C1 AUTHENTICATE PLAIN\r\n")
    assert await c.response() == b"+ "
    c.send(b"*\r\n")
    tagged(await c.collect(b"C1"), b"BAD")
    tagged(await c.cmd("SELECT INBOX"), b"BAD")  # still not authenticated
    tagged(await c.cmd("AUTHENTICATE X-UNKNOWN"), b"NO")
    await c.login(acct)


# --- SELECT / EXAMINE -----------------------------------------------------------------------
SYSTEM_FLAGS = {b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft"}


async def test_select_transcript(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", msg("one"), "\\Seen")
    await imap.append("INBOX", msg("two"), "$Forwarded")
    await imap.append("INBOX", msg("three"))
    uv = await uidvalidity(imap, "INBOX")
    reply = await imap.cmd("SELECT INBOX")
    assert_lines(reply.untagged, [
        full(rb"\* FLAGS \([^)]*\)"),
        full(rb"\* OK \[PERMANENTFLAGS \([^)]*\)\]" + TEXT),
        b"* 3 EXISTS",
        b"* 3 RECENT",
        full(rb"\* OK \[UNSEEN 2\]" + TEXT),
        full(rb"\* OK \[UIDVALIDITY %d\]" % uv + TEXT),
        full(rb"\* OK \[UIDNEXT 4\]" + TEXT),
        full(rb"\* OK \[HIGHESTMODSEQ \d+\]" + TEXT),
    ])
    flags = set(reply.untagged[0][len(b"* FLAGS (") : -1].split())
    assert flags == SYSTEM_FLAGS | {b"$Forwarded"}
    permanent = re.search(rb"\[PERMANENTFLAGS \(([^)]*)\)\]", reply.untagged[1])
    assert permanent and set(permanent.group(1).split()) == flags | {b"\\*"}
    tagged(reply, b"OK", b"READ-WRITE")


async def test_select_missing_mailbox_leaves_selected_state(imap: MemoryIMAP) -> None:
    await imap.select()
    tagged(await imap.cmd("SELECT nosuch"), b"NO", b"NONEXISTENT")
    tagged(await imap.cmd("FETCH 1 FLAGS"), b"BAD")  # a failed SELECT deselects


async def test_select_inbox_is_case_insensitive(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("SELECT inbox"), b"OK", b"READ-WRITE")
    reply = await imap.cmd('STATUS "iNbOx" (MESSAGES)')
    assert reply.untagged == [b'* STATUS "INBOX" (MESSAGES 0)']


async def test_examine_is_read_only(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", msg("one"))
    reply = await imap.cmd("EXAMINE INBOX")
    assert b"* 1 EXISTS" in reply.untagged
    assert_lines(reply.lines(b"* OK [PERMANENTFLAGS"),
                 [full(rb"\* OK \[PERMANENTFLAGS \(\)\]" + TEXT)])
    tagged(reply, b"OK", b"READ-ONLY")
    tagged(await imap.cmd("STORE 1 +FLAGS (\\Flagged)"), b"NO")
    body = await imap.cmd("FETCH 1 BODY[]")
    assert literals(body.untagged[0]) == [msg("one")]
    assert b"FLAGS" not in body.untagged[0]  # no implicit \Seen in a read-only mailbox
    # No \Seen; \Recent is shown (the RECENT count says 1) but not taken (RFC 3501 §6.3.2).
    assert flags_of((await fetch_one(imap, "FETCH 1 FLAGS"))[b"FLAGS"]) == {b"\\Recent"}
    tagged(await imap.cmd("EXPUNGE"), b"NO")


# --- CREATE / DELETE / RENAME ---------------------------------------------------------------
async def list_names(c: MemoryIMAP, pattern: str = "*",
                     reference: str = "") -> dict[bytes, set[bytes]]:
    reply = await c.cmd(f'LIST "{reference}" "{pattern}"')
    assert reply.ok, reply
    out = {}
    for line in reply.untagged:
        attrs, delim, name = parse_list(line)
        assert delim == b"/"
        out[name] = attrs
    return out


async def test_create(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Lists"), b"OK")
    tagged(await imap.cmd("CREATE Lists"), b"NO", b"ALREADYEXISTS")
    tagged(await imap.cmd("CREATE lists/"), b"OK")  # names are case-sensitive; "/" ends it
    tagged(await imap.cmd("CREATE INBOX"), b"NO")
    names = await list_names(imap)
    assert b"Lists" in names and b"lists" in names and b"lists/" not in names
    tagged(await imap.cmd("CREATE Lists/"), b"NO", b"ALREADYEXISTS")
    tagged(await imap.cmd("CREATE Deep/er/still"), b"OK")
    # RFC 3501 §6.3.3: the missing superior names are created too, as real mailboxes.
    assert await list_names(imap, "Deep*") == {
        b"Deep": {b"\\HasChildren"},
        b"Deep/er": {b"\\HasChildren"},
        b"Deep/er/still": {b"\\HasNoChildren"},
    }


async def test_create_special_use(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Starred (USE (\\Flagged))"), b"OK")
    assert await list_names(imap, "Starred") == {b"Starred": {b"\\HasNoChildren", b"\\Flagged"}}
    reply = await imap.cmd('LIST (SPECIAL-USE) "" "*"')
    special = {parse_list(line)[2]: parse_list(line)[0] for line in reply.untagged}
    assert special[b"Starred"] >= {b"\\Flagged"}
    assert special[b"Sent"] >= {b"\\Sent"} and special[b"Trash"] >= {b"\\Trash"}
    assert b"INBOX" not in special


async def test_create_unknown_special_use_is_useattr(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Odd (USE (\\Bogus))"), b"NO", b"USEATTR")


async def test_create_with_empty_use_list(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Plain (USE ())"), b"OK")


async def test_delete(imap: MemoryIMAP, connect: Connect, acct: str) -> None:
    tagged(await imap.cmd("DELETE INBOX"), b"NO")
    tagged(await imap.cmd("DELETE nosuch"), b"NO", b"NONEXISTENT")
    tagged(await imap.cmd("CREATE Old"), b"OK")
    await imap.append("Old", msg("gone"))
    tagged(await imap.cmd("DELETE Old"), b"OK")
    assert b"Old" not in await list_names(imap)
    tagged(await imap.cmd("SELECT Old"), b"NO", b"NONEXISTENT")
    tagged(await imap.cmd("CREATE Old"), b"OK")
    assert (await imap.cmd("STATUS Old (MESSAGES)")).untagged == [b'* STATUS "Old" (MESSAGES 0)']


async def test_rename_moves_children(imap: MemoryIMAP) -> None:
    for name in ("a/b/c", "a/x"):
        tagged(await imap.cmd(f"CREATE {name}"), b"OK")
    await imap.append("a/b/c", msg("deep"))
    tagged(await imap.cmd("RENAME a z"), b"OK")
    names = await list_names(imap)
    assert not [n for n in names if n == b"a" or n.startswith(b"a/")]
    assert {b"z", b"z/b", b"z/b/c", b"z/x"} <= set(names)
    assert (await imap.cmd("STATUS z/b/c (MESSAGES)")).untagged == [
        b'* STATUS "z/b/c" (MESSAGES 1)']
    tagged(await imap.cmd("RENAME nosuch other"), b"NO", b"NONEXISTENT")
    tagged(await imap.cmd("RENAME z/x Sent"), b"NO", b"ALREADYEXISTS")
    tagged(await imap.cmd("RENAME z/x z/x/y"), b"NO")


async def test_rename_inbox_moves_its_messages(imap: MemoryIMAP, world: ImapWorld,
                                         acct: str) -> None:
    await imap.append("INBOX", msg("one"))
    await imap.append("INBOX", msg("two"))
    tagged(await imap.cmd('RENAME INBOX "Old Mail"'), b"OK")
    reply = await imap.cmd('STATUS "Old Mail" (MESSAGES)')
    assert reply.untagged == [b'* STATUS "Old Mail" (MESSAGES 2)']
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 0)']
    reply = await imap.cmd("SELECT INBOX")
    assert b"* 0 EXISTS" in reply.untagged
    assert await world.messages(acct, "Old Mail") == [msg("one"), msg("two")]


async def test_rename_inbox_leaves_its_children_alone(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE INBOX/sub"), b"OK")
    await imap.append("INBOX/sub", msg("child"))
    await imap.append("INBOX", msg("parent"))
    tagged(await imap.cmd("RENAME INBOX Moved"), b"OK")  # RFC 3501 §6.3.5
    names = await list_names(imap)
    assert b"INBOX/sub" in names and b"Moved/sub" not in names and b"Moved" in names
    assert (await imap.cmd("STATUS INBOX/sub (MESSAGES)")).untagged == [
        b'* STATUS "INBOX/sub" (MESSAGES 1)']
    assert (await imap.cmd("STATUS Moved (MESSAGES)")).untagged == [
        b'* STATUS "Moved" (MESSAGES 1)']


async def test_inbox_prefix_case_is_consistent(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE inbox/sub"), b"OK")
    names = await list_names(imap)
    assert [n for n in names if n.upper() == b"INBOX"] == [b"INBOX"]
    assert b"\\Noselect" not in names[b"INBOX"]
    assert len(await list_names(imap, "inbox/*")) == 1
    assert len(await list_names(imap, "INBOX/*")) == 1


# --- SUBSCRIBE / LSUB / LIST ----------------------------------------------------------------
async def test_subscribe_unsubscribe_lsub(imap: MemoryIMAP) -> None:
    for name in ("Work", "Work/Q1", "Projects/2026"):
        tagged(await imap.cmd(f"CREATE {name}"), b"OK")
    tagged(await imap.cmd("SUBSCRIBE Work/Q1"), b"OK")
    reply = await imap.cmd('LSUB "" "Work/*"')
    assert reply.untagged == [b'* LSUB () "/" "Work/Q1"']
    tagged(reply, b"OK")
    tagged(await imap.cmd("SUBSCRIBE Projects/2026"), b"OK")
    # "%" stops at the hierarchy: the unsubscribed parent comes back as \Noselect.
    reply = await imap.cmd('LSUB "" "%"')
    assert b'* LSUB (\\Noselect) "/" "Projects"' in reply.untagged
    assert b'* LSUB () "/" "INBOX"' in reply.untagged
    tagged(await imap.cmd("UNSUBSCRIBE Work/Q1"), b"OK")
    assert (await imap.cmd('LSUB "" "Work*"')).untagged == []
    tagged(await imap.cmd("UNSUBSCRIBE INBOX"), b"OK")
    assert (await imap.cmd('LSUB "" "INBOX"')).untagged == []


async def test_lsub_star_lists_only_subscribed_names(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Projects/2026"), b"OK")
    tagged(await imap.cmd("SUBSCRIBE Projects/2026"), b"OK")
    reply = await imap.cmd('LSUB "" "Proj*"')
    assert reply.untagged == [b'* LSUB () "/" "Projects/2026"']
    reply = await imap.cmd('LSUB "" "Projects"')
    assert reply.untagged == []


async def test_list_root_and_delimiter(imap: MemoryIMAP) -> None:
    reply = await imap.cmd('LIST "" ""')
    assert reply.untagged == [b'* LIST (\\Noselect) "/" ""']
    tagged(reply, b"OK")


async def test_list_wildcards_children_and_special_use(imap: MemoryIMAP) -> None:
    for name in ("Work", "Work/Q1", "Projects/2025", "Projects/2026"):
        tagged(await imap.cmd(f"CREATE {name}"), b"OK")
    # CREATE made "Projects" too (RFC 3501 §6.3.3); without it, it is a mere level.
    tagged(await imap.cmd("DELETE Projects"), b"OK")
    everything = await list_names(imap, "*")
    assert everything[b"INBOX"] == {b"\\HasNoChildren"}
    assert everything[b"Work"] == {b"\\HasChildren"}
    assert everything[b"Work/Q1"] == {b"\\HasNoChildren"}
    assert everything[b"Projects"] == {b"\\Noselect", b"\\HasChildren"}
    assert everything[b"Projects/2026"] == {b"\\HasNoChildren"}
    for name, use in ((b"Sent", b"\\Sent"), (b"Trash", b"\\Trash"), (b"Drafts", b"\\Drafts"),
                      (b"Junk", b"\\Junk"), (b"Archive", b"\\Archive")):
        assert everything[name] == {b"\\HasNoChildren", use}
    top = await list_names(imap, "%")
    assert set(top) == {n for n in everything if b"/" not in n}
    assert set(await list_names(imap, "%", "Projects/")) == {b"Projects/2025", b"Projects/2026"}
    assert set(await list_names(imap, "Projects/%")) == {b"Projects/2025", b"Projects/2026"}
    assert set(await list_names(imap, "*/Q1")) == {b"Work/Q1"}
    assert await list_names(imap, "inbox") == {b"INBOX": {b"\\HasNoChildren"}}
    reply = await imap.cmd('list "" inbox')
    assert reply.untagged == [b'* LIST (\\HasNoChildren) "/" "INBOX"']


async def test_list_extended_subscribed_and_return_special_use(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CREATE Work/Q1"), b"OK")
    tagged(await imap.cmd("SUBSCRIBE Work/Q1"), b"OK")
    tagged(await imap.cmd("UNSUBSCRIBE Junk"), b"OK")
    reply = await imap.cmd('LIST (SUBSCRIBED) "" "*"')
    tagged(reply, b"OK")
    subscribed = {parse_list(line)[2]: parse_list(line)[0] for line in reply.untagged}
    assert b"Work/Q1" in subscribed and b"Junk" not in subscribed and b"INBOX" in subscribed
    assert all(b"\\Subscribed" in attrs for attrs in subscribed.values())
    reply = await imap.cmd('LIST "" "*" RETURN (SPECIAL-USE)')
    tagged(reply, b"OK")
    attrs = {parse_list(line)[2]: parse_list(line)[0] for line in reply.untagged}
    assert b"\\Sent" in attrs[b"Sent"] and b"\\Junk" in attrs[b"Junk"]
    assert not attrs[b"INBOX"] & {b"\\Sent", b"\\Junk", b"\\Trash", b"\\Drafts"}
    reply = await imap.cmd('LIST "" "*" RETURN (SUBSCRIBED)')
    attrs = {parse_list(line)[2]: parse_list(line)[0] for line in reply.untagged}
    assert b"\\Subscribed" in attrs[b"Work/Q1"] and b"\\Subscribed" not in attrs[b"Junk"]
    assert {n for n, a in attrs.items() if b"\\Subscribed" in a} == set(subscribed)


async def test_list_status(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", msg("read"), "\\Seen")
    await imap.append("INBOX", msg("unread"))
    tagged(await imap.cmd("CREATE Projects/2026"), b"OK")
    reply = await imap.cmd('LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')
    tagged(reply, b"OK")
    lines = reply.untagged
    i = lines.index(b'* LIST (\\HasNoChildren) "/" "INBOX"')
    assert lines[i + 1] == b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1)'
    # every selectable mailbox gets one STATUS right after its LIST; \Noselect ones none
    for n, line in enumerate(lines):
        if line.startswith(b"* LIST"):
            attrs, _, name = parse_list(line)
            after = lines[n + 1] if n + 1 < len(lines) else b""
            if b"\\Noselect" in attrs or b"\\NonExistent" in attrs:
                assert not after.startswith(b"* STATUS"), name
            else:
                assert re.fullmatch(rb'\* STATUS "?%s"? \(MESSAGES \d+ UNSEEN \d+\)'
                                    % re.escape(name), after), (name, after)


async def test_status(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", msg("read"), "\\Seen")
    await imap.append("INBOX", msg("unread"))
    uv = await uidvalidity(imap, "INBOX")
    reply = await imap.cmd("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert reply.untagged == [
        b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 1)' % uv
    ]
    tagged(reply, b"OK")
    tagged(await imap.cmd("STATUS nosuch (MESSAGES)"), b"NO", b"NONEXISTENT")
    tagged(await imap.cmd("STATUS INBOX (BOGUS)"), b"BAD")


# --- APPEND ---------------------------------------------------------------------------------
async def test_append_flags_date_and_appenduid(imap: MemoryIMAP, world: ImapWorld,
                                         acct: str) -> None:
    uv = await uidvalidity(imap, "INBOX")
    reply = await imap.cmd_literal('APPEND INBOX (\\Seen $Forwarded) "5-Nov-2026 09:03:01 +0100"',
                             SIMPLE)
    assert reply.untagged == []
    tagged(reply, b"OK", b"APPENDUID %d 1" % uv)
    reply = await imap.cmd_literal("APPEND INBOX", MULTI)
    tagged(reply, b"OK", b"APPENDUID %d 2" % uv)
    await imap.select()
    item = await fetch_one(imap, "FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert flags_of(item[b"FLAGS"]) == {b"\\Seen", b"$Forwarded", b"\\Recent"}
    assert item[b"INTERNALDATE"] == b" 5-Nov-2026 09:03:01 +0100"
    assert item[b"RFC822.SIZE"] == b"%d" % len(SIMPLE)
    assert item[b"BODY[]"] == SIMPLE
    assert await world.messages(acct) == [SIMPLE, MULTI]


async def test_append_internaldate_wire_format(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", SIMPLE, date="5-Nov-2026 09:03:01 +0100")
    await imap.append("INBOX", SIMPLE, date="25-Dec-2025 23:59:59 -0800")
    await imap.append("INBOX", SIMPLE)
    await imap.select()
    reply = await imap.cmd("FETCH 1:3 INTERNALDATE")
    assert_lines(reply.untagged, [
        b'* 1 FETCH (INTERNALDATE " 5-Nov-2026 09:03:01 +0100")',
        b'* 2 FETCH (INTERNALDATE "25-Dec-2025 23:59:59 -0800")',
        full(rb'\* 3 FETCH \(INTERNALDATE "[ 123]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d '
             rb'[+-]\d{4}"\)'),
    ])
    tagged(await imap.cmd_literal('APPEND INBOX "31-Feb-2026 09:00:00 +0000"', b"x\r\n", plus=True),
           b"BAD")
    tagged(await imap.cmd_literal('APPEND INBOX "5-Nov-2026 09:03:01"', b"x\r\n",
                                  plus=True), b"BAD")


async def test_append_literal_plus_gets_no_continuation(imap: MemoryIMAP) -> None:
    imap.send(b"P1 APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\nP2 NOOP\r\n")
    first = await imap.response()
    assert first.startswith(b"P1 OK [APPENDUID "), first
    tagged(await imap.collect(b"P2"), b"OK")


async def test_append_too_big_is_refused_before_the_literal(imap: MemoryIMAP) -> None:
    imap.send(b"B1 APPEND INBOX {1000001}\r\n")
    first = await imap.response()
    assert re.fullmatch(rb"B1 NO \[TOOBIG\]" + TEXT, first), first
    reply = await imap.cmd("NOOP")  # no "+" came, and the session goes on
    assert reply.untagged == []
    tagged(reply, b"OK")
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 0)']


async def test_append_to_missing_mailbox_is_trycreate(imap: MemoryIMAP) -> None:
    reply = await imap.cmd_literal("APPEND nosuch", SIMPLE)
    tagged(reply, b"NO", b"TRYCREATE")
    assert b"nosuch" not in await list_names(imap)


async def test_append_to_selected_mailbox_announces_exists(imap: MemoryIMAP) -> None:
    await imap.select()
    reply = await imap.cmd_literal("APPEND INBOX", SIMPLE, plus=True)
    assert b"* 1 EXISTS" in reply.untagged
    tagged(reply, b"OK", b"APPENDUID %d 1" % await uidvalidity(imap, "INBOX"))


# --- CHECK, CLOSE, UNSELECT, EXPUNGE --------------------------------------------------------
async def three_messages(c: MemoryIMAP) -> None:
    for i in (1, 2, 3):
        await c.append("INBOX", msg(f"m{i}"))
    await c.select()


async def test_check(imap: MemoryIMAP) -> None:
    tagged(await imap.cmd("CHECK"), b"BAD")  # not selected
    await imap.select()
    reply = await imap.cmd("CHECK")
    assert reply.untagged == []
    tagged(reply, b"OK")


async def test_close_expunges_silently(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    assert (await imap.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")).untagged == []
    reply = await imap.cmd("CLOSE")
    assert reply.untagged == []
    tagged(reply, b"OK")
    tagged(await imap.cmd("FETCH 1 FLAGS"), b"BAD")  # back in authenticated state
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 2)']


async def test_close_after_examine_does_not_expunge(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    await imap.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await imap.cmd("EXAMINE INBOX")
    tagged(await imap.cmd("CLOSE"), b"OK")
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 3)']


async def test_unselect_does_not_expunge(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    await imap.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    reply = await imap.cmd("UNSELECT")
    assert reply.untagged == []
    tagged(reply, b"OK")
    tagged(await imap.cmd("UNSELECT"), b"BAD")
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 3)']
    await imap.select()
    assert b"\\Deleted" in flags_of((await fetch_one(imap, "FETCH 2 FLAGS"))[b"FLAGS"])


async def test_expunge_responses_renumber_correctly(imap: MemoryIMAP) -> None:
    for i in range(1, 8):
        await imap.append("INBOX", msg(f"m{i}"))
    await imap.select()
    assert (await imap.cmd("STORE 2,4,5,7 +FLAGS.SILENT (\\Deleted)")).untagged == []
    reply = await imap.cmd("EXPUNGE")
    tagged(reply, b"OK")
    assert all(re.fullmatch(rb"\* \d+ EXPUNGE", line) for line in reply.untagged), reply
    assert len(reply.untagged) == 4
    assert apply_expunges([1, 2, 3, 4, 5, 6, 7], reply.untagged) == [1, 3, 6]
    reply = await imap.cmd("FETCH 1:* UID")
    assert reply.untagged == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)", b"* 3 FETCH (UID 6)"]
    reply = await imap.cmd("EXPUNGE")  # nothing left to expunge
    assert reply.untagged == []


async def test_uid_expunge_only_named_messages(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    await imap.cmd("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    reply = await imap.cmd("UID EXPUNGE 2:3")
    assert apply_expunges([1, 2, 3], reply.untagged) == [1]
    assert len(reply.untagged) == 2
    tagged(reply, b"OK")
    assert (await imap.cmd("FETCH 1:* UID")).untagged == [b"* 1 FETCH (UID 1)"]


# --- SEARCH ---------------------------------------------------------------------------------
SEARCH_MESSAGES = [
    ("\\Seen \\Answered $Work", "1-Oct-2026 12:00:00 +0000", crlf(
        "From: Alice <alice@example.net>\nTo: bob@example.org\nCc: carol@example.com\n"
        "Bcc: dave@example.com\nSubject: Lunch plans\nDate: Thu, 01 Oct 2026 08:00:00 +0000\n"
        "Message-ID: <s1@example.net>\n\nLet's eat pizza at noon.\n")),
    ("\\Flagged \\Draft", "15-Oct-2026 12:00:00 +0000", crlf(
        "From: Bob <bob@example.org>\nTo: alice@example.net\nSubject: Re: Lunch plans\n"
        "Date: Thu, 15 Oct 2026 09:30:00 +0000\nX-Priority: urgent\n"
        "Message-ID: <s2@example.org>\n\nPizza is fine.\n")),
    ("\\Deleted \\Seen", "20-Oct-2026 12:00:00 +0000", crlf(
        "From: carol@example.com\nTo: dave@example.com\n"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\n"
        "Date: Tue, 20 Oct 2026 18:00:00 +0000\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n"
        "\nSch=C3=B6ne Gr=C3=BC=C3=9Fe vom Rhein.\n" + "filler line of text\n" * 50)),
    ("", "1-Nov-2026 12:00:00 +0000", crlf(
        "From: Dave <dave@example.com>\nTo: Alice <alice@example.net>\nSubject: Meeting\n"
        "Date: Sun, 01 Nov 2026 10:00:00 +0000\n\nAgenda attached.\n")),
]


@pytest.fixture(scope="module")
async def search_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ImapWorld]:
    async with running_world(tmp_path_factory.mktemp("search"), SERVER_CONFIG, tls=True) as w:
        yield w


@pytest.fixture(scope="module")
async def searchbox(search_world: ImapWorld) -> MemoryIMAP:
    """A session with INBOX selected: 4 messages, only the 4th \\Recent in this session."""
    user = await search_world.add_user("search")
    first = await search_world.connect()
    await first.login(user)
    for flags, date, data in SEARCH_MESSAGES[:3]:
        await first.append("INBOX", data, flags, date)
    await first.select()  # claims \Recent for 1-3
    await first.cmd("LOGOUT")
    first.drop()
    c = await search_world.connect()
    await c.login(user)
    flags, date, data = SEARCH_MESSAGES[3]
    await c.append("INBOX", data, flags, date)
    reply = await c.select()
    assert b"* 4 EXISTS" in reply.untagged and b"* 1 RECENT" in reply.untagged
    return c


SEARCH_CASES = [
    ("ALL", "1 2 3 4"),
    ("ANSWERED", "1"),
    ("BCC dave", "1"),
    ("BEFORE 15-Oct-2026", "1"),
    ("BODY pizza", "1 2"),
    ("BODY carol", ""),
    ("CC carol@example.com", "1"),
    ("DELETED", "3"),
    ("DRAFT", "2"),
    ("FLAGGED", "2"),
    ("FROM alice", "1"),
    ('FROM "Bob"', "2"),
    ("HEADER X-Priority urgent", "2"),
    ('HEADER X-Priority ""', "2"),
    ('HEADER Message-ID "example.org"', "2"),
    ("KEYWORD $Work", "1"),
    ("LARGER 1000", "3"),
    ("NEW", "4"),
    ("NOT SEEN", "2 4"),
    ("OLD", "1 2 3"),
    ("ON 15-Oct-2026", "2"),
    ("OR FROM alice FROM bob", "1 2"),
    ("RECENT", "4"),
    ("SEEN", "1 3"),
    ("SENTBEFORE 15-Oct-2026", "1"),
    ("SENTON 20-Oct-2026", "3"),
    ("SENTSINCE 20-Oct-2026", "3 4"),
    ("SINCE 15-Oct-2026", "2 3 4"),
    ("SMALLER 1000", "1 2 4"),
    ("SUBJECT lunch", "1 2"),
    ("TEXT pizza", "1 2"),
    ("TEXT carol@example.com", "1 3"),
    ("TO alice", "2 4"),
    ("UID 2:3", "2 3"),
    ("UID 3:*", "3 4"),
    ("UNANSWERED", "2 3 4"),
    ("UNDELETED", "1 2 4"),
    ("UNDRAFT", "1 3 4"),
    ("UNFLAGGED", "1 3 4"),
    ("UNKEYWORD $Work", "2 3 4"),
    ("UNSEEN", "2 4"),
    ("2:3", "2 3"),
    ("*", "4"),
    ("1,3:*", "1 3 4"),
    ("4:2", "2 3 4"),
    ("SEEN FROM carol", "3"),
    ("seen from CAROL", "3"),
    ("OR (FLAGGED SEEN) NOT (OR DELETED RECENT)", "1 2"),
    ("NOT (OR FROM alice (SUBJECT lunch DRAFT))", "3 4"),
    ("OR OR ANSWERED DRAFT DELETED", "1 2 3"),
    ("NOT NOT SEEN", "1 3"),
    ("(OR (UID 1) (UID 4)) UNSEEN", "4"),
    ("CHARSET US-ASCII SUBJECT meeting", "4"),
]


@pytest.mark.parametrize(("criteria", "expected"), SEARCH_CASES)
async def test_search_keys(searchbox: MemoryIMAP, criteria: str, expected: str) -> None:
    reply = await searchbox.cmd(f"SEARCH {criteria}")
    assert reply.untagged == [f"* SEARCH {expected}".rstrip().encode()]
    tagged(reply, b"OK")


async def test_search_size_bounds_are_strict(searchbox: MemoryIMAP) -> None:
    size = len(SEARCH_MESSAGES[0][2])
    assert (await searchbox.cmd(f"SEARCH LARGER {size} UID 1")).untagged == [b"* SEARCH"]
    assert (await searchbox.cmd(f"SEARCH SMALLER {size} UID 1")).untagged == [b"* SEARCH"]
    assert (await searchbox.cmd(f"SEARCH LARGER {size - 1} UID 1")).untagged == [b"* SEARCH 1"]
    assert (await searchbox.cmd(f"SEARCH SMALLER {size + 1} UID 1")).untagged == [b"* SEARCH 1"]


async def test_search_dates_ignore_time_and_zone(imap: MemoryIMAP) -> None:
    # 23:30 -0500 on 1 Oct is 2 Oct in UTC; the date as written counts (RFC 3501 §6.4.4).
    await imap.append("INBOX", crlf("Date: Thu, 01 Oct 2026 23:30:00 -0500\nSubject: a\n\nx\n"),
                date="1-Oct-2026 23:30:00 -0500")
    await imap.append("INBOX", crlf("Date: Fri, 02 Oct 2026 00:30:00 +0200\nSubject: b\n\nx\n"),
                date="2-Oct-2026 00:30:00 +0200")
    await imap.select()
    for criteria, expected in (("ON 1-Oct-2026", b"1"), ("ON 2-Oct-2026", b"2"),
                               ("SENTON 1-Oct-2026", b"1"), ("SENTON 2-Oct-2026", b"2"),
                               ("BEFORE 2-Oct-2026", b"1"), ("SINCE 2-Oct-2026", b"2"),
                               ("SENTBEFORE 2-Oct-2026", b"1"), ("SENTSINCE 2-Oct-2026", b"2")):
        assert (await imap.cmd(f"SEARCH {criteria}")).untagged == [
            b"* SEARCH " + expected], criteria


async def test_uid_search(searchbox: MemoryIMAP) -> None:
    reply = await searchbox.cmd("UID SEARCH UNSEEN")
    assert reply.untagged == [b"* SEARCH 2 4"]
    tagged(reply, b"OK")


@pytest.mark.parametrize(("key", "needle", "expected"), [
    ("SUBJECT", "Köln", "3"),  # an RFC 2047 encoded word, decoded
    ("BODY", "Schöne", "3"),  # quoted-printable UTF-8, decoded
    ("TEXT", "grüße", "3"),
])
async def test_search_charset_utf8_literal(searchbox: MemoryIMAP, key: str, needle: str,
                                     expected: str) -> None:
    reply = await searchbox.cmd_literal(f"SEARCH CHARSET UTF-8 {key}", needle.encode("utf-8"))
    assert reply.untagged == [f"* SEARCH {expected}".encode()]
    tagged(reply, b"OK")


async def test_search_unknown_charset(searchbox: MemoryIMAP) -> None:
    reply = await searchbox.cmd("SEARCH CHARSET X-MARTIAN ALL")
    assert reply.untagged == []
    assert re.fullmatch(rb"%s NO \[BADCHARSET( \([^)]*\))?\]" % reply.tag + TEXT,
                        reply.tagged), reply.tagged


async def test_esearch(searchbox: MemoryIMAP) -> None:
    reply = await searchbox.cmd("SEARCH RETURN (MIN MAX COUNT) UNSEEN")
    assert reply.untagged == [b'* ESEARCH (TAG "%s") MIN 2 MAX 4 COUNT 2' % reply.tag]
    tagged(reply, b"OK")
    reply = await searchbox.cmd("SEARCH RETURN () ALL")
    assert reply.untagged == [b'* ESEARCH (TAG "%s") ALL 1:4' % reply.tag]
    reply = await searchbox.cmd("UID SEARCH RETURN (ALL) SEEN")
    assert reply.untagged == [b'* ESEARCH (TAG "%s") UID ALL 1,3' % reply.tag]
    reply = await searchbox.cmd("SEARCH RETURN (MIN MAX COUNT) DRAFT DELETED")
    assert reply.untagged == [b'* ESEARCH (TAG "%s") COUNT 0' % reply.tag]
    reply = await searchbox.cmd("UID SEARCH RETURN (COUNT) CHARSET UTF-8 FROM alice")
    assert reply.untagged == [b'* ESEARCH (TAG "%s") UID COUNT 1' % reply.tag]


# --- FETCH ----------------------------------------------------------------------------------
@pytest.fixture
async def fetchbox(imap: MemoryIMAP) -> MemoryIMAP:
    await imap.append("INBOX", SIMPLE, date="5-Nov-2026 09:03:01 +0100")
    await imap.append("INBOX", MULTI, date="6-Nov-2026 10:00:00 +0000")
    await imap.select()
    return imap


async def test_fetch_flags_internaldate_size(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 1:2 (FLAGS INTERNALDATE RFC822.SIZE)")
    assert reply.untagged == [
        b'* 1 FETCH (FLAGS (\\Recent) INTERNALDATE " 5-Nov-2026 09:03:01 +0100" '
        b"RFC822.SIZE %d)" % len(SIMPLE),
        b'* 2 FETCH (FLAGS (\\Recent) INTERNALDATE " 6-Nov-2026 10:00:00 +0000" '
        b"RFC822.SIZE %d)" % len(MULTI),
    ]
    tagged(reply, b"OK")


async def test_uid_fetch_vanished_is_refused_without_qresync(fetchbox: MemoryIMAP) -> None:
    # RFC 7162 §3.2.6: VANISHED only once QRESYNC is enabled, which it never is here.
    assert b"QRESYNC" not in (await fetchbox.cmd("CAPABILITY")).untagged[0]
    reply = await fetchbox.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert reply.untagged == []
    tagged(reply, b"BAD")
    assert b"QRESYNC" in reply.tagged
    tagged(await fetchbox.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)"), b"OK")


async def test_fetch_envelope(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 1:2 ENVELOPE")
    assert reply.untagged == [
        b'* 1 FETCH (ENVELOPE ("Thu, 05 Nov 2026 09:03:01 +0100" "first" '
        b'(("Alice" NIL "alice" "example.net")) (("Alice" NIL "alice" "example.net")) '
        b'(("Alice" NIL "alice" "example.net")) ((NIL NIL "bob" "example.org")) '
        b'NIL NIL NIL "<1@example.net>"))',
        b"* 2 FETCH (ENVELOPE " + MULTI_ENVELOPE + b")",
    ]


async def test_fetch_body_and_bodystructure(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 2 (BODYSTRUCTURE)")
    assert reply.untagged == [b"* 2 FETCH (BODYSTRUCTURE " + MULTI_BODYSTRUCTURE + b")"]
    reply = await fetchbox.cmd("FETCH 2 BODY")
    assert reply.untagged == [b"* 2 FETCH (BODY " + MULTI_BODY + b")"]
    reply = await fetchbox.cmd("FETCH 1 BODYSTRUCTURE")
    assert reply.untagged == [
        b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" '
        b"12 1 NIL NIL NIL NIL))"
    ]


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


@pytest.mark.parametrize(("section", "name", "expected"), [
    ("", b"BODY[]", MULTI),
    ("HEADER", b"BODY[HEADER]", MULTI_HEADER),
    ("HEADER.FIELDS (SUBJECT FROM)", b"BODY[HEADER.FIELDS (SUBJECT FROM)]",
     b"From: Alice Example <alice@example.net>\r\nSubject: Quarterly report\r\n\r\n"),
    ("HEADER.FIELDS (X-Absent)", b"BODY[HEADER.FIELDS (X-Absent)]", b"\r\n"),
    ("HEADER.FIELDS.NOT (From To Cc Bcc Subject Date Message-ID MIME-Version)",
     b"BODY[HEADER.FIELDS.NOT (From To Cc Bcc Subject Date Message-ID MIME-Version)]",
     b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'),
    ("TEXT", b"BODY[TEXT]", MULTI_TEXT),
    ("1", b"BODY[1]", "Hello Bob,\r\nthe report is attached. Grüße".encode()),
    ("1.MIME", b"BODY[1.MIME]",
     b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"),
    ("2", b"BODY[2]", b"JVBERi0xLjQKJcfsj6IKCg=="),
    ("2.MIME", b"BODY[2.MIME]",
     b'Content-Type: application/pdf; name="report.pdf"\r\n'
     b'Content-Disposition: attachment; filename="report.pdf"\r\n'
     b"Content-Transfer-Encoding: base64\r\n\r\n"),
    ("3", b"BODY[3]", INNER),
    ("3.HEADER", b"BODY[3.HEADER]", INNER[: INNER.index(b"\r\n\r\n") + 4]),
    ("3.TEXT", b"BODY[3.TEXT]", INNER[INNER.index(b"\r\n\r\n") + 4 :]),
    ("3.1", b"BODY[3.1]", b"inner plain"),
    ("3.2", b"BODY[3.2]", b"<p>inner html</p>"),
    ("3.1.MIME", b"BODY[3.1.MIME]", b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"),
])
async def test_fetch_body_sections(fetchbox: MemoryIMAP, section: str, name: bytes,
                             expected: bytes) -> None:
    reply = await fetchbox.cmd(f"FETCH 2 BODY.PEEK[{section}]")
    assert reply.untagged == [b"* 2 FETCH (" + name + b" " + lit(expected) + b")"]
    tagged(reply, b"OK")


async def test_fetch_partial(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 1 BODY.PEEK[]<0.10>")
    assert reply.untagged == [b"* 1 FETCH (BODY[]<0> " + lit(SIMPLE[:10]) + b")"]
    reply = await fetchbox.cmd("FETCH 2 BODY.PEEK[1]<6.3>")
    assert reply.untagged == [b"* 2 FETCH (BODY[1]<6> " + lit(b"Bob") + b")"]
    reply = await fetchbox.cmd("FETCH 1 BODY.PEEK[TEXT]<100.10>")  # beyond the end: empty
    assert reply.untagged == [b'* 1 FETCH (BODY[TEXT]<100> {0}\r\n)'] or \
        reply.untagged == [b'* 1 FETCH (BODY[TEXT]<100> "")']


async def test_fetch_body_peek_and_implicit_seen(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 1 BODY.PEEK[]")
    assert reply.untagged == [b"* 1 FETCH (BODY[] " + lit(SIMPLE) + b")"]
    assert (await fetchbox.cmd("FETCH 1 FLAGS")).untagged == [b"* 1 FETCH (FLAGS (\\Recent))"]
    reply = await fetchbox.cmd("FETCH 1 BODY[]")
    [line] = reply.untagged
    _, items = parse_fetch(line)
    assert items[b"BODY[]"] == SIMPLE
    assert flags_of(items[b"FLAGS"]) == {b"\\Seen", b"\\Recent"}  # the change is reported
    reply = await fetchbox.cmd("FETCH 1 BODY[]")  # already \Seen: no FLAGS needed any more
    assert literals(reply.untagged[0]) == [SIMPLE]


async def test_fetch_rfc822_items(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("FETCH 2 RFC822.HEADER")
    assert reply.untagged == [b"* 2 FETCH (RFC822.HEADER " + lit(MULTI_HEADER) + b")"]
    assert flags_of((await fetch_one(fetchbox, "FETCH 2 FLAGS"))[b"FLAGS"]) == {b"\\Recent"}
    items = await fetch_one(fetchbox, "FETCH 2 RFC822.TEXT")
    assert items[b"RFC822.TEXT"] == MULTI_TEXT
    assert b"\\Seen" in flags_of(items[b"FLAGS"])
    items = await fetch_one(fetchbox, "FETCH 1 RFC822")
    assert items[b"RFC822"] == SIMPLE
    assert b"\\Seen" in flags_of(items[b"FLAGS"])


async def test_fetch_macros(fetchbox: MemoryIMAP) -> None:
    fast = await fetch_one(fetchbox, "FETCH 1 FAST")
    assert set(fast) == {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"}
    all_ = await fetch_one(fetchbox, "FETCH 1 ALL")
    assert set(all_) == {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"}
    full_ = await fetch_one(fetchbox, "FETCH 2 FULL")
    assert set(full_) == {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"}
    reply = await fetchbox.cmd("FETCH 2 FULL")
    assert b" BODY " + MULTI_BODY in reply.untagged[0]
    assert b"ENVELOPE " + MULTI_ENVELOPE in reply.untagged[0]


async def test_uid_fetch_always_includes_uid(fetchbox: MemoryIMAP) -> None:
    reply = await fetchbox.cmd("UID FETCH 1:* FLAGS")
    assert [parse_fetch(line)[1][b"UID"] for line in reply.untagged] == [b"1", b"2"]
    reply = await fetchbox.cmd("UID FETCH 2 BODY.PEEK[1]")
    assert parse_fetch(reply.untagged[0])[1][b"UID"] == b"2"
    tagged(reply, b"OK")
    reply = await fetchbox.cmd("UID FETCH 100:200 FLAGS")  # no such UIDs: OK, no data
    assert reply.untagged == []
    tagged(reply, b"OK")


# --- STORE ----------------------------------------------------------------------------------
async def test_store_variants(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    reply = await imap.cmd("STORE 1 FLAGS (\\Flagged \\Answered)")
    assert len(reply.untagged) == 1
    n, items = parse_fetch(reply.untagged[0])
    assert n == 1 and flags_of(items[b"FLAGS"]) == {b"\\Flagged", b"\\Answered", b"\\Recent"}
    reply = await imap.cmd("STORE 1:2 +FLAGS (\\Seen)")
    assert [parse_fetch(line)[0] for line in reply.untagged] == [1, 2]
    assert flags_of(parse_fetch(reply.untagged[1])[1][b"FLAGS"]) == {b"\\Seen", b"\\Recent"}
    reply = await imap.cmd("STORE 1 -FLAGS (\\Answered)")
    assert flags_of(parse_fetch(reply.untagged[0])[1][b"FLAGS"]) == {
        b"\\Flagged", b"\\Seen", b"\\Recent"}
    for item in ("FLAGS.SILENT (\\Draft)", "+FLAGS.SILENT (\\Deleted)", "-FLAGS.SILENT (\\Draft)"):
        reply = await imap.cmd(f"STORE 3 {item}")
        assert reply.untagged == [], item  # .SILENT: no FETCH for our own change
        tagged(reply, b"OK")
    assert flags_of((await fetch_one(imap, "FETCH 3 FLAGS"))[b"FLAGS"]) == {
        b"\\Deleted", b"\\Recent"}
    reply = await imap.cmd("UID STORE 2 +FLAGS (\\Draft)")
    assert parse_fetch(reply.untagged[0])[1][b"UID"] == b"2"
    tagged(await imap.cmd("STORE 1 +FLAGS (\\Recent)"), b"BAD")
    tagged(await imap.cmd("STORE 1 BOGUS (\\Seen)"), b"BAD")


async def test_store_keywords_persist_across_sessions(imap: MemoryIMAP, connect: Connect,
                                                acct: str) -> None:
    await imap.append("INBOX", msg("keywords"))
    await imap.select()
    keywords = {b"$Forwarded", b"$Junk", b"$NotJunk", b"$MDNSent"}
    reply = await imap.cmd("STORE 1 +FLAGS ($Forwarded $Junk $NotJunk $MDNSent)")
    # New keywords: FLAGS and PERMANENTFLAGS list them before the FETCH that shows them.
    flags_line, permanent, fetch = reply.untagged
    assert keywords <= set(flags_line[len(b"* FLAGS (") : -1].split())
    assert permanent.startswith(b"* OK [PERMANENTFLAGS (") and b"$MDNSent" in permanent
    assert flags_of(parse_fetch(fetch)[1][b"FLAGS"]) >= keywords
    await imap.cmd("LOGOUT")
    other = await connect(acct)
    reply = await other.select()
    flags_line = reply.lines(b"* FLAGS ")[0]
    assert keywords <= set(flags_line[len(b"* FLAGS (") : -1].split())
    assert flags_of((await fetch_one(other, "FETCH 1 FLAGS"))[b"FLAGS"]) == keywords
    reply = await other.cmd("SEARCH KEYWORD $Junk UNKEYWORD $Spam")
    assert reply.untagged == [b"* SEARCH 1"]


# --- COPY / MOVE ----------------------------------------------------------------------------
async def test_copy_and_uid_copy(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    tagged(await imap.cmd("CREATE Dest"), b"OK")
    uv = await uidvalidity(imap, "Dest")
    reply = await imap.cmd("COPY 1:2 Dest")
    assert reply.untagged == []
    tagged(reply, b"OK", b"COPYUID %d 1:2 1:2" % uv)
    reply = await imap.cmd("UID COPY 3 Dest")
    tagged(reply, b"OK", b"COPYUID %d 3 3" % uv)
    tagged(await imap.cmd("COPY 1 nosuch"), b"NO", b"TRYCREATE")
    assert (await imap.cmd("STATUS Dest (MESSAGES)")).untagged == [b'* STATUS "Dest" (MESSAGES 3)']
    assert (await imap.cmd("STATUS INBOX (MESSAGES)")).untagged == [
        b'* STATUS "INBOX" (MESSAGES 3)']
    tagged(await imap.cmd("COPY 9 Dest"), b"BAD")  # no such message number


async def test_move_and_uid_move(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    tagged(await imap.cmd("CREATE Dest"), b"OK")
    uv = await uidvalidity(imap, "Dest")
    reply = await imap.cmd("MOVE 2 Dest")
    assert_lines(reply.untagged, [
        full(rb"\* OK \[COPYUID %d 2 1\]" % uv + TEXT),
        b"* 2 EXPUNGE",
    ])
    tagged(reply, b"OK")
    reply = await imap.cmd("UID MOVE 1,3 Dest")
    assert re.fullmatch(rb"\* OK \[COPYUID %d 1,3 2:3\]" % uv + TEXT, reply.untagged[0])
    assert apply_expunges([1, 3], reply.untagged[1:]) == []
    tagged(reply, b"OK")
    assert (await imap.cmd("STATUS Dest (MESSAGES)")).untagged == [b'* STATUS "Dest" (MESSAGES 3)']
    tagged(await imap.cmd("NOOP"), b"OK")
    reply = await imap.cmd("UID MOVE 1 Dest")  # UID 1 is gone: nothing to move
    assert reply.untagged == []
    tagged(reply, b"OK")


async def test_copy_preserves_flags_and_internaldate(imap: MemoryIMAP) -> None:
    await imap.append("INBOX", SIMPLE, "\\Flagged $Label1", "7-Jan-2026 01:02:03 -0500")
    tagged(await imap.cmd("CREATE Dest"), b"OK")
    await imap.select()
    tagged(await imap.cmd("COPY 1 Dest"), b"OK")
    tagged(await imap.cmd("MOVE 1 Dest"), b"OK")
    await imap.select("Dest")
    reply = await imap.cmd("FETCH 1:2 (FLAGS INTERNALDATE BODY.PEEK[])")
    for line in reply.untagged:
        items = parse_fetch(line)[1]
        assert flags_of(items[b"FLAGS"]) == {b"\\Flagged", b"$Label1", b"\\Recent"}
        assert items[b"INTERNALDATE"] == b" 7-Jan-2026 01:02:03 -0500"
        assert items[b"BODY[]"] == SIMPLE
    assert len(reply.untagged) == 2


async def test_move_to_missing_mailbox_is_trycreate(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    reply = await imap.cmd("MOVE 1 nosuch")
    assert reply.untagged == []
    tagged(reply, b"NO", b"TRYCREATE")


# --- two sessions on one mailbox ------------------------------------------------------------
async def test_other_sessions_changes_arrive_with_the_next_allowed_command(
    imap: MemoryIMAP, connect: Connect, acct: str
) -> None:
    await three_messages(imap)
    other = await connect(acct)
    await other.select()
    await other.cmd("STORE 2 +FLAGS.SILENT (\\Deleted \\Answered)")
    await other.cmd("EXPUNGE")
    await other.append("INBOX", msg("four"))
    # FETCH, STORE and SEARCH must not announce an EXPUNGE (RFC 3501 §7.4.1) ...
    fetch = await imap.cmd("FETCH 3 UID")
    assert b"* 3 FETCH (UID 3)" in fetch.untagged
    assert not [line for line in fetch.untagged if line.endswith(b"EXPUNGE")], fetch
    search = await imap.cmd("SEARCH UNDELETED")
    assert not [line for line in search.untagged if line.endswith(b"EXPUNGE")], search
    # ... NOOP does; the new message comes with any of them (EXISTS before the EXPUNGE
    # counts 4, after it 3).
    noop = await imap.cmd("NOOP")
    assert b"* 2 EXPUNGE" in noop.untagged
    seen = fetch.untagged + search.untagged + noop.untagged
    assert b"* 4 EXISTS" in fetch.untagged + search.untagged or b"* 3 EXISTS" in noop.untagged
    assert not [line for line in seen if line.endswith(b"EXISTS") and line[2:3] not in b"34"]
    assert (await imap.cmd("FETCH 1:* UID")).untagged == [
        b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)", b"* 3 FETCH (UID 4)"]


async def test_uid_range_past_the_last_uid_still_names_the_last_message(imap: MemoryIMAP) -> None:
    await three_messages(imap)
    reply = await imap.cmd("UID FETCH 10:* UID")  # "10:*" is "3:10" here (RFC 3501 §6.4.8)
    assert reply.untagged == [b"* 3 FETCH (UID 3)"]
    assert (await imap.cmd("UID SEARCH UID 10:*")).untagged == [b"* SEARCH 3"]


async def test_envelope_quoting_and_groups(imap: MemoryIMAP) -> None:
    data = crlf('From: "Doe, John" <john@example.net>\nTo: undisclosed-recipients:;\n'
                'Cc: Team: a@x.org, b@y.org;\nSubject: He said "hi" \\o/\n'
                "Reply-To: <r@example.net>\nIn-Reply-To: <prev@x>\n\nbody\n")
    await imap.append("INBOX", data)
    await imap.select()
    reply = await imap.cmd("FETCH 1 ENVELOPE")
    assert reply.untagged == [
        b'* 1 FETCH (ENVELOPE (NIL "He said \\"hi\\" \\\\o/" '
        b'(("Doe, John" NIL "john" "example.net")) (("Doe, John" NIL "john" "example.net")) '
        b'((NIL NIL "r" "example.net")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "Team" NIL)(NIL NIL "a" "x.org")(NIL NIL "b" "y.org")(NIL NIL NIL NIL)) '
        b'NIL "<prev@x>" NIL))'
    ]


# --- IDLE -----------------------------------------------------------------------------------
async def test_idle_reports_changes_until_done(imap: MemoryIMAP, connect: Connect,
                                               acct: str) -> None:
    await imap.select()
    other = await connect(acct)
    imap.send(b"I1 IDLE\r\n")
    assert await imap.response() == b"+ idling"
    await other.append("INBOX", msg("while idling"))
    assert await imap.response() == b"* 1 EXISTS"
    assert await imap.response() == b"* 1 RECENT"
    await other.select()
    await other.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)")
    n, items = parse_fetch(await imap.response())
    assert n == 1 and flags_of(items[b"FLAGS"]) == {b"\\Flagged", b"\\Recent"}
    await other.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await other.cmd("EXPUNGE")
    assert parse_fetch(await imap.response())[0] == 1  # the \Deleted flag
    assert await imap.response() == b"* 1 EXPUNGE"
    imap.send(b"DONE\r\n")
    reply = await imap.collect(b"I1")
    assert reply.untagged == []
    tagged(reply, b"OK")
    tagged(await imap.cmd("NOOP"), b"OK")


async def test_idle_in_authenticated_state(imap: MemoryIMAP) -> None:
    imap.send(b"I2 IDLE\r\n")
    assert await imap.response() == b"+ idling"
    imap.send(b"DONE\r\n")
    tagged(await imap.collect(b"I2"), b"OK")


# --- mailbox names in modified UTF-7 ---------------------------------------------------------
@pytest.mark.parametrize("name", ["&AOQ-pfel", "Gr&APw-n/T&AOQ-st", "&ZeVnLIqe-", "Tom &- Jerry",
                                  "&Jjo-!"])
async def test_modified_utf7_names_round_trip(imap: MemoryIMAP, name: str) -> None:
    tagged(await imap.cmd(f'CREATE "{name}"'), b"OK")
    assert name.encode() in await list_names(imap)
    assert await list_names(imap, name) == {name.encode(): {b"\\HasNoChildren"}}
    await imap.append(name, msg("utf7"))
    reply = await imap.cmd(f'SELECT "{name}"')
    assert b"* 1 EXISTS" in reply.untagged
    reply = await imap.cmd(f'STATUS "{name}" (MESSAGES)')
    assert reply.untagged == [b'* STATUS "%s" (MESSAGES 1)' % name.encode()]
    tagged(await imap.cmd(f'RENAME "{name}" "{name}2"'), b"OK")
    assert (name + "2").encode() in await list_names(imap)


@pytest.mark.parametrize("name", ["&AOQ", "&Jjo", "&AGE-", "&"])
async def test_invalid_modified_utf7_names_are_refused(imap: MemoryIMAP, name: str) -> None:
    reply = await imap.cmd(f'CREATE "{name}"')
    assert reply.status in (b"NO", b"BAD"), reply
    tagged(await imap.cmd("NOOP"), b"OK")


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    "FROB", "UID FROB 1", "SELECT", "LOGIN", "FETCH", "FETCH 1", "STORE 1 +FLAGS", "COPY 1",
    "SEARCH", "CREATE", "RENAME a", "STATUS INBOX", 'LIST ""', "APPEND", "SUBSCRIBE",
    "FETCH 0 FLAGS", "FETCH 1:x FLAGS", "FETCH 1,,2 FLAGS", "FETCH -1 FLAGS", "UID FETCH 0 FLAGS",
    "STORE 0 +FLAGS (\\Seen)", "SEARCH 0", "SEARCH UID 1:x",
    "FETCH 1 (FLAGS", "FETCH 1 FLAGS)", "SEARCH (ALL", "SEARCH ALL)", "STORE 1 FLAGS (\\Seen",
    "STATUS INBOX (MESSAGES", "FETCH 1 FROB", "FETCH 1 BODY[FROB]", "SEARCH FROB",
    "SEARCH BEFORE 2026-11-05", "NOOP extra", "CAPABILITY now", "FETCH 9 FLAGS",
])
async def test_malformed_commands_get_bad_and_the_session_goes_on(imap: MemoryIMAP,
                                                            command: str) -> None:
    await imap.append("INBOX", msg("one"))
    await imap.select()
    reply = await imap.cmd(command)
    assert reply.untagged == [], reply
    tagged(reply, b"BAD")
    tagged(await imap.cmd("NOOP"), b"OK")
    assert await fetch_one(imap, "FETCH 1 UID") == {b"UID": b"1"}


@pytest.mark.parametrize(("state", "command"), [
    ("noauth", "SELECT INBOX"), ("noauth", "LIST \"\" *"), ("noauth", "FETCH 1 FLAGS"),
    ("noauth", "CREATE x"), ("noauth", "IDLE"), ("noauth", "NAMESPACE"),
    ("auth", "FETCH 1 FLAGS"), ("auth", "EXPUNGE"), ("auth", "CLOSE"), ("auth", "SEARCH ALL"),
    ("auth", "LOGIN a b"), ("auth", "AUTHENTICATE PLAIN"), ("auth", "STARTTLS"),
    ("selected", "LOGIN a b"),
])
async def test_commands_in_the_wrong_state(connect: Connect, acct: str, state: str,
                                     command: str) -> None:
    c = await connect(None if state == "noauth" else acct)
    if state == "selected":
        await c.select()
    tagged(await c.cmd(command), b"BAD")
    tagged(await c.cmd("NOOP"), b"OK")


async def test_line_without_a_tag(connect: Connect) -> None:
    c = await connect()
    for line in (b"* NOOP\r\n", b"(NOOP)\r\n", b"+ NOOP\r\n"):
        c.send(line)
        assert re.fullmatch(rb"\* BAD" + TEXT, await c.response())
    tagged(await c.cmd("NOOP"), b"OK")


async def test_over_long_lines(imap: MemoryIMAP) -> None:
    imap.send(b"L1 NOOP " + b"x" * 70000 + b"\r\n")
    reply = await imap.collect(b"L1")
    tagged(reply, b"BAD")
    tagged(await imap.cmd("NOOP"), b"OK")
    imap.send(b"L2 SEARCH SUBJECT " + b"y" * 200000 + b"\r\n")
    tagged(await imap.collect(b"L2"), b"BAD")
    tagged(await imap.cmd("NOOP"), b"OK")


async def test_pipelined_commands_are_answered_in_order(imap: MemoryIMAP) -> None:
    imap.send(b"".join([
        b"p1 NOOP\r\n",
        b"p2 APPEND INBOX {%d+}\r\n" % len(SIMPLE), SIMPLE, b"\r\n",
        b"p3 SELECT INBOX\r\n",
        b"p4 FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
        b"p5 FROB\r\n",
        b"p6 STORE 1 +FLAGS (\\Seen)\r\n",
        b"p7 SEARCH SEEN\r\n",
        b'p8 LIST "" INBOX\r\n',
    ]))
    replies = [await imap.collect(b"p%d" % i) for i in range(1, 9)]
    assert [r.status for r in replies] == [b"OK", b"OK", b"OK", b"OK", b"BAD", b"OK", b"OK",
                                           b"OK"]
    assert b"* 1 EXISTS" in replies[2].untagged
    assert replies[3].untagged == [
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: first\r\n\r\n)"]
    assert replies[6].untagged == [b"* SEARCH 1"]
    assert replies[7].untagged == [b'* LIST (\\HasNoChildren) "/" "INBOX"']


# --- isolation between users ----------------------------------------------------------------
async def test_users_cannot_reach_each_others_mailboxes(world: ImapWorld,
                                                        connect: Connect) -> None:
    a_name, b_name = await world.add_user("ia1n1"), await world.add_user("ib1n2")
    b = await connect(b_name)
    tagged(await b.cmd("CREATE SecretOfB"), b"OK")
    await b.append("INBOX", msg("secret-of-b"))
    await b.append("SecretOfB", msg("secret-of-b"))
    before = await world.messages(b_name), await world.messages(b_name, "SecretOfB")

    a = await connect(a_name)
    await a.append("INBOX", msg("mine"))
    foreign = [
        f"../{b_name}/INBOX", f"~{b_name}/INBOX", f"#shared/{b_name}/INBOX", f"{b_name}/INBOX",
        f"/{b_name}/INBOX", f"#user/{b_name}/INBOX", f"../{b_name}/SecretOfB", "SecretOfB",
        f"{b_name}", f"INBOX/../../{b_name}/INBOX", f"~{b_name}", f"../../{b_name}/INBOX",
        f"{b_name.upper()}/INBOX", f"user/{b_name}/INBOX", f"#shared/{b_name}",
    ]
    for name in foreign:
        for command in (f'SELECT "{name}"', f'EXAMINE "{name}"',
                        f'STATUS "{name}" (MESSAGES)', f'DELETE "{name}"',
                        f'RENAME "{name}" stolen', f'SUBSCRIBE "{name}"'):
            reply = await a.cmd(command)
            assert reply.status == b"NO", (command, str(reply))
            assert reply.untagged == [], (command, str(reply))
        reply = await a.cmd_literal(f'APPEND "{name}"', msg("injected"))
        assert reply.status in (b"NO", b"BAD"), (name, str(reply))
        await a.select()
        tagged(await a.cmd(f'COPY 1 "{name}"'), b"NO")
        tagged(await a.cmd(f'MOVE 1 "{name}"'), b"NO")
        await a.cmd("UNSELECT")
    for reference, pattern in (("", "*"), ("", "%/%"), ("../", "*"), (f"~{b_name}/", "*"),
                               ("#shared/", "*"), ("/", "*"), ("", f"../{b_name}/*"),
                               ("", "*SecretOfB*")):
        reply = await a.cmd(f'LIST "{reference}" "{pattern}"')
        text = str(reply).lower()
        assert b_name.lower() not in text and "secretofb" not in text, (reference, pattern)
        reply = await a.cmd(f'LSUB "{reference}" "{pattern}"')
        assert "secretofb" not in str(reply).lower()
    await a.select()
    assert (await a.cmd("SEARCH TEXT secret-of-b")).untagged == [b"* SEARCH"]
    assert (await a.cmd("FETCH 1:* UID")).untagged == [b"* 1 FETCH (UID 1)"]
    assert (await world.messages(b_name), await world.messages(b_name, "SecretOfB")) == before
    assert await world.messages(a_name) == [msg("mine")]
    reply = await b.cmd("LIST \"\" \"*\"")
    assert b"stolen" not in str(reply).encode()
