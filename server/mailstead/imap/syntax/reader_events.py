"""The events ``CommandReader`` (``reader.py``) emits: framed commands, raw lines,
continuation requests, refusals and the end of a connection's input."""

from __future__ import annotations

from dataclasses import dataclass

from .tokens import ParseError


@dataclass(frozen=True, slots=True)
class Literal:
    """The octets of one literal; ``binary`` for a ``~{n}`` literal8."""

    data: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command.

    ``lines`` holds the command text split at each literal, without CRLFs and with
    the ``{n}`` markers removed; ``literals[i]`` comes between ``lines[i]`` and
    ``lines[i + 1]``, so there is always one more line than literals. ``verb`` is the
    command name in upper case (``b"UID"`` for UID commands), for routing and limits.
    """

    tag: bytes
    lines: tuple[bytes, ...]
    literals: tuple[Literal, ...] = ()
    verb: bytes = b""

    @property
    def size(self) -> int:
        return sum(map(len, self.lines)) + sum(len(lit.data) for lit in self.literals)


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line read in :meth:`CommandReader.expect_line` mode, CRLF stripped.

    ``too_long`` means the line exceeded ``max_line`` and was discarded (``data`` is
    then empty); the session should fail the command that asked for the line.
    """

    data: bytes
    too_long: bool = False


@dataclass(frozen=True, slots=True)
class Continue:
    """Send ``+ text`` now: a synchronising literal was accepted."""

    text: str = "Ready for literal data"

    def response(self) -> bytes:
        return b"+ " + self.text.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Reject:
    """Send a tagged ``status [code] text`` and forget the command; it was never parsed."""

    tag: bytes
    text: str
    status: str = "BAD"
    code: str | None = None

    def response(self) -> bytes:
        return ParseError(self.tag, self.text, self.code, self.status).response()


@dataclass(frozen=True, slots=True)
class Fatal:
    """Input cannot be handled any more (a line or a refused literal past its hard cap,
    too much sent while held): say BYE and close. Nothing more is read."""

    text: str


ReaderEvent = RawCommand | RawLine | Continue | Reject | Fatal
