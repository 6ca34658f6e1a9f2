"""FETCH / UID FETCH: which messages, the implicit \\Seen, CHANGEDSINCE (RFC 7162).

Parsed in ``syntax/fetch.py``; each message's response line is built by
``handlers/fetch_items.py`` from the store's data.
"""

from __future__ import annotations

from ...store.api import FlagMode
from ..response import Result, bad, no, ok
from ..session_api import Session
from ..syntax.fetch import Fetch, FetchAttribute
from .common import resolve, view_of
from .fetch_items import fetch_responses


async def handle_fetch(s: Session, cmd: Fetch) -> Result:
    if cmd.vanished:
        # QRESYNC is neither advertised nor enabled, and RFC 7162 §3.2.6 allows VANISHED
        # only once it is; answering as if it were absent would hide the expunges the
        # client asked to hear about.
        return bad("VANISHED needs QRESYNC, which is not enabled")
    view = view_of(s)
    uids = resolve(view, cmd.seqset, cmd.uid)
    live = [u for u in uids if view.is_live(u)]
    missing = len(live) < len(uids)
    attrs = list(cmd.attributes)
    if cmd.changedsince is not None:
        s.condstore = view.condstore = True
        live = [u for u in live if view.modseqs.get(u, 0) > cmd.changedsince]
    if (cmd.changedsince is not None or any(a.name == "MODSEQ" for a in attrs)) and not any(
        a.name == "MODSEQ" for a in attrs
    ):
        attrs.append(FetchAttribute("MODSEQ"))
    if any(a.name == "MODSEQ" for a in attrs):
        s.condstore = view.condstore = True
    flags_for: set[int] = set()
    if not view.readonly and any(a.sets_seen for a in attrs):
        unseen = [u for u in live if "\\Seen" not in view.flags[u]]
        if unseen:
            res = await s.ctx.store.store_flags(
                view.mailbox.id, unseen, FlagMode.ADD, ["\\Seen"]
            )
            for announce in view.apply_own_changes(res.changed):  # \Seen: none, in fact
                s.send(announce)
            flags_for = {ch.uid for ch in res.changed}
    sent = 0
    async for _uid, line in fetch_responses(
        s.ctx.store, view, live, attrs, with_uid=cmd.uid, flags_for=flags_for
    ):
        if line is None:
            missing = True
            continue
        s.send(line)
        sent += 1
        if sent % 64 == 0:
            await s.out.drain()
            if s.out.closed:
                return ok()
    if missing and not cmd.uid:
        return no("Some of the requested messages were expunged", "EXPUNGEISSUED")
    return ok(f"{'UID ' if cmd.uid else ''}FETCH completed")


