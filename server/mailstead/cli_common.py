"""What every ``mailstead`` command shares: the error type, loading the config, running
a coroutine against the store, finding users by the user-name rule, and confirmations."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .config import Config, ConfigError, load_config
from .usernames import UserNameError, parse_user_name, shown_name

T = TypeVar("T")


# Exit status of a configuration that cannot be used (sysexits.h EX_CONFIG), distinct from
# 1 (anything else) so that systemd can stop restarting a server whose config is broken
# (RestartPreventExitStatus= in scripts/mailstead.service).
EXIT_CONFIG = 78


class CLIError(Exception):
    """A failure worded for the person at the terminal."""

    exit_status = 1


class ConfigFileError(CLIError):
    """The configuration file or environment is invalid."""

    exit_status = EXIT_CONFIG


def load(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise ConfigFileError(f"configuration error: {exc}") from None


def run_store(cfg: Config, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Open the configured store (as the server would), run ``fn(store)``, close it."""
    from .store import open_store
    from .store.api import StoreError

    async def main() -> T:
        # The same store, with the same limits, as the server builds.
        try:
            store = await open_store(cfg)
        except StoreError as exc:
            raise CLIError(str(exc)) from None
        try:
            return await fn(store)
        except StoreError as exc:
            raise CLIError(str(exc)) from None
        finally:
            await store.close()

    from .files import private_dir

    try:
        private_dir(cfg.data_dir)
    except OSError as exc:
        raise CLIError(f"cannot create data folder {cfg.data_dir}: {exc.strerror}") from None
    return asyncio.run(main())


def user_name(text: str, cfg: Config) -> str:
    """The account name ``text`` means under the user-name rule, or CLIError saying why."""
    try:
        return parse_user_name(text, cfg.domains)
    except UserNameError as exc:
        raise CLIError(f"invalid user name {shown_name(text.strip())}: {exc}") from None


async def find_user(store: Any, text: str, cfg: Config) -> Any:
    """The existing user ``text`` names, or CLIError.

    By the user-name rule; a user whose name predates the rule is still found by its
    exact name, so that it can be renamed away, changed or deleted.
    """
    try:
        name = parse_user_name(text, cfg.domains)
    except UserNameError as exc:
        legacy = await store.get_user(text)
        if legacy is not None and legacy.name == text.strip():
            return legacy
        raise CLIError(f"invalid user name {shown_name(text.strip())}: {exc}") from None
    user = await store.get_user(name)
    if user is None:
        raise CLIError(f"no such user: {name}")
    return user


def confirm(question: str, yes: bool, what: str) -> None:
    """Ask ``question`` on the terminal unless ``yes``; CLIError unless answered yes.

    Without a terminal (a script, a pipe) nothing is asked and the answer is no: a
    destructive command in a script must say ``--yes``.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise CLIError(f"not {what} without confirmation: no terminal to ask on, use --yes")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CLIError(f"not {what}: not confirmed")
