"""Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ...store.api import (
    AlreadyExists,
    InvalidName,
    Mailbox,
    NotFound,
    SpecialUseTaken,
)
from ...store.names import DELIMITER, validate_mailbox_name
from .. import response
from ..response import Result, bad, no, ok
from ..selected import SelectedMailbox
from ..session_api import Session
from ..syntax.mailbox import Create, Delete, List, Rename, Select, Status, Subscribe, Unsubscribe
from ..syntax.tokens import UnusableName
from ..utf7 import encode_mailbox
from ..wildcard import PatternTooComplex, compile_pattern, compile_patterns
from .common import get_mailbox, usable_name


def mailbox_name(name: str) -> bytes:
    """A mailbox name as sent to clients: modified UTF-7, quoted."""
    return response.string(encode_mailbox(name))


# --- SELECT / EXAMINE --------------------------------------------------------------------
async def handle_select(s: Session, cmd: Select) -> Result:
    verb = "EXAMINE" if cmd.readonly else "SELECT"
    s.unselect()
    if cmd.qresync is not None:
        return bad("QRESYNC is not enabled")
    mbox = await get_mailbox(s, usable_name(cmd.mailbox, "NONEXISTENT"))
    if mbox is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "NONEXISTENT")
    view = SelectedMailbox(s.ctx.store, mbox, readonly=cmd.readonly)
    # Subscribe before reading the snapshot so no change can fall between the two; the
    # view drops the events the snapshot already holds (by modseq).
    sub = s.ctx.hub.subscribe(mbox.id, view.on_change)
    try:
        # SELECT claims \Recent in the store as it reads; EXAMINE shows the same count
        # without taking it (RFC 3501 §6.3.2).
        snap = await s.ctx.store.open_rows(mbox.id, claim_recent=not cmd.readonly)
    except NotFound:
        sub.close()
        return no(f"Mailbox does not exist: {cmd.mailbox}", "NONEXISTENT")
    except BaseException:
        sub.close()
        raise
    view.load(snap)
    if cmd.condstore:
        s.condstore = True
    view.condstore = s.condstore
    s.select(view, sub)
    for line in view.opening_lines():
        s.send(line)
    code = "READ-ONLY" if cmd.readonly else "READ-WRITE"
    return ok(f"{verb} completed", code)


# --- CREATE / DELETE / RENAME ------------------------------------------------------------
async def handle_create(s: Session, cmd: Create) -> Result:
    assert s.user is not None
    # "foo/" asks for a name with inferiors
    name = usable_name(cmd.mailbox, "CANNOT").rstrip(DELIMITER)
    if name.upper() == "INBOX":
        return no("INBOX already exists", "ALREADYEXISTS")
    if len(cmd.special_use) > 1:
        return no("Only one special-use attribute per mailbox", "USEATTR")
    special = cmd.special_use[0] if cmd.special_use else None
    if special is not None and special not in (
        "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"
    ):
        return no(f"Unsupported special-use attribute {special}", "USEATTR")
    try:
        # RFC 3501 §6.3.3: CREATE a/b/c SHOULD create a and a/b too when they are missing.
        # The whole name is checked first, so a refused name creates no parent either.
        validate_mailbox_name(name, s.ctx.config.limits.max_mailbox_depth)
        for parent in _parents(name):
            if await get_mailbox(s, parent) is None:
                try:
                    await s.ctx.store.create_mailbox(s.user.id, parent)
                except AlreadyExists:
                    pass  # another session created it meanwhile
        await s.ctx.store.create_mailbox(s.user.id, name, special)
    except SpecialUseTaken as exc:  # RFC 6154: the failure is about the attribute
        return no(str(exc), "USEATTR")
    except AlreadyExists as exc:
        return no(str(exc), "ALREADYEXISTS")
    except InvalidName as exc:
        return no(f"Invalid mailbox name: {exc}", "CANNOT")
    return ok("CREATE completed")


async def handle_delete(s: Session, cmd: Delete) -> Result:
    assert s.user is not None
    usable_name(cmd.mailbox, "NONEXISTENT")
    if cmd.mailbox == "INBOX":
        return no("INBOX cannot be deleted", "CANNOT")
    if s.selected is not None and s.selected.mailbox.name == cmd.mailbox:
        s.unselect()  # deleting our own selected mailbox is allowed; no BYE for us
    try:
        await s.ctx.store.delete_mailbox(s.user.id, cmd.mailbox)
    except NotFound:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "NONEXISTENT")
    return ok("DELETE completed")


async def handle_rename(s: Session, cmd: Rename) -> Result:
    assert s.user is not None
    usable_name(cmd.old, "NONEXISTENT")
    new = usable_name(cmd.new, "CANNOT").rstrip(DELIMITER)
    if new == "INBOX":
        return no("INBOX already exists", "ALREADYEXISTS")
    try:
        await s.ctx.store.rename_mailbox(s.user.id, cmd.old, new)
    except NotFound:
        return no(f"Mailbox does not exist: {cmd.old}", "NONEXISTENT")
    except AlreadyExists as exc:
        return no(str(exc), "ALREADYEXISTS")
    except InvalidName as exc:
        return no(f"Invalid mailbox name: {exc}", "CANNOT")
    if s.selected is not None and s.selected.mailbox.name == cmd.old:
        fresh = await get_mailbox(s, new)
        if fresh is not None:
            s.selected.mailbox = fresh
    return ok("RENAME completed")


async def handle_subscribe(s: Session, cmd: Subscribe) -> Result:
    assert s.user is not None
    if await get_mailbox(s, usable_name(cmd.mailbox, "NONEXISTENT")) is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "NONEXISTENT")
    await s.ctx.store.set_subscribed(s.user.id, cmd.mailbox, True)
    return ok("SUBSCRIBE completed")


async def handle_unsubscribe(s: Session, cmd: Unsubscribe) -> Result:
    assert s.user is not None
    await s.ctx.store.set_subscribed(s.user.id, usable_name(cmd.mailbox, "NONEXISTENT"), False)
    return ok("UNSUBSCRIBE completed")


# --- LIST / LSUB -------------------------------------------------------------------------
def _parents(name: str) -> list[str]:
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == "INBOX" else 1, name)


def _list_line(verb: bytes, attrs: list[str], name: str, extra: bytes = b"") -> bytes:
    return (b"* " + verb + b" " + response.flag_list(attrs) + b' "' + DELIMITER.encode()
            + b'" ' + mailbox_name(name) + extra)


async def handle_list(s: Session, cmd: List) -> Result:
    assert s.user is not None
    verb = b"LSUB" if cmd.lsub else b"LIST"
    # A reference or pattern that is good syntax but no valid name (not modified UTF-7...)
    # matches no mailbox: nothing is listed for it, and the command is still OK (RFC 3501
    # §7.1.3 keeps BAD for syntax). Any other patterns are answered as usual.
    unusable_reference = isinstance(cmd.reference, UnusableName)
    patterns = [] if unusable_reference else [
        p for p in cmd.patterns if not isinstance(p, UnusableName)]
    if not cmd.lsub and cmd.patterns == ("",):
        # The delimiter and root of the reference (RFC 3501 §6.3.8).
        reference = "" if unusable_reference else cmd.reference
        root = reference.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in reference else ""
        s.send(b'* LIST (\\Noselect) "' + DELIMITER.encode() + b'" '
               + response.string(encode_mailbox(root)))
        return ok("LIST completed")
    if not patterns:
        return ok(f"{verb.decode()} completed")
    store = s.ctx.store
    boxes = {m.name: m for m in await store.list_mailboxes(s.user.id)}
    subscribed = set(await store.list_subscriptions(s.user.id))
    try:
        # One linear-time matcher for all patterns (wildcard.py), never a regex.
        regexes = [compile_patterns(cmd.reference, patterns, DELIMITER)]
    except PatternTooComplex as exc:
        return no(str(exc), "LIMIT")

    def matches(name: str) -> bool:
        return any(r.match(name) for r in regexes)

    has_children = {p for name in boxes for p in _parents(name)}
    sel = set(cmd.selection_options)
    ret = set(cmd.return_options)
    lines: list[tuple[str, list[str], bytes]] = []

    if cmd.lsub:
        # RFC 3501 §6.3.9: a parent that is not subscribed itself is listed (\\Noselect)
        # only where a "%" hid a subscribed name below it.
        percent = [compile_pattern(cmd.reference + p, DELIMITER) for p in patterns if "%" in p]
        hidden_parents = {
            parent
            for name in subscribed
            for parent in _parents(name)
            if parent not in subscribed
            and any(r.match(parent) and not r.match(name) for r in percent)
        }
        for name in sorted(subscribed | hidden_parents, key=_sort_key):
            if name in subscribed and matches(name):
                lines.append((name, [], b""))
            elif name in hidden_parents:
                lines.append((name, ["\\Noselect"], b""))
    elif "SUBSCRIBED" in sel:
        lines = _subscribed_lines(cmd, boxes, subscribed, has_children, matches)
    else:
        universe = set(boxes) | has_children
        for name in sorted(universe, key=_sort_key):
            if not matches(name):
                continue
            mbox = boxes.get(name)
            if "SPECIAL-USE" in sel and (mbox is None or not mbox.special_use):
                continue
            attrs = []
            if mbox is None:
                attrs.append("\\NonExistent" if cmd.extended else "\\Noselect")
            attrs.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
            if mbox is not None and mbox.special_use:
                attrs.append(mbox.special_use)
            if "SUBSCRIBED" in ret and name in subscribed:
                attrs.append("\\Subscribed")
            lines.append((name, attrs, b""))

    for name, attrs, extra in lines:
        s.send(_list_line(verb, attrs, name, extra))
        if cmd.status_items and not cmd.lsub and name in boxes:
            status = await store.mailbox_status(boxes[name].id,
                                                size="SIZE" in cmd.status_items)
            s.send(b"* STATUS " + mailbox_name(name) + b" "
                   + status_items(s, status, cmd.status_items))
    return ok(f"{verb.decode()} completed")


_CHILDINFO = b' ("CHILDINFO" ("SUBSCRIBED"))'


def _subscribed_lines(
    cmd: List, boxes: Mapping[str, Mailbox], subscribed: set[str], has_children: set[str],
    matches: Callable[[str], bool],
) -> list[tuple[str, list[str], bytes]]:
    """LIST (SUBSCRIBED [RECURSIVEMATCH]): the subscribed names that match (RFC 5258 §3.1).

    With RECURSIVEMATCH, CHILDINFO (§3.5) marks every listed name that has a subscribed
    descendant: §3.5's table gives it to a name that meets the selection criteria itself
    as well (example 9: ``eps2``, subscribed, has it for ``eps2/mamba``). A name that is
    not subscribed is listed only for such a descendant that the patterns do not return
    themselves, because servers "SHOULD ONLY return a non-matching mailbox name along with
    CHILDINFO if at least one matching child is not also being returned" (example 9: no
    ``baz2`` line under ``*2``, which returns all of its subscribed children).
    RETURN (CHILDREN) adds \\HasChildren/\\HasNoChildren (§4), which are about mailboxes
    that exist, subscribed or not.
    """
    recursive = "RECURSIVEMATCH" in cmd.selection_options
    above_subscribed: set[str] = set()  # names with a subscribed descendant
    above_unreturned: set[str] = set()  # ... that the patterns do not return
    if recursive:
        for name in subscribed:
            returned = matches(name)
            for parent in _parents(name):
                above_subscribed.add(parent)
                if not returned:
                    above_unreturned.add(parent)
    listed = {n for n in subscribed | above_unreturned if matches(n)}
    lines: list[tuple[str, list[str], bytes]] = []
    for name in sorted(listed, key=_sort_key):
        attrs: list[str] = []
        if name in subscribed:
            attrs.append("\\Subscribed")
        mbox = boxes.get(name)
        if mbox is None:
            attrs.append("\\NonExistent")
        elif mbox.special_use:
            attrs.append(mbox.special_use)
        if "CHILDREN" in cmd.return_options:
            attrs.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
        lines.append((name, attrs, _CHILDINFO if name in above_subscribed else b""))
    return lines


# --- STATUS ------------------------------------------------------------------------------
def status_items(s: Session, status: object, items: Iterable[str]) -> bytes:
    values = {
        "MESSAGES": getattr(status, "messages", 0),
        "RECENT": getattr(status, "recent", 0),
        "UIDNEXT": getattr(status, "uidnext", 1),
        "UIDVALIDITY": getattr(status, "uidvalidity", 0),
        "UNSEEN": getattr(status, "unseen", 0),
        "HIGHESTMODSEQ": getattr(status, "highestmodseq", 0),
        "SIZE": getattr(status, "size", 0),
        "APPENDLIMIT": s.ctx.config.limits.max_message_size,
    }
    out = []
    for item in items:
        if item in values:
            out.append(item.encode() + b" %d" % values[item])
    return response.plist(out)


async def handle_status(s: Session, cmd: Status) -> Result:
    mbox = await get_mailbox(s, usable_name(cmd.mailbox, "NONEXISTENT"))
    if mbox is None:
        return no(f"Mailbox does not exist: {cmd.mailbox}", "NONEXISTENT")
    unknown = [i for i in cmd.items if i == "DELETED"]
    if unknown:
        return bad(f"Unsupported STATUS item {unknown[0]}")
    status = await s.ctx.store.mailbox_status(mbox.id, size="SIZE" in cmd.items)
    s.send(b"* STATUS " + mailbox_name(mbox.name) + b" " + status_items(s, status, cmd.items))
    return ok("STATUS completed")
