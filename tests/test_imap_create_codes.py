"""CREATE's response codes come from the store's exception type, never from its wording."""

from __future__ import annotations

from imap_harness import ImapWorld


async def test_a_special_use_already_given_is_refused_with_useattr(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    reply = await c.cmd("CREATE Bin (USE (\\Trash))")  # the new user's Trash has \Trash
    assert reply.status == b"NO" and reply.text.startswith(b"[USEATTR] "), reply
    assert b"Bin" not in b"".join((await c.cmd('LIST "" "*"')).untagged)


async def test_a_taken_name_is_alreadyexists_even_with_a_special_use(world: ImapWorld) -> None:
    user = await world.add_user()
    c = await world.login(user)
    # The store's message for a taken name "with" contains the word "with", which once made
    # the handler answer USEATTR; the name is what failed here, not the attribute.
    assert (await c.cmd("CREATE with")).ok
    reply = await c.cmd("CREATE with (USE (\\Flagged))")
    assert reply.status == b"NO" and reply.text.startswith(b"[ALREADYEXISTS] "), reply
    reply = await c.cmd("CREATE Sent")
    assert reply.status == b"NO" and reply.text.startswith(b"[ALREADYEXISTS] "), reply
