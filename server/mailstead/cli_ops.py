"""Operations on a running server's users and mail: ``who``, ``kick``, ``mailbox
create|delete|rename``, ``expunge`` and ``fetch``.

``who`` and ``kick`` ask the running server over its control socket (``control.py``).
The others work on the store directly, as ``mailstead import`` does: the running
server notices other processes' commits (``store/sqlite/external.py``), so its IMAP
sessions are told at once (EXPUNGE, a mailbox that went away), while no server needs
to be running at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .cli_common import CLIError, confirm, find_user, load, run_store, user_name
from .config import Config

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _ask_server(cfg: Config, payload: dict[str, Any]) -> dict[str, Any]:
    from .control import ControlError, request

    try:
        return request(cfg.data_dir, payload)
    except ControlError as exc:
        raise CLIError(str(exc)) from None


def kick_sessions(cfg: Config, name: str) -> int | None:
    """Ask the running server to close ``name``'s sessions; None when no server runs."""
    from .control import ControlError, request

    try:
        return int(request(cfg.data_dir, {"command": "kick", "user": name})["closed"])
    except ControlError:
        return None


# --------------------------------------------------------------------------- who / kick
def cmd_who(args: argparse.Namespace) -> int:
    cfg = load(args)
    sessions = _ask_server(cfg, {"command": "who"})["sessions"]
    sessions.sort(key=lambda s: ((s["user"] or "\uffff").lower(), s["since"]))
    if args.json:
        print(json.dumps(sessions, indent=1))
        return 0
    header = ("USER", "PROTOCOL", "REMOTE", "TLS", "SINCE")
    rows = [header] + [
        (s["user"] or "-", s["protocol"], s["remote"], "yes" if s["tls"] else "no",
         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["since"])))
        for s in sessions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    cfg = load(args)
    name = user_name(args.name, cfg)
    closed = int(_ask_server(cfg, {"command": "kick", "user": name})["closed"])
    print(f"closed {closed} session(s) of {name}" if closed else f"{name} has no open sessions")
    return 0


# --------------------------------------------------------------------------- mailboxes
def _mailbox_name(name: str) -> str:
    """``inbox`` (any case) and ``Inbox/x`` name INBOX, as on the IMAP wire."""
    from .migrate import canonical_mailbox

    return canonical_mailbox(name.strip())


def cmd_mailbox_create(args: argparse.Namespace) -> int:
    cfg = load(args)
    from .store.api import AlreadyExists, InvalidName, LimitExceeded

    name = _mailbox_name(args.mailbox).rstrip("/")
    if name == "INBOX":
        raise CLIError("INBOX always exists")

    async def create(store: Any) -> str:
        user = await find_user(store, args.name, cfg)
        try:
            await store.create_mailbox(user.id, name)
        except AlreadyExists:
            raise CLIError(f"{user.name} already has a mailbox {name}") from None
        except (InvalidName, LimitExceeded) as exc:
            raise CLIError(f"mailbox {name!r} not created: {exc}") from None
        # Clients that list only subscribed mailboxes should show it too.
        await store.set_subscribed(user.id, name, True)
        return str(user.name)

    owner = run_store(cfg, create)
    print(f"mailbox {name} of {owner} created")
    return 0


def cmd_mailbox_delete(args: argparse.Namespace) -> int:
    cfg = load(args)
    from .store.api import NotFound

    name = _mailbox_name(args.mailbox)
    if name == "INBOX":
        raise CLIError("INBOX cannot be deleted")

    async def delete(store: Any) -> str:
        user = await find_user(store, args.name, cfg)
        box = await store.get_mailbox(user.id, name)
        if box is None:
            raise CLIError(f"{user.name} has no mailbox {name}")
        status = await store.mailbox_status(box.id)
        confirm(f"Delete {user.name}'s mailbox {name} and its {status.messages} message(s)?",
                args.yes, "deleting the mailbox")
        try:
            await store.delete_mailbox(user.id, name)
        except NotFound:
            raise CLIError(f"{user.name} has no mailbox {name}") from None
        return str(user.name)

    owner = run_store(cfg, delete)
    print(f"mailbox {name} of {owner} deleted")
    return 0


def cmd_mailbox_rename(args: argparse.Namespace) -> int:
    cfg = load(args)
    from .store.api import AlreadyExists, InvalidName, NotFound

    old, new = _mailbox_name(args.mailbox), _mailbox_name(args.new_name).rstrip("/")
    if new == "INBOX":
        raise CLIError("INBOX already exists")

    async def rename(store: Any) -> str:
        user = await find_user(store, args.name, cfg)
        try:
            await store.rename_mailbox(user.id, old, new)
        except NotFound:
            raise CLIError(f"{user.name} has no mailbox {old}") from None
        except AlreadyExists as exc:
            raise CLIError(str(exc)) from None
        except InvalidName as exc:
            raise CLIError(f"mailbox {new!r} refused: {exc}") from None
        return str(user.name)

    owner = run_store(cfg, rename)
    print(f"mailbox {old} of {owner} renamed to {new}")
    return 0


# --------------------------------------------------------------------------- messages
def parse_date(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (UTC unless it has an offset)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def _mailbox_of(store: Any, cfg: Config, args: argparse.Namespace) -> tuple[Any, Any]:
    user = await find_user(store, args.name, cfg)
    name = _mailbox_name(args.mailbox)
    box = await store.get_mailbox(user.id, name)
    if box is None:
        raise CLIError(f"{user.name} has no mailbox {name}")
    return user, box


def parse_query(text: str) -> Any:
    """An IMAP SEARCH key string (``FROM bob SEEN``) → the search-key tree, read by the
    server's own SEARCH parser; a clear ``CLIError`` for anything it refuses."""
    from .imap.syntax import parse_command
    from .imap.syntax.search import Search
    from .imap.syntax.tokens import ParseError

    if not text.strip():
        raise CLIError("the search query is empty (e.g. --search 'FROM bob SEEN')")
    if "\r" in text or "\n" in text:
        raise CLIError("the search query must be one line")
    parsed = parse_command(b"cli SEARCH CHARSET UTF-8 " + text.encode("utf-8", "replace"))
    if isinstance(parsed, ParseError):  # in the words a client would get
        raise CLIError(f"bad search query {text!r}: {parsed.message}")
    if not isinstance(parsed, Search):  # cannot happen: the verb is ours
        raise CLIError(f"bad search query {text!r}")
    return parsed.criteria


async def _matching(store: Any, box: Any, key: Any) -> list[int]:
    """UIDs matching ``key``, by the matcher SEARCH uses, on a read-only view (as
    EXAMINE: ``\\Recent`` is seen, not taken)."""
    import asyncio

    from .imap.handlers.search_eval import search
    from .imap.selected import SelectedMailbox

    view = SelectedMailbox(store, box, readonly=True)
    view.load(await store.open_view(box.id, claim_recent=False))

    async def run(fn: Callable[..., list[int]], *fn_args: Any) -> list[int]:
        return await asyncio.to_thread(fn, *fn_args)

    return await search(store, view, key, run=run)


def cmd_expunge(args: argparse.Namespace) -> int:
    cfg = load(args)
    key = parse_query(args.search) if args.search is not None else None
    what = (f"matching {args.search}" if key is not None
            else f"received before {args.before.isoformat()}")

    async def expunge(store: Any) -> tuple[int, str]:
        user, box = await _mailbox_of(store, cfg, args)
        if key is not None:
            old = await _matching(store, box, key)
        else:
            old = [m.uid for m in await store.list_messages(box.id)
                   if m.internaldate < args.before]
        where = f"{user.name}'s {box.name}"
        if not old or args.dry_run:
            return len(old), where
        confirm(f"Expunge {len(old)} message(s) of {where} {what}?", args.yes, "expunging")
        return len(await store.expunge(box.id, old)), where

    count, where = run_store(cfg, expunge)
    verb = "would expunge" if args.dry_run else "expunged"
    print(f"{verb} {count} message(s) of {where} {what}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    cfg = load(args)

    async def fetch(store: Any) -> bytes:
        user, box = await _mailbox_of(store, cfg, args)
        data = await store.read_message(box.id, args.uid)
        if data is None:
            raise CLIError(f"{user.name}'s {box.name} has no message with UID {args.uid}")
        return bytes(data)

    data = run_store(cfg, fetch)
    sys.stdout.buffer.write(data)  # the stored octets, CRLF line ends, unchanged
    sys.stdout.buffer.flush()
    return 0


# --------------------------------------------------------------------------- parsers
def add_ops_commands(sub: Any, mailbox_sub: Any, with_config: WithConfig) -> None:
    """``who``, ``kick``, ``expunge``, ``fetch`` at the top; ``create|delete|rename``
    under ``mailbox``."""
    p = with_config(sub.add_parser(
        "who", help="list the running server's IMAP and POP3 sessions"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_who)

    p = with_config(sub.add_parser(
        "kick", help="disconnect every IMAP and POP3 session of a user"))
    p.add_argument("name", help="user name")
    p.set_defaults(func=cmd_kick)

    p = with_config(mailbox_sub.add_parser(
        "create", help="create a mailbox for a user (and subscribe it)"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox", help="mailbox name, '/' between levels")
    p.set_defaults(func=cmd_mailbox_create)

    p = with_config(mailbox_sub.add_parser(
        "delete", help="delete a user's mailbox and its messages"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_mailbox_delete)

    p = with_config(mailbox_sub.add_parser(
        "rename", help="rename a user's mailbox (with the mailboxes under it)"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox")
    p.add_argument("new_name", metavar="NEW")
    p.set_defaults(func=cmd_mailbox_rename)

    p = with_config(sub.add_parser(
        "expunge", help="remove a mailbox's messages received before a date or matching "
                        "an IMAP search"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=parse_date, metavar="DATE",
                       help="remove messages received (internal date) before DATE: "
                            "YYYY-MM-DD (midnight UTC) or an ISO 8601 time")
    which.add_argument("--search", metavar="QUERY",
                       help="remove messages matching QUERY, IMAP SEARCH keys as a client "
                            "sends them, e.g. 'FROM bob SEEN' or 'OR LARGER 1000000 "
                            "BEFORE 1-Jan-2024'")
    p.add_argument("--dry-run", action="store_true", help="only count them")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_expunge)

    p = with_config(sub.add_parser(
        "fetch", help="write one stored message, as stored (CRLF), to standard output"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox")
    p.add_argument("--uid", type=int, required=True, help="the message's IMAP UID")
    p.set_defaults(func=cmd_fetch)
