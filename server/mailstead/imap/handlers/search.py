"""SEARCH / UID SEARCH, with ESEARCH results (RFC 4731) and CONDSTORE's MODSEQ.

The search keys are parsed in ``syntax/search.py`` and evaluated against the mailbox
by ``handlers/search_eval.py``; this module answers the command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..response import Result, ok
from ..session_api import Session
from ..syntax.search import AndKey, ModSeqKey, NotKey, OrKey, Search, SearchKey
from .common import uid_set, view_of
from .search_eval import is_expensive, search


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, NotKey):
        return _uses_modseq(key.key)
    if isinstance(key, OrKey):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, AndKey):
        return any(_uses_modseq(k) for k in key.keys)
    return False


def _esearch_modseq(modseqs: Mapping[int, int], uids: Sequence[int], opts: set[str]) -> int:
    """The MODSEQ of an ESEARCH response (RFC 4731 §3.2): that of the messages returned.

    MIN or MAX alone returns one message, so its mod-sequence; MIN and MAX together, the
    higher of those two; ALL or COUNT stand for every match, so the highest of them all.
    ``uids`` are ascending, so MIN is the first match and MAX the last (for sequence
    numbers as for UIDs).
    """
    if opts & {"ALL", "COUNT"} or not opts & {"MIN", "MAX"}:
        returned: Iterable[int] = uids
    else:
        returned = [u for opt, u in (("MIN", uids[0]), ("MAX", uids[-1])) if opt in opts]
    return max(modseqs.get(u, 0) for u in returned)


async def handle_search(s: Session, cmd: Search) -> Result:
    view = view_of(s)
    with_modseq = _uses_modseq(cmd.criteria)
    if with_modseq:
        s.condstore = view.condstore = True
    work = s.ctx.imap_expensive
    if is_expensive(cmd.criteria):
        assert s.user is not None
        async with work.slot(s.user.id):  # one user's many SEARCHes take turns
            uids = await search(s.ctx.store, view, cmd.criteria, run=work.run)
    else:
        uids = await search(s.ctx.store, view, cmd.criteria, run=work.run)
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
            parts.append(b"MODSEQ %d" % _esearch_modseq(view.modseqs, uids, opts))
        s.send(b" ".join(parts))
    else:
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if with_modseq and uids:
            line += b" (MODSEQ %d)" % max(view.modseqs.get(u, 0) for u in uids)
        s.send(line)
    return ok(f"{'UID ' if cmd.uid else ''}SEARCH completed")


