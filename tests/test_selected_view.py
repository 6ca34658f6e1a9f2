"""The selected-mailbox view on its own: the stream checker, and catching up from the store
when change events go missing (a gap in modseqs, an event that makes no sense)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from imap_harness import ImapWorld
from mailstead.imap.selected import SelectedMailbox
from mailstead.imap.stream_check import StreamChecker, StreamViolation, invariants_strict
from mailstead.store.api import ChangeBatch, FlagMode, FlagsChanged, NewMessage


def msg(n: int) -> bytes:
    return b"Subject: m%d\r\n\r\nbody\r\n" % n


def opened(strict: bool = True) -> StreamChecker:
    """A client told of UIDs 1 and 2, and of the keyword $Known."""
    checker = StreamChecker(strict=strict)
    checker.opened(b"* 2 EXISTS", [1, 2], ["$Known"])
    return checker


ILLEGAL: dict[str, Callable[[StreamChecker], None]] = {
    "FETCH above the count": lambda c: c.fetch(b"* 3 FETCH (FLAGS ())", 3),
    "EXPUNGE above the count": lambda c: c.expunge(b"* 3 EXPUNGE", 3, allowed=True),
    "EXPUNGE where forbidden": lambda c: c.expunge(b"* 1 EXPUNGE", 1, allowed=False),
    "EXPUNGE of another UID": lambda c: c.expunge(b"* 1 EXPUNGE", 2, allowed=True),
    "EXISTS shrinking": lambda c: c.exists(b"* 1 EXISTS", []),
    "EXISTS miscounting": lambda c: c.exists(b"* 4 EXISTS", [3]),
    "EXISTS of an old UID": lambda c: c.exists(b"* 3 EXISTS", [2]),
    "RECENT above the count": lambda c: c.recent(b"* 3 RECENT"),
    "keyword before FLAGS": lambda c: c.fetch(b"* 1 FETCH (FLAGS ($New \\Seen))", 1),
    "FLAGS forgetting a keyword": lambda c: c.flags([]),
    "a garbled line": lambda c: c.fetch(b"* x FETCH (FLAGS ())", 1),
    "client and view apart": lambda c: c.settled([1, 2, 3]),
}


@pytest.mark.parametrize("case", ILLEGAL, ids=list(ILLEGAL))
def test_the_stream_checker_raises_on_each_kind_of_violation(case: str) -> None:
    with pytest.raises(StreamViolation):
        ILLEGAL[case](opened())


def test_the_stream_checker_accepts_a_legal_update() -> None:
    c = opened()
    c.expunge(b"* 1 EXPUNGE", 1, allowed=True)
    c.flags(["$Known", "$New"])
    c.exists(b"* 3 EXISTS", [5, 7])
    c.recent(b"* 2 RECENT")
    c.fetch(b"* 3 FETCH (FLAGS ($New \\Seen) MODSEQ (9))", 7)
    c.settled([2, 5, 7])
    assert c.client_uids is not None and list(c.client_uids) == [2, 5, 7]
    assert c.violations == 0


def test_outside_tests_a_violation_is_logged_once_and_the_view_followed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = opened(strict=False)
    with caplog.at_level(logging.ERROR, logger="mailstead.imap.stream"):
        c.fetch(b"* 9 FETCH (FLAGS ())", 9)
        c.settled([1, 2, 9])
        c.fetch(b"* 3 FETCH (FLAGS ())", 9)
    assert c.violations == 2
    assert caplog.records[0].getMessage().startswith("IMAP stream rule broken")


def test_the_suite_runs_with_the_checker_strict() -> None:
    assert invariants_strict()


# --- catching up from the store -----------------------------------------------------------
async def open_view(world: ImapWorld, n: int) -> tuple[SelectedMailbox, int]:
    user = await world.add_user()
    mb = await world.mailbox(user)
    await world.store.append(mb.id, [NewMessage(msg(i)) for i in range(1, n + 1)])
    view = SelectedMailbox(world.store, mb, readonly=False)
    view.load(await world.store.open_view(mb.id, claim_recent=True))
    view.opening_lines()
    return view, mb.id


async def catch_up(view: SelectedMailbox) -> list[bytes]:
    async with view.lock:
        await view.sync()
        return view.drain(allow_expunge=True).lines


async def test_a_gap_in_the_events_is_filled_from_the_store(world: ImapWorld) -> None:
    view, mbox = await open_view(world, 3)
    # The view misses two commits (as if their events were lost) ...
    await world.store.store_flags(mbox, [2], FlagMode.ADD, ["\\Flagged"])
    await world.store.expunge(mbox, [1])
    # ... and hears of the third only: its modseq skips two.
    heard: list[ChangeBatch] = []
    sub = world.ctx.hub.subscribe(mbox, heard.append)
    await world.store.append(mbox, [NewMessage(msg(4))])
    sub.close()
    for batch in heard:
        view.on_change(batch)
    assert await catch_up(view) == [
        b"* 1 EXPUNGE", b"* 3 EXISTS", b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"]
    assert list(view.uids) == [2, 3, 4] and view.recent == {2, 3, 4}
    # The lost events arriving late change nothing: the store read covered them.
    assert await catch_up(view) == []


async def test_an_event_for_an_unknown_message_is_checked_against_the_store(
    world: ImapWorld,
) -> None:
    view, mbox = await open_view(world, 2)
    status = await world.store.mailbox_status(mbox)
    bogus = FlagsChanged(uid=77, modseq=status.highestmodseq + 1, flags=frozenset({"\\Seen"}))
    view.on_change(ChangeBatch(mbox, (bogus,)))
    assert await catch_up(view) == []  # nothing happened in the store, nothing is said
    await world.store.store_flags(mbox, [1], FlagMode.ADD, ["\\Seen"])
    sub = world.ctx.hub.subscribe(mbox, view.on_change)
    await world.store.store_flags(mbox, [2], FlagMode.ADD, ["\\Seen"])
    sub.close()
    assert await catch_up(view) == [
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))", b"* 2 FETCH (FLAGS (\\Seen \\Recent))"]


# --- the store's side: one \Recent boundary, claimed by moving it -------------------------
async def test_a_claim_moves_the_boundary_once_and_never_past_uidnext(world: ImapWorld) -> None:
    user = await world.add_user()
    mb = await world.mailbox(user)
    store = world.store
    await store.append(mb.id, [NewMessage(msg(i)) for i in range(1, 5)])  # UIDs 1-4
    examined = await store.open_view(mb.id, claim_recent=False)
    assert examined.recent_uids == [1, 2, 3, 4]
    assert (await store.mailbox_status(mb.id)).recent == 4  # EXAMINE took nothing
    assert await store.claim_recent(mb.id, below=3) == 1  # this caller got UIDs 1 and 2
    assert await store.claim_recent(mb.id, below=2) == 3  # nothing: already past it
    selected = await store.open_view(mb.id, claim_recent=True)
    assert selected.recent_uids == [3, 4]
    assert await store.claim_recent(mb.id, below=99) == 5  # capped at uidnext
    [uid] = await store.append(mb.id, [NewMessage(msg(5))])
    assert uid == 5 and (await store.mailbox_status(mb.id)).recent == 1


async def test_expunge_deleted_only_goes_by_the_flags_at_commit(world: ImapWorld) -> None:
    user = await world.add_user()
    mb = await world.mailbox(user)
    store = world.store
    uids = await store.append(mb.id, [NewMessage(msg(i), frozenset({"\\Deleted"}))
                                      for i in range(1, 4)])
    await store.store_flags(mb.id, [uids[1]], FlagMode.REMOVE, ["\\Deleted"])
    assert await store.expunge(mb.id, uids, deleted_only=True) == [uids[0], uids[2]]
    assert [i.uid for i in await store.list_messages(mb.id)] == [uids[1]]
