"""Mailbox name rules shared by every store backend.

Names are Unicode strings with ``/`` as the hierarchy delimiter. They never reach a file
path, but we still refuse what no client should send: empty levels, ``.``/``..`` levels,
control characters and absurd lengths, so names stay portable to Maildir on export.
"""

from __future__ import annotations

from .api import InvalidName

DELIMITER = "/"
MAX_NAME_LENGTH = 512
MAX_DEPTH = 16


def validate_mailbox_name(name: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``InvalidName`` with a reason when the name is not acceptable."""
    if not name:
        raise InvalidName("mailbox name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"mailbox name is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidName("mailbox name contains control characters")
    levels = name.split(DELIMITER)
    if len(levels) > max_depth:
        raise InvalidName(f"mailbox name is nested deeper than {max_depth} levels")
    for level in levels:
        if not level:
            raise InvalidName("mailbox name has an empty level")
        if level in (".", ".."):
            raise InvalidName("mailbox name has a '.' or '..' level")
        if level != level.strip():
            raise InvalidName("mailbox name level starts or ends with white space")
    if any(c in name for c in "*%"):
        raise InvalidName("mailbox name contains a wildcard character")
