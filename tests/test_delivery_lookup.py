"""The recipient lookup of SMTP/LMTP RCPT (smtp/addresses.py over the store's user and
alias reads): read on the loop thread, with no reader-thread hop, and fresh each time, so
`user del` and alias changes count at the very next RCPT."""

from __future__ import annotations

from mailstead.smtp.addresses import AddressBook, Unknown
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.base import INLINE_ROWS
from test_store_reads_inline import PoolCount


def book(store: SqliteStore) -> AddressBook:
    return AddressBook(store, hostname="mx.example.org", domains=["example.org"])


async def test_rcpt_lookups_run_on_the_loop_and_see_changes_at_once(
        store: SqliteStore) -> None:
    bob = await store.create_user("bob", "$argon2id$fake")
    carol = await store.create_user("carol", "$argon2id$fake")
    addresses = book(store)
    pool = PoolCount(store)

    assert await addresses.users_for("bob+tag@example.org") == [bob]
    assert await addresses.users_for("team@example.org") is Unknown.NO_SUCH_USER
    assert pool.count == 0  # a user, an alias and a catch-all lookup: no thread hop

    await store.add_alias("team@example.org", [bob.id, carol.id])
    assert await addresses.users_for("team@example.org") == [bob, carol]
    await store.delete_user("carol")
    assert await addresses.users_for("team@example.org") == [bob]
    assert await addresses.users_for("carol@example.org") is Unknown.NO_SUCH_USER
    await store.delete_alias("team@example.org")
    assert await addresses.users_for("team@example.org") is Unknown.NO_SUCH_USER
    await store.delete_user("bob")
    assert await addresses.users_for("bob@example.org") is Unknown.NO_SUCH_USER
    assert pool.count == 0


async def test_an_alias_of_very_many_users_is_read_on_a_thread(store: SqliteStore) -> None:
    users = [await store.create_user(f"u{i}", "$argon2id$fake") for i in range(INLINE_ROWS + 1)]
    await store.add_alias("all@example.org", [u.id for u in users])
    pool = PoolCount(store)
    assert await book(store).users_for("all@example.org") == users
    assert pool.count == 1
