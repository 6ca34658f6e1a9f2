"""ChangeHub: fans committed change events out to every session watching a mailbox.

The store calls ``publish`` on the event loop after each commit, in commit order, so a
subscriber sees the batches of a mailbox in the order they happened and never sees a
rolled-back transaction. Subscribers are plain callables run synchronously on the loop;
they queue what they receive and decide themselves when to tell their client.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from .api import ChangeBatch

log = logging.getLogger(__name__)

Subscriber = Callable[[ChangeBatch], None]


class Subscription:
    """Handle returned by ``ChangeHub.subscribe``; ``close()`` ends it."""

    __slots__ = ("_callback", "_hub", "mailbox_id")

    def __init__(self, hub: ChangeHub, mailbox_id: int, callback: Subscriber) -> None:
        self._hub = hub
        self.mailbox_id = mailbox_id
        self._callback = callback

    def close(self) -> None:
        self._hub._remove(self)


class ChangeHub:
    """In-process change fan-out, one subscriber list per mailbox."""

    def __init__(self) -> None:
        self._subs: dict[int, list[Subscription]] = defaultdict(list)

    def subscribe(self, mailbox_id: int, callback: Subscriber) -> Subscription:
        sub = Subscription(self, mailbox_id, callback)
        self._subs[mailbox_id].append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.mailbox_id)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.mailbox_id]

    def publish(self, batch: ChangeBatch) -> None:
        """Deliver one committed batch to every subscriber of its mailbox."""
        # Copy: a subscriber may unsubscribe (or another subscribe) while we iterate.
        for sub in list(self._subs.get(batch.mailbox_id, ())):
            try:
                sub._callback(batch)
            except Exception:  # one broken session must not starve the others
                log.exception("change subscriber failed")
