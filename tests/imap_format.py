"""Client-side IMAP syntax for the tests: typed commands (``mailstead.imap.syntax``)
written back as a client sends them.

The server never formats commands, so this lives with the tests, where it checks that
parsing a formatted command gives the same value back. Strings that are not plain atoms
are written quoted, or as literals when they cannot be quoted; ``literal_plus=True``
(the default) writes non-synchronising ``{n+}`` literals (RFC 7888) so that the whole
command can be sent at once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from mailstead.imap.dates import format_date, format_internaldate
from mailstead.imap.syntax.auth import Authenticate, Login
from mailstead.imap.syntax.fetch import Fetch, FetchAttribute, FetchSection
from mailstead.imap.syntax.mailbox import (
    Create,
    Delete,
    List,
    QResync,
    Rename,
    Select,
    Status,
    Subscribe,
    Unsubscribe,
)
from mailstead.imap.syntax.message import Append, AppendMessage, Copy, Expunge, Move
from mailstead.imap.syntax.search import (
    AddressKey,
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    Search,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from mailstead.imap.syntax.session import Enable, Id
from mailstead.imap.syntax.store import Store
from mailstead.imap.syntax.tokens import ASTRING_CHARS, LIST_CHARS, Command
from mailstead.imap.utf7 import encode_mailbox

_QUOTABLE_MAX = 1024


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def format_literal(data: bytes, *, literal_plus: bool = True, binary: bool = False) -> bytes:
    """A literal in client syntax, ``~`` prefixed for a literal8 (RFC 3516)."""
    marker = b"{%d+}\r\n" if literal_plus else b"{%d}\r\n"
    return (b"~" if binary else b"") + marker % len(data) + data


def format_string(value: str | bytes, *, literal_plus: bool = True) -> bytes:
    """A quoted string when possible, else a literal."""
    data = _as_bytes(value)
    if len(data) <= _QUOTABLE_MAX and all(0 < c < 0x80 and c not in (10, 13) for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return format_literal(data, literal_plus=literal_plus)


def format_astring(value: str | bytes, *, literal_plus: bool = True) -> bytes:
    """An atom when the value is one, else a string."""
    data = _as_bytes(value)
    if data and all(c in ASTRING_CHARS for c in data):
        return data
    return format_string(data, literal_plus=literal_plus)


def format_nstring(value: str | bytes | None, *, literal_plus: bool = True) -> bytes:
    return b"NIL" if value is None else format_string(value, literal_plus=literal_plus)


def format_mailbox(name: str, *, literal_plus: bool = True) -> bytes:
    """A mailbox name, modified UTF-7 encoded."""
    return format_astring(encode_mailbox(name), literal_plus=literal_plus)


def format_list_mailbox(pattern: str, *, literal_plus: bool = True) -> bytes:
    """A LIST pattern: wildcards may stay bare (``list-char``)."""
    data = encode_mailbox(pattern)
    if data and all(c in LIST_CHARS for c in data):
        return data
    return format_string(data, literal_plus=literal_plus)


# --- FETCH items -------------------------------------------------------------------------


def format_section(section: FetchSection, *, literal_plus: bool = True) -> bytes:
    spec = b".".join(b"%d" % part for part in section.parts)
    if section.text is not None:
        spec += (b"." if spec else b"") + section.text.encode("ascii")
    if section.headers:
        names = (format_astring(h, literal_plus=literal_plus) for h in section.headers)
        spec += b" " + _plist(names)
    return spec


def format_fetch_attribute(attr: FetchAttribute, *, literal_plus: bool = True) -> bytes:
    """The item as a client writes it, e.g. ``BODY.PEEK[HEADER]<0.512>``."""
    out = attr.name.encode("ascii") + (b".PEEK" if attr.peek else b"")
    if attr.section is not None:
        out += b"[" + format_section(attr.section, literal_plus=literal_plus) + b"]"
    if attr.partial is not None:
        out += b"<%d.%d>" % attr.partial
    return out


# --- SEARCH keys -------------------------------------------------------------------------

# System flag -> (key when set, key when not set).
_FLAG_SEARCH_NAMES = {
    "\\Answered": (b"ANSWERED", b"UNANSWERED"),
    "\\Deleted": (b"DELETED", b"UNDELETED"),
    "\\Draft": (b"DRAFT", b"UNDRAFT"),
    "\\Flagged": (b"FLAGGED", b"UNFLAGGED"),
    "\\Seen": (b"SEEN", b"UNSEEN"),
    "\\Recent": (b"RECENT", b"OLD"),
}
# SUBJECT is the only shorthand that is a HeaderKey; BCC/CC/FROM/TO are AddressKeys, so a
# HeaderKey for those fields is written out as HEADER.
_HEADER_SHORTHANDS = ("subject",)


def format_search_key(key: SearchKey, *, literal_plus: bool = True) -> bytes:
    """The key as a client writes it."""

    def sub(k: SearchKey) -> bytes:
        return format_search_key(k, literal_plus=literal_plus)

    def text(value: str) -> bytes:
        return format_astring(value, literal_plus=literal_plus)

    if isinstance(key, AllKey):
        return b"ALL"
    if isinstance(key, FlagKey):
        names = _FLAG_SEARCH_NAMES.get(key.flag)
        if names is not None:
            return names[0] if key.present else names[1]
        return (b"KEYWORD " if key.present else b"UNKEYWORD ") + key.flag.encode("ascii")
    if isinstance(key, HeaderKey):
        if key.field in _HEADER_SHORTHANDS:
            return key.field.upper().encode("ascii") + b" " + text(key.value)
        return b"HEADER " + text(key.field) + b" " + text(key.value)
    if isinstance(key, AddressKey):
        return key.field.upper().encode("ascii") + b" " + text(key.value)
    if isinstance(key, TextKey):
        return key.scope.encode("ascii") + b" " + text(key.value)
    if isinstance(key, DateKey):
        name = ("SENT" if key.sent else "") + key.op
        return name.encode("ascii") + b" " + format_date(key.value)
    if isinstance(key, SizeKey):
        return key.op.encode("ascii") + b" %d" % key.size
    if isinstance(key, SequenceKey):
        return (b"UID " if key.uid else b"") + key.seqset.format()
    if isinstance(key, ModSeqKey):
        entry = b""
        if key.entry_name is not None:
            entry = format_string(key.entry_name, literal_plus=literal_plus) + b" "
            entry += (key.entry_type or "all").encode("ascii") + b" "
        return b"MODSEQ " + entry + b"%d" % key.modseq
    if isinstance(key, NotKey):
        return b"NOT " + sub(key.key)
    if isinstance(key, OrKey):
        return b"OR " + sub(key.left) + b" " + sub(key.right)
    if isinstance(key, AndKey):
        return _plist(sub(k) for k in key.keys)
    raise TypeError(f"not a search key: {key!r}")


# --- commands ----------------------------------------------------------------------------


def verb(cmd: Command) -> str:
    """The command as named on the wire (``UID FETCH``, ``EXAMINE``, ``LSUB``)."""
    if isinstance(cmd, Select):
        return "EXAMINE" if cmd.readonly else "SELECT"
    if isinstance(cmd, List):
        return "LSUB" if cmd.lsub else "LIST"
    if isinstance(cmd, Expunge):
        return "EXPUNGE" if cmd.uids is None else "UID EXPUNGE"
    if isinstance(cmd, Search | Fetch | Store | Copy | Move) and cmd.uid:
        return "UID " + cmd.name
    return cmd.name


def _qresync(q: QResync) -> bytes:
    items = [b"%d" % q.uidvalidity, b"%d" % q.modseq]
    if q.known_uids is not None:
        items.append(q.known_uids.format())
    if q.seq_match is not None:
        items.append(_plist(s.format() for s in q.seq_match))
    return _plist(items)


def _append_message(m: AppendMessage, lp: bool) -> bytes:
    out = b""
    if m.flags:
        out += _plist(f.encode("ascii") for f in m.flags) + b" "
    if m.internaldate is not None:
        out += b'"' + format_internaldate(m.internaldate) + b'" '
    return out + format_literal(m.data, literal_plus=lp, binary=m.binary)


def _select(c: Select, lp: bool) -> bytes:
    params = [b"CONDSTORE"] if c.condstore else []
    if c.qresync is not None:
        params.append(b"QRESYNC " + _qresync(c.qresync))
    return format_mailbox(c.mailbox, literal_plus=lp) + (b" " + _plist(params) if params else b"")


def _create(c: Create, lp: bool) -> bytes:
    out = format_mailbox(c.mailbox, literal_plus=lp)
    if c.special_use:
        out += b" (USE " + _plist(u.encode("ascii") for u in c.special_use) + b")"
    return out


def _list(c: List, lp: bool) -> bytes:
    parts: list[bytes] = []
    if c.selection_options:
        parts.append(_plist(o.encode("ascii") for o in c.selection_options))
    parts.append(format_mailbox(c.reference, literal_plus=lp))
    pats = [format_list_mailbox(p, literal_plus=lp) for p in c.patterns]
    bare_extended = c.extended and not (c.selection_options or c.return_options)
    parts.append(_plist(pats) if len(pats) != 1 or bare_extended else pats[0])
    if c.return_options:
        opts = []
        for opt in c.return_options:
            if opt == "STATUS":
                opts.append(b"STATUS " + _plist(i.encode("ascii") for i in c.status_items or ()))
            else:
                opts.append(opt.encode("ascii"))
        parts.append(b"RETURN " + _plist(opts))
    return b" ".join(parts)


def _search(c: Search, lp: bool) -> bytes:
    out = b""
    if c.return_options is not None:
        out += b"RETURN " + _plist(o.encode("ascii") for o in c.return_options) + b" "
    if c.charset is not None:
        out += b"CHARSET " + format_astring(c.charset) + b" "
    if isinstance(c.criteria, AndKey):  # the top level has no parentheses
        return out + b" ".join(format_search_key(k, literal_plus=lp) for k in c.criteria.keys)
    return out + format_search_key(c.criteria, literal_plus=lp)


def _fetch(c: Fetch, lp: bool) -> bytes:
    attrs = _plist(format_fetch_attribute(a, literal_plus=lp) for a in c.attributes)
    mods = []
    if c.changedsince is not None:
        mods.append(b"CHANGEDSINCE %d" % c.changedsince)
    if c.vanished:
        mods.append(b"VANISHED")
    return c.seqset.format() + b" " + attrs + (b" " + _plist(mods) if mods else b"")


def _store(c: Store, lp: bool) -> bytes:
    out = c.seqset.format() + b" "
    if c.unchangedsince is not None:
        out += b"(UNCHANGEDSINCE %d) " % c.unchangedsince
    item = c.mode.encode("ascii") + b"FLAGS" + (b".SILENT" if c.silent else b"")
    return out + item + b" " + _plist(f.encode("ascii") for f in c.flags)


def _id(c: Id, lp: bool) -> bytes:
    if c.params is None:
        return b"NIL"
    items = []
    for key, value in c.params:
        items.append(format_string(key, literal_plus=lp))
        items.append(format_nstring(value, literal_plus=lp))
    return _plist(items)


def _authenticate(c: Authenticate, lp: bool) -> bytes:
    out = c.mechanism.encode("ascii")
    if c.initial_response is not None:
        out += b" " + (base64.b64encode(c.initial_response) or b"=")
    return out


_ARGS: dict[type, Callable[[Any, bool], bytes]] = {
    Authenticate: _authenticate,
    Login: lambda c, lp: (
        format_astring(c.user, literal_plus=lp) + b" " + format_astring(c.password, literal_plus=lp)
    ),
    Select: _select,
    Create: _create,
    Delete: lambda c, lp: format_mailbox(c.mailbox, literal_plus=lp),
    Subscribe: lambda c, lp: format_mailbox(c.mailbox, literal_plus=lp),
    Unsubscribe: lambda c, lp: format_mailbox(c.mailbox, literal_plus=lp),
    Rename: lambda c, lp: (
        format_mailbox(c.old, literal_plus=lp) + b" " + format_mailbox(c.new, literal_plus=lp)
    ),
    List: _list,
    Status: lambda c, lp: (
        format_mailbox(c.mailbox, literal_plus=lp) + b" "
        + _plist(i.encode("ascii") for i in c.items)
    ),
    Append: lambda c, lp: b" ".join(
        [format_mailbox(c.mailbox, literal_plus=lp), *(_append_message(m, lp) for m in c.messages)]
    ),
    Expunge: lambda c, lp: b"" if c.uids is None else c.uids.format(),
    Search: _search,
    Fetch: _fetch,
    Store: _store,
    Copy: lambda c, lp: c.seqset.format() + b" " + format_mailbox(c.mailbox, literal_plus=lp),
    Move: lambda c, lp: c.seqset.format() + b" " + format_mailbox(c.mailbox, literal_plus=lp),
    Id: _id,
    Enable: lambda c, lp: b" ".join(cap.encode("ascii") for cap in c.capabilities),
}


def format_command(cmd: Command, *, literal_plus: bool = True) -> bytes:
    """The whole command line in client syntax, CRLF included."""
    args_of = _ARGS.get(type(cmd))
    args = args_of(cmd, literal_plus) if args_of is not None else b""
    return cmd.tag + b" " + verb(cmd).encode("ascii") + (b" " + args if args else b"") + b"\r\n"
