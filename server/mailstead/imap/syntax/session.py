"""Session commands: CAPABILITY, NOOP, LOGOUT, ID, ENABLE, NAMESPACE, IDLE.

The argument-less ones are parsed by ``syntax/__init__.py`` (the name alone); ID and
ENABLE have their parsers here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .tokens import LPAREN, Command, Parser


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """ID (RFC 2971): field/value pairs, or None for ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None = None
    name: ClassVar[str] = "ID"


@dataclass(frozen=True, slots=True)
class Enable(Command):
    """ENABLE (RFC 5161); capability names in upper case."""

    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


def parse_id(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("ID parameters")
    if p.peek() != LPAREN:
        if p.atom("ID parameters").upper() != b"NIL":
            p.fail("Invalid ID parameters: expected a list or NIL")
        p.finish("ID parameters")
        return Id(tag, None)
    params: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = p.string("ID field name").decode("utf-8", "replace")
        p.sp("ID field value")
        value = p.nstring("ID field value")
        params.append((key, None if value is None else value.decode("utf-8", "replace")))

    p.items("ID parameters", pair, empty_ok=True)
    p.finish("ID parameters")
    return Id(tag, tuple(params))


def parse_enable(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("capability")
    caps = [p.keyword("capability")]
    while p.try_sp():
        caps.append(p.keyword("capability"))
    p.finish("capabilities")
    return Enable(tag, tuple(caps))

