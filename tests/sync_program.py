"""Random programs for the model-based sync test: what to do, not yet how.

A program is a seed's list of abstract steps (``kind``, which session or user, a 32-bit
number from which the executor draws its concrete choices, and whether to wait for the
reply before the next step). The executor (``sync_run.Run``) turns each step into a
command that fits the session's state at that moment, or skips it; so any sub-list of a
program is still a program, which is what shrinking needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

# kind → weight. IMAP kinds address a session; "deliver" and "pop3" a user.
IMAP_KINDS: dict[str, int] = {
    "noop": 8, "fetch": 9, "store": 12, "expunge": 4, "uid_expunge": 3, "copy": 3,
    "move": 5, "append": 7, "search": 5, "status": 3, "select": 7, "unselect": 2,
    "idle": 5, "done": 4, "enable": 1, "relogin": 1, "collect": 5,
}
WORLD_KINDS: dict[str, int] = {"deliver": 7, "pop3": 5, "barrier": 2, "settle": 3}
_KINDS = list(IMAP_KINDS) + list(WORLD_KINDS)
_WEIGHTS = list(IMAP_KINDS.values()) + list(WORLD_KINDS.values())


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    who: int
    r: int
    wait: bool

    def __str__(self) -> str:
        return f"{self.kind}({self.who}, r={self.r}{', wait' if self.wait else ''})"


@dataclass(frozen=True, slots=True)
class Program:
    seed: int
    sessions: int
    users: int
    steps: tuple[Step, ...]

    def with_steps(self, steps: list[Step] | tuple[Step, ...]) -> Program:
        return replace(self, steps=tuple(steps))

    def describe(self) -> str:
        return (f"seed={self.seed} sessions={self.sessions} users={self.users} "
                f"steps={len(self.steps)}")


def make_program(seed: int, steps: int) -> Program:
    """The program of ``seed``: 2-8 sessions on one or two users, ``steps`` steps."""
    rng = random.Random(seed)
    sessions = rng.randint(2, 8)
    users = 1 if rng.random() < 0.6 else 2
    wait_bias = rng.choice((0.3, 0.5, 0.8))  # some programs overlap much more than others
    out = []
    for _ in range(steps):
        kind = rng.choices(_KINDS, _WEIGHTS)[0]
        who = rng.randrange(sessions) if kind in IMAP_KINDS else rng.randrange(users)
        out.append(Step(kind, who, rng.getrandbits(32), rng.random() < wait_bias))
    return Program(seed, sessions, users, tuple(out))
