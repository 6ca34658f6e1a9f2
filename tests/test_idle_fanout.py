"""One new message in a mailbox that many sessions of one process have selected: one of
them claims its \\Recent in the store and the others announce it at once
(``imap/recent_claims.py``), so the fan-out makes one claim, not one per session. The
session stream rule still holds: exactly one session shows the message as \\Recent,
sessions not in IDLE hear of it with their next command, EXAMINE sessions claim nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from imap_harness import ImapWorld, MemoryIMAP

MSG = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"


@contextmanager
def counted_claims(world: ImapWorld) -> Iterator[list[int]]:
    """Counts calls of the store's ``claim_recent`` (each still runs)."""
    store: Any = world.store
    calls: list[int] = []
    real = store.claim_recent

    async def claim_recent(mailbox_id: int, below: int | None = None) -> int:
        calls.append(below or 0)
        return await real(mailbox_id, below=below)

    store.claim_recent = claim_recent
    try:
        yield calls
    finally:
        del store.claim_recent


async def idling(world: ImapWorld, user: str, n: int, verb: str = "SELECT") -> list[MemoryIMAP]:
    clients = []
    for _ in range(n):
        client = await world.login(user)
        assert (await client.cmd(f"{verb} INBOX")).ok
        client.send(b"I IDLE\r\n")
        assert (await client.response()).startswith(b"+")
        clients.append(client)
    return clients


async def pushed(client: MemoryIMAP) -> list[bytes]:
    """The untagged lines of one push, up to and including its EXISTS."""
    lines = [await asyncio.wait_for(client.response(), 10)]
    while not lines[-1].endswith(b" EXISTS"):
        lines.append(await asyncio.wait_for(client.response(), 10))
    await asyncio.sleep(0)
    return lines


async def recent_shown(client: MemoryIMAP) -> bool:
    """Ends IDLE; whether the session shows its one message as \\Recent."""
    client.send(b"DONE\r\n")
    reply = await client.collect(b"I")
    assert reply.ok, reply
    fetch = await client.cmd("FETCH 1 (FLAGS)")
    assert fetch.ok, fetch
    return any(b"\\Recent" in line for line in fetch.untagged)


async def test_one_new_message_makes_one_claim_for_all_idle_sessions(
        world: ImapWorld) -> None:
    user = await world.add_user()
    clients = await idling(world, user, 30)
    with counted_claims(world) as claims:
        await world.deliver(user, MSG)
        pushes = await asyncio.gather(*(pushed(c) for c in clients))
    assert len(claims) == 1, claims
    assert all(p[-1] == b"* 1 EXISTS" for p in pushes), pushes
    shown = [await recent_shown(c) for c in clients]
    assert shown.count(True) == 1


async def test_sessions_not_idling_and_examine_sessions_in_the_same_fan_out(
        world: ImapWorld) -> None:
    user = await world.add_user()
    idle = await idling(world, user, 10)
    readonly = await idling(world, user, 5, verb="EXAMINE")
    busy = [await world.login(user, select="INBOX") for _ in range(5)]
    with counted_claims(world) as claims:
        await world.deliver(user, MSG)
        await asyncio.gather(*(pushed(c) for c in idle + readonly))
        # The others hear of it with their next command, before its tagged OK.
        for client in busy:
            noop = await client.cmd("NOOP")
            assert b"* 1 EXISTS" in noop.untagged, noop
    assert len(claims) == 1, claims
    shown = [await recent_shown(c) for c in idle + readonly]
    for client in busy:
        fetch = await client.cmd("FETCH 1 (FLAGS)")
        shown.append(any(b"\\Recent" in line for line in fetch.untagged))
    assert shown.count(True) == 1, shown
    assert not any(shown[10:15]), "an EXAMINE session showed \\Recent"


async def test_each_of_many_messages_goes_to_one_session(world: ImapWorld) -> None:
    user = await world.add_user()
    clients = await idling(world, user, 8)
    for n in range(1, 6):
        await world.deliver(user, MSG)
        pushes = await asyncio.gather(*(pushed(c) for c in clients))
        assert all(p[-1] == b"* %d EXISTS" % n for p in pushes), pushes
    recent = 0
    for client in clients:
        client.send(b"DONE\r\n")
        assert (await client.collect(b"I")).ok
        fetch = await client.cmd("FETCH 1:* (FLAGS)")
        recent += sum(b"\\Recent" in line for line in fetch.untagged)
    assert recent == 5


async def test_the_claiming_session_leaving_does_not_stop_the_others(
        world: ImapWorld) -> None:
    user = await world.add_user()
    clients = await idling(world, user, 6)
    await world.deliver(user, MSG)
    # The first session told (the first to subscribe) has started the claim, and is gone
    # before it is written; the others are told all the same.
    clients[0].drop()
    rest = await asyncio.gather(*(pushed(c) for c in clients[1:]))
    assert all(p == [b"* 1 EXISTS"] for p in rest), rest
    shown = [await recent_shown(c) for c in clients[1:]]
    await clients[0].settle()
    later = await world.login(user)
    shown.append(b"* 1 RECENT" in (await later.cmd("SELECT INBOX")).untagged)
    assert shown.count(True) <= 1, shown
    assert not world.errors.tracebacks()
