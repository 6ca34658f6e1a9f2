"""Decoded header texts of messages, kept per process for SEARCH.

A SEARCH on SUBJECT, FROM, HEADER or TEXT needs every candidate message's decoded header
(``mime.header_text.HeaderText``), which the store keeps as JSON beside the blob: a join
and a JSON decode per message, on every SEARCH, although a message's header never
changes. A message is named for good by its mailbox id and UID (neither is ever handed out
twice, and nothing rewrites a stored message), so a copy decoded once stays right in every
process whatever the others commit; an expunged message's entry is never asked for again
and ages out. Only the loop thread touches the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ..mime.header_text import HeaderText

# Messages whose header text is kept (least recently searched dropped first). A usual
# header decodes to a few kilobytes of Python objects: some tens of megabytes at most.
HEADER_TEXT_ENTRIES = 20_000


class HeaderTextCache:
    def __init__(self, entries: int = HEADER_TEXT_ENTRIES) -> None:
        self.entries = entries
        self._texts: OrderedDict[tuple[int, int], HeaderText] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def take(self, mailbox_id: int, uids: Iterable[int]) -> tuple[dict[int, HeaderText],
                                                                  list[int]]:
        """The texts kept of these messages, and the UIDs of those not kept."""
        found: dict[int, HeaderText] = {}
        missing: list[int] = []
        texts = self._texts
        for uid in uids:
            text = texts.get((mailbox_id, uid))
            if text is None:
                missing.append(uid)
            else:
                texts.move_to_end((mailbox_id, uid))
                found[uid] = text
        return found, missing

    def keep(self, mailbox_id: int, found: dict[int, HeaderText]) -> None:
        texts = self._texts
        for uid, text in found.items():
            texts[(mailbox_id, uid)] = text
        while len(texts) > self.entries:
            texts.popitem(last=False)
