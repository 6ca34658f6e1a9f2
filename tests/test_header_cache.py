"""The per-process copy of decoded header texts that SEARCH reads (store/header_cache.py)."""

from __future__ import annotations

from mailstead.mime.header_text import ADDRESS_FIELDS, HeaderText
from mailstead.store.api import NewMessage
from mailstead.store.header_cache import HeaderTextCache
from mailstead.store.sqlite import SqliteStore


def test_the_cache_keeps_at_most_its_entries_least_recently_searched_out_first() -> None:
    cache = HeaderTextCache(entries=3)
    texts = {uid: HeaderText((), ((),) * len(ADDRESS_FIELDS), f"Subject: {uid}")
             for uid in range(1, 5)}
    cache.keep(7, {1: texts[1], 2: texts[2], 3: texts[3]})
    assert cache.take(7, [1])[0] == {1: texts[1]}  # 1 searched again: 2 is now the oldest
    cache.keep(7, {4: texts[4]})
    found, missing = cache.take(7, [1, 2, 3, 4])
    assert sorted(found) == [1, 3, 4] and missing == [2]
    assert cache.take(8, [1]) == ({}, [1])  # another mailbox's UID 1 is another message
    assert len(cache) == 3


async def test_a_search_read_is_the_same_from_the_copy_and_only_misses_go_to_the_database(
    store: SqliteStore,
) -> None:
    user = await store.create_user("bob", "x")
    inbox = await store.get_mailbox(user.id, "INBOX")
    assert inbox is not None
    uids = await store.append(inbox.id, [NewMessage(b"Subject: s%d\r\nFrom: a@b.c\r\n\r\nx\r\n"
                                                    % i) for i in range(5)])
    first = await store.read_header_texts(inbox.id, uids)
    assert [first[u].values("subject") for u in uids] == [[f"s{i}"] for i in range(5)]
    assert len(store.header_texts) == 5
    assert await store.read_header_texts(inbox.id, uids) == first
    # An expunged message is still found in the copy: its UID is never reused, so what is
    # kept can never be another message's header.
    await store.expunge(inbox.id, uids[:1])
    again = await store.read_header_texts(inbox.id, uids)
    assert again == first
