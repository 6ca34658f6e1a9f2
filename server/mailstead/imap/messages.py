"""Message commands: APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY, MOVE."""

from __future__ import annotations

from collections.abc import Iterable

from ..mime.parse import normalise_crlf
from ..store.api import FlagMode, FlagsChanged, NewMessage
from . import commands as c
from .fetch import fetch_responses
from .mailboxes import get_mailbox
from .search import search
from .selected import SelectedMailbox
from .session import (
    AUTH_STATES,
    SELECTED_STATES,
    CommandFailed,
    IMAPSession,
    Result,
    bad,
    no,
    ok,
    register,
)

_MODES = {"": FlagMode.REPLACE, "+": FlagMode.ADD, "-": FlagMode.REMOVE}


def view_of(s: IMAPSession) -> SelectedMailbox:
    assert s.selected is not None
    return s.selected


def resolve(view: SelectedMailbox, seqset: c.SequenceSet, uid: bool) -> list[int]:
    """The UIDs a command's sequence set names, in ascending order."""
    if uid:
        return seqset.matching_sorted(view.uids)
    if not view.uids:
        raise CommandFailed(bad("No messages in the mailbox"))
    for start, end in seqset.ranges:
        for n in (start, end):
            if n is not None and n > view.exists:
                raise CommandFailed(bad(f"Invalid message sequence number: {n}"))
    return [view.uids[n - 1] for n in seqset.resolve(view.exists)]


def uid_set(uids: Iterable[int]) -> bytes:
    return c.SequenceSet.of(uids).format()


def _apply(view: SelectedMailbox, changes: Iterable[FlagsChanged]) -> None:
    """Our own flag change is already known: the hub's copy of it is then skipped."""
    for ch in changes:
        if ch.uid in view.flags and ch.modseq >= view.modseqs.get(ch.uid, 0):
            view.flags[ch.uid] = ch.flags
            view.modseqs[ch.uid] = ch.modseq


def _require_writable(view: SelectedMailbox) -> None:
    if view.readonly:
        raise CommandFailed(no("Mailbox is read-only", "CANNOT"))


# --- APPEND ------------------------------------------------------------------------------
@register(c.Append, AUTH_STATES)
async def h_append(s: IMAPSession, cmd: c.Append) -> Result:
    mbox = await get_mailbox(s, cmd.mailbox)
    if mbox is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "TRYCREATE")
    limit = s.ctx.config["limits"]["max_message_size"]
    messages = []
    for m in cmd.messages:
        if len(m.data) > limit:
            return no(f"Message is larger than {limit} octets", "TOOBIG")
        if any(f == "\\Recent" for f in m.flags):
            return bad("\\Recent cannot be set")
        messages.append(NewMessage(normalise_crlf(m.data), frozenset(m.flags), m.internaldate))
    uids = await s.ctx.store.append(mbox.id, messages, origin=s)
    s.ctx.count("imap_appends", len(uids))
    code = f"APPENDUID {mbox.uidvalidity} {uid_set(uids).decode()}"
    return ok("APPEND completed", code)


# --- mailbox-level -----------------------------------------------------------------------
@register(c.Check, SELECTED_STATES)
async def h_check(s: IMAPSession, cmd: c.Check) -> Result:
    return ok("CHECK completed")


@register(c.Unselect, SELECTED_STATES)
async def h_unselect(s: IMAPSession, cmd: c.Unselect) -> Result:
    s.unselect()
    return ok("UNSELECT completed")


@register(c.Close, SELECTED_STATES)
async def h_close(s: IMAPSession, cmd: c.Close) -> Result:
    view = view_of(s)
    s.unselect()  # before expunging: CLOSE sends no EXPUNGE responses
    if not view.readonly:
        await s.ctx.store.expunge(view.mailbox.id, None, origin=s)
    return ok("CLOSE completed")


@register(c.Expunge, SELECTED_STATES)
async def h_expunge(s: IMAPSession, cmd: c.Expunge) -> Result:
    view = view_of(s)
    _require_writable(view)
    if cmd.uids is None:
        await s.ctx.store.expunge(view.mailbox.id, None, origin=s)
        return ok("EXPUNGE completed")
    targets = [u for u in cmd.uids.matching_sorted(view.uids)
               if view.is_live(u) and "\\Deleted" in view.flags[u]]
    if targets:
        await s.ctx.store.expunge(view.mailbox.id, targets, origin=s)
    return ok("UID EXPUNGE completed")


# --- SEARCH ------------------------------------------------------------------------------
def _uses_modseq(key: c.SearchKey) -> bool:
    if isinstance(key, c.ModSeqKey):
        return True
    if isinstance(key, c.NotKey):
        return _uses_modseq(key.key)
    if isinstance(key, c.OrKey):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, c.AndKey):
        return any(_uses_modseq(k) for k in key.keys)
    return False


@register(c.Search, SELECTED_STATES)
async def h_search(s: IMAPSession, cmd: c.Search) -> Result:
    view = view_of(s)
    with_modseq = _uses_modseq(cmd.criteria)
    if with_modseq:
        s.condstore = view.condstore = True
    uids = await search(s.ctx.store, view, cmd.criteria)
    numbers = uids if cmd.uid else [view.msn(u) or 0 for u in uids]
    if cmd.return_options is not None:
        opts = set(cmd.return_options) or {"ALL"}
        parts = [b'* ESEARCH (TAG "' + cmd.tag + b'")']
        if cmd.uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in opts:
                parts.append(b"MIN %d" % min(numbers))
            if "MAX" in opts:
                parts.append(b"MAX %d" % max(numbers))
            if "ALL" in opts:
                parts.append(b"ALL " + uid_set(numbers))
        if "COUNT" in opts:
            parts.append(b"COUNT %d" % len(numbers))
        if with_modseq and uids:
            parts.append(b"MODSEQ %d" % max(view.modseqs.get(u, 0) for u in uids))
        s.send(b" ".join(parts))
    else:
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if with_modseq and uids:
            line += b" (MODSEQ %d)" % max(view.modseqs.get(u, 0) for u in uids)
        s.send(line)
    return ok(f"{'UID ' if cmd.uid else ''}SEARCH completed")


# --- FETCH -------------------------------------------------------------------------------
@register(c.Fetch, SELECTED_STATES)
async def h_fetch(s: IMAPSession, cmd: c.Fetch) -> Result:
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
        attrs.append(c.FetchAttribute("MODSEQ"))
    if any(a.name == "MODSEQ" for a in attrs):
        s.condstore = view.condstore = True
    flags_for: set[int] = set()
    if not view.readonly and any(a.sets_seen for a in attrs):
        unseen = [u for u in live if "\\Seen" not in view.flags[u]]
        if unseen:
            res = await s.ctx.store.store_flags(
                view.mailbox.id, unseen, FlagMode.ADD, ["\\Seen"], origin=s
            )
            _apply(view, res.changed)
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


# --- STORE -------------------------------------------------------------------------------
@register(c.Store, SELECTED_STATES)
async def h_store(s: IMAPSession, cmd: c.Store) -> Result:
    view = view_of(s)
    _require_writable(view)
    uids = [u for u in resolve(view, cmd.seqset, cmd.uid) if view.is_live(u)]
    if cmd.unchangedsince is not None:
        s.condstore = view.condstore = True
    if not uids:
        return ok("STORE completed")
    res = await s.ctx.store.store_flags(
        view.mailbox.id, uids, _MODES[cmd.mode], cmd.flags,
        unchanged_since=cmd.unchangedsince, origin=s,
    )
    _apply(view, res.changed)
    reported = sorted(
        {ch.uid for ch in res.changed}
        | ({ch.uid for ch in res.unchanged} if not cmd.silent else set())
    )
    for uid in reported:
        if not view.is_live(uid):
            continue
        if cmd.silent and not view.condstore:
            continue
        msn = view.msn(uid)
        items = []
        if cmd.uid:
            items.append(b"UID %d" % uid)
        if not cmd.silent:
            items.append(b"FLAGS " + view.format_flags(uid))
        if view.condstore:
            items.append(b"MODSEQ (%d)" % view.modseqs.get(uid, 0))
        s.send(b"* %d FETCH (%s)" % (msn or 0, b" ".join(items)))
    verb = f"{'UID ' if cmd.uid else ''}STORE"
    if res.failed_uids:
        failed = res.failed_uids if cmd.uid else [view.msn(u) or 0 for u in res.failed_uids]
        return ok(f"Conditional {verb} failed", f"MODIFIED {uid_set(failed).decode()}")
    return ok(f"{verb} completed")


# --- COPY / MOVE -------------------------------------------------------------------------
async def _copy(s: IMAPSession, cmd: c.Copy | c.Move, move: bool) -> Result:
    view = view_of(s)
    if move:
        _require_writable(view)
    verb = f"{'UID ' if cmd.uid else ''}{'MOVE' if move else 'COPY'}"
    uids = [u for u in resolve(view, cmd.seqset, cmd.uid) if view.is_live(u)]
    dst = await get_mailbox(s, cmd.mailbox)
    if dst is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "TRYCREATE")
    if not uids:
        return ok(f"{verb} completed (no messages)")
    pairs = await s.ctx.store.copy(view.mailbox.id, uids, dst.id, move=move, origin=s)
    if not pairs:
        return no("The messages were expunged meanwhile", "EXPUNGEISSUED")
    code = (f"COPYUID {dst.uidvalidity} {uid_set(p[0] for p in pairs).decode()} "
            f"{uid_set(p[1] for p in pairs).decode()}")
    if move:
        s.send(b"* OK [" + code.encode() + b"] Moved")
        return ok(f"{verb} completed")
    return ok(f"{verb} completed", code)


@register(c.Copy, SELECTED_STATES)
async def h_copy(s: IMAPSession, cmd: c.Copy) -> Result:
    return await _copy(s, cmd, move=False)


@register(c.Move, SELECTED_STATES)
async def h_move(s: IMAPSession, cmd: c.Move) -> Result:
    return await _copy(s, cmd, move=True)
