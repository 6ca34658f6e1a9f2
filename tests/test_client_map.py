"""The view's client map columns (imap/client_map.py) behave as the two dicts keyed by UID
they replace, through random appends, deletions and updates."""

from __future__ import annotations

import random

import pytest

from mailstead.imap.client_map import ClientMap

FLAGS = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "$Label"})]


def test_columns_follow_a_dict_model_through_random_changes() -> None:
    rng = random.Random(7)
    cmap = ClientMap()
    flags: dict[int, frozenset[str]] = {}
    modseqs: dict[int, int] = {}
    top = 0
    for step in range(3000):
        op = rng.random()
        if op < 0.4 or not flags:
            top += rng.randint(1, 3)
            f, m = rng.choice(FLAGS), step + 10
            cmap.append(top, f, m)
            flags[top], modseqs[top] = f, m
        elif op < 0.6:
            uid = rng.choice(list(flags))
            cmap.delete_at(cmap.uids.index(uid))
            del flags[uid], modseqs[uid]
        else:
            uid = rng.choice(list(flags))
            f, m = rng.choice(FLAGS), step + 10**6
            cmap.flags[uid], cmap.modseqs[uid] = f, m
            flags[uid], modseqs[uid] = f, m
        probe = rng.randint(0, top + 2)
        assert (probe in cmap.flags) == (probe in flags)
        assert cmap.flags.get(probe, None) == flags.get(probe)
        assert cmap.modseqs.get(probe, 0) == modseqs.get(probe, 0)
    assert cmap.uids == sorted(flags)
    assert dict(cmap.flags) == flags and dict(cmap.modseqs) == modseqs
    assert len(cmap.flags) == len(flags)


def test_a_uid_outside_the_map_is_not_there() -> None:
    cmap = ClientMap()
    cmap.append(5, FLAGS[1], 3)
    assert "5" not in cmap.flags and 4 not in cmap.modseqs
    with pytest.raises(KeyError):
        cmap.flags[6] = FLAGS[0]
    with pytest.raises(KeyError):
        cmap.modseqs[4]
    assert cmap.first_without("\\Seen") is None
    cmap.append(9, FLAGS[0], 4)
    assert cmap.first_without("\\Seen") == 2
