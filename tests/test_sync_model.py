"""Live sync under concurrent change: a model-based test, plus regressions it led to.

``test_random_program`` runs seeded random programs (``sync_program``) of 2-8 IMAP
sessions, deliveries and POP3 sessions on one in-process store and hub (``sync_run``),
checking every response with the client-side model (``imap_model``) and the world against
the store (``sync_world``). On failure it prints the seed, the violation, the session's
last lines, and a shrunk program. Reproduce one seed with
``SYNC_MODEL_SEED=123 [SYNC_MODEL_STEPS=400] pytest tests/test_sync_model.py -k random``;
``SYNC_MODEL_SHRINK=0`` skips shrinking (seconds, default 20); ``--runslow`` runs long ones.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from imap_harness import ImapWorld, MemoryIMAP, open_world
from imap_model import TOLERATED, Violation
from sync_program import Program, make_program
from sync_run import Run

MSG = b"From: a@example.net\r\nSubject: sync\r\n\r\nbody\r\n"
CI_SEEDS = (1, 2, 3, 4, 5, 6)
CI_STEPS = 400
SLOW_SEEDS = tuple(range(100, 120))
SLOW_STEPS = 2500


def _seeds(default: tuple[int, ...]) -> list[int]:
    chosen = os.environ.get("SYNC_MODEL_SEED")
    return [int(s) for s in chosen.split(",")] if chosen else list(default)


def _steps(default: int) -> int:
    return int(os.environ.get("SYNC_MODEL_STEPS", default))


async def run_once(program: Program, root: Path) -> tuple[Violation | None, Run]:
    world = await open_world(root)
    run = Run(world, program)
    failure: Violation | None = None
    try:
        await run.execute()
    except Violation as exc:
        failure = exc
    finally:
        await run.close()
        await world.close()
        await world.store.close()
    return failure, run


async def shrink(program: Program, failure: Violation, failed_at: int, root: Path,
                 budget: float) -> tuple[Program, Violation, Run] | None:
    """Delta-debug the steps up to the failing one, keeping failures of the same kind."""
    deadline = time.monotonic() + budget
    steps = list(program.steps[: failed_at + 1])
    best: tuple[Program, Violation, Run] | None = None
    tries = 0
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        while i < len(steps) and time.monotonic() < deadline:
            candidate = steps[:i] + steps[i + chunk:]
            tries += 1
            got, run = await run_once(program.with_steps(candidate), root / f"shrink{tries}")
            if got is not None and got.kind == failure.kind:
                steps = candidate[: run.step_no + 1]
                best = (program.with_steps(steps), got, run)
            else:
                i += chunk
        chunk //= 2
    return best


def report(program: Program, failure: Violation, run: Run, shrunk: tuple | None) -> str:
    step = program.steps[run.step_no] if run.step_no < len(program.steps) else "final barrier"
    lines = [
        f"SYNC MODEL VIOLATION {failure.kind!r}: {program.describe()}, at step {run.step_no} "
        f"({step})",
        f"reproduce: SYNC_MODEL_SEED={program.seed} SYNC_MODEL_STEPS={len(program.steps)} "
        "pytest tests/test_sync_model.py -k random  (the interleaving on store threads may "
        "vary between runs)",
        "last actions:", *("  " + a for a in run.actions), failure.render(),
    ]
    if shrunk is not None:
        small, small_failure, small_run = shrunk
        lines += [f"\nshrunk to {len(small.steps)} steps, same kind; its actions:",
                  *("  " + a for a in small_run.actions), small_failure.render()]
    return "\n".join(lines)


@pytest.mark.parametrize("seed", _seeds(CI_SEEDS))
async def test_random_program(seed: int, tmp_path: Path) -> None:
    await _check_program(make_program(seed, _steps(CI_STEPS)), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", _seeds(SLOW_SEEDS))
async def test_random_program_long(seed: int, tmp_path: Path) -> None:
    await _check_program(make_program(seed, _steps(SLOW_STEPS)), tmp_path)


async def _check_program(program: Program, tmp_path: Path) -> None:
    TOLERATED.clear()
    failure, run = await run_once(program, tmp_path / "run")
    if TOLERATED:  # only with SYNC_MODEL_IGNORE: say what was looked past
        print(f"seed {program.seed}: ignored {dict(TOLERATED)}")
    if failure is None:
        return
    budget = float(os.environ.get("SYNC_MODEL_SHRINK", "20"))
    shrunk = None
    if budget > 0:
        shrunk = await shrink(program, failure, run.step_no, tmp_path, budget)
    pytest.fail(report(program, failure, run, shrunk), pytrace=False)


@pytest.mark.parametrize("seed", [1, 3])
async def test_the_model_catches_a_view_that_loses_flag_changes(
        seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test can fail: with a view that drops other sessions' flag changes (which the
    stream checker cannot see: every line it sends is well-formed), a CI seed fails."""
    from mailstead.imap import view_delta
    from mailstead.store.api import FlagsChanged

    real = view_delta.Delta._apply

    def lossy(self: view_delta.Delta, ev: object, announced: object) -> bool:
        if isinstance(ev, FlagsChanged) and ev.uid in announced:  # type: ignore[operator]
            return True  # applied, as far as the delta says: the client never hears of it
        return real(self, ev, announced)  # type: ignore[arg-type]

    monkeypatch.setattr(view_delta.Delta, "_apply", lossy)
    failure, _ = await run_once(make_program(seed, CI_STEPS), tmp_path / "run")
    assert failure is not None and failure.kind == "flags-mismatch", failure


# --- regressions for the defects of the sync issue --------------------------------------
def numbers(reply_lines: list[bytes], what: bytes) -> list[int]:
    return [int(m.group(1)) for line in reply_lines
            if (m := re.fullmatch(rb"\* (\d+) " + what + rb"(?: .*)?", line))]


async def test_move_into_the_selected_mailbox_announces_the_new_copy(world: ImapWorld) -> None:
    """Defect 1: MOVE 1 INBOX in INBOX is one EXPUNGE and one new message."""
    user = await world.add_user()
    await world.seed(user, [MSG, MSG])
    a = await world.login(user, select="INBOX")
    reply = await a.cmd("MOVE 1 INBOX")
    assert reply.ok, reply
    assert numbers(reply.untagged, b"EXPUNGE") == [1], reply
    later = reply.untagged + (await a.cmd("NOOP")).untagged
    assert numbers(later, b"EXISTS") == [2], later
    fetch = await a.cmd("FETCH 1:* (UID)")
    assert numbers(fetch.untagged, b"FETCH") == [1, 2], fetch


async def test_append_and_expunge_by_another_session_reach_noop(world: ImapWorld) -> None:
    """Defect 1 with two sessions: B appends one and expunges another; A's NOOP says both."""
    user = await world.add_user()
    await world.seed(user, [MSG])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    await b.append("INBOX", MSG)
    assert (await b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")).ok
    assert (await b.cmd("EXPUNGE")).ok
    reply = await a.cmd("NOOP")
    assert numbers(reply.untagged, b"EXPUNGE") == [1], reply
    assert numbers(reply.untagged, b"EXISTS") == [1], reply
    assert reply.untagged.index(b"* 1 EXPUNGE") < reply.untagged.index(b"* 1 EXISTS"), reply


async def test_a_message_is_announced_before_its_flags(world: ImapWorld) -> None:
    """Defect 2: B appends then flags; A must see EXISTS before any FETCH of it."""
    user = await world.add_user()
    await world.seed(user, [MSG])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    await b.append("INBOX", MSG)
    assert (await b.cmd("STORE 2 +FLAGS (\\Flagged)")).ok
    reply = await a.cmd("NOOP")
    exists = [i for i, line in enumerate(reply.untagged) if line == b"* 2 EXISTS"]
    fetches = [i for i, line in enumerate(reply.untagged) if line.startswith(b"* 2 FETCH")]
    assert exists and all(exists[0] < i for i in fetches), reply


async def test_appended_then_expunged_unseen_message_is_never_numbered(
        world: ImapWorld) -> None:
    """Defect 2: a message that came and went between two NOOPs of A is not mentioned
    with a number A was never told (or it is announced first and then expunged)."""
    user = await world.add_user()
    await world.seed(user, [MSG])
    a = await world.login(user, select="INBOX")
    b = await world.login(user, select="INBOX")
    await b.append("INBOX", MSG, flags="\\Deleted")
    assert (await b.cmd("STORE 2 +FLAGS (\\Seen)")).ok
    assert (await b.cmd("EXPUNGE")).ok
    reply = await a.cmd("NOOP")
    count = 1
    for line in reply.untagged:
        if m := re.fullmatch(rb"\* (\d+) EXISTS", line):
            assert int(m.group(1)) >= count, reply
            count = int(m.group(1))
        elif m := re.match(rb"\* (\d+) (EXPUNGE|FETCH)", line):
            assert 1 <= int(m.group(1)) <= count, reply
            count -= m.group(2) == b"EXPUNGE"
    assert count == 1, reply


async def _recent_holders(clients: list[MemoryIMAP]) -> list[int]:
    """Which of the clients show \\Recent on their last message."""
    out = []
    for i, c in enumerate(clients):
        # First hear of the new message: until then "*" is the session's previous last
        # message, whose \Recent it may hold by right (RFC 3501 §2.3.2, §6.4.5).
        assert (await c.cmd("NOOP")).ok
        reply = await c.cmd("FETCH * (FLAGS)")
        assert reply.ok, reply
        if any(b"\\Recent" in line for line in reply.untagged if b" FETCH " in line):
            out.append(i)
    return out


@pytest.mark.parametrize("overlap", ["select-first", "together", "append-first"])
async def test_recent_goes_to_exactly_one_session(world: ImapWorld, overlap: str) -> None:
    """Defect 3: A has INBOX selected, B appends, C selects at the same moment: one of A
    and C holds \\Recent, never both, never neither."""
    user = await world.add_user()
    await world.seed(user, [MSG])
    for attempt in range(8):
        a = await world.login(user, select="INBOX")
        b = await world.login(user)
        c = await world.login(user)
        tag_b, tag_c = b.next_tag(), c.next_tag()
        append = tag_b + b" APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n"
        select = tag_c + b" SELECT INBOX\r\n"
        if overlap == "select-first":
            c.send(select)
            b.send(append)
        elif overlap == "together":
            b.send(append)
            c.send(select)
        else:
            b.send(append)
            await b.settle()
            c.send(select)
        assert (await b.collect(tag_b)).ok
        assert (await c.collect(tag_c)).ok
        holders = await _recent_holders([a, c])
        assert len(holders) == 1, (attempt, overlap, holders)
        await world.close()


async def test_examine_reports_recent_like_select_and_keeps_it(world: ImapWorld) -> None:
    """Defect 5: EXAMINE says how many messages are recent and does not take them."""
    user = await world.add_user()
    await world.deliver(user, MSG)
    await world.deliver(user, MSG)
    e = await world.login(user)
    reply = await e.cmd("EXAMINE INBOX")
    assert reply.ok and b"* 2 RECENT" in reply.untagged, reply
    s = await world.login(user)
    status = await s.cmd("STATUS INBOX (RECENT)")
    # INBOX is an astring: sent quoted or as an atom (RFC 3501 §9, "mailbox").
    assert status.untagged in ([b"* STATUS INBOX (RECENT 2)"],
                               [b'* STATUS "INBOX" (RECENT 2)']), status
    reply = await s.cmd("SELECT INBOX")
    assert b"* 2 RECENT" in reply.untagged, reply
