"""The ``mailstead`` command line.

Outside tooling depends on these spellings: ``serve``, ``check``, ``user add|passwd|del|list``,
``mailbox status|create|delete|rename``, ``alias add|del|list``, ``who``, ``kick``,
``expunge``, ``fetch``, ``cert self-signed``, ``dns``, ``queue list|show|retry|delete``,
``dkim keygen``. Every failure is one clear line on stderr and a non-zero exit status,
never a traceback; ``-c FILE`` goes before or after the command. Commands that destroy
mail ask first (``--yes`` to skip; without a terminal they refuse instead). User names
follow one rule everywhere (``usernames.py``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .cli_alias import add_alias_commands
from .cli_check import cmd_check
from .cli_common import CLIError, confirm, find_user, user_name
from .cli_common import load as _load
from .cli_common import run_store as _run_store
from .cli_dns import add_dns_commands
from .cli_ops import add_ops_commands, kick_sessions
from .cli_queue import add_queue_commands
from .migrate.cli import add_commands, add_user_commands

# MAILSTEAD_CONFIG names the config file when -c is not given (the Docker image sets it).
DEFAULT_CONFIG = os.environ.get("MAILSTEAD_CONFIG", "config/mailstead.toml")
# The exit status of a command whose output pipe was closed (as if killed by SIGPIPE).
EXIT_BROKEN_PIPE = 141

__all__ = ["DEFAULT_CONFIG", "CLIError", "_load", "_run_store", "build_parser", "main"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # A session event (eventlog.py) carries its fields as keys of their own.
        entry.update(getattr(record, "mailstead_event", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # aiosmtpd logs every connection at INFO; our handlers log what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("twisted").setLevel(logging.WARNING)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CLIError("no terminal to prompt on: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CLIError("the passwords do not match")
    if not password:
        raise CLIError("the password must not be empty")
    if not password.strip():
        raise CLIError("the password must not be only white space")
    if len(password) > 1024:
        raise CLIError("the password is longer than 1024 characters")
    return password


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load(args)
    setup_logging(cfg.log.level, args.log_format or cfg.log.format)
    from .daemon import serve

    return serve(cfg)


def cmd_user(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from .auth.passwords import Argon2Params, PasswordHasher
    from .store.api import AlreadyExists, InvalidName

    auth_cfg = cfg.auth
    hasher = PasswordHasher(auth_cfg.default_scheme, argon2=Argon2Params(
        auth_cfg.argon2_memory_kib, auth_cfg.argon2_time_cost, auth_cfg.argon2_parallelism,
    ))
    if args.action == "add":
        name = user_name(args.name, cfg)

        async def add(store: Any) -> None:
            # Refused before the password is asked for, not after.
            if await store.get_user(name) is not None:
                raise CLIError(f"user {name} already exists")
            password = _read_password(args)
            try:
                await store.create_user(name, hasher.hash(password))
            except AlreadyExists:
                raise CLIError(f"user {name} already exists") from None
            except InvalidName as exc:
                raise CLIError(str(exc)) from None

        _run_store(cfg, add)
        if name != args.name.strip():
            print(f"{args.name.strip()} is the user {name}: a user receives mail at every "
                  f"domain of [server] domains and logs in as {name} or {name}@<domain>")
        print(f"user {name} added")
    elif args.action == "passwd":

        async def passwd(store: Any) -> str:
            user = await find_user(store, args.name, cfg)  # before asking, not after
            await store.set_password_hash(user.id, hasher.hash(_read_password(args)))
            return str(user.name)

        print(f"password of {_run_store(cfg, passwd)} changed")
    elif args.action == "del":

        async def delete(store: Any) -> str:
            user = await find_user(store, args.name, cfg)
            boxes = await store.list_mailboxes(user.id)
            messages = sum([(await store.mailbox_status(b.id)).messages for b in boxes])
            confirm(f"Delete user {user.name} and all their mail ({messages} message(s) in "
                    f"{len(boxes)} mailboxes)?", args.yes, f"deleting user {user.name}")
            if not await store.delete_user(user.name):
                raise CLIError(f"no such user: {user.name}")
            return str(user.name)

        name = _run_store(cfg, delete)
        print(f"user {name} deleted")
        # Sessions logged in as the user would go on with stale counts: end them.
        closed = kick_sessions(cfg, name)
        if closed:
            print(f"closed {closed} open session(s) of {name}")
    elif args.action == "list":

        async def listing(store: Any) -> list[Any]:
            return await store.list_users()

        for user in _run_store(cfg, listing):
            print(user.name)
    return 0


def cmd_mailbox_status(args: argparse.Namespace) -> int:
    cfg = _load(args)

    async def status(store: Any) -> list[Any]:
        user = await find_user(store, args.name, cfg)
        boxes = await store.list_mailboxes(user.id)
        if args.mailbox is not None:
            wanted = "INBOX" if args.mailbox.upper() == "INBOX" else args.mailbox
            boxes = [b for b in boxes if b.name == wanted]
            if not boxes:
                raise CLIError(f"no such mailbox: {args.mailbox}")
        return [await store.mailbox_status(b.id) for b in boxes]

    rows = _run_store(cfg, status)
    if args.json:
        print(json.dumps([
            {"mailbox": s.name, "messages": s.messages, "unseen": s.unseen,
             "uidvalidity": s.uidvalidity, "uidnext": s.uidnext,
             "highestmodseq": s.highestmodseq, "bytes": s.size}
            for s in rows
        ], indent=1))
        return 0
    header = ("MAILBOX", "MESSAGES", "UNSEEN", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ", "BYTES")
    table = [header] + [
        (s.name, str(s.messages), str(s.unseen), str(s.uidvalidity), str(s.uidnext),
         str(s.highestmodseq), str(s.size))
        for s in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    from .tls import generate_self_signed

    out = Path(args.out)
    cert, key = out / "cert.pem", out / "key.pem"
    if (cert.exists() or key.exists()) and not args.force:
        raise CLIError(f"{cert} or {key} exists; use --force to replace them")
    try:
        ca = generate_self_signed(cert, key, args.hostname, domains=args.domain)
    except OSError as exc:
        raise CLIError(f"cannot write certificates in {out}: {exc.strerror}") from None
    print(f"certificate chain: {cert}\nkey: {key}\nCA to trust in clients: {ca}\n"
          "The CA may only vouch for the names in the certificate (X.509 name constraints) "
          "and its private key was not kept: for other names, generate a new pair.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailstead", description="Mailstead: IMAP4 and POP3 over one shared mailbox store"
    )
    parser.add_argument("--version", action="version", version=f"mailstead {__version__}")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default: {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # SUPPRESS: a -c given before the command stays unless one is given after it.
        p.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help=f"configuration file (default: {DEFAULT_CONFIG})")
        return p

    p = with_config(sub.add_parser("serve", help="run the server in the foreground"))
    p.add_argument("--log-format", choices=("text", "json"), default=None)
    p.set_defaults(func=cmd_serve)

    p = with_config(sub.add_parser(
        "check", help="check the config and everything serve needs, print the listeners"))
    p.set_defaults(func=cmd_check)

    user = sub.add_parser("user", help="manage users")
    usub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "add a user"), ("passwd", "change a user's password")):
        p = with_config(usub.add_parser(action, help=text))
        p.add_argument("name", help="user name: letters, digits, '.', '_', '-' (NAME@DOMAIN "
                                    "of a served domain means NAME)")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
        p.set_defaults(func=cmd_user)
    p = with_config(usub.add_parser("del", help="delete a user and all their mail"))
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_user)
    p = with_config(usub.add_parser("list", help="list users"))
    p.set_defaults(func=cmd_user)
    add_user_commands(usub, with_config)

    mailbox = sub.add_parser("mailbox", help="inspect and manage mailboxes")
    msub = mailbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = with_config(msub.add_parser("status", help="message counts and state per mailbox"))
    p.add_argument("name", help="user name")
    p.add_argument("mailbox", nargs="?", help="one mailbox (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_mailbox_status)
    add_ops_commands(sub, msub, with_config)

    cert = sub.add_parser("cert", help="TLS certificates")
    csub = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser("self-signed", help="write a CA and a leaf certificate for HOSTNAME")
    p.add_argument("--hostname", required=True)
    p.add_argument("--domain", action="append", default=[],
                   help="a mail domain whose autoconfig. and autodiscover. names the "
                        "certificate should carry (repeatable)")
    p.add_argument("--out", default="data/tls", help="folder for cert.pem and key.pem")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_cert)
    add_alias_commands(sub, with_config)
    add_dns_commands(sub, with_config)
    add_commands(sub, with_config)
    add_queue_commands(sub, with_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return status
    except CLIError as exc:
        print(f"mailstead: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("mailstead: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mailstead user list | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not fail once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
