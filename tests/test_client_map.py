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
    assert list(cmap.uids) == sorted(flags)
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


def test_bulk_load_equals_appends_and_columns_widen_when_values_outgrow_them() -> None:
    many = [frozenset({f"$k{i}"}) for i in range(300)]  # past the 1-octet flag index
    uids = list(range(1, 601, 2))
    flags = [many[i % 300] for i in range(300)]
    modseqs = [10 + i for i in range(300)]
    loaded, appended = ClientMap(), ClientMap()
    loaded.load(uids, flags, modseqs)
    for entry in zip(uids, flags, modseqs, strict=True):
        appended.append(*entry)
    for cmap in (loaded, appended):
        assert list(cmap.entries()) == [(u, n, f, m) for n, (u, f, m)
                                        in enumerate(zip(uids, flags, modseqs, strict=True), 1)]
    big = 1 << 40  # a modseq beyond 32 bits
    loaded.modseqs[3] = big
    appended.append(1001, FLAGS[0], big + 1)
    assert loaded.modseqs[3] == big and appended.modseqs[1001] == big + 1
    assert loaded.modseqs[1] == 10 and appended.modseqs[599] == 309
    wide = ClientMap()
    wide.load([1, 2], [FLAGS[0], FLAGS[1]], [5, big])
    assert dict(wide.modseqs) == {1: 5, 2: big}
    assert loaded.first_without("$k7") == 1 and loaded.first_without("$k0") == 2


def test_first_without_skips_flag_sets_no_message_holds_any_more() -> None:
    cmap = ClientMap()
    cmap.load([1, 2, 3], [FLAGS[0], FLAGS[1], FLAGS[1]], [1, 2, 3])
    cmap.flags[1] = FLAGS[2]
    assert cmap.first_without("\\Seen") is None
    cmap.flags[3] = FLAGS[0]
    assert cmap.first_without("\\Seen") == 3


async def test_a_search_on_flags_alone_asks_each_flag_set_once_and_finds_what_a_scan_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """UID SEARCH UNSEEN and the like (imap/handlers/search_eval.py) on the view's flag
    index: the same UIDs as matching message by message, one match per distinct set."""
    from datetime import UTC, datetime

    from mailstead.imap.handlers import search_eval
    from mailstead.imap.selected import SelectedMailbox
    from mailstead.imap.syntax.search import AllKey, AndKey, FlagKey, NotKey, OrKey
    from mailstead.store.api import Mailbox, MessageInfo
    from mailstead.store.view_api import ViewSnapshot

    rng = random.Random(11)
    sets = [*FLAGS, frozenset({"\\Flagged"}), frozenset({"\\Seen", "\\Flagged", "$x"})]
    when = datetime(2024, 1, 1, tzinfo=UTC)
    box = Mailbox(1, 1, "INBOX", 7, 2001, 3000, None)
    infos = [MessageInfo(u, u, rng.choice(sets), when, 10) for u in range(1, 2001)]
    view = SelectedMailbox(None, box, readonly=True)  # type: ignore[arg-type]
    view.load(ViewSnapshot(box, infos, 2001))
    view.delta.expunged = {5, 17, 1999}  # gone behind the client's back: never found

    calls = [0]
    real = search_eval.matches

    def counted(*args: object) -> bool:
        calls[0] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(search_eval, "matches", counted)
    keys = [FlagKey("\\Seen", False), FlagKey("$x"), AllKey(), NotKey(FlagKey("\\Flagged")),
            OrKey(FlagKey("\\Flagged"), AndKey((FlagKey("\\Seen"), FlagKey("$Label"))))]
    for key in keys:
        calls[0] = 0
        found = await search_eval.search(None, view, key, run=None)  # type: ignore[arg-type]
        assert calls[0] <= 2 * len(sets) * 3  # per distinct set (and key node), not message
        scan = [u for u, f in ((i.uid, i.flags) for i in infos) if u not in view.delta.expunged
                and real(key, search_eval._Message(u, 0, f, False, 0), 0, 0)]
        assert found == scan and found, key
