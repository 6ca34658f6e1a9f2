"""STORE / UID STORE, with CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

from __future__ import annotations

from ...store.api import FlagMode
from ..response import Result, ok
from ..session_api import Session
from ..syntax.store import Store
from .common import refuse_nil_keyword, require_writable, resolve, uid_set, view_of

_MODES = {"": FlagMode.REPLACE, "+": FlagMode.ADD, "-": FlagMode.REMOVE}


def _apply(mode: FlagMode, old: frozenset[str], given: frozenset[str]) -> frozenset[str]:
    """What a client expects after STORE: the store computes the same from its flags."""
    if mode is FlagMode.ADD:
        return old | given
    if mode is FlagMode.REMOVE:
        return old - given
    return given


async def handle_store(s: Session, cmd: Store) -> Result:
    view = view_of(s)
    require_writable(view)
    refuse_nil_keyword(cmd.flags)
    uids = [u for u in resolve(view, cmd.seqset, cmd.uid) if view.is_live(u)]
    if cmd.unchangedsince is not None:
        s.condstore = view.condstore = True
    if not uids:
        return ok("STORE completed")
    res = await s.ctx.store.store_flags(
        view.mailbox.id, uids, _MODES[cmd.mode], cmd.flags,
        unchanged_since=cmd.unchangedsince,
    )
    # A keyword new to the session is announced (FLAGS, PERMANENTFLAGS) before any FETCH
    # shows it, .SILENT or not: the client may fetch it next.
    mode, given = _MODES[cmd.mode], frozenset(cmd.flags)
    told = (lambda old: _apply(mode, old, given)) if cmd.silent else None
    if told is not None:  # the client applies it at the tagged OK, but not where MODIFIED
        view.hold_flags(set(uids) - set(res.failed_uids), told)
    for line in view.apply_own_changes(res.changed, told):
        s.send(line)
    reported = sorted(
        {ch.uid for ch in res.changed}
        | ({ch.uid for ch in res.unchanged} if not cmd.silent else set())
    )
    for uid in reported:
        if not view.is_live(uid):
            continue
        if cmd.silent and not view.condstore:
            continue
        items = []
        if cmd.uid:
            items.append(b"UID %d" % uid)
        if not cmd.silent:
            items.append(b"FLAGS " + view.format_flags(uid))
        if view.condstore:
            items.append(b"MODSEQ (%d)" % view.modseqs.get(uid, 0))
        s.send(view.fetch_line(uid, items))
    verb = f"{'UID ' if cmd.uid else ''}STORE"
    if res.failed_uids:
        failed = res.failed_uids if cmd.uid else [view.msn(u) or 0 for u in res.failed_uids]
        return ok(f"Conditional {verb} failed", f"MODIFIED {uid_set(failed).decode()}")
    return ok(f"{verb} completed")
