"""FETCH / UID FETCH: which messages, the implicit \\Seen, CHANGEDSINCE (RFC 7162).

Parsed in ``syntax/fetch.py``; each message's response pieces are built by
``handlers/fetch_items.py`` from the store's data, and written here: literal contents in
pieces, waiting for the client to read (``drain``) after each few hundred kilobytes, so
that no response is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import logging

from ...store.api import FlagMode
from .. import response
from ..response import Result, bad, no, ok
from ..selected import SelectedMailbox
from ..session_api import Session
from ..syntax.fetch import Fetch, FetchAttribute
from .common import resolve, view_of
from .fetch_items import FetchNeeds, FetchReply, MessageVanished, Span, fetch_responses

log = logging.getLogger("mailstead.imap")

# Distinct items one FETCH may ask for (after repeats are dropped). Clients ask for a
# handful, a part-by-part download for two per part; a 64 KB line could hold thousands.
MAX_FETCH_ITEMS = 256
# Output written between two waits for the client to read it.
DRAIN_BYTES = 256 * 1024
# A client that reads nothing of a FETCH for this long is dropped: the response is only
# ever written as fast as it is read, so without this a client that stopped reading
# would keep its session, and one of its user's expensive-command turns, for good.
# (Dovecot's CLIENT_OUTPUT_TIMEOUT was a minute, later five.)
OUTPUT_STALL_SECONDS = 30.0


async def _drain(s: Session) -> None:
    """Wait until the client has read what was written, or drop it when it stalls."""
    try:
        await asyncio.wait_for(s.out.drain(), OUTPUT_STALL_SECONDS)
    except TimeoutError:
        log.warning("dropping a client that does not read its responses (IMAP %s)", s.peer)
        # Abort, not close: a graceful close would wait for the unread output forever.
        transport = getattr(s.out, "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        s.close()


def distinct_items(attrs: tuple[FetchAttribute, ...]) -> list[FetchAttribute]:
    """The attributes with repeats dropped, first occurrence kept.

    ``RFC822 RFC822`` or ``BODY[] BODY.PEEK[]`` answer the same item twice (as Dovecot
    does, we answer it once): a repeat only multiplies the response. Whether \\Seen is set
    is decided from all the attributes as the client sent them.
    """
    seen: set[tuple[object, ...]] = set()
    out: list[FetchAttribute] = []
    for a in attrs:
        key = (a.name, a.section, a.partial)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


async def handle_fetch(s: Session, cmd: Fetch) -> Result:
    if cmd.vanished:
        # QRESYNC is neither advertised nor enabled, and RFC 7162 §3.2.6 allows VANISHED
        # only once it is; answering as if it were absent would hide the expunges the
        # client asked to hear about.
        return bad("VANISHED needs QRESYNC, which is not enabled")
    attrs = distinct_items(cmd.attributes)
    if len(attrs) > MAX_FETCH_ITEMS:
        return no(f"At most {MAX_FETCH_ITEMS} different FETCH items at a time", "LIMIT")
    view = view_of(s)
    uids = resolve(view, cmd.seqset, cmd.uid)
    live = [u for u in uids if view.is_live(u)]
    missing = len(live) < len(uids)
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
    if not view.readonly and any(a.sets_seen for a in cmd.attributes):
        unseen = [u for u in live if "\\Seen" not in view.flags[u]]
        if unseen:
            res = await s.ctx.store.store_flags(
                view.mailbox.id, unseen, FlagMode.ADD, ["\\Seen"]
            )
            for announce in view.apply_own_changes(res.changed):  # \Seen: none, in fact
                s.send(announce)
            flags_for = {ch.uid for ch in res.changed}
    if all(a.name in _FROM_VIEW for a in attrs):
        missing |= await _send_from_view(s, view, live, attrs, with_uid=cmd.uid)
    elif FetchNeeds.of(attrs).full and live:
        assert s.user is not None
        # Bodies: one user's sessions take turns (imap/expensive.py).
        async with s.ctx.imap_expensive.slot(s.user.id):
            missing |= await _send_all(s, view, cmd, live, attrs, flags_for)
    else:
        missing |= await _send_all(s, view, cmd, live, attrs, flags_for)
    if s.out.closed:
        return ok()
    if missing and not cmd.uid:
        return no("Some of the requested messages were expunged", "EXPUNGEISSUED")
    return ok(f"{'UID ' if cmd.uid else ''}FETCH completed")


# Items the view answers (no store read, no \\Seen): ``FETCH 1:* (UID FLAGS)``, a client's
# flag resync, is among the commands sent most.
_FROM_VIEW = frozenset({"UID", "FLAGS", "MODSEQ"})
# Messages formatted between two writes (and drains) when all comes from the view.
VIEW_BATCH = 512


async def _send_from_view(s: Session, view: SelectedMailbox, live: list[int],
                          attrs: list[FetchAttribute], *, with_uid: bool) -> bool:
    """Write the responses of a FETCH the view answers alone, as ``fetch_responses`` would
    format them, in batches of whole lines; True when some had vanished meanwhile.

    No store read, so no per-message coroutine, reply object or write: one batch of lines
    is one write (and at most one send), where the general path sent every 64 messages.
    """
    missing = False
    names = [a.name for a in attrs]
    lines: list[bytes] = []
    for start in range(0, len(live), VIEW_BATCH):
        for uid in live[start:start + VIEW_BATCH]:
            msn = view.msn(uid)
            if msn is None:
                missing = True
                continue
            items = [b"UID %d" % uid] if with_uid else []
            for name in names:
                if name == "FLAGS":
                    items.append(b"FLAGS " + view.format_flags(uid))
                elif name == "MODSEQ":
                    items.append(b"MODSEQ (%d)" % view.modseqs.get(uid, 0))
                elif not with_uid:
                    items.append(b"UID %d" % uid)
            lines.append(b"* %d FETCH (%s)\r\n" % (msn, b" ".join(items)))
        if lines:
            s.out.write(b"".join(lines))
            lines.clear()
            if start + VIEW_BATCH < len(live):
                await _drain(s)  # (also lets other sessions run)
                if s.out.closed:
                    break
    return missing


async def _send_all(s: Session, view: SelectedMailbox, cmd: Fetch, live: list[int],
                    attrs: list[FetchAttribute], flags_for: set[int]) -> bool:
    """Write every message's response; True when some had vanished meanwhile."""
    missing = False
    sent = count = 0
    async for uid, reply in fetch_responses(
        s.ctx.store, view, live, attrs, with_uid=cmd.uid, flags_for=flags_for
    ):
        if reply is None:
            missing = True
            continue
        try:
            written = await _send_reply(s, reply)
        except MessageVanished:
            # Part of a literal is out and its length was promised: the response cannot
            # be completed or taken back, so the connection has to go.
            log.info("IMAP %s: message %d expunged while it was being sent; closing",
                     s.peer, uid)
            s.close()
            return missing
        sent += written
        count += 1
        if sent >= DRAIN_BYTES or count % 64 == 0:  # also lets other sessions run
            sent = 0
            await _drain(s)
        if s.out.closed:
            break
    return missing


async def _send_reply(s: Session, reply: FetchReply) -> int:
    """Write one message's response; the octets written since the last drain."""
    pending = 0
    for piece in reply.pieces:
        if isinstance(piece, bytes):
            s.out.write(piece)
            pending += len(piece)
            continue
        assert isinstance(piece, Span) and reply.octets is not None
        async for chunk in reply.octets.pieces(piece):
            s.out.write(chunk if piece.binary else response.without_nul(chunk))
            pending += len(chunk)
            if pending >= DRAIN_BYTES:
                pending = 0
                await _drain(s)
                if s.out.closed:
                    return 0
    return pending
