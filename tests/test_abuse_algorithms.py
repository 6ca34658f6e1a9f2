"""The algorithms behind issue 12's fixes, in process: work is counted, never timed.

* LIST/LSUB wildcards (``imap/wildcard.py``): the same answers as the regex they replace
  (hypothesis, small alphabets), one step per character of the name whatever the pattern,
  limits that refuse clearly.
* Sequence sets (``imap/syntax/sequence.py``): membership agrees with the expanded set, and
  a set is normalised once: comparisons grow as (ranges + queries) * log(ranges), not as
  their product.
* The per-user bound on expensive commands (``imap/expensive.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.imap.expensive import ExpensiveWork
from mailstead.imap.syntax.sequence import SequenceSet
from mailstead.imap.wildcard import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    MAX_WILDCARDS,
    PatternTooComplex,
    compile_pattern,
    compile_patterns,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- wildcards ------------------------------------------------------------------------------
def regex_reference(pattern: str) -> re.Pattern[str]:
    """The LIST matcher the server used before (backtracking: exponential on some inputs,
    so only ever run here on short ones)."""
    if pattern[:5].upper() == "INBOX" and (len(pattern) == 5 or pattern[5] in "/*%"):
        pattern = "INBOX" + pattern[5:]
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


patterns = st.one_of(
    st.text(alphabet="ab/*%", max_size=10),
    st.builds(lambda head, rest: head + rest,
              st.sampled_from(["INBOX", "inbox", "Inbox", "INBOXa"]),
              st.text(alphabet="ab/*%", max_size=6)),
)
names = st.one_of(
    st.text(alphabet="ab/", max_size=12),
    st.builds(lambda rest: "INBOX" + rest, st.text(alphabet="ab/", max_size=6)),
)


@FUZZ
@given(patterns, names)
def test_wildcards_agree_with_the_regex(pattern: str, name: str) -> None:
    assert compile_pattern(pattern).match(name) == bool(regex_reference(pattern).match(name))


@FUZZ
@given(st.lists(patterns, min_size=1, max_size=4), names, st.sampled_from(["", "a/", "INBOX/"]))
def test_a_union_of_patterns_matches_what_any_of_them_does(
    pats: list[str], name: str, reference: str
) -> None:
    union = compile_patterns(reference, pats)
    assert union.match(name) == any(
        regex_reference(reference + p).match(name) for p in pats
    )


@FUZZ
@given(patterns, st.text(alphabet="ab/", max_size=40))
def test_a_match_takes_at_most_one_step_per_character(pattern: str, name: str) -> None:
    _, steps = compile_pattern(pattern).match_steps(name)
    assert steps <= len(name)


@pytest.mark.parametrize("pattern, name", [
    # Issue 12: froze the server 7.9 s with the default folders only.
    ("%" * 40 + "Q", "Sent Messages"),
    ("%" * 40 + "Q", "a" * 500),
    # 11.3 s against an 80-character name; and as many wildcards as allowed.
    ("*a*a*a*a*a*a*b", "a" * 80),
    ("*a" * (MAX_WILDCARDS // 2) + "*b", "a" * 500),
    ("%a" * (MAX_WILDCARDS // 2) + "%b", "a" * 500),
])
def test_adversarial_patterns_cost_one_step_per_character(pattern: str, name: str) -> None:
    matched, steps = compile_pattern(pattern).match_steps(name)
    assert not matched
    assert steps <= len(name)


def test_steps_do_not_grow_with_the_number_of_wildcards() -> None:
    name = "a" * 300
    counts = [compile_pattern("*a" * k + "*b").match_steps(name)[1] for k in range(1, 33)]
    assert counts == [len(name)] * len(counts)


def test_a_dead_pattern_stops_early() -> None:
    assert compile_pattern("abc*").match_steps("x" * 1000) == (False, 1)


@pytest.mark.parametrize("pats, message", [
    (["%" * (MAX_WILDCARDS + 1)], "wildcards"),
    (["a" * (MAX_PATTERN_LENGTH + 1)], "longer than"),
    (["a"] * (MAX_PATTERNS + 1), "at most"),
    (["a" * 1000] * 3, "in all"),
])
def test_limits_refuse_with_a_message(pats: list[str], message: str) -> None:
    with pytest.raises(PatternTooComplex, match=message):
        compile_patterns("", pats)


def test_the_delimiter_bounds_percent_only() -> None:
    assert compile_pattern("a/%").match("a/b") and not compile_pattern("a/%").match("a/b/c")
    assert compile_pattern("a/*").match("a/b/c")
    assert compile_pattern("inbox").match("INBOX") and not compile_pattern("inbox/x").match(
        "inbox/x")  # only the INBOX level is case-insensitive; "inbox/x" names INBOX/x
    assert compile_pattern("inbox/x").match("INBOX/x")


# --- sequence sets ----------------------------------------------------------------------------
values = st.one_of(st.none(), st.integers(1, 40))
seqsets = st.lists(st.tuples(values, values), min_size=1, max_size=12).map(
    lambda ranges: SequenceSet(tuple(ranges))
)


def naive_members(seqset: SequenceSet, top: int) -> set[int]:
    """Every number the set names, by expanding it (``*`` is ``top``; RFC 3501 makes
    ``559:*`` the last message when 559 is larger, which the clipping gives)."""
    out: set[int] = set()
    for start, end in seqset.ranges:
        a = top if start is None else start
        b = top if end is None else end
        out |= {n for n in range(min(a, b), max(a, b) + 1) if 1 <= n <= top}
    return out


@FUZZ
@given(seqsets, st.integers(0, 45))
def test_membership_agrees_with_the_expanded_set(seqset: SequenceSet, top: int) -> None:
    members = naive_members(seqset, top)
    assert {n for n in range(0, top + 3) if seqset.contains(n, top)} == members
    spans = seqset.intervals(top)
    assert sorted(spans) == spans
    assert all(low <= high for low, high in spans)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(spans))
    assert {n for low, high in spans for n in range(low, high + 1)} == members


@FUZZ
@given(seqsets, st.integers(1, 45), st.integers(1, 45))
def test_a_new_max_value_is_not_answered_from_the_old_one(
    seqset: SequenceSet, first: int, second: int
) -> None:
    seqset.contains(1, first)
    assert {n for n in range(1, second + 2) if seqset.contains(n, second)} == naive_members(
        seqset, second)


class CountingInt(int):
    """An int that counts every comparison it takes part in."""

    compared = 0

    def _count(self, other: object, op: str) -> bool:
        CountingInt.compared += 1
        return getattr(int(self), op)(other)

    def __lt__(self, other: object) -> bool:
        return self._count(other, "__lt__")

    def __le__(self, other: object) -> bool:
        return self._count(other, "__le__")

    def __gt__(self, other: object) -> bool:
        return self._count(other, "__gt__")

    def __ge__(self, other: object) -> bool:
        return self._count(other, "__ge__")

    def __eq__(self, other: object) -> bool:
        return self._count(other, "__eq__")

    def __hash__(self) -> int:
        return int.__hash__(self)


def test_membership_is_a_binary_search_in_a_set_normalised_once() -> None:
    # Issue 12: UID SEARCH UID 1,3,5,...,21999 on 2,000 messages froze the server 24 s:
    # the set was sorted and merged again for every message.
    ranges = 600
    seqset = SequenceSet(tuple((CountingInt(n), CountingInt(n)) for n in range(1, 2 * ranges, 2)))
    queries = [CountingInt(n) for n in range(1, 2 * ranges + 1)]
    CountingInt.compared = 0
    found = [q for q in queries if seqset.contains(q, 2 * ranges)]
    assert found == list(range(1, 2 * ranges, 2))
    log = math.log2(ranges) + 2
    budget = 8 * ranges * log + 4 * len(queries) * log
    assert CountingInt.compared <= budget, (CountingInt.compared, budget)


def test_uid_matching_compares_per_range_not_per_uid() -> None:
    seqset = SequenceSet.parse(",".join(str(n) for n in range(1, 4000, 2)))
    uids = list(range(1, 4001))
    assert seqset.matching_sorted(uids) == list(range(1, 4000, 2))


# --- the per-user bound on expensive commands ------------------------------------------------
async def test_one_user_holds_at_most_its_slots_and_others_are_not_held() -> None:
    work = ExpensiveWork(per_user=2, threads=2)
    started: list[str] = []
    release = asyncio.Event()

    async def job(user: int, name: str) -> None:
        async with work.slot(user):
            started.append(name)
            await release.wait()

    tasks = [asyncio.create_task(job(1, f"a{i}")) for i in range(4)]
    tasks.append(asyncio.create_task(job(2, "b0")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(started) == ["a0", "a1", "b0"]
    assert work.busy(1) == 2 and work.busy(2) == 1
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(started) == ["a0", "a1", "a2", "a3", "b0"]
    assert work.busy(1) == 0 and not work._slots  # nothing kept for idle users
    assert await work.run(sum, [1, 2, 3]) == 6
    work.close()


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        ExpensiveWork(per_user=0)
