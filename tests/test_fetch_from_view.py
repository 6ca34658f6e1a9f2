"""A FETCH the selected view answers alone (UID, FLAGS, MODSEQ) is formatted in batches of
lines (imap/handlers/fetch.py, ``_send_from_view``): the same octets as the general path,
and one write for a few hundred messages."""

from __future__ import annotations

from typing import Any

import pytest

from imap_harness import ImapWorld, MemoryIMAP
from mailstead.imap.handlers import fetch


def message(i: int) -> bytes:
    return b"From: a%d@example.org\r\nSubject: s%d\r\n\r\nbody %d\r\n" % (i, i, i)


COMMANDS = [
    "FETCH 1:* (UID FLAGS)",
    "FETCH 1:* (FLAGS)",
    "UID FETCH 1:* (FLAGS)",
    "UID FETCH 1:* (UID FLAGS)",
    "FETCH 2:4,7 (FLAGS UID MODSEQ)",
    "UID FETCH 3:* (MODSEQ)",
    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    "FETCH 1:* (UID UID FLAGS)",
]


async def _client(world: ImapWorld, n: int) -> MemoryIMAP:
    user = await world.add_user()
    await world.seed(user, [message(i) for i in range(1, n + 1)])
    client = await world.connect()
    await client.login(user)
    await client.select()
    assert (await client.cmd("STORE 2,5 +FLAGS (\\Seen $Label1)")).ok
    assert (await client.cmd("STORE 3 +FLAGS (\\Deleted \\Flagged)")).ok
    return client


async def test_the_view_path_writes_what_the_general_path_writes(
    world: ImapWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await _client(world, 8)
    fast = [await client.cmd(c) for c in COMMANDS]
    monkeypatch.setattr(fetch, "_FROM_VIEW", frozenset())  # every FETCH the general way
    general = [await client.cmd(c) for c in COMMANDS]
    for c, a, b in zip(COMMANDS, fast, general, strict=True):
        assert a.ok and b.ok, c
        assert a.untagged == b.untagged, c
        assert a.untagged, c


async def test_a_flag_resync_of_hundreds_of_messages_is_one_write(world: ImapWorld) -> None:
    client = await _client(world, 300)
    writes: list[int] = []
    transport: Any = client.transport
    real = transport.write

    def counted(data: bytes) -> None:
        writes.append(len(data))
        real(data)

    transport.write = counted
    reply = await client.cmd("FETCH 1:* (UID FLAGS)")
    assert reply.ok and len(reply.untagged) == 300
    # The general path sent every 64 messages: five writes here.
    assert len(writes) == 1, writes

