"""What one client of ``scripts/bench load`` does: an office worker's random mix of IMAP
commands on its INBOX (and an Archive folder), on one connection until the end of the run or,
with ``--logins``, a few commands per connection."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench_load_checker import RecentRegistry, SessionChecker, ViolationLog
from bench_load_conn import CommandFailed, Connection, Stats

KEYWORDS = ["$Label1", "$Label2", "Work", "$Important", "Later"]
SYSTEM_FLAGS = ["\\Seen", "\\Flagged", "\\Answered"]
HEADERS = "BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID References)]"
WORDS = ["report", "meeting", "budget", "release", "invoice", "review", "schedule"]
SEARCHES = ["UNSEEN", "FLAGGED", "DELETED", "SEEN NOT FLAGGED", 'FROM "sender{k}"',
            'SUBJECT "{word}"', "KEYWORD $Label1", "SINCE 1-Jan-2024", "LARGER 20000",
            'OR FROM "sender{k}" TO "bench"', "UNKEYWORD Work UNSEEN"]
ARCHIVE = "Archive"


@dataclass
class LoadOptions:
    host: str
    port: int
    password: str
    messages: int  # seeded per INBOX: deletions stop below half, appends above twice that
    timeout: float = 30.0
    logins: bool = False
    idle_max: float = 0.5
    tls: bool = False


@dataclass
class Shared:
    """What all clients of one run share."""

    options: LoadOptions
    pool: list[bytes]  # messages to APPEND
    stats: Stats = field(default_factory=Stats)
    registry: RecentRegistry = field(default_factory=RecentRegistry)
    log: ViolationLog = field(default_factory=ViolationLog)


def uid_set(values: list[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


class OfficeClient:
    def __init__(self, index: int, user: str, shared: Shared, seed: int) -> None:
        self.index, self.user, self.shared = index, user, shared
        self.opts = shared.options
        self.rng = random.Random(seed)
        self.conn: Connection | None = None
        self.checker: SessionChecker | None = None
        self.synced = 0  # messages whose headers this client has fetched (1..synced)
        self.actions: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("fetch_flags", 10, self.fetch_flags), ("fetch_headers", 10, self.fetch_headers),
            ("fetch_body", 14, self.fetch_body), ("store", 14, self.store),
            ("store_deleted", 3, self.store_deleted), ("expunge", 3, self.expunge),
            ("append", 4, self.append), ("search", 8, self.search), ("idle", 3, self.idle),
            ("noop", 8, self.noop), ("list", 2, self.list), ("status", 3, self.status),
            ("copy", 1.5, self.copy), ("move", 1.5, self.move), ("switch", 2, self.switch),
        ]

    # --- sessions ----------------------------------------------------------------------------
    async def run(self, deadline: float) -> None:
        sessions = 0
        while time.monotonic() < deadline:
            sessions += 1
            self.checker = SessionChecker(f"{self.user}/c{self.index}.{sessions}", self.user,
                                          self.shared.registry, self.shared.log)
            try:
                self.conn = await Connection.open(self.opts.host, self.opts.port, self.checker,
                                                  self.shared.stats, self.opts.timeout,
                                                  tls=self.opts.tls)
                await self.session(deadline)
            except TimeoutError:
                self.shared.stats.timeouts += 1
                self.lost("timeout")
            except (ConnectionError, OSError, CommandFailed, asyncio.LimitOverrunError) as e:
                self.lost(f"{type(e).__name__}: {e}")
            else:
                continue
            finally:
                if self.conn is not None:
                    self.conn.writer.close()
                self.conn = None
            # Lost or refused (e.g. too many logins at once): wait a little, as clients do.
            left = max(0.0, deadline - time.monotonic())
            await asyncio.sleep(min(self.rng.uniform(0.2, 1.0), left))

    def lost(self, what: str) -> None:
        self.shared.stats.lost(f"{self.checker.connection if self.checker else '?'}: {what}")

    async def session(self, deadline: float) -> None:
        conn = self.connection
        await conn.login(self.user, self.opts.password)
        self.shared.stats.sessions += 1
        self.synced = 0
        await self.select("INBOX")
        steps = self.rng.randint(3, 12) if self.opts.logins else -1
        while time.monotonic() < deadline and steps != 0:
            steps -= 1
            await self.step()
        await conn.close()

    @property
    def connection(self) -> Connection:
        assert self.conn is not None
        return self.conn

    @property
    def state(self) -> SessionChecker:
        assert self.checker is not None
        return self.checker

    async def step(self) -> None:
        s = self.state
        self.synced = min(self.synced, s.count)
        if s.count > self.synced:  # new mail: a client fetches its headers first
            await self.fetch_new()
            return
        if (s.mailbox != "INBOX" or s.readonly) and self.rng.random() < 0.12:
            await self.select("INBOX")
            return
        names = [a for a in self.actions if self.possible(a[0])]
        _, _, action = self.rng.choices(names, weights=[a[1] for a in names])[0]
        await action()

    def possible(self, name: str) -> bool:
        s = self.state
        writable = s.selected and not s.readonly
        keep = self.opts.messages // 2 if s.mailbox == "INBOX" else 5
        caps = self.connection.capabilities
        if name in ("fetch_flags", "fetch_headers", "fetch_body"):
            return s.count > 0
        if name == "store":
            return s.count > 0 and writable
        if name == "copy":
            return s.count > 0 and s.mailbox == "INBOX"
        if name == "store_deleted":
            return writable and s.count > keep
        if name == "move":
            return writable and s.count > keep and s.mailbox == "INBOX" and "MOVE" in caps
        if name == "expunge":
            return writable
        if name == "append":
            return s.mailbox != "INBOX" or s.count < 2 * self.opts.messages
        return True

    # --- helpers -----------------------------------------------------------------------------
    def some_messages(self, most: int) -> tuple[str, str]:
        """("UID " or "", a set): a random run of up to ``most`` messages, by UID when the
        client knows both ends' UIDs and feels like it."""
        s = self.state
        first = self.rng.randint(1, s.count)
        last = min(s.count, first + self.rng.randint(0, most - 1))
        lo, hi = s.uid_of(first), s.uid_of(last)
        if lo is not None and hi is not None and self.rng.random() < 0.5:
            return "UID ", f"{lo}:{hi}" if lo != hi else str(lo)
        return "", f"{first}:{last}" if first != last else str(first)

    async def verify(self) -> None:
        """``FETCH 1:* (UID FLAGS)``: the checker compares the answer with its count."""
        if self.state.count:
            await self.connection.command("fetch_all_uids", "FETCH 1:* (UID FLAGS)", verify=True)
            self.synced = self.state.count

    async def select(self, mailbox: str, examine: bool = False) -> None:
        verb = "EXAMINE" if examine else "SELECT"
        result = await self.connection.command(verb.lower(), f"{verb} {mailbox}", mailbox=mailbox)
        if not result.ok and mailbox != "INBOX":
            await self.select("INBOX")
            return
        await self.verify()

    # --- the office mix ----------------------------------------------------------------------
    async def fetch_new(self) -> None:
        await self.connection.command(
            "fetch_new", f"FETCH {self.synced + 1}:* (UID FLAGS RFC822.SIZE {HEADERS})")
        self.synced = self.state.count

    async def fetch_flags(self) -> None:
        s = self.state
        if self.rng.random() < 0.5:
            uid, which = self.some_messages(50)
            await self.connection.command("fetch_flags", f"{uid}FETCH {which} (UID FLAGS)")
            return
        start = self.rng.randint(1, s.count)
        uid = s.uid_of(start)
        text = f"UID FETCH {uid}:* (UID FLAGS)" if uid else f"FETCH {start}:* (UID FLAGS)"
        await self.connection.command("fetch_flags", text)

    async def fetch_headers(self) -> None:
        uid, which = self.some_messages(20)
        await self.connection.command(
            "fetch_headers", f"{uid}FETCH {which} (UID RFC822.SIZE FLAGS {HEADERS})")

    async def fetch_body(self) -> None:
        uid, which = self.some_messages(1)
        items = "UID BODY.PEEK[]" if self.rng.random() < 0.8 else "UID BODYSTRUCTURE ENVELOPE"
        await self.connection.command("fetch_body", f"{uid}FETCH {which} ({items})")

    async def store(self) -> None:
        uid, which = self.some_messages(5)
        sign = self.rng.choice("+-")
        silent = ".SILENT" if self.rng.random() < 0.3 else ""
        if self.rng.random() < 0.6:
            flags = self.rng.choice(SYSTEM_FLAGS)
        else:
            flags = " ".join(self.rng.sample(KEYWORDS, self.rng.randint(1, 2)))
        kind = "uid_store" if uid else "store"
        await self.connection.command(kind, f"{uid}STORE {which} {sign}FLAGS{silent} ({flags})")

    async def store_deleted(self) -> None:
        uid, which = self.some_messages(1)
        await self.connection.command("store_deleted",
                                      f"{uid}STORE {which} +FLAGS.SILENT (\\Deleted)")

    async def expunge(self) -> None:
        conn = self.connection
        if "UIDPLUS" in conn.capabilities and self.rng.random() < 0.6:
            found = await conn.command("uid_search_deleted", "UID SEARCH DELETED")
            uids = [int(str(v)) for r in found.untagged if r.kind == "SEARCH" for v in r.values]
            if uids:
                picked = self.rng.sample(uids, min(len(uids), 10))
                await conn.command("uid_expunge", f"UID EXPUNGE {uid_set(picked)}")
            return
        await conn.command("expunge", "EXPUNGE")

    async def append(self) -> None:
        flags = self.rng.choice(["", "", "(\\Seen) ", "($Label1) "])
        message = self.rng.choice(self.shared.pool)
        await self.connection.command("append", f"APPEND INBOX {flags}".rstrip(), literal=message)

    async def search(self) -> None:
        key = self.rng.choice(SEARCHES).format(k=self.rng.randrange(97),
                                               word=self.rng.choice(WORDS))
        if self.rng.random() < 0.5:
            await self.connection.command("uid_search", f"UID SEARCH {key}")
        else:
            await self.connection.command("search", f"SEARCH {key}")

    async def idle(self) -> None:
        if "IDLE" not in self.connection.capabilities:
            await self.noop()
            return
        await self.connection.idle(self.rng.uniform(0.05, self.opts.idle_max))
        if self.rng.random() < 0.3:
            await self.verify()

    async def noop(self) -> None:
        await self.connection.command("noop", "NOOP")
        if self.rng.random() < 0.3:
            await self.verify()

    async def list(self) -> None:
        await self.connection.command("list", 'LIST "" "*"')

    async def status(self) -> None:
        other = ARCHIVE if self.state.mailbox == "INBOX" else "INBOX"
        await self.connection.command("status", f"STATUS {other} (MESSAGES UNSEEN UIDNEXT RECENT)")

    async def copy(self) -> None:
        uid, which = self.some_messages(2)
        await self.connection.command("copy", f"{uid}COPY {which} {ARCHIVE}")

    async def move(self) -> None:
        uid, which = self.some_messages(1)
        await self.connection.command("move", f"{uid}MOVE {which} {ARCHIVE}")

    async def switch(self) -> None:
        where = self.rng.random()
        if where < 0.4:
            await self.select("INBOX", examine=True)
        elif where < 0.8:
            await self.select(ARCHIVE)
        else:
            await self.select("INBOX")
