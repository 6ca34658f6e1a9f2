"""What parsing a message yields (addresses, envelope, body parts) and its JSON form, as
stored next to each message. The conventions of the values are in ``parse.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- data model


@dataclass(frozen=True, slots=True)
class Address:
    """One IMAP address structure (RFC 3501 §7.4.2).

    A group start is ``(None, None, b"group name", None)`` and a group end is all None.
    """

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


@dataclass(frozen=True, slots=True)
class Envelope:
    date: bytes | None
    subject: bytes | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: bytes | None
    message_id: bytes | None


@dataclass(frozen=True, slots=True)
class BodyPart:
    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    id: bytes | None
    description: bytes | None
    encoding: str
    size: int
    lines: int | None
    md5: bytes | None
    disposition: tuple[str, tuple[tuple[str, str], ...]] | None
    language: tuple[str, ...] | None
    location: bytes | None
    header_start: int
    header_end: int
    body_start: int
    body_end: int
    parts: tuple[BodyPart, ...]
    envelope: Envelope | None

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart" and bool(self.parts)

    @property
    def is_message(self) -> bool:
        """True for a message/rfc822 part whose encapsulated message was parsed."""
        return (
            self.type == "message"
            and self.subtype == "rfc822"
            and self.envelope is not None
            and len(self.parts) == 1
        )

    def param(self, name: str) -> str | None:
        """The first Content-Type parameter called ``name`` (case-insensitive)."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    envelope: Envelope
    root: BodyPart

    def to_json(self) -> str:
        """Compact JSON (positional arrays, bytes as latin-1 text) for the message store."""
        return json.dumps(
            [1, _env_to_obj(self.envelope), _part_to_obj(self.root)], separators=(",", ":")
        )

    @classmethod
    def from_json(cls, s: str) -> ParsedMessage:
        """Inverse of :meth:`to_json`; raises ValueError on anything it did not write."""
        try:
            version, env, root = json.loads(s)
            if version != 1:
                raise ValueError(f"unknown parsed-message format {version!r}")
            return cls(_env_from_obj(env), _part_from_obj(root))
        except ValueError:
            raise
        except Exception as exc:  # wrong shapes surface as TypeError/IndexError etc.
            raise ValueError(f"malformed parsed-message JSON: {exc}") from exc


# --------------------------------------------------------------------------- JSON codec
# Bytes go through latin-1, which maps every byte to one code point and back losslessly.


def _b2j(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _j2b(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _addrs_to_obj(addrs: tuple[Address, ...]) -> list[list[str | None]]:
    return [[_b2j(a.name), _b2j(a.adl), _b2j(a.mailbox), _b2j(a.host)] for a in addrs]


def _addrs_from_obj(obj: list[list[str | None]]) -> tuple[Address, ...]:
    return tuple(Address(_j2b(n), _j2b(a), _j2b(m), _j2b(h)) for n, a, m, h in obj)


def _env_to_obj(env: Envelope) -> list[Any]:
    return [
        _b2j(env.date), _b2j(env.subject),
        _addrs_to_obj(env.from_), _addrs_to_obj(env.sender), _addrs_to_obj(env.reply_to),
        _addrs_to_obj(env.to), _addrs_to_obj(env.cc), _addrs_to_obj(env.bcc),
        _b2j(env.in_reply_to), _b2j(env.message_id),
    ]  # fmt: skip


def _env_from_obj(obj: list[Any]) -> Envelope:
    date, subject, frm, sender, reply_to, to, cc, bcc, irt, mid = obj
    return Envelope(
        _j2b(date), _j2b(subject),
        _addrs_from_obj(frm), _addrs_from_obj(sender), _addrs_from_obj(reply_to),
        _addrs_from_obj(to), _addrs_from_obj(cc), _addrs_from_obj(bcc),
        _j2b(irt), _j2b(mid),
    )  # fmt: skip


def _part_to_obj(p: BodyPart) -> list[Any]:
    # str fields may hold lone surrogates (surrogateescape); json escapes them as \udcXX
    # and reads them back unchanged.
    disp = (
        None if p.disposition is None else [p.disposition[0], [list(kv) for kv in p.disposition[1]]]
    )
    return [
        p.type, p.subtype, [list(kv) for kv in p.params], _b2j(p.id), _b2j(p.description),
        p.encoding, p.size, p.lines, _b2j(p.md5), disp,
        None if p.language is None else list(p.language), _b2j(p.location),
        p.header_start, p.header_end, p.body_start, p.body_end,
        [_part_to_obj(c) for c in p.parts],
        None if p.envelope is None else _env_to_obj(p.envelope),
    ]  # fmt: skip


def _part_from_obj(o: list[Any]) -> BodyPart:
    (type_, subtype, params, id_, desc, enc, size, lines, md5, disp, lang, loc,
     hs, he, bs, be, parts, env) = o  # fmt: skip
    return BodyPart(
        type=type_,
        subtype=subtype,
        params=tuple((k, v) for k, v in params),
        id=_j2b(id_),
        description=_j2b(desc),
        encoding=enc,
        size=size,
        lines=lines,
        md5=_j2b(md5),
        disposition=None if disp is None else (disp[0], tuple((k, v) for k, v in disp[1])),
        language=None if lang is None else tuple(lang),
        location=_j2b(loc),
        header_start=hs,
        header_end=he,
        body_start=bs,
        body_end=be,
        parts=tuple(_part_from_obj(c) for c in parts),
        envelope=None if env is None else _env_from_obj(env),
    )
