"""The streaming DATA reader (issue 12 #9) against a line-by-line reference, over random
chunkings and reader limits, with commands pipelined after the data."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.mime.parse import normalise_crlf
from mailstead.smtp.dataread import DataEnd, read_data


def reference(stream: bytes, max_size: int | None, line_limit: int) -> tuple[bytes | None, int]:
    """aiosmtpd's rules, one CRLF line at a time: (content or None if refused, octets of
    ``stream`` the data took, terminator included)."""
    pos, size, refused, lines = 0, 0, False, []
    while True:
        end = stream.find(b"\r\n", pos)
        assert end >= 0, "the test streams always hold a terminator"
        line, pos = stream[pos : end + 2], end + 2
        if line == b".\r\n":
            break
        size += len(line)
        if len(line) > line_limit or (max_size and size > max_size):
            refused = True
        lines.append(line[1:] if line.startswith(b".") else line)
    return (None if refused else normalise_crlf(b"".join(lines))), pos


async def run_reader(chunks: list[bytes], limit: int, **kw: object) -> tuple[DataEnd, bytes, bytes]:
    reader = asyncio.StreamReader(limit=limit)
    got: list[bytes] = []

    async def sink(data: bytes) -> None:
        got.append(data)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    end = await read_data(reader, sink, **kw)  # type: ignore[arg-type]
    await feeder
    rest = await reader.read()  # what is left for the SMTP command loop
    return end, b"".join(got), rest


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# Lines that exercise dots, bare CR/LF, empty lines and near-terminators.
line_bits = st.sampled_from([b".", b"..", b"a", b"\r", b"\n", b"\r\n", b". ", b".\r", b"x" * 7,
                             b"\r\n.", b"\n.\r", b"\r.\n"])
body = st.lists(st.lists(line_bits, max_size=5).map(b"".join), max_size=12).map(
    lambda lines: b"".join(line + b"\r\n" for line in lines))
after = st.sampled_from([b"", b"QUIT\r\n", b"NOOP\r\nRSET\r\n", b".\r\n", b"\r\n.\r\n"])


@settings(max_examples=800, deadline=None)
@given(body, after, st.lists(st.integers(0, 400), max_size=8), st.integers(8, 40),
       st.sampled_from([None, 20, 60]), st.sampled_from([12, 30, 1001]))
def test_reader_matches_the_line_by_line_reference(
    data: bytes, trailing: bytes, cuts: list[int], limit: int, max_size: int | None,
    line_limit: int,
) -> None:
    stream = data + b".\r\n" + trailing
    expected, taken = reference(stream, max_size, line_limit)
    end, got, rest = asyncio.run(
        run_reader(split(stream, cuts), limit, max_size=max_size, line_limit=line_limit))
    assert rest == stream[taken:]  # not one octet past the terminator was read
    if expected is None:
        assert end in (DataEnd.TOO_BIG, DataEnd.LINE_TOO_LONG)
    else:
        assert end is DataEnd.COMPLETE
        assert got == expected


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\nQUIT\r\n", b""),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
        (b"bare\nlf\rcr\r\n.\r\n", b"bare\r\nlf\r\ncr\r\n"),
        (b"not\n.\nend\r\n.\r\n", b"not\r\n.\r\nend\r\n"),  # LF . LF is no terminator
    ],
)
def test_known_streams(stream: bytes, content: bytes) -> None:
    for size in (1, 2, 3, 5, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        end, got, _ = asyncio.run(run_reader(chunks, 8, max_size=None))
        assert (end, got) == (DataEnd.COMPLETE, content), size


def test_big_data_is_handed_over_in_big_pieces() -> None:
    line = b"y" * 76 + b"\r\n"
    data = line * 20_000  # 1.5 MB
    pieces: list[int] = []

    async def sink(chunk: bytes) -> None:
        pieces.append(len(chunk))

    async def run() -> DataEnd:
        reader = asyncio.StreamReader(limit=1001)
        for i in range(0, len(data), 65536):
            reader.feed_data(data[i : i + 65536])
        reader.feed_data(b".\r\n")
        return await read_data(reader, sink, max_size=None)

    assert asyncio.run(run()) is DataEnd.COMPLETE
    assert sum(pieces) == len(data)
    assert len(pieces) < 100  # not one piece per line


@pytest.mark.parametrize("long_line", [999, 1000, 1001, 1002, 1003, 2100])
@pytest.mark.parametrize("where", [0, 1, 7, 39])
def test_one_long_line_among_short_ones_in_one_piece(long_line: int, where: int) -> None:
    # A piece of many lines is checked window by window, not line by line: the one line
    # over the limit (1001 octets with CRLF) is still found wherever it sits.
    lines = [b"s" * 74 + b"\r\n"] * 40
    lines[where] = b"L" * (long_line - 2) + b"\r\n"
    data = b"".join(lines)
    end, got, _ = asyncio.run(run_reader([data + b".\r\n"], 1001, max_size=None))
    if long_line <= 1001:
        assert (end, got) == (DataEnd.COMPLETE, data)
    else:
        assert end is DataEnd.LINE_TOO_LONG


def test_too_big_drops_the_data_and_the_hard_cap_stops_reading() -> None:
    line = b"z" * 98 + b"\r\n"
    end, got, rest = asyncio.run(run_reader([line * 50, b".\r\nNOOP\r\n"], 1001,
                                            max_size=1000))
    assert (end, rest) == (DataEnd.TOO_BIG, b"NOOP\r\n")
    assert len(got) <= 1000  # what came before the limit; the caller throws it away
    end, got, _ = asyncio.run(run_reader([line * 100, b".\r\n"], 1001, max_size=1000,
                                         hard_cap=5000))
    assert end is DataEnd.HARD_CAP
