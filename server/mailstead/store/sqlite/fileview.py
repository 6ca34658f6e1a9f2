"""A big new message read from its file in bounded windows, for the parser and the writer.

Parsing a 40 MiB message held as ``bytes`` costs 40 MiB of the server's own memory per
delivery, and binding it to an INSERT costs two more copies inside SQLite (the bound
value and the record). ``FileOctets`` answers the parser (``mime.parse``) like ``bytes``
does — ``find``, ``count`` and ``startswith`` with start and end, indexing, slicing,
``len`` — by reading the file with ``os.pread`` one window at a time, so the parser runs
unchanged over a big message and never holds more than a window of it (and the slices it
asks for: header blocks). The writer then copies it into its blob row piece by piece
(``messages.insert_blob``).

Not a memory map: the spool's pages are still dirty in the page cache when the message is
stored, and mapped they would count as the server's private memory until written back.
"""

from __future__ import annotations

import os

# A message bigger than this is read in windows instead of whole.
WINDOW_AT = 1024 * 1024
WINDOW = 1024 * 1024  # octets a scan (find, count) reads at once
READ_AHEAD = 64 * 1024  # octets read for a small request, for the ones near it


class FileOctets:
    """The first ``size`` octets of an open file, read-only, bytes-like (see above).

    Owns ``fileno`` (a duplicate the caller made) and closes it in ``close``."""

    __slots__ = ("_at", "_fileno", "_size", "_window")

    def __init__(self, fileno: int, size: int) -> None:
        self._fileno = fileno
        self._size = size
        self._at = 0  # file offset of the cached window
        self._window = b""

    def close(self) -> None:
        if self._fileno >= 0:
            os.close(self._fileno)
            self._fileno = -1
        self._window = b""

    def __len__(self) -> int:
        return self._size

    def _bounds(self, start: int, end: int | None) -> tuple[int, int]:
        start, end, _ = slice(start, end).indices(self._size)
        return start, max(start, end)

    def _range(self, start: int, end: int) -> bytes:
        """Octets [start, end) of the file (0 <= start <= end <= size)."""
        at, window = self._at, self._window
        if at <= start and end <= at + len(window):
            return window[start - at : end - at]
        if end - start > WINDOW:  # a big slice (a header block): read as asked, not kept
            return read_range(self._fileno, start, end - start)
        stop = min(self._size, start + max(end - start, READ_AHEAD))
        self._at, self._window = start, read_range(self._fileno, start, stop - start)
        return self._window[: end - start]

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError("FileOctets slices have no step")
            return self._range(*self._bounds(key.start or 0, key.stop))
        if key < 0:
            key += self._size
        if not 0 <= key < self._size:
            raise IndexError("index out of range")
        return self._range(key, key + 1)[0]

    def startswith(self, prefix: bytes, start: int = 0, end: int | None = None) -> bool:
        start, end = self._bounds(start, end)
        return end - start >= len(prefix) and self._range(start, start + len(prefix)) == prefix

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start, end = self._bounds(start, end)
        if not sub:
            return start
        at = start
        while at + len(sub) <= end:
            stop = min(end, at + max(WINDOW, 2 * len(sub)))  # always moves on
            found = self._range(at, stop).find(sub)
            if found >= 0:
                return at + found
            if stop == end:
                break
            at = stop - len(sub) + 1  # a match may straddle the window's end
        return -1

    def count(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start, end = self._bounds(start, end)
        if not sub:
            raise ValueError("count of an empty needle")  # the parser never asks it
        if len(sub) == 1:  # the parser counts line feeds: per window, at C speed
            return sum(
                self._range(at, min(at + WINDOW, end)).count(sub)
                for at in range(start, end, WINDOW)
            )
        found, at = 0, self.find(sub, start, end)
        while at >= 0:  # non-overlapping, as bytes.count
            found += 1
            at = self.find(sub, at + len(sub), end)
        return found


def read_range(fileno: int, offset: int, length: int) -> bytes:
    """``length`` octets of an open file from ``offset`` (the file holds them)."""
    parts: list[bytes] = []
    got = 0
    while got < length:  # a short read (a signal) is rare
        more = os.pread(fileno, length - got, offset + got)
        if not more:
            raise OSError(f"message file ended after {offset + got} octets")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
