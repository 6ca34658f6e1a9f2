"""``mailstead import|export maildir|mbox`` and ``mailstead user import-passwd``.

Exit status: 0 when every message (or passwd line) was imported, skipped as a duplicate
or unchanged; 1 when any of them failed (each failure is one line on stderr naming the
file, and the run goes on) or when the run could not start or had to stop (one line).
Summaries go to stdout; a progress line is drawn on stderr only when it is a terminal.

This module only builds the parsers at import time; the work is imported lazily, so
``mailstead serve`` does not pay for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
EXIT_STATUS = ("exit status: 0 when everything was imported or skipped as a duplicate, 1 when "
               "anything failed (one line each on stderr; the rest is still imported)")


def add_commands(sub: Any, with_config: WithConfig) -> None:
    """Add ``import`` and ``export`` to the top-level subparsers."""
    imp = sub.add_parser("import", help="import mail from a Maildir++ or an mbox file")
    isub = imp.add_subparsers(dest="action", required=True, metavar="FORMAT")
    p = with_config(isub.add_parser(
        "maildir", help="import a Maildir++ (INBOX and all its .Folders) into a user's mail",
        epilog=EXIT_STATUS))
    p.add_argument("path", help="the Maildir (the folder with cur/ and new/)")
    p.add_argument("--user", required=True, help="the user to import into")
    p.set_defaults(func=cmd_import_maildir)

    p = with_config(isub.add_parser("mbox", help="import an mbox file into one mailbox",
                                    epilog=EXIT_STATUS))
    p.add_argument("file", help="the mbox file (mboxrd or mboxo)")
    p.add_argument("--user", required=True, help="the user to import into")
    p.add_argument("--mailbox", required=True,
                   help="the mailbox to import into (created if missing)")
    p.set_defaults(func=cmd_import_mbox)

    exp = sub.add_parser("export", help="export mail to a Maildir++ or an mbox file")
    esub = exp.add_subparsers(dest="action", required=True, metavar="FORMAT")
    p = with_config(esub.add_parser(
        "maildir", help="export all of a user's mailboxes as a Maildir++"))
    p.add_argument("path", help="a new or empty folder")
    p.add_argument("--user", required=True)
    _eol_option(p)
    p.set_defaults(func=cmd_export_maildir)

    p = with_config(esub.add_parser("mbox", help="export one mailbox as an mboxrd file"))
    p.add_argument("file")
    p.add_argument("--user", required=True)
    p.add_argument("--mailbox", required=True)
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    _eol_option(p)
    p.set_defaults(func=cmd_export_mbox)


def add_user_commands(usub: Any, with_config: WithConfig) -> None:
    """Add ``import-passwd`` under ``user``."""
    p = with_config(usub.add_parser(
        "import-passwd",
        help="create or update users from a Dovecot passwd-file (hashes are kept)",
        epilog="exit status: 0 when every line was imported, 1 when any line failed (one "
               "line each on stderr; the other lines are still imported)"))
    p.add_argument("file", help="the passwd-file ('-' for standard input)")
    p.set_defaults(func=cmd_import_passwd)


def _eol_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eol", choices=("lf", "crlf"), default="lf",
                   help="line endings of the written messages: lf (default, as Unix mail "
                        "tools write them) or crlf (the stored octets unchanged)")


# --------------------------------------------------------------------------- commands
def _run(args: argparse.Namespace, work: Callable[[Any, Any, Any], Any]) -> tuple[Any, Any]:
    """Run ``work(store, cfg, reporter)`` with the store open; MigrateError → CLIError.

    On a fatal error the counts so far are printed before the error line."""
    from .. import cli as base
    from . import MigrateError
    from .progress import Reporter

    cfg = base._load(args)
    reporter = Reporter()

    async def main(store: Any) -> Any:
        try:
            return await work(store, cfg, reporter)
        except MigrateError as exc:
            reporter.finish()
            raise base.CLIError(str(exc)) from None

    try:
        return base._run_store(cfg, main), reporter
    except base.CLIError:
        if reporter.imported or reporter.skipped or reporter.failed:
            print(f"stopped after: {reporter.summary()}")
        raise


def cmd_import_maildir(args: argparse.Namespace) -> int:
    from .maildir import import_maildir

    async def work(store: Any, cfg: Any, reporter: Any) -> None:
        await import_maildir(store, args.user, Path(args.path),
                             cfg.limits.max_message_size, reporter)

    _, reporter = _run(args, work)
    print(reporter.summary())
    return reporter.exit_status


def cmd_import_mbox(args: argparse.Namespace) -> int:
    from .mbox import import_mbox

    async def work(store: Any, cfg: Any, reporter: Any) -> None:
        await import_mbox(store, args.user, Path(args.file), args.mailbox,
                          cfg.limits.max_message_size, reporter)

    _, reporter = _run(args, work)
    print(reporter.summary())
    return reporter.exit_status


def cmd_export_maildir(args: argparse.Namespace) -> int:
    from .maildir_export import export_maildir

    async def work(store: Any, cfg: Any, reporter: Any) -> int:
        return await export_maildir(store, args.user, Path(args.path), reporter, eol=args.eol)

    folders, reporter = _run(args, work)
    print(f"exported {reporter.imported} messages in {folders} mailboxes to {args.path}"
          + (f", {reporter.failed} failed" if reporter.failed else ""))
    return reporter.exit_status


def cmd_export_mbox(args: argparse.Namespace) -> int:
    from .mbox import export_mbox

    async def work(store: Any, cfg: Any, reporter: Any) -> None:
        await export_mbox(store, args.user, args.mailbox, Path(args.file), reporter,
                          eol=args.eol, force=args.force)

    _, reporter = _run(args, work)
    print(f"exported {reporter.imported} messages to {args.file}")
    return reporter.exit_status


def cmd_import_passwd(args: argparse.Namespace) -> int:
    from ..auth.passwords import PasswordHasher
    from .passwd import import_passwd

    scheme: list[str] = []

    async def work(store: Any, cfg: Any, reporter: Any) -> Any:
        scheme.append(cfg.auth.default_scheme)
        hasher = PasswordHasher(scheme[0])
        return await import_passwd(store, args.file, hasher, cfg.domains, reporter)

    result, reporter = _run(args, work)
    for line in result.summary(reporter.failed, scheme[0]):
        print(line)
    return reporter.exit_status
