"""The in-process IMAP harness itself: a session on a memory transport, the real store."""

from __future__ import annotations

from imap_harness import ImapWorld

MSG = b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


async def test_login_select_append_fetch(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user, select="INBOX")
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    await c.append("INBOX", MSG)
    reply = await c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])")
    assert reply.ok, reply
    assert reply.untagged[-1] == b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s)" % (
        len(MSG), len(MSG), MSG)


async def test_two_sessions_share_one_store_and_hub(world: ImapWorld) -> None:
    user = await world.add_user()
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    await world.deliver(user, MSG)
    assert b"* 1 EXISTS" in (await a.cmd("NOOP")).untagged
    assert (await a.cmd("STORE 1 +FLAGS (\\Flagged)")).ok
    reply = await b.cmd("NOOP")
    assert b"* 1 EXISTS" in reply.untagged, reply
    assert any(line.startswith(b"* 1 FETCH (FLAGS (") and b"\\Flagged" in line
               for line in reply.untagged), reply


async def test_a_dropped_client_leaves_no_task_behind(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    c.send(b"a1 NOOP\r\n")
    c.drop()
    await c.settle()
    assert c.proto.session is None or c.proto.session.state.name == "LOGOUT"
