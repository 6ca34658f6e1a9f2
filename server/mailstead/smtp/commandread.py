"""The StreamReader our SMTP/LMTP protocols read commands with: an over-long command line
is answered the moment it passes the reader's limit, not when (if ever) its LF comes.

aiosmtpd reads a command with ``readuntil()`` (separator LF). When the line passes the
reader's limit (``line_length_limit``, 1001 octets) it gets ``LimitOverrunError``, drops
those octets and keeps calling ``readuntil()`` until the LF arrives, and only then answers
``500 Command line too long``. A client that never sends the LF gets no answer at all, and
the connection is held for as long as it keeps sending.

``CommandLineReader`` changes only that command-line case (``readuntil`` with LF; DATA
reads with its own separator and is untouched):

* the overrun is raised as before, so aiosmtpd drops the head of the line;
* its next ``readuntil()`` then gets a bare LF at once: to aiosmtpd the line has ended,
  and it answers 500 right away;
* the rest of the line, up to its LF, is then dropped as it arrives (at most one reader
  limit of it is buffered at a time), before the next command is read;
* when one line passes ``hard_cap`` octets, ``on_hard_cap`` is called (the protocol says
  goodbye and closes) and reading stops until the connection is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

LF = b"\n"
# Octets of a single over-long command line read (and dropped) before the connection is
# closed: as the IMAP and POP3 readers do (MIN_LINE_HARD_CAP).
LINE_HARD_CAP = 1024 * 1024


class CommandLineReader(asyncio.StreamReader):
    """See the module docstring."""

    def __init__(
        self,
        *,
        limit: int,
        on_hard_cap: Callable[[], None],
        hard_cap: int = LINE_HARD_CAP,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(limit=limit, loop=loop)
        self.line_limit = limit
        self.on_hard_cap = on_hard_cap
        self.hard_cap = hard_cap
        self._end_owed = False  # the caller was told of an overrun and owes a line end
        self._dropping = False  # inside an over-long line: drop up to its LF first

    async def readuntil(self, separator: Any = LF) -> bytes:
        if separator != LF:
            return await super().readuntil(separator)
        if self._end_owed:
            self._end_owed = False
            return LF
        if self._dropping:
            await self._drop_rest_of_line()
        try:
            return await super().readuntil(LF)
        except asyncio.LimitOverrunError:
            self._end_owed = self._dropping = True
            raise

    async def _drop_rest_of_line(self) -> None:
        dropped = self.line_limit  # about the head, already dropped by the caller
        while True:
            try:
                await super().readuntil(LF)
                break
            except asyncio.LimitOverrunError as overrun:
                dropped += len(await self.read(overrun.consumed))
            if dropped > self.hard_cap:
                self.on_hard_cap()
                # The connection is closing; its loss cancels whoever reads.
                await asyncio.get_running_loop().create_future()
        self._dropping = False
