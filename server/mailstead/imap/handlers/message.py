"""Message commands: APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE, COPY, MOVE."""

from __future__ import annotations

from ...mime.parse import normalise_crlf
from ...store.api import NewMessage
from ..response import Result, bad, no, ok
from ..session_api import Session
from ..syntax.message import Append, Check, Close, Copy, Expunge, Move, Unselect
from .common import (
    get_mailbox,
    refuse_nil_keyword,
    require_writable,
    resolve,
    uid_set,
    usable_name,
    view_of,
)


# --- APPEND ------------------------------------------------------------------------------
async def handle_append(s: Session, cmd: Append) -> Result:
    mbox = await get_mailbox(s, usable_name(cmd.mailbox, "CANNOT"))
    if mbox is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "TRYCREATE")
    limit = s.ctx.config.limits.max_message_size
    messages = []
    for m in cmd.messages:
        if not m.data:
            # Not a message at all (RFC 5322 needs at least a header); storing it would
            # only give clients an entry they cannot parse. Nothing of the command is kept.
            return no("A message of 0 octets cannot be appended", "CANNOT")
        if len(m.data) > limit:
            return no(f"Message is larger than {limit} octets", "TOOBIG")
        if any(f == "\\Recent" for f in m.flags):
            return bad("\\Recent cannot be set")
        refuse_nil_keyword(m.flags)
        messages.append(NewMessage(normalise_crlf(m.data), frozenset(m.flags), m.internaldate))
    uids = await s.ctx.store.append(mbox.id, messages)
    s.ctx.count("imap_appends", len(uids))
    code = f"APPENDUID {mbox.uidvalidity} {uid_set(uids).decode()}"
    return ok("APPEND completed", code)


# --- mailbox-level -----------------------------------------------------------------------
async def handle_check(s: Session, cmd: Check) -> Result:
    return ok("CHECK completed")


async def handle_unselect(s: Session, cmd: Unselect) -> Result:
    s.unselect()
    return ok("UNSELECT completed")


async def handle_close(s: Session, cmd: Close) -> Result:
    view = view_of(s)
    s.unselect()  # before expunging: CLOSE sends no EXPUNGE responses
    if not view.readonly:
        await s.ctx.store.expunge(view.mailbox.id, None)
    return ok("CLOSE completed")


async def handle_expunge(s: Session, cmd: Expunge) -> Result:
    view = view_of(s)
    require_writable(view)
    if cmd.uids is None:
        await s.ctx.store.expunge(view.mailbox.id, None)
        return ok("EXPUNGE completed")
    # The store checks \\Deleted as it removes: this view's flags may be a change behind
    # (another session may just have cleared it), and a message without \\Deleted must
    # never go (RFC 4315 §2.1).
    targets = [u for u in cmd.uids.matching_sorted(view.uids) if view.is_live(u)]
    if targets:
        await s.ctx.store.expunge(view.mailbox.id, targets, deleted_only=True)
    return ok("UID EXPUNGE completed")


# --- COPY / MOVE -------------------------------------------------------------------------
async def _copy(s: Session, cmd: Copy | Move, move: bool) -> Result:
    view = view_of(s)
    if move:
        require_writable(view)
    usable_name(cmd.mailbox, "CANNOT")
    verb = f"{'UID ' if cmd.uid else ''}{'MOVE' if move else 'COPY'}"
    uids = [u for u in resolve(view, cmd.seqset, cmd.uid) if view.is_live(u)]
    dst = await get_mailbox(s, cmd.mailbox)
    if dst is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "TRYCREATE")
    if not uids:
        return ok(f"{verb} completed (no messages)")
    pairs = await s.ctx.store.copy(view.mailbox.id, uids, dst.id, move=move)
    if not pairs:
        return no("The messages were expunged meanwhile", "EXPUNGEISSUED")
    code = (f"COPYUID {dst.uidvalidity} {uid_set(p[0] for p in pairs).decode()} "
            f"{uid_set(p[1] for p in pairs).decode()}")
    if move:
        s.send(b"* OK [" + code.encode() + b"] Moved")
        return ok(f"{verb} completed")
    return ok(f"{verb} completed", code)


async def handle_copy(s: Session, cmd: Copy) -> Result:
    return await _copy(s, cmd, move=False)


async def handle_move(s: Session, cmd: Move) -> Result:
    return await _copy(s, cmd, move=True)
