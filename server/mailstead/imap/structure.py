"""ENVELOPE, BODY and BODYSTRUCTURE responses (RFC 3501 §7.4.2) from parsed MIME.

Media types, subtypes, parameter names, encodings and disposition types are sent in upper
case, as Dovecot and the RFC's own examples do; parameter values and everything else as
found in the message.
"""

from __future__ import annotations

from mailstead.imap.response import nstring, number, plist, string
from mailstead.mime.model import Address, BodyPart, Envelope

__all__ = ["format_address_list", "format_bodystructure", "format_envelope"]

_NIL = b"NIL"


def _raw(value: str) -> bytes:
    # Parsed MIME text fields keep 8-bit bytes as surrogate escapes; restore them exactly.
    return value.encode("utf-8", "surrogateescape")


def _address(addr: Address) -> bytes:
    return plist((nstring(addr.name), nstring(addr.adl), nstring(addr.mailbox), nstring(addr.host)))


def format_address_list(addrs: tuple[Address, ...]) -> bytes:
    """``((...)(...))`` or NIL; the grammar (``1*address``) puts no space between them."""
    if not addrs:
        return _NIL
    return b"(" + b"".join(_address(a) for a in addrs) + b")"


def format_envelope(env: Envelope) -> bytes:
    return plist((
        nstring(env.date),
        nstring(env.subject),
        format_address_list(env.from_),
        format_address_list(env.sender),
        format_address_list(env.reply_to),
        format_address_list(env.to),
        format_address_list(env.cc),
        format_address_list(env.bcc),
        nstring(env.in_reply_to),
        nstring(env.message_id),
    ))  # fmt: skip


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    """body-fld-param: ``("NAME" "value" ...)`` or NIL (an empty list is not allowed)."""
    if not params:
        return _NIL
    items: list[bytes] = []
    for name, value in params:
        items.append(string(_raw(name.upper())))
        items.append(string(_raw(value)))
    return plist(items)


def _disposition(part: BodyPart) -> bytes:
    if part.disposition is None:
        return _NIL
    kind, params = part.disposition
    return plist((string(_raw(kind.upper())), _params(params)))


def _language(part: BodyPart) -> bytes:
    if not part.language:
        return _NIL
    return plist(string(_raw(tag)) for tag in part.language)


def _tail(part: BodyPart) -> list[bytes]:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc, shared by both extension forms."""
    return [_disposition(part), _language(part), nstring(part.location)]


def format_bodystructure(part: BodyPart, *, extensible: bool) -> bytes:
    """FETCH BODY (``extensible=False``) or BODYSTRUCTURE (``True``) of a body part."""
    if part.is_multipart:
        # body-type-mpart: 1*body SP media-subtype [SP body-ext-mpart]; bodies abut.
        out = b"(" + b"".join(format_bodystructure(c, extensible=extensible) for c in part.parts)
        fields = [string(_raw(part.subtype.upper()))]
        if extensible:
            fields.append(_params(part.params))
            fields.extend(_tail(part))
        return out + b" " + b" ".join(fields) + b")"

    fields = [
        string(_raw(part.type.upper())),
        string(_raw(part.subtype.upper())),
        _params(part.params),
        nstring(part.id),
        nstring(part.description),
        string(_raw(part.encoding.upper())),
        number(part.size),
    ]
    if part.is_message and part.envelope is not None:
        # body-type-msg: ... envelope SP body SP body-fld-lines
        fields.append(format_envelope(part.envelope))
        fields.append(format_bodystructure(part.parts[0], extensible=extensible))
        fields.append(number(part.lines or 0))
    elif part.type == "text":
        fields.append(number(part.lines or 0))
    if extensible:
        fields.append(nstring(part.md5))
        fields.extend(_tail(part))
    return plist(fields)
