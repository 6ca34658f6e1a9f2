"""Helpers shared by the handler modules: the selected view, sequence sets, mailboxes."""

from __future__ import annotations

from collections.abc import Iterable

from ...store.api import Mailbox
from ..response import CommandFailed, bad, no
from ..selected import SelectedMailbox
from ..session_api import Session
from ..syntax.sequence import SequenceSet
from ..syntax.tokens import UnusableName


async def get_mailbox(s: Session, name: str) -> Mailbox | None:
    assert s.user is not None
    if isinstance(name, UnusableName):
        return None  # its text may spell a real mailbox's name: never look it up
    return await s.ctx.store.get_mailbox(s.user.id, name)


def usable_name(name: str, code: str) -> str:
    """``name``, unless the client sent no valid name (modified UTF-7, UTF-8, no control
    characters): that is good syntax, so ``NO [code]`` rather than BAD (RFC 3501 §7.1.3).
    NONEXISTENT where the mailbox must exist; CANNOT where it would be created or written
    to, since TRYCREATE would only send the client into a CREATE that must fail too."""
    if isinstance(name, UnusableName):
        raise CommandFailed(no(name.reason, code))
    return name


def view_of(s: Session) -> SelectedMailbox:
    assert s.selected is not None
    return s.selected


def resolve(view: SelectedMailbox, seqset: SequenceSet, uid: bool) -> list[int]:
    """The UIDs a command's sequence set names, in ascending order."""
    if uid:
        return seqset.matching_sorted(view.uids)
    if not view.uids:
        raise CommandFailed(bad("No messages in the mailbox"))
    for start, end in seqset.ranges:
        for n in (start, end):
            if n is not None and n > view.exists:
                raise CommandFailed(bad(f"Invalid message sequence number: {n}"))
    return [view.uids[n - 1] for n in seqset.resolve(view.exists)]


def uid_set(uids: Iterable[int]) -> bytes:
    return SequenceSet.of(uids).format()


def refuse_nil_keyword(flags: Iterable[str]) -> None:
    """Refuse ``NIL`` as a keyword (STORE, APPEND).

    ``NIL`` is an atom, so RFC 3501's grammar admits it as a flag-keyword, but client
    tokenizers turn ``NIL`` into the null value wherever it appears, as nstrings need:
    MailKit rejects ``FLAGS (NIL)`` as a syntax error, and Cyrus, which stores it, then
    hands every session of the mailbox a FLAGS line such clients cannot parse. So we
    never store it, and never send it. The command is valid syntax, so the answer is NO,
    not BAD (RFC 3501 §7.1.3 keeps BAD for syntax errors).
    """
    if any(f.upper() == "NIL" for f in flags):
        raise CommandFailed(no("NIL cannot be used as a keyword", "CANNOT"))


def require_writable(view: SelectedMailbox) -> None:
    if view.readonly:
        raise CommandFailed(no("Mailbox is read-only", "CANNOT"))
