"""One rule for user names: what ``user add``, ``user import-passwd``, logins and delivery
accept as the name of an account.

An account's name is a mail local part: ``alice`` receives ``alice@<every served domain>``
(and ``alice+tag@…``) and logs in as ``alice`` or ``alice@<a served domain>``. So a name
may be given with one of the ``[server] domains``, which is dropped (``alice@example.org``
means ``alice``); any other domain is refused, because no login or delivery could ever
reach that account. The name itself is a dot-atom of letters, digits, ``.``, ``_`` and
``-``: nothing a shell, a path (``/``), an IMAP quoted string or a log line could
misread, and no ``+``, which delivery reads as the start of a subaddress. Names compare
case-insensitively (the store's rule); the case given is kept for display.

Pure functions only: no store, no configuration object.
"""

from __future__ import annotations

import re
from collections.abc import Collection

# RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
MAX_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class UserNameError(ValueError):
    """Why a text is not a user name, worded for the operator who typed it."""


def parse_user_name(text: str, domains: Collection[str]) -> str:
    """The account name ``text`` stands for, or ``UserNameError`` saying why it is none.

    ``domains`` are the served mail domains (lower case). Surrounding white space is
    ignored, as logins have always done. The error's text does not repeat ``text``:
    callers name it in their own words (``invalid user name 'x': …``).
    """
    given = text.strip()
    if not given:
        raise UserNameError("it is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in given):
        raise UserNameError("it contains control characters")
    name = given
    if "@" in given:
        name, _, domain = given.rpartition("@")
        if domain.lower() not in domains:
            raise UserNameError(
                f"domain {domain} is not one of this server's domains ([server] domains)"
            )
        if not name:
            raise UserNameError("nothing comes before the @")
    if len(name) > MAX_LENGTH:
        raise UserNameError(f"it is longer than {MAX_LENGTH} characters")
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise UserNameError(
                f"{shown} cannot be in a user name (letters, digits, '.', '_' and '-' can)"
            )
        raise UserNameError("a user name cannot start or end with '.' or contain '..'")
    return name


def shown_name(text: str) -> str:
    """``text`` as it can be printed in one line of an error message."""
    return text if text.isprintable() else repr(text)


def resolve_user_name(text: str, domains: Collection[str]) -> str | None:
    """``parse_user_name`` for logins and addresses: None instead of an error."""
    try:
        return parse_user_name(text, domains)
    except UserNameError:
        return None


def parse_alias_address(text: str, domains: Collection[str]) -> str:
    """An alias address as the store keeps it: ``local@domain`` in lower case, or
    ``@domain`` for the domain's catch-all; ``UserNameError`` saying why it is none.

    The domain must be one of ``domains`` (mail to others never reaches us); the local
    part follows the user-name rule, so an alias is an address a user could have had.
    """
    given = text.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in given):
        raise UserNameError("an address cannot contain spaces or control characters")
    local, at, domain = given.rpartition("@")
    if not at or not domain:
        raise UserNameError("an alias is local@domain, or @domain for a catch-all")
    domain = domain.lower()
    if domain not in domains:
        raise UserNameError(
            f"domain {shown_name(domain)} is not one of this server's domains "
            "([server] domains)"
        )
    if not local:
        return f"@{domain}"
    if "+" in local:
        raise UserNameError("'+' starts a subaddress (name+tag) and cannot be in an alias")
    return f"{parse_user_name(local, ()).lower()}@{domain}"
