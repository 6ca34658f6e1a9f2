"""How an IMAP session reports its selected mailbox's changes to the client: before a
tagged response (``send_updates``), and pushed as they arrive while the client idles.

``SelectedMailbox`` decides what may be said (``selected.py``); this is when it is said
and how it is written. Under IDLE a push is written from one loop callback once the hub
has handed over the whole commit, with no task, lock or store call, when the view is settled
(``recent_claims.py``: 1,000 idling sessions then cost one claim); else a task waits for
the view's \\Recent claim or catch-up read first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .selected import SelectedMailbox
from .session_api import Output

if TYPE_CHECKING:
    from ..context import ServerContext

log = logging.getLogger("mailstead.imap")


class MailboxUpdates:
    """``IMAPSession``'s reporting of changes (a mixin: the state is the session's)."""

    ctx: ServerContext
    out: Output
    peer: str
    selected: SelectedMailbox | None
    idling: bool
    _push_scheduled: bool  # a push is waiting for its loop callback or its task

    if TYPE_CHECKING:  # defined by IMAPSession
        def close(self) -> None: ...

    async def send_updates(self, *, allow_expunge: bool) -> None:
        """Tell the client what changed in its selected mailbox: the view catches up with
        the store (claiming \\Recent of new mail before it is announced), then drains."""
        view = self.selected
        if view is None:
            return
        async with view.lock:
            await view.sync()
            if self.selected is view and not self.out.closed:
                self._write_updates(view, allow_expunge=allow_expunge)

    def _write_updates(self, view: SelectedMailbox, *, allow_expunge: bool,
                       now: bool = False) -> None:
        """``now``: a push under IDLE, sent at once (one ``send``) rather than with what
        else this loop iteration writes, which for a push is nothing."""
        updates = view.drain(allow_expunge=allow_expunge)
        if updates.lines:
            self.out.write(b"\r\n".join(updates.lines) + b"\r\n")
            if now:
                self.out.flush()
        if updates.gone:
            self.out.write(b"* BYE Selected mailbox was deleted, have to disconnect\r\n")
            self.close()

    def on_mailbox_change(self) -> None:
        """Hub callback: push while idling, else wait for the next command.

        The push runs once the hub has handed over the whole commit (a MOVE within the
        mailbox is two batches): at once when nothing needs the store, else in a task that
        waits for the \\Recent claim (or the catch-up read) first.
        """
        if self.idling and not self._push_scheduled and not self.out.closed:
            self._push_scheduled = True
            self.ctx.loop.call_soon(self._push_now)

    def _push_now(self) -> None:
        view = self.selected
        try:
            if view is None or not self.idling or self.out.closed:
                self._push_scheduled = False
            elif not view.lock.locked() and view.settled():
                self._push_scheduled = False
                self._write_updates(view, allow_expunge=True, now=True)
            else:
                self.ctx.loop.create_task(self._push())
        except Exception:
            self._push_failed()

    async def _push(self) -> None:
        view = self.selected
        if view is None:
            self._push_scheduled = False
            return
        try:
            async with view.lock:
                # Changes arriving from here on schedule a push of their own.
                self._push_scheduled = False
                if not self.idling or self.selected is not view or self.out.closed:
                    return  # IDLE ended: the command path reports it, at the right time
                await view.sync()
                if self.idling and self.selected is view and not self.out.closed:
                    self._write_updates(view, allow_expunge=True)
        except Exception:
            self._push_failed()

    def _push_failed(self) -> None:
        log.exception("IMAP session %s: pushing changes failed", self.peer)
        self.out.write(b"* BYE Internal server error\r\n")
        self.close()
