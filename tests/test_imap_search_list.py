"""SEARCH and LIST semantics (issue 11, defects 7-10), in process on the real store.

7. ESEARCH's MODSEQ belongs to the message(s) the result options return (RFC 4731 §3.2).
8. FROM/TO/CC/BCC match the envelope's addresses, not the raw header (RFC 3501 §6.4.4).
9. A mailbox name that is a valid astring but no valid name is NO, not BAD (§7.1.3);
   a LIST pattern of that kind lists nothing.
10. LIST-EXTENDED: RETURN (CHILDREN) with SUBSCRIBED, and when CHILDINFO is due (RFC 5258).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from imap_harness import ImapWorld, MemoryIMAP

pytestmark = pytest.mark.asyncio


def msg(headers: str, body: str = "body") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n\r\n" + body + "\r\n").encode("utf-8")


async def search(c: MemoryIMAP, criteria: str) -> list[int]:
    reply = await c.cmd(f"SEARCH {criteria}")
    assert reply.ok, reply
    (line,) = reply.lines(b"* SEARCH")
    return [int(n) for n in line.split()[2:]]


# --- 7: ESEARCH MODSEQ ---------------------------------------------------------------------
async def modseqs(c: MemoryIMAP) -> dict[int, int]:
    reply = await c.cmd("FETCH 1:* (MODSEQ)")
    assert reply.ok, reply
    out = {}
    for line in reply.lines(b"* "):
        m = re.fullmatch(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", line)
        assert m, line
        out[int(m.group(1))] = int(m.group(2))
    return out


async def esearch(c: MemoryIMAP, command: str) -> bytes:
    reply = await c.cmd(command)
    assert reply.ok, reply
    (line,) = reply.lines(b"* ESEARCH")
    prefix = b'* ESEARCH (TAG "%s")' % reply.tag
    assert line.startswith(prefix), line
    return line[len(prefix):].lstrip(b" ")


async def test_esearch_modseq_belongs_to_the_returned_messages(world: ImapWorld) -> None:
    user = await world.add_user()
    for i in range(1, 5):  # one transaction each, so each has its own mod-sequence
        await world.seed(user, [msg(f"Subject: m{i}")])
    c = await world.login(user, select="INBOX")
    # Message 2 changes last, so it has the highest mod-sequence; 1 and 4 (MIN and MAX of
    # the search below) keep the lower ones from their APPEND.
    assert (await c.cmd("STORE 2 +FLAGS.SILENT (\\Flagged)")).ok
    seq = await modseqs(c)
    assert seq[2] > seq[4] > seq[1], seq
    top = max(seq.values())
    assert top == seq[2]

    crit = "MODSEQ 1"
    assert await esearch(c, f"SEARCH RETURN (MIN) {crit}") == b"MIN 1 MODSEQ %d" % seq[1]
    assert await esearch(c, f"SEARCH RETURN (MAX) {crit}") == b"MAX 4 MODSEQ %d" % seq[4]
    # MIN and MAX alone: the higher of those two messages' mod-sequences.
    assert await esearch(c, f"SEARCH RETURN (MIN MAX) {crit}") == (
        b"MIN 1 MAX 4 MODSEQ %d" % max(seq[1], seq[4]))
    # ALL or COUNT (with or without MIN/MAX): the highest of all matches.
    assert await esearch(c, f"SEARCH RETURN (ALL) {crit}") == b"ALL 1:4 MODSEQ %d" % top
    assert await esearch(c, f"SEARCH RETURN (COUNT) {crit}") == b"COUNT 4 MODSEQ %d" % top
    assert await esearch(c, f"SEARCH RETURN (MIN COUNT) {crit}") == (
        b"MIN 1 COUNT 4 MODSEQ %d" % top)
    assert await esearch(c, f"SEARCH RETURN () {crit}") == b"ALL 1:4 MODSEQ %d" % top
    # UID SEARCH: the same messages, named by UID.
    uids = {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        rb"\* (\d+) FETCH \(UID (\d+)\)", b"\n".join((await c.cmd("FETCH 1:* UID")).untagged))}
    assert await esearch(c, f"UID SEARCH RETURN (MAX) {crit}") == (
        b"UID MAX %d MODSEQ %d" % (uids[4], seq[4]))
    # A single match: MIN is that message, and so is the mod-sequence.
    assert await esearch(c, f"SEARCH RETURN (MIN) MODSEQ {top}") == (
        b"MIN 2 MODSEQ %d" % top)
    # No match: no MODSEQ at all.
    assert await esearch(c, f"SEARCH RETURN (MIN) MODSEQ {top + 1}") == b""


# --- 8: FROM/TO/CC/BCC against the envelope --------------------------------------------------
ADDRESSED = [
    msg("From: <user-from (comment)@ (comment) domain.org>\n"
        "To: Team: \"Quoted, Name\" <q@x.example>, plain@x.example;\n"
        "Cc: cc-user@example.com (Carol Comment)\n"
        "Bcc: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>\n"
        "Subject: with comments"),
    msg("From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: (comment)@ plain"),
    msg("Subject: no addresses at all"),
]


@pytest.fixture
async def addressed(world: ImapWorld) -> MemoryIMAP:
    user = await world.add_user()
    for m in ADDRESSED:
        await world.deliver(user, m)
    return await world.login(user, select="INBOX")


@pytest.mark.parametrize(("criteria", "expected"), [
    # The envelope's mailbox@host, whatever comments the header had around its parts.
    ("FROM user-from@domain.org", [1]),
    ("FROM USER-FROM@DOMAIN.ORG", [1]),
    ("FROM from@dom", [1]),
    # Comments are not part of an address (an addr-spec's trailing comment is its name).
    ("FROM comment", []),
    ('FROM "(comment)"', []),
    # The name <mailbox@host> form, as the envelope holds it (Dovecot matches the same way).
    ('FROM "Alice <alice@example.net>"', [2]),
    ("FROM alice", [2]),
    ('CC "Carol Comment"', [1]),
    ('CC "Carol Comment <cc-user@example.com>"', [1]),
    ("CC cc-user@example.com", [1]),
    # Inside a group: the members, and the group's own name.
    ("TO q@x.example", [1]),
    ('TO "Quoted, Name <q@x.example>"', [1]),
    ("TO plain@x.example", [1]),
    ("TO Team", [1]),
    ("TO bob@example.org", [2]),
    # RFC 2047 encoded names are matched decoded.
    ("BCC joerg@example.de", [1]),
    ("NOT FROM user-from@domain.org", [2, 3]),
    ("OR TO plain@x.example TO bob", [1, 2]),
    # An empty string is in every address, but a message without any has none.
    ('FROM ""', [1, 2]),
    # HEADER FROM still matches the raw header text, comments and all.
    ('HEADER FROM "(comment)"', [1]),
    ("HEADER FROM user-from@domain.org", []),
    # SUBJECT is no address field: a raw (decoded) text match as before.
    ('SUBJECT "(comment)@"', [2]),
])
async def test_address_keys_match_the_envelope(addressed: MemoryIMAP, criteria: str,
                                               expected: list[int]) -> None:
    assert await search(addressed, criteria) == expected


async def test_address_keys_with_a_utf8_name(addressed: MemoryIMAP) -> None:
    reply = await addressed.cmd_literal("SEARCH CHARSET UTF-8 BCC", "Jörg".encode(), plus=True)
    assert reply.ok, reply
    assert reply.lines(b"* SEARCH") == [b"* SEARCH 1"]


async def test_address_keys_in_esearch_and_uid_search(addressed: MemoryIMAP) -> None:
    reply = await addressed.cmd("UID SEARCH RETURN (COUNT) FROM user-from@domain.org")
    assert reply.lines(b"* ESEARCH") == [b'* ESEARCH (TAG "%s") UID COUNT 1' % reply.tag]


async def test_address_keys_survive_an_unreadable_stored_structure(
        addressed: MemoryIMAP, tmp_path: Path) -> None:
    """A structure the parser cannot read back is re-parsed from the header block."""
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        db.execute("UPDATE blobs SET structure = '[99]'")
    assert await search(addressed, "FROM user-from@domain.org") == [1]
    assert await search(addressed, "TO plain@x.example") == [1]
    assert await search(addressed, 'FROM "(comment)"') == []


# --- 9: NO, not BAD, for a name that is good syntax but no valid name -------------------------
# Each is a valid astring; none is valid modified UTF-7 (or UTF-8 without control characters).
UNUSABLE = ["&AOk", "&Jjo", "&AGE-", "&", "a\tb"]


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
async def named(world: ImapWorld) -> MemoryIMAP:
    """A session with INBOX selected and a real mailbox whose (decoded) name is "&AOk"."""
    user = await world.add_user()
    await world.deliver(user, msg("Subject: one"))
    c = await world.login(user)
    # "&-AOk" is modified UTF-7 for the name "&AOk": the raw text of an unusable wire name
    # must never reach that mailbox.
    assert (await c.cmd('CREATE "&-AOk"')).ok
    assert (await c.cmd('SUBSCRIBE "&-AOk"')).ok
    await c.select("INBOX")
    return c


def refused(reply: object, code: bytes) -> None:
    assert reply.status == b"NO", reply  # type: ignore[attr-defined]
    assert reply.text.startswith(b"[" + code + b"] "), reply  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", UNUSABLE)
async def test_select_and_examine_of_an_unusable_name_is_no(named: MemoryIMAP,
                                                            name: str) -> None:
    for verb in ("SELECT", "EXAMINE"):
        await named.select("INBOX")
        refused(await named.cmd(f"{verb} {quoted(name)}"), b"NONEXISTENT")
        # A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
        assert (await named.cmd("FETCH 1 FLAGS")).status == b"BAD"


@pytest.mark.parametrize("name", UNUSABLE)
async def test_mailbox_commands_with_an_unusable_name_are_no(named: MemoryIMAP,
                                                             name: str) -> None:
    q = quoted(name)
    listed = await list_lines(named, 'LIST "" *')
    subscribed = await list_lines(named, 'LSUB "" *')
    assert "&-AOk" in listed and "&-AOk" in subscribed
    refused(await named.cmd(f"STATUS {q} (MESSAGES)"), b"NONEXISTENT")
    refused(await named.cmd(f"DELETE {q}"), b"NONEXISTENT")
    refused(await named.cmd(f"SUBSCRIBE {q}"), b"NONEXISTENT")
    refused(await named.cmd(f"UNSUBSCRIBE {q}"), b"NONEXISTENT")
    refused(await named.cmd(f"RENAME {q} fresh"), b"NONEXISTENT")
    refused(await named.cmd(f"CREATE {q}"), b"CANNOT")
    refused(await named.cmd(f"RENAME INBOX {q}"), b"CANNOT")
    refused(await named.cmd(f'RENAME "&-AOk" {q}'), b"CANNOT")
    # Creating would not help, so no TRYCREATE for these.
    refused(await named.cmd(f"COPY 1 {q}"), b"CANNOT")
    refused(await named.cmd(f"MOVE 1 {q}"), b"CANNOT")
    refused(await named.cmd_literal(f"APPEND {q}", msg("Subject: x"), plus=True), b"CANNOT")
    # Nothing happened to anything: the look-alike "&AOk" mailbox, INBOX, subscriptions.
    assert await list_lines(named, 'LIST "" *') == listed
    assert await list_lines(named, 'LSUB "" *') == subscribed
    status = await named.cmd('STATUS "&-AOk" (MESSAGES)')
    assert status.untagged == [b'* STATUS "&-AOk" (MESSAGES 0)'], status
    assert b"* 1 EXISTS" in (await named.cmd("SELECT INBOX")).untagged


async def test_syntax_errors_around_an_unusable_name_stay_bad(named: MemoryIMAP) -> None:
    assert (await named.cmd('SELECT "&AOk" extra')).status == b"BAD"
    assert (await named.cmd('STATUS "&AOk" (BOGUS)')).status == b"BAD"
    assert (await named.cmd('RENAME "&AOk"')).status == b"BAD"
    assert (await named.cmd('COPY x "&AOk"')).status == b"BAD"
    assert (await named.cmd('LIST "" ("&AOk"')).status == b"BAD"


async def test_list_with_an_unusable_pattern_lists_nothing(named: MemoryIMAP) -> None:
    for command in ('LIST "" "&AOk"', 'LIST "" "&AOk*"', 'LIST "&AOk" *', 'LSUB "" "&AOk"',
                    'LIST (SUBSCRIBED) "" "&AOk"', 'LIST "" "a\tb"',
                    'LIST "" "&AOk" RETURN (CHILDREN STATUS (MESSAGES))'):
        reply = await named.cmd(command)
        assert reply.ok, (command, reply)
        assert reply.untagged == [], (command, reply)
    # Among other patterns, only the unusable one contributes nothing.
    got = await list_lines(named, 'LIST "" ("&AOk" INBOX)')
    assert list(got) == ["INBOX"], got


# --- 10: LIST-EXTENDED: CHILDREN and CHILDINFO ----------------------------------------------
LIST_LINE = re.compile(rb'\* (?:LIST|LSUB) \(([^)]*)\) "/" "([^"]*)"(.*)')
CHILDINFO = b' ("CHILDINFO" ("SUBSCRIBED"))'


async def list_lines(c: MemoryIMAP, command: str) -> dict[str, tuple[set[str], bytes]]:
    """name -> (attributes, extended data) of each LIST/LSUB line, in a dict."""
    reply = await c.cmd(command)
    assert reply.ok, reply
    out: dict[str, tuple[set[str], bytes]] = {}
    for line in reply.untagged:
        if line.startswith(b"* STATUS"):
            continue
        m = LIST_LINE.fullmatch(line)
        assert m, line
        name = m.group(2).decode()
        assert name not in out, reply  # each name once
        out[name] = (set(m.group(1).decode().split()), m.group(3))
    return out


async def fresh(world: ImapWorld) -> MemoryIMAP:
    """A logged-in session whose user has no subscriptions (new users have the defaults)."""
    c = await world.login(await world.add_user())
    for name in await list_lines(c, 'LSUB "" *'):
        assert (await c.cmd(f'UNSUBSCRIBE "{name}"')).ok
    return c


async def make(c: MemoryIMAP, *names: str, subscribe: tuple[str, ...] = ()) -> None:
    for name in names:
        assert (await c.cmd(f'CREATE "{name}"')).ok, name
    for name in subscribe:
        assert (await c.cmd(f'SUBSCRIBE "{name}"')).ok, name


async def test_recursivematch_with_return_children(world: ImapWorld) -> None:
    c = await fresh(world)
    await make(c, "A", "A/test2", "A/test2/sub", "A/test2x",
               subscribe=("A/test2", "A/test2/sub", "A/test2x"))
    got = await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" A/test2% RETURN (CHILDREN)')
    assert got == {
        # Subscribed itself, and a subscribed child that "%" does not return: CHILDINFO.
        "A/test2": ({"\\Subscribed", "\\HasChildren"}, CHILDINFO),
        "A/test2x": ({"\\Subscribed", "\\HasNoChildren"}, b""),
    }
    # \HasChildren is about mailboxes that exist, subscribed or not (RFC 5258 §4).
    assert (await c.cmd('UNSUBSCRIBE "A/test2/sub"')).ok
    got = await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" A/test2% RETURN (CHILDREN)')
    assert got["A/test2"] == ({"\\Subscribed", "\\HasChildren"}, b"")
    got = await list_lines(c, 'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)')
    assert got == {
        "A/test2": ({"\\Subscribed", "\\HasChildren"}, b""),
        "A/test2x": ({"\\Subscribed", "\\HasNoChildren"}, b""),
    }


async def test_childinfo_follows_rfc5258_example_9(world: ImapWorld) -> None:
    """The hierarchy and subscriptions of RFC 5258 §5 example 9 (less "qux2/bar2", whose
    parent cannot be missing in this store)."""
    c = await fresh(world)
    await make(c, "foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
               "baz2/bar222", "eps2", "eps2/mamba",
               subscribe=("foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222",
                          "eps2", "eps2/mamba"))
    subscribed = {"\\Subscribed"}
    got = await list_lines(c, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" *2')
    assert got == {
        # foo2/bar1 is subscribed but not returned ("*2"): foo2 is listed for it.
        "foo2": (set(), CHILDINFO),
        "foo2/bar2": (subscribed, b""),
        # Every subscribed child of baz2 is returned itself: no redundant baz2 line (§3.5).
        "baz2/bar2": (subscribed, b""),
        "baz2/bar22": (subscribed, b""),
        "baz2/bar222": (subscribed, b""),
        # Subscribed itself and with a subscribed child (eps2/mamba is not returned).
        "eps2": (subscribed, CHILDINFO),
    }
    got = await list_lines(c, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" %')
    assert got == {
        "foo2": (set(), CHILDINFO),
        "baz2": (set(), CHILDINFO),
        "eps2": (subscribed, CHILDINFO),
    }
    # Without RECURSIVEMATCH, never CHILDINFO and never an unsubscribed parent.
    got = await list_lines(c, 'LIST (SUBSCRIBED) "" %')
    assert got == {"eps2": (subscribed, b"")}


async def test_childinfo_over_several_levels(world: ImapWorld) -> None:
    c = await fresh(world)
    await make(c, "a", "a/b", "a/b/c", subscribe=("a/b/c",))
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" *') == {
        "a/b/c": ({"\\Subscribed"}, b""),
    }
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %') == {
        "a": (set(), CHILDINFO),
    }
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" (a a/b) '
                               "RETURN (CHILDREN)") == {
        "a": ({"\\HasChildren"}, CHILDINFO),
        "a/b": ({"\\HasChildren"}, CHILDINFO),
    }
    # A subscription whose mailbox is gone: \NonExistent, and still a reason for CHILDINFO.
    assert (await c.cmd('SUBSCRIBE "a/b/c"')).ok
    assert (await c.cmd('DELETE "a/b/c"')).ok
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" a/% '
                               "RETURN (CHILDREN)") == {
        "a/b": ({"\\HasNoChildren"}, CHILDINFO),
    }
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" a/b/% '
                               "RETURN (CHILDREN)") == {
        "a/b/c": ({"\\Subscribed", "\\NonExistent", "\\HasNoChildren"}, b""),
    }


async def test_a_subscribed_parent_keeps_childinfo_when_its_child_is_listed(
        world: ImapWorld) -> None:
    """RFC 5258 §3.5's table: a name that meets the selection criteria and has a descendant
    that does gets CHILDINFO, whether or not that descendant is listed as well; only a
    parent listed *just* for its children is dropped when they are all returned."""
    c = await fresh(world)
    await make(c, "Fruit", "Fruit/Apple", "Veg", "Veg/Corn",
               subscribe=("Fruit", "Fruit/Apple", "Veg/Corn"))
    assert await list_lines(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" *') == {
        "Fruit": ({"\\Subscribed"}, CHILDINFO),
        "Fruit/Apple": ({"\\Subscribed"}, b""),
        "Veg/Corn": ({"\\Subscribed"}, b""),
    }
