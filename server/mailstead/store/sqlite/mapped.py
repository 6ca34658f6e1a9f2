"""A big new message read from its file through a read-only memory map.

Parsing a 40 MiB message held as ``bytes`` costs 40 MiB of the server's own memory per
delivery, and binding it to an INSERT costs two more copies inside SQLite (the bound
value and the record). Mapped, the message's pages are the kernel's page cache: read
on demand, shared with the file, dropped under memory pressure, never the server's
private memory. The parser (``mime.parse``) then runs unchanged over the map, so a big
message is parsed exactly as it would be from ``bytes``, and the writer copies it into
its blob row piece by piece (``messages.insert_blob``).

``MappedOctets`` adds the two ``bytes`` methods the parser uses that ``mmap`` lacks
(``startswith`` and ``count`` with start and end); ``find``, indexing, slicing (which
yields ``bytes``) and the buffer protocol (for ``re``) are ``mmap``'s own.
"""

from __future__ import annotations

import mmap

# A message bigger than this is mapped instead of read whole.
MAP_AT = 1024 * 1024
# Octets counted per slice in ``MappedOctets.count``: bounded memory for any range.
_COUNT_SLICE = 1024 * 1024


class MappedOctets(mmap.mmap):
    """A read-only map of a whole file that answers like ``bytes`` for the parser."""

    def startswith(self, prefix: bytes, start: int = 0, end: int | None = None) -> bool:
        start, end, _ = slice(start, end).indices(len(self))
        return end - start >= len(prefix) and self[start : start + len(prefix)] == prefix

    def count(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start, end, _ = slice(start, end).indices(len(self))
        if not sub:
            raise ValueError("count of an empty needle")  # the parser never asks it
        if len(sub) == 1:  # the parser counts line feeds: in slices, at C speed
            return sum(
                self[at : min(at + _COUNT_SLICE, end)].count(sub)
                for at in range(start, end, _COUNT_SLICE)
            )
        found, at = 0, self.find(sub, start, end)
        while at >= 0:  # non-overlapping, as bytes.count
            found += 1
            at = self.find(sub, at + len(sub), end)
        return found


def map_file(fileno: int, size: int) -> MappedOctets:
    """The first ``size`` octets of an open file, mapped read-only (``size`` > 0)."""
    return MappedOctets(fileno, size, access=mmap.ACCESS_READ)

