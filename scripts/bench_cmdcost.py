"""Process CPU per IMAP command, in process (the harness of tests/imap_harness.py: memory
transport, real SQLite store), for A/B comparisons of per-command cost on a loaded machine.

The client runs in the same process, so the figures include its parsing; they compare two
trees, they are not a server's cost. Run from a checkout::

    PYTHONPATH=tests:server:scripts .venv/bin/python scripts/bench_cmdcost.py

Prints one JSON object: microseconds of process CPU (all threads) per command.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import realistic_message

import imap_harness

HEADERS = "BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID References)]"
MESSAGES = 300


def _headers20(r: random.Random) -> str:
    first = r.randint(1, MESSAGES - 20)
    return f"UID FETCH {first}:{first + 19} (UID RFC822.SIZE FLAGS {HEADERS})"


CASES: list[tuple[str, Callable[[random.Random], str], int]] = [
    ("fetch_headers20", _headers20, 300),
    ("fetch_body1", lambda r: f"UID FETCH {r.randint(1, MESSAGES)} (UID BODY.PEEK[])", 600),
    ("fetch_struct1",
     lambda r: f"UID FETCH {r.randint(1, MESSAGES)} (UID BODYSTRUCTURE ENVELOPE)", 600),
    ("fetch_flags_all", lambda r: "FETCH 1:* (UID FLAGS)", 200),
    ("fetch_new_hdr",
     lambda r: f"FETCH {r.randint(280, MESSAGES)}:* (UID FLAGS RFC822.SIZE {HEADERS})", 400),
    ("search_unseen", lambda r: "UID SEARCH UNSEEN", 400),
    ("search_from", lambda r: f'SEARCH FROM "sender{r.randrange(97)}"', 200),
    ("search_since", lambda r: "SEARCH SINCE 1-Jan-2024", 300),
    ("store5", lambda r: f"UID STORE {r.randint(1, 295)}:* {'+-'[r.randrange(2)]}FLAGS (\\Flagged)",
     400),
    ("status", lambda r: "STATUS Archive (MESSAGES UNSEEN UIDNEXT RECENT)", 600),
    ("select", lambda r: "SELECT INBOX", 200),
    ("noop", lambda r: "NOOP", 1000),
]


async def main() -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        world = await imap_harness.open_world(Path(tmp))
        user = await world.add_user("b")
        await world.seed(user, [realistic_message(i, rng) for i in range(MESSAGES)])
        client = await world.connect()
        await client.login(user)
        await client.cmd("CREATE Archive")
        await client.select()
        await client.cmd("STORE 1:150 +FLAGS (\\Seen)")
        out = {}
        for name, make, n in CASES:
            r = random.Random(2)
            for _ in range(20):  # warm caches
                await client.cmd(make(r))
            started = time.process_time()
            for _ in range(n):
                reply = await client.cmd(make(r))
                assert reply.ok, (name, reply)
            out[name] = round((time.process_time() - started) / n * 1e6)
        print(json.dumps(out))
        await world.close()
        await world.store.close()


if __name__ == "__main__":
    asyncio.run(main())
