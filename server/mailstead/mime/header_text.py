"""The decoded top-level header of a message, as SEARCH matches it, computed at delivery.

RFC 2047 decoding is the costly part of a header search (a hostile Subject of 100,000
encoded words is 1.7 MB of them), so it is done once, when the message is stored, and
SEARCH reads the result (``blobs.search`` in the SQLite store) instead of decoding the
raw header each time. ``HeaderText`` holds exactly what the searches used to compute:

* ``values(name)`` is ``search.header_values(header, name)`` (HEADER, SUBJECT and the
  sent date): the decoded values of that field, one decode budget per field name;
* ``text()`` is the decoded header part of ``search.search_text`` (TEXT): every line of
  the header, one decode budget for the whole block;
* ``addresses(name)`` is ``address_forms`` of the envelope's from, to, cc or bcc.

Both budgets are ``encoded_words.DEFAULT_BUDGET`` characters, so the work and the stored
text stay proportional to the header. A field whose value needs the two budgets' answers
apart (only past a budget) keeps both; otherwise it is decoded once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from .encoded_words import DecodeBudget
from .headers import header_units
from .model import Address, Envelope
from .search import _guess_text, _value, decode_header_value

__all__ = ["ADDRESS_FIELDS", "HeaderText", "address_forms", "header_text"]

ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
_ENVELOPE_FIELDS = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc"}
# What mime.parse puts where the header left a part of an address out (as Dovecot does, so
# a NIL host never reads as a group start); not text of the message, so never matched.
_MISSING = (b"MISSING_MAILBOX", b"MISSING_DOMAIN")

# One header unit: (lower-case field name as latin-1, or None for a line that is no
# field; the name as written, or the whole line; the value decoded within the field
# name's budget; the value decoded within the block's budget, None when the same).
_Field = tuple[str | None, str, str | None, str | None]


def _text_of(value: bytes | None) -> str:
    if not value or value in _MISSING:
        return ""
    return value.decode("utf-8", "replace")


def address_forms(addrs: Sequence[Address]) -> list[str]:
    """The texts FROM/TO/CC/BCC match against: one per address of the envelope field.

    RFC 3501 §6.4.4 asks for a match in the envelope structure's field, not in the raw
    header, so comments, quoting and folding are gone. Like Dovecot, which matches the
    parsed address list written back out, each address reads ``name <mailbox@host>``
    (just ``mailbox@host`` without a display name) with the name RFC 2047-decoded and
    unquoted; a group contributes its name, and its members as addresses. Each address is
    matched on its own, so a search string cannot span two addresses, where Dovecot's
    comma-joined list would let it; source routes are left out, as Dovecot does.
    """
    forms: list[str] = []
    for addr in addrs:
        if addr.host is None:  # group start (mailbox = group name) or end (all None)
            if addr.mailbox:
                forms.append(decode_header_value(addr.mailbox))
            continue
        mailbox, host = _text_of(addr.mailbox), _text_of(addr.host)
        spec = f"{mailbox}@{host}" if mailbox and host else mailbox or host
        name = decode_header_value(addr.name) if addr.name else ""
        forms.append(f"{name} <{spec}>" if name else spec)
    return forms


@dataclass(frozen=True, slots=True)
class HeaderText:
    fields: tuple[_Field, ...]
    address_lists: tuple[tuple[str, ...], ...]  # in ADDRESS_FIELDS order
    whole: str | None = None  # the header as text, when splitting it failed

    def values(self, name: str) -> list[str]:
        """``search.header_values(header, name)``: decoded values of every such field."""
        wanted = name.encode("latin-1", "replace").lower().decode("latin-1")
        return [value.strip() for field, _, value, _ in self.fields
                if field == wanted and value is not None]

    def text(self) -> str:
        """The decoded header block, one line per field, as TEXT searches it."""
        if self.whole is not None:
            return self.whole
        return "\n".join(
            shown if field is None else f"{shown}: {value if whole is None else whole}"
            for field, shown, value, whole in self.fields
        )

    def addresses(self, name: str) -> list[str]:
        """``address_forms`` of the envelope field ``name`` (from, to, cc, bcc)."""
        return list(self.address_lists[ADDRESS_FIELDS.index(name)])

    def to_json(self) -> str:
        return json.dumps([1, [list(f) for f in self.fields],
                           [list(a) for a in self.address_lists], self.whole],
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> HeaderText:
        """Inverse of :meth:`to_json`; raises ValueError on anything it did not write.

        A SEARCH decodes one per message, so the shapes are checked with C-level
        iteration (``map``, ``chain``) instead of a Python call per field: 16 -> 10 us
        for a usual header, of which ``json.loads`` is 5."""
        try:
            version, fields, lists, whole = json.loads(s)
            if version != 1 or len(lists) != len(ADDRESS_FIELDS):
                raise ValueError(f"unknown header-text format {version!r}")
            units = tuple(map(tuple, fields))
            forms = tuple(map(tuple, lists))
        except ValueError:
            raise
        except Exception as exc:  # wrong shapes surface as TypeError/IndexError etc.
            raise ValueError(f"malformed header-text JSON: {exc}") from exc
        if not (all(len(u) == 4 for u in units)
                and _FIELD_TYPES.issuperset(map(type, chain.from_iterable(units)))
                and _FORM_TYPES.issuperset(map(type, chain.from_iterable(forms)))
                and (whole is None or type(whole) is str)):
            raise ValueError("malformed header-text JSON: unexpected shapes")
        return cls(units, forms, whole)


_FIELD_TYPES = frozenset({str, type(None)})
_FORM_TYPES = frozenset({str})


def _fields(header_block: bytes) -> tuple[_Field, ...]:
    budgets: dict[bytes, DecodeBudget] = {}
    block = DecodeBudget()
    out: list[_Field] = []
    for field, unit in header_units(header_block):
        if field is None:
            out.append((None, _guess_text(unit.replace(b"\r\n", b"")), None, None))
            continue
        raw = _value(unit)
        shown = _guess_text(unit[: unit.find(b":")])
        whole: str | None = None
        if b"=?" not in raw:  # nothing to decode, no budget touched
            value = decode_header_value(raw)
        else:
            own = budgets.get(field)
            if own is None:
                own = budgets[field] = DecodeBudget()
            if own.scan_limit(len(raw)) != block.scan_limit(len(raw)):
                whole = decode_header_value(raw, block)  # a budget is spent: they differ
            else:
                block.chars -= block.scan_limit(len(raw))
            value = decode_header_value(raw, own)
        out.append((field.decode("latin-1"), shown, value, whole))
    return tuple(out)


def header_text(header_block: bytes, envelope: Envelope) -> HeaderText:
    """What SEARCH matches in a message's top-level header. Never raises."""
    try:
        lists = tuple(tuple(address_forms(getattr(envelope, _ENVELOPE_FIELDS[name])))
                      for name in ADDRESS_FIELDS)
    except Exception:  # input is untrusted; delivery must not fail on it
        lists = tuple(() for _ in ADDRESS_FIELDS)
    try:
        return HeaderText(_fields(header_block), lists)
    except Exception:
        return HeaderText((), lists, _guess_text(header_block))
