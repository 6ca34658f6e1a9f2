"""IMAP command syntax: bytes in, typed commands out. Pure: no I/O, no store.

``reader.py`` frames the byte stream into commands; :func:`parse_command` reads one
framed command: the tag and the command name here, the arguments in the family module
that owns the command (its request types beside its parser):

======================  =========================================================
``auth.py``             STARTTLS, LOGIN, AUTHENTICATE
``session.py``          CAPABILITY, NOOP, LOGOUT, ID, ENABLE, NAMESPACE, IDLE
``mailbox.py``          SELECT, EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
                        LIST, LSUB, STATUS
``message.py``          APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE, COPY, MOVE
``fetch.py``            FETCH
``search.py``           SEARCH
``store.py``            STORE
======================  =========================================================

``tokens.py`` is the token parser they share, ``sequence.py`` the sequence sets.
"""

from __future__ import annotations

from . import auth, fetch, mailbox, message, search, session, store
from .reader import CommandReader, RawCommand, Reject
from .tokens import SP, TAG_RE, Command, CommandParser, Fail, ParseError, Parser, show

# Commands that are just their name.
_NO_ARGS: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (
        session.Capability, session.Noop, session.Logout, auth.StartTLS, message.Check,
        message.Close, session.Idle, session.Namespace, message.Unselect,
    )
}
_UID_COMMANDS = ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE")

_PARSERS: dict[str, CommandParser] = {
    "AUTHENTICATE": auth.parse_authenticate,
    "LOGIN": auth.parse_login,
    "SELECT": lambda p, tag, uid: mailbox.parse_select(p, tag, False),
    "EXAMINE": lambda p, tag, uid: mailbox.parse_select(p, tag, True),
    "CREATE": mailbox.parse_create,
    "DELETE": mailbox.one_mailbox_parser(mailbox.Delete),
    "SUBSCRIBE": mailbox.one_mailbox_parser(mailbox.Subscribe),
    "UNSUBSCRIBE": mailbox.one_mailbox_parser(mailbox.Unsubscribe),
    "RENAME": mailbox.parse_rename,
    "LIST": lambda p, tag, uid: mailbox.parse_list(p, tag, False),
    "LSUB": lambda p, tag, uid: mailbox.parse_list(p, tag, True),
    "STATUS": mailbox.parse_status,
    "APPEND": message.parse_append,
    "EXPUNGE": message.parse_expunge,
    "COPY": message.copy_or_move_parser(message.Copy),
    "MOVE": message.copy_or_move_parser(message.Move),
    "SEARCH": search.parse_search,
    "FETCH": fetch.parse_fetch,
    "STORE": store.parse_store,
    "ID": session.parse_id,
    "ENABLE": session.parse_enable,
}


def _parse(p: Parser, tag: bytes) -> Command:
    p.sp("command")
    verb = p.keyword("command")
    uid = False
    if verb == "UID":
        p.sp("UID command")
        sub = p.keyword("UID command")
        if sub not in _UID_COMMANDS:
            p.fail(f"Unknown command UID {show(sub.encode())}")
        verb, uid = sub, True
    if verb in _NO_ARGS:
        p.finish(verb)
        return _NO_ARGS[verb](tag)
    parser = _PARSERS.get(verb)
    if parser is None:
        p.fail(f"Unknown command {show(verb.encode())}")
    return parser(p, tag, uid)


def _frame(data: bytes) -> RawCommand | ParseError:
    """Frame a single command given as bytes (literals inline) with a throwaway reader."""
    if not data.endswith(b"\n"):
        data += b"\r\n"
    size = len(data)
    reader = CommandReader(
        max_line=size, max_literal=size, max_other_literal=size, max_command=size
    )
    events = reader.feed(data)
    commands = [e for e in events if isinstance(e, RawCommand)]
    if len(commands) != 1 or reader.buffered or any(isinstance(e, Reject) for e in events):
        return ParseError(b"*", "Expected exactly one complete command")
    return commands[0]


def parse_command(raw: RawCommand | bytes) -> Command | ParseError:
    """Parse one framed command (or the bytes of one, literals inline) into a Command.

    Never raises for bad input: every problem becomes a :class:`ParseError` with the
    command's tag (``*`` if it had none), a message for the client, and for
    requests that are well formed but unsupported, status ``NO`` and a response code.
    """
    if not isinstance(raw, RawCommand):
        framed = _frame(bytes(raw))
        if isinstance(framed, ParseError):
            return framed
        raw = framed
    first = raw.lines[0] if raw.lines else b""
    match = TAG_RE.match(first)
    if match is None or (match.end() < len(first) and first[match.end()] != SP):
        return ParseError(b"*", "Missing or invalid tag")
    tag = match.group()
    parser = Parser(raw, start=match.end())
    try:
        return _parse(parser, tag)
    except Fail as exc:
        return ParseError(tag, exc.message, exc.code, exc.status)


__all__ = ["parse_command"]
