"""Executes one ``sync_program.Program`` against an in-process world and checks it.

Each IMAP step becomes a concrete command fitted to what the session's model knows (or
is skipped when it does not fit), sent without waiting unless the step says so; a session
with a command outstanding first collects it. Deliveries and POP3 run as tasks beside the
sessions. Besides the per-response checks of ``SessionModel``, this checks what needs the
whole world: acknowledged messages exist, every expunge was asked for, STATUS matches the
store, a session's own EXPUNGE/MOVE is announced to it, and, at barriers (everything
collected, the store compared with the mirror, every selected session NOOP-synced), the
RECENT count a probe SELECT/EXAMINE/STATUS reports.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from fuzzlib import message
from imap_harness import PASSWORD, ImapWorld
from imap_model import Completion, SilentStore, Violation, number_set, tolerate
from mailstead.store.api import NewMessage
from sync_drivers import ImapDriver, Pop3Driver
from sync_program import Program, Step
from sync_world import Mirror, Moment

BOXES = ("INBOX", "Archive")
FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "\\Deleted", "\\Answered", "\\Draft", "$Work",
         "$Later")
SEARCHES = ("ALL", "DELETED", "UNDELETED", "SEEN", "UNSEEN", "FLAGGED", "KEYWORD $Work",
            "NOT KEYWORD $Later", "OR SEEN FLAGGED", "UID 1:*", "ANSWERED DRAFT")
FETCH_ITEMS = ("(FLAGS)", "(UID FLAGS)", "(UID)", "(FLAGS UID MODSEQ)", "(UID RFC822.SIZE FLAGS)")
CAP = 40  # messages per mailbox: appends, copies and deliveries stop there
WAIT = 10.0


def msn_set(rng: random.Random, count: int) -> tuple[str, list[int]]:
    """A sequence set within 1..count and the numbers it names."""
    c = rng.random()
    if c < 0.25:
        n = rng.randint(1, count)
        return str(n), [n]
    if c < 0.5:
        a, b = sorted((rng.randint(1, count), rng.randint(1, count)))
        return f"{a}:{b}", list(range(a, b + 1))
    if c < 0.65:
        return "1:*", list(range(1, count + 1))
    if c < 0.75:
        return "*", [count]
    if c < 0.85:
        n = rng.randint(1, count)
        return f"{n}:*", list(range(n, count + 1))
    picked = sorted(rng.sample(range(1, count + 1), min(count, rng.randint(2, 4))))
    return ",".join(map(str, picked)), picked


class Run:
    """One program on one world; ``execute`` raises ``Violation`` at the first problem."""

    def __init__(self, world: ImapWorld, program: Program) -> None:
        self.world = world
        self.program = program
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.mirror: Mirror = None  # type: ignore[assignment]  # set up in setup()
        from sync_world import RecentLedger
        self.ledger = RecentLedger()
        self.ids: dict[tuple[str, str], int] = {}
        self.by_validity: dict[int, int] = {}
        self.users: list[str] = []
        self.drivers: list[ImapDriver] = []
        self.all_imap: list[ImapDriver] = []
        self.pop3s: dict[str, Pop3Driver] = {}
        self.pop3_tasks: dict[str, asyncio.Task[None]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.retired: dict[int, tuple[object, str]] = {}
        self.acked: dict[tuple[int, int], str] = {}
        self.actions: deque[str] = deque(maxlen=25)
        self.step_no = -1
        self.steps_run = 0

    def mailbox_id(self, user: str, box: str) -> int:
        return self.ids[(user, box)]

    # --- set-up and tear-down -------------------------------------------------------------
    async def setup(self) -> None:
        rng = random.Random(self.program.seed)
        names: dict[int, str] = {}
        for _ in range(self.program.users):
            user = await self.world.add_user()
            self.users.append(user)
            self.pop3s[user] = Pop3Driver(self, user)
            for box in BOXES:
                mb = await self.world.mailbox(user, box)
                names[mb.id] = box
                self.ids[(user, box)] = mb.id
                self.by_validity[mb.uidvalidity] = mb.id
        self.mirror = Mirror(self.world.ctx.hub, names, self.world.store)
        self.mirror.license = self.license
        for (_user, _box), mb in self.ids.items():
            seeds = [NewMessage(message("seed", 60),
                                frozenset(rng.sample(FLAGS, rng.randint(0, 2))))
                     for _ in range(rng.randint(0, 4))]
            for uid in await self.world.store.append(mb, seeds) if seeds else []:
                self.acked[(mb, uid)] = "seeded"
        for i in range(self.program.sessions):
            self.drivers.append(await self.connect(i, self.users[i % len(self.users)], 0))

    async def connect(self, index: int, user: str, generation: int) -> ImapDriver:
        d = ImapDriver(self, index, user, generation)
        self.all_imap.append(d)
        d.send("LOGIN", f"LOGIN {user} {PASSWORD}")
        await self.finish(d)
        return d

    async def close(self) -> None:
        for task in [*self.tasks, *self.pop3_tasks.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.pop3_tasks.values(), return_exceptions=True)
        for d in self.all_imap:
            d.drop()
        for p in self.pop3s.values():
            p.drop()
        for _ in range(20):
            await asyncio.sleep(0)
        if self.mirror is not None:
            self.mirror.close()

    # --- running --------------------------------------------------------------------------
    async def execute(self) -> None:
        await self.setup()
        for i, step in enumerate(self.program.steps):
            self.step_no = i
            await self.do(step)
            self.steps_run += 1
        self.step_no = len(self.program.steps)
        await self.barrier(random.Random(self.program.seed + 1))

    async def do(self, step: Step) -> None:
        rng = random.Random(step.r)
        if step.kind == "barrier":
            await self.barrier(rng)
        elif step.kind == "settle":
            for _ in range(rng.randint(1, 12)):
                await asyncio.sleep(0)
        elif step.kind == "deliver":
            self.deliver(rng, self.users[step.who % len(self.users)], step.wait)
        elif step.kind == "pop3":
            await self.pop3(rng, self.users[step.who % len(self.users)], step.wait)
        else:
            await self.imap(self.drivers[step.who % len(self.drivers)], step.kind, rng, step.wait)
        if step.wait:
            await self.join_tasks()
        self.pump_all()
        self.reap()

    def log(self, who: str, text: str, wait: bool) -> None:
        late = "" if wait else "  (not awaited)"
        self.actions.append(f"#{self.step_no} {who}: {text[:120]}{late}")

    def pump_all(self) -> None:
        for d in self.all_imap:
            if not d.gone:
                d.pump()
        while self.mirror.problems:
            tolerate(self.mirror.problems.pop(0))

    async def until(self, cond: Callable[[], bool], d: ImapDriver, what: str) -> None:
        deadline = self.loop.time() + WAIT
        while True:
            self.pump_all()
            if cond():
                return
            self.wake.clear()
            left = deadline - self.loop.time()
            if left <= 0:
                raise d.fail("no-response", "(nothing)", f"{what} within {WAIT:.0f} s")
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except TimeoutError:
                pass

    async def finish(self, d: ImapDriver) -> None:
        cmd = d.model.cmd
        await self.until(lambda: not d.busy, d, f"the tagged reply to {cmd and cmd.text!r}")

    def reap(self) -> None:
        for task in [*self.tasks, *self.pop3_tasks.values()]:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        self.tasks = [t for t in self.tasks if not t.done()]

    async def join_tasks(self) -> None:
        pending = [*self.tasks, *self.pop3_tasks.values()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=2 * WAIT)
            if late:
                raise Violation("no-response", "world", "(nothing)",
                                f"deliveries and POP3 commands within {WAIT:.0f} s", [])
        self.reap()

    # --- IMAP steps -----------------------------------------------------------------------
    async def imap(self, d: ImapDriver, kind: str, rng: random.Random, wait: bool) -> None:
        if d.idling:
            await self.until(lambda: d.model.idling or not d.busy, d, "+ after IDLE")
            if d.busy:
                d.send_done()
                self.log(d.name, "DONE", wait or kind != "done")
                if kind == "done" and not wait:
                    return
                await self.finish(d)
        elif d.busy:
            await self.finish(d)
        if kind in ("done", "collect"):
            return
        if kind == "relogin":
            await self.relogin(d)
            return
        builder: Callable[[ImapDriver, random.Random], bool] = getattr(self, "cmd_" + kind)
        if not builder(d, rng):
            return
        assert d.model.cmd is not None
        self.log(d.name, d.model.cmd.text, wait)
        if kind == "idle":
            await self.until(lambda: d.model.idling or not d.busy, d, "+ after IDLE")
        elif wait:
            await self.finish(d)

    async def relogin(self, d: ImapDriver) -> None:
        d.send("LOGOUT", "LOGOUT")
        self.log(d.name, "LOGOUT, then a new connection", True)
        await self.finish(d)
        d.drop()
        generation = sum(1 for x in self.all_imap if x.index == d.index)
        self.drivers[d.index] = await self.connect(d.index, d.user, generation)

    def _full(self, d: ImapDriver, box: str) -> bool:
        return len(self.mirror.truths[self.mailbox_id(d.user, box)].uids) >= CAP

    def _uid_set(self, d: ImapDriver, rng: random.Random) -> tuple[str, set[int] | None]:
        known = sorted(d.model.known_uids())
        if not known or rng.random() < 0.3:
            return "1:*", None
        picked = set(rng.sample(known, min(len(known), rng.randint(1, 3))))
        if rng.random() < 0.2:
            picked.add(known[-1] + rng.randint(1, 5))  # a UID that is not (yet) there
        return ",".join(map(str, sorted(picked))), picked

    def _targets(self, d: ImapDriver, rng: random.Random, uid: bool
                 ) -> tuple[str, list[Any]]:
        entries = d.model.entries
        if uid:
            text, picked = self._uid_set(d, rng)
            if picked is None:
                return text, list(entries)
            return text, [e for e in entries if e.uid in picked]
        text, numbers = msn_set(rng, d.model.count)
        return text, [entries[n - 1] for n in numbers]

    def cmd_noop(self, d: ImapDriver, rng: random.Random) -> bool:
        verb = "CHECK" if d.model.selected and rng.random() < 0.2 else "NOOP"
        d.send(verb, verb)
        return True

    def cmd_select(self, d: ImapDriver, rng: random.Random) -> bool:
        box = rng.choice(BOXES)
        verb = "EXAMINE" if rng.random() < 0.25 else "SELECT"
        d.send(verb, f"{verb} {box}" + (" (CONDSTORE)" if rng.random() < 0.1 else ""), mailbox=box)
        return True

    def cmd_unselect(self, d: ImapDriver, rng: random.Random) -> bool:
        if d.model.selected is None:
            return False
        verb = "CLOSE" if not d.model.readonly and rng.random() < 0.25 else "UNSELECT"
        d.send(verb, verb)
        return True

    def cmd_fetch(self, d: ImapDriver, rng: random.Random) -> bool:
        if not d.model.count:
            return False
        uid = rng.random() < 0.4
        text, _ = self._uid_set(d, rng) if uid else msn_set(rng, d.model.count)
        verb = "UID FETCH" if uid else "FETCH"
        d.send(verb, f"{verb} {text} {rng.choice(FETCH_ITEMS)}")
        return True

    def cmd_store(self, d: ImapDriver, rng: random.Random) -> bool:
        if not d.model.count:
            return False
        uid = rng.random() < 0.4
        text, targets = self._targets(d, rng, uid)
        flags = sorted(set(rng.sample(FLAGS, rng.randint(1, 3))))
        mode = rng.choice(("+", "+", "-", ""))
        silent = rng.random() < 0.3
        cond = ""
        if rng.random() < 0.3:
            modseqs = [e.modseq for e in d.model.entries if e.modseq is not None]
            cond = f"(UNCHANGEDSINCE {rng.choice([*modseqs, 1, 10**6])}) "
        verb = "UID STORE" if uid else "STORE"
        plan = None
        if silent:
            plan = SilentStore(mode, frozenset(flags), targets, uid)
            if uid and text != "1:*":  # cannot tell whether unknown-UID messages are named
                for e in d.model.entries:
                    if e.uid is None:
                        e.flags = None
        d.send(verb, f"{verb} {text} {cond}{mode}FLAGS{'.SILENT' if silent else ''} "
               f"({' '.join(flags)})", silent=plan)
        return True

    def cmd_expunge(self, d: ImapDriver, rng: random.Random) -> bool:
        if d.model.selected is None:
            return False
        d.send("EXPUNGE", "EXPUNGE")
        return True

    def cmd_uid_expunge(self, d: ImapDriver, rng: random.Random) -> bool:
        known = sorted(d.model.known_uids())
        if d.model.selected is None or not known:
            return False
        deleted = [e.uid for e in d.model.entries
                   if e.uid is not None and e.flags is not None and "\\Deleted" in e.flags]
        pool = deleted if deleted and rng.random() < 0.7 else known
        picked = sorted(set(rng.sample(pool, min(len(pool), rng.randint(1, 3)))))
        d.send("UID EXPUNGE", "UID EXPUNGE " + ",".join(map(str, picked)))
        return True

    def _copy(self, d: ImapDriver, rng: random.Random, verb: str) -> bool:
        if not d.model.count:
            return False
        assert d.model.selected is not None
        dest = d.model.selected if rng.random() < 0.4 else rng.choice(BOXES)
        if self._full(d, dest):
            return False
        uid = rng.random() < 0.4
        text, _ = self._uid_set(d, rng) if uid else msn_set(rng, d.model.count)
        full = f"UID {verb}" if uid else verb
        d.send(full, f"{full} {text} {dest}", mailbox=dest)
        return True

    def cmd_copy(self, d: ImapDriver, rng: random.Random) -> bool:
        return self._copy(d, rng, "COPY")

    def cmd_move(self, d: ImapDriver, rng: random.Random) -> bool:
        return self._copy(d, rng, "MOVE")

    def cmd_append(self, d: ImapDriver, rng: random.Random) -> bool:
        box = d.model.selected if d.model.selected and rng.random() < 0.6 else rng.choice(BOXES)
        if self._full(d, box):
            return False
        flags = " ".join(sorted(set(rng.sample(FLAGS, rng.randint(0, 2)))))
        data = message("append", 80)
        d.send("APPEND", f"APPEND {box} ({flags}) {{{len(data)}+}}", mailbox=box, literal=data)
        return True

    def cmd_search(self, d: ImapDriver, rng: random.Random) -> bool:
        if d.model.selected is None:
            return False
        verb = "UID SEARCH" if rng.random() < 0.4 else "SEARCH"
        d.send(verb, f"{verb} {rng.choice(SEARCHES)}")
        return True

    def cmd_status(self, d: ImapDriver, rng: random.Random) -> bool:
        box = rng.choice(BOXES)
        d.send("STATUS", f"STATUS {box} (MESSAGES UIDNEXT UNSEEN)", mailbox=box)
        return True

    def cmd_idle(self, d: ImapDriver, rng: random.Random) -> bool:
        d.send("IDLE", "IDLE")
        return True

    def cmd_enable(self, d: ImapDriver, rng: random.Random) -> bool:
        d.send("ENABLE", "ENABLE CONDSTORE")
        return True

    # --- deliveries and POP3 --------------------------------------------------------------
    def deliver(self, rng: random.Random, user: str, wait: bool) -> None:
        box = "INBOX" if rng.random() < 0.8 else "Archive"
        if len(self.mirror.truths[self.mailbox_id(user, box)].uids) >= CAP:
            return
        self.log(f"deliver-{user}", f"deliver to {box}", wait)

        async def go() -> None:
            uids = await self.world.deliver(user, message("deliver", 70), box)
            moment = self.mirror.moment()
            for uid in uids:
                self.ack(None, self.mailbox_id(user, box), uid, "delivered", moment)

        self.tasks.append(self.loop.create_task(go()))

    async def pop3(self, rng: random.Random, user: str, wait: bool) -> None:
        p = self.pop3s[user]
        task = self.pop3_tasks.pop(user, None)
        if task is not None:
            await asyncio.wait_for(task, 2 * WAIT)
        coro: Coroutine[Any, Any, None] | None
        c = rng.random()
        if p.client is None:
            coro, what = p.login(), "login + UIDL"
        elif c < 0.45:
            coro, what = p.dele(rng.getrandbits(16)), "DELE"
        elif c < 0.6:
            coro, what = p.retr(rng.getrandbits(16)), "RETR"
        elif c < 0.85:
            coro, what = p.quit(), "QUIT"
        else:
            p.drop()
            self.log(p.name, "dropped without QUIT", True)
            return
        self.log(p.name, what, wait)
        self.pop3_tasks[user] = self.loop.create_task(coro)
        if wait:
            await asyncio.wait_for(self.pop3_tasks[user], 2 * WAIT)

    # --- world-level checks ---------------------------------------------------------------
    def ack(self, d: ImapDriver | None, mb: int, uid: int, what: str, moment: Moment) -> None:
        self.acked[(mb, uid)] = what
        gone = self.mirror.expunged.get((mb, uid))
        if uid not in self.mirror.truth_at(mb, moment.upto).uids and (
                gone is None or gone > moment.upto):
            tolerate(Violation("lost-message", d.name if d else "store", f"{what}: UID {uid} of "
                            f"{self.mirror.names[mb]}", "the acknowledged message in the store",
                            list(d.model.transcript) if d else []))

    def license(self, mb: int, uid: int, before: frozenset[str]
                ) -> tuple[Violation | None, list[object]]:
        """Which sessions' running commands ask for this expunge; ``lost-message`` if none.

        The store's change batches do not name the session that caused them, so every
        session is asked whether its command in flight could have removed ``uid`` from
        ``mb``: an IMAP EXPUNGE/CLOSE (of a \\Deleted message; UID EXPUNGE naming it) or
        MOVE in that mailbox, or a POP3 QUIT that DELE'd it.
        """
        what = f"UID {uid} of {self.mirror.names[mb]} expunged (flags before: {sorted(before)})"
        owners: list[object] = []
        refusals: list[str] = []
        for d in self.all_imap:
            cmd, model = d.model.cmd, d.model
            if cmd is None or model.selected is None or d.origin is None \
                    or self.ids.get((d.user, model.selected)) != mb:
                continue
            if cmd.base == "MOVE":
                owners.append(d.origin)
            elif cmd.base not in ("EXPUNGE", "CLOSE"):
                refusals.append(f"{d.name} runs {cmd.text}")
            elif "\\Deleted" not in before:
                refusals.append(f"{d.name}: {cmd.text} would remove a message without "
                                "\\Deleted (RFC 3501 §6.4.3, RFC 4315 §2.1)")
            elif cmd.verb == "UID EXPUNGE" and uid not in number_set(cmd.text.split()[2]):
                refusals.append(f"{d.name}: {cmd.text} does not name UID {uid}")
            else:
                owners.append(d.origin)
        for p in self.pop3s.values():
            if p.client is not None and p.quitting is p.origin and p.origin is not None \
                    and self.ids.get((p.user, "INBOX")) == mb \
                    and (uid in p.deleted.values() or None in p.deleted.values()):
                owners.append(p.origin)
        if owners:
            return None, owners
        why = "; ".join(refusals) or "no session was running a command that expunges"
        return Violation("lost-message", "store", what, "no expunge without a command that "
                         f"asks for it: {why}", []), []

    def completed(self, d: ImapDriver, done: Completion, moment: Moment) -> None:
        cmd, model = done.cmd, d.model
        if done.status != "OK" and not (done.status == "NO" and (
                ("EXPUNGEISSUED" in done.codes and cmd.base in ("FETCH", "COPY", "MOVE"))
                or (model.readonly and cmd.base in ("STORE", "EXPUNGE", "MOVE")))):
            tolerate(d.fail("unexpected-status", model.transcript[-1], f"OK for {cmd.text}"))
        if done.status != "OK":
            return
        if cmd.verb == "APPEND" and "APPENDUID" in done.codes:
            validity, uids = done.codes["APPENDUID"].split()
            for uid in number_set(uids):
                self.ack(d, self.by_validity[int(validity)], uid, f"APPEND by {d.name}", moment)
        copyuid = done.codes.get("COPYUID") or model.copyuid
        if copyuid and cmd.base in ("COPY", "MOVE"):
            validity, src, dst = copyuid.split()
            for uid in number_set(dst):
                self.ack(d, self.by_validity[int(validity)], uid, f"{cmd.text} by {d.name}",
                         moment)
            if cmd.base == "MOVE" and number_set(src) & model.known_uids():
                tolerate(d.fail("moved-not-expunged", model.transcript[-1], f"EXPUNGE for "
                             f"every moved UID {src} before the tagged OK (RFC 6851 §3.3)"))
        if cmd.base in ("EXPUNGE", "MOVE") and model.selected is not None:
            mb = self.mailbox_id(d.user, model.selected)
            stray = self.mirror.expunged_by(d.origin, mb, d.sent_version, moment.version) & \
                model.known_uids()
            if stray:
                tolerate(d.fail("own-expunge-not-announced", model.transcript[-1], f"EXPUNGE for "
                             f"UIDs {sorted(stray)} that this {cmd.verb} removed"))
        if cmd.verb == "STATUS":
            self.check_status(d, cmd.mailbox or "", moment)
        if d.probe:
            self.check_recent(d, cmd.verb, cmd.mailbox or "", moment)

    def check_status(self, d: ImapDriver, box: str, moment: Moment) -> None:
        got = d.model.status.get(box)
        if got is None:
            raise d.fail("status-missing", d.model.transcript[-1], f"* STATUS {box} (…)")
        mb = self.mailbox_id(d.user, box)
        states = self.mirror.truths_between(mb, d.sent_version, moment.upto)
        counts = {len(t.uids) for t in states}
        if "MESSAGES" in got and got["MESSAGES"] not in counts:
            tolerate(d.fail("status-messages", d.model.transcript[-2], f"MESSAGES in "
                         f"{sorted(counts)}: the store's count while STATUS ran"))
        unseen = {sum(1 for f in t.flags.values() if "\\Seen" not in f) for t in states}
        if "UNSEEN" in got and got["UNSEEN"] not in unseen:
            tolerate(d.fail("status-unseen", d.model.transcript[-2], f"UNSEEN in {sorted(unseen)}"))
        top = max((u for (m, u), v in self.mirror.appended_at.items()
                   if m == mb and v <= d.sent_version), default=0)
        if "UIDNEXT" in got and got["UIDNEXT"] <= top:
            tolerate(d.fail("status-uidnext", d.model.transcript[-2], f"UIDNEXT > {top}"))

    def check_recent(self, d: ImapDriver, verb: str, box: str, moment: Moment) -> None:
        """A barrier's probe: nothing runs, every selection was just synced."""
        mb = self.mailbox_id(d.user, box)
        live = self.mirror.truth_at(mb, moment.upto).uids
        probe = d.selection if verb in ("SELECT", "EXAMINE") else None
        low, high = self.ledger.recent_range(
            d.user, box, live, lambda uid: self.mirror.appended_at.get((mb, uid), 0), probe)
        got = d.model.recent_count if probe is not None else d.model.status[box].get("RECENT")
        if got is None or not low <= got <= high:
            tolerate(d.fail("recent-count", d.model.transcript[-2] if probe is None else
                         f"{verb} {box}: RECENT {got}", f"RECENT in [{low}, {high}] of "
                         f"{len(live)} messages: {low} arrived while no read-write session had "
                         f"{box} selected, {len(live) - high} were told to one already "
                         "(RFC 3501 §2.3.2, §6.3.1, §6.3.2, §6.3.10)"))

    # --- barriers -------------------------------------------------------------------------
    async def barrier(self, rng: random.Random) -> None:
        self.log("all", "barrier", True)
        for d in self.drivers:
            if d.idling:
                await self.until(lambda d=d: d.model.idling or not d.busy, d, "+ after IDLE")
                if d.busy:
                    d.send_done()
        for d in self.drivers:
            await self.finish(d)
        await self.join_tasks()
        for _ in range(5):
            await asyncio.sleep(0)
        # A write queued after every background one (\Recent claims, \Seen of RETR) ends.
        await self.world.store.set_subscribed((await self.world.user(self.users[0])).id,
                                              "INBOX", True)
        self.pump_all()
        await self.compare_store()
        for d in self.drivers:
            if d.model.selected is not None:
                d.send("NOOP", "NOOP")
                await self.finish(d)
        if rng.random() < 0.7:
            await self.probe(rng)
        self.mirror.prune()

    async def compare_store(self) -> None:
        for (user, box), mb in self.ids.items():
            # A background write (a POP3 session's delayed \Seen) may commit while we
            # read: the read shows one of the states committed meanwhile.
            first = self.mirror.moment()
            infos = await self.world.store.list_messages(mb)
            last = self.mirror.moment()
            store = {i.uid: i.flags for i in infos}
            states = self.mirror.truths_between(mb, first.version, last.upto)
            if all(store != t.flags for t in states):
                raise Violation("store-mirror-mismatch", f"store {user}/{box}", repr(store),
                                f"what was committed: {states[-1].flags!r}", [])
        for (mb, uid), what in self.acked.items():
            if uid not in self.mirror.flags[mb] and (mb, uid) not in self.mirror.expunged:
                tolerate(Violation("lost-message", "store", f"{what}: UID {uid} of "
                                f"{self.mirror.names[mb]}", "the message, or its expunge", []))

    async def probe(self, rng: random.Random) -> None:
        d = rng.choice(self.drivers)
        box = rng.choice(BOXES)
        d.probe = True
        if rng.random() < 0.6:
            verb = "EXAMINE" if rng.random() < 0.5 else "SELECT"
            d.send(verb, f"{verb} {box}", mailbox=box)
        else:
            if d.model.selected == box:
                box = BOXES[1 - BOXES.index(box)]
            d.send("STATUS", f"STATUS {box} (MESSAGES RECENT UIDNEXT UNSEEN)", mailbox=box)
        assert d.model.cmd is not None
        self.log(d.name, d.model.cmd.text + "  (probe)", True)
        await self.finish(d)
