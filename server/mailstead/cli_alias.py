"""``mailstead alias add|del|list``: addresses that reach users besides their names.

``alias add ADDRESS USER [USER...]`` makes ADDRESS (``local@domain`` of a served domain,
or ``@domain``: the catch-all of that domain, for any address no user or alias has)
deliver to each USER, and lets each of them send as ADDRESS through submission. Adding
to an existing alias adds users to it. The local part follows the user-name rule
(``usernames.py``); an address that already is a user's (``name@<served domain>``) is
refused, since mail to it reaches that user and the alias would never be used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .cli_common import CLIError, find_user, load, run_store
from .usernames import UserNameError, parse_alias_address, shown_name

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _address(text: str, domains: tuple[str, ...]) -> str:
    try:
        return parse_alias_address(text, domains)
    except UserNameError as exc:
        raise CLIError(f"invalid alias address {shown_name(text.strip())}: {exc}") from None


def cmd_alias(args: argparse.Namespace) -> int:
    cfg = load(args)
    if args.action == "add":
        address = _address(args.address, cfg.domains)

        async def add(store: Any) -> Any:
            local = address.partition("@")[0]
            if local and await store.get_user(local) is not None:
                raise CLIError(f"{address} is the address of user {local}: an alias of it "
                               "would never be used")
            users = [await find_user(store, name, cfg) for name in args.users]
            return await store.add_alias(address, [u.id for u in users])

        alias = run_store(cfg, add)
        print(f"alias {alias.address} -> {', '.join(alias.users)}")
    elif args.action == "del":
        address = _address(args.address, cfg.domains)

        async def delete(store: Any) -> bool:
            return bool(await store.delete_alias(address))

        if not run_store(cfg, delete):
            raise CLIError(f"no such alias: {address}")
        print(f"alias {address} deleted")
    else:

        async def listing(store: Any) -> list[Any]:
            return list(await store.list_aliases())

        for alias in run_store(cfg, listing):
            print(f"{alias.address} {' '.join(alias.users)}")
    return 0


def add_alias_commands(sub: Any, with_config: WithConfig) -> None:
    alias = sub.add_parser("alias", help="addresses that reach users (aliases, catch-all)")
    asub = alias.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = with_config(asub.add_parser(
        "add", help="make ADDRESS (local@domain, or @domain for a catch-all) reach USERs"))
    p.add_argument("address")
    p.add_argument("users", nargs="+", metavar="USER")
    p.set_defaults(func=cmd_alias)
    p = with_config(asub.add_parser("del", help="delete an alias"))
    p.add_argument("address")
    p.set_defaults(func=cmd_alias)
    p = with_config(asub.add_parser("list", help="list aliases: ADDRESS USER..."))
    p.set_defaults(func=cmd_alias)
