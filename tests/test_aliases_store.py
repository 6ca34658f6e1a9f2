"""Aliases in the store: the schema step, the API, and what a user's deletion does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailstead.store.api import Alias, NotFound
from mailstead.store.hub import ChangeHub
from mailstead.store.sqlite import SqliteStore
from mailstead.store.sqlite.schema import SCHEMA_VERSION
from mailstead.usernames import UserNameError, parse_alias_address


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path, ChangeHub(), fsync=False)
    await store.open()
    return store


async def test_aliases_add_list_resolve_delete_and_follow_user_deletion(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "db.sqlite3")
    try:
        bob = await store.create_user("bob", "h")
        carol = await store.create_user("carol", "h")
        assert await store.add_alias("team@example.org", [bob.id]) == Alias(
            "team@example.org", ("bob",))
        # Adding to an alias adds users; adding one twice changes nothing.
        assert await store.add_alias("team@example.org", [carol.id, bob.id]) == Alias(
            "team@example.org", ("bob", "carol"))
        await store.add_alias("@example.org", [carol.id])
        assert [u.name for u in await store.alias_users("team@example.org")] == ["bob", "carol"]
        assert await store.alias_users("other@example.org") == []  # no catch-all lookup here
        with pytest.raises(NotFound):
            await store.add_alias("x@example.org", [999])
        assert await store.alias_users("x@example.org") == []  # nothing half-written
        assert await store.delete_user("carol")
        assert await store.list_aliases() == [Alias("team@example.org", ("bob",))]
        assert await store.delete_alias("team@example.org")
        assert not await store.delete_alias("team@example.org")
        assert await store.list_aliases() == []
    finally:
        await store.close()


async def test_a_version_2_database_gets_the_aliases_table(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await open_store(path)
    await store.create_user("bob", "h")
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE aliases")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    store = await open_store(path)
    try:
        bob = await store.get_user("bob")
        assert bob is not None
        await store.add_alias("b@example.org", [bob.id])
        assert [u.name for u in await store.alias_users("b@example.org")] == ["bob"]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("Sales@Example.ORG", "sales@example.org"), ("@example.org", "@example.org"),
    (" a.b_c-d@example.org ", "a.b_c-d@example.org"),
])
def test_alias_addresses_follow_the_user_name_rule(text: str, expected: str) -> None:
    assert parse_alias_address(text, ("example.org",)) == expected


@pytest.mark.parametrize("text", [
    "", "@", "sales", "sales@", "sales@other.org", "a+b@example.org", ".a@example.org",
    "a b@example.org", "a/b@example.org", "x" * 65 + "@example.org", "a\n@example.org",
])
def test_bad_alias_addresses_are_refused(text: str) -> None:
    with pytest.raises(UserNameError):
        parse_alias_address(text, ("example.org",))
