"""Reading the data of SMTP/LMTP DATA in big pieces, with every limit applied as it arrives.

aiosmtpd's ``smtp_DATA`` reads one line per loop turn and keeps every line in a list until
the final dot, then joins them: ~3.3 times the message in memory per delivery, and a Python
iteration per line. ``read_data`` hands the message to a sink (the spool) in pieces as big
as the socket delivers, dot-unstuffed (RFC 5321 §4.5.2) and with line ends normalised to
CRLF, and stops keeping data the moment a limit is crossed.

It uses only the public ``StreamReader`` API, and never reads past the terminating
``CRLF . CRLF``, so commands pipelined after the data stay in the reader for aiosmtpd:

* Normally it asks ``readuntil(CRLF . CRLF)``. When that is not within the reader's limit
  (1001 octets in aiosmtpd) the reader raises ``LimitOverrunError`` telling how many octets
  hold no terminator, and those are taken with ``readexactly``.
* A piece may end inside a possible terminator (``CR``, ``CRLF``, ``CRLF .``, ``CRLF . CR``).
  Those octets are held back and only the octets that complete a terminator are read next
  (``readexactly``, never more than will surely come), so a terminator is never split
  unseen between two pieces. Every emitted piece therefore ends outside any ``CRLF .``,
  which makes unstuffing (``CRLF .`` -> ``CRLF``) and CRLF normalisation exact per piece.
* The data starts as if after a CRLF (the one ending the DATA command), so a message
  that is just ``. CRLF`` is empty and a leading ``..`` is unstuffed.

Line length is checked as aiosmtpd does (at most ``line_limit`` octets per line as sent,
CRLF and stuffing dot included); size counts the octets as sent, terminator excluded.
Past ``hard_cap`` octets reading stops at once: the caller answers and closes.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..mime.parse import normalise_crlf

TERMINATOR = b"\r\n.\r\n"
# Proper prefixes of the terminator, longest first: what a piece may end with mid-terminator.
_PREFIXES = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")
# aiosmtpd's limit (RFC 5321 §4.5.3.1.6: 998 octets + CRLF + a transparency dot).
LINE_LIMIT = 1001


class DataEnd(enum.Enum):
    """How the data ended."""

    COMPLETE = "complete"  # terminator seen, every octet given to the sink
    TOO_BIG = "too big"  # terminator seen; more than max_size octets, data dropped
    LINE_TOO_LONG = "line too long"  # terminator seen; a line over line_limit, data dropped
    HARD_CAP = "hard cap"  # no terminator within hard_cap octets: stop reading, close


@dataclass(slots=True)
class _State:
    max_size: int | None
    line_limit: int
    received: int = 0  # octets as sent, terminator excluded
    line_len: int = 0  # octets of the current, unfinished line
    virtual: int = 2  # octets of the virtual CRLF before the data still to be skipped
    end: DataEnd = DataEnd.COMPLETE


def _held_back(piece: bytes) -> int:
    """Octets at the end of ``piece`` that could be the start of a terminator."""
    for prefix in _PREFIXES:
        if piece.endswith(prefix):
            return len(prefix)
    return 0


def _no_long_line_between(raw: bytes, first: int, last: int, line_limit: int) -> bool:
    """Whether every line between the CRLFs at ``first`` and ``last`` is surely within
    ``line_limit``: a CRLF starts in each window of ``(line_limit + 1) // 2`` octets, so
    two CRLFs in a row are less than twice that apart. One short search per window (a
    line of mail is ~80 octets), where splitting the piece into lines would cost a bytes
    object per line; False only means "look at each line"."""
    window = (line_limit + 1) // 2
    find = raw.find
    return all(find(b"\r\n", i, i + window + 1) >= 0 for i in range(first, last, window))


def _longest_line(raw: bytes, state: _State) -> int:
    """Length (CRLF included) of the longest line finished in ``raw``, or of its first
    one when no later one can pass ``line_limit``; updates the length of the unfinished
    line. ``raw`` never ends between CR and LF."""
    last = raw.rfind(b"\r\n")
    if last < 0:
        state.line_len += len(raw)
        return 0
    first = raw.find(b"\r\n")
    longest = state.line_len + first + 2
    if (state.line_len + len(raw) > state.line_limit and last > first
            and not _no_long_line_between(raw, first, last, state.line_limit)):
        longest = max(longest, max(map(len, raw[first + 2 : last].split(b"\r\n"))) + 2)
    state.line_len = len(raw) - last - 2
    return longest


async def _emit(raw: bytes, state: _State, sink: Callable[[bytes], Awaitable[None]]) -> None:
    skip = min(state.virtual, len(raw))
    state.received += len(raw) - skip
    if state.end is not DataEnd.COMPLETE:
        return  # already refused: only the terminator is still looked for
    # An unfinished line longer than line_limit - 2 is too long once its CRLF comes.
    if _longest_line(raw, state) > state.line_limit or state.line_len > state.line_limit - 2:
        state.end = DataEnd.LINE_TOO_LONG
        return
    if state.max_size and state.received > state.max_size:
        state.end = DataEnd.TOO_BIG
        return
    # Unstuff before dropping the virtual CRLF: a dot on the first line follows it.
    data = normalise_crlf(raw.replace(b"\r\n.", b"\r\n"))
    if skip:
        data = data[skip:]
        state.virtual -= skip
    if data:
        await sink(data)


async def read_data(
    reader: asyncio.StreamReader,
    sink: Callable[[bytes], Awaitable[None]],
    *,
    max_size: int | None,
    line_limit: int = LINE_LIMIT,
    hard_cap: int | None = None,
) -> DataEnd:
    """Read DATA up to its terminator into ``sink``; see the module docstring.

    Raises ``asyncio.IncompleteReadError`` if the connection ends first.
    """
    state = _State(max_size=max_size, line_limit=line_limit)
    held = b"\r\n"  # the CRLF that ended the DATA command line (see ``virtual``)
    while True:
        if held:
            # Only what completes a terminator: it will come, whatever the client sends.
            piece = held + await reader.readexactly(len(TERMINATOR) - len(held))
        else:
            try:
                piece = await reader.readuntil(TERMINATOR)
            except asyncio.LimitOverrunError as exc:
                piece = await reader.readexactly(exc.consumed)
        if piece.endswith(TERMINATOR):
            await _emit(piece[:-3], state, sink)  # the CRLF before the dot is data
            return state.end
        keep = _held_back(piece)
        held = piece[len(piece) - keep :]
        await _emit(piece[: len(piece) - keep], state, sink)
        if hard_cap is not None and state.received > hard_cap:
            return DataEnd.HARD_CAP
