"""SASL PLAIN (RFC 4616) and LOGIN decoding, shared by POP3 AUTH and IMAP AUTHENTICATE.

Everything here is pure: base64 text in, credentials or the next challenge out, and a
``SaslError`` (a ``ValueError``) whose message can be shown to the client. No I/O, no
logging, so a protocol decides itself how to frame challenges (``+ …`` in both POP3 and
IMAP) and never risks logging a blob that carries a password.

A protocol drives an exchange like this::

    exchange = SaslExchange.start("PLAIN", initial_response)  # bytes after base64, or None
    while isinstance(step := exchange.next_step(), bytes):
        send_challenge(encode_base64(step))
        exchange.feed(decode_response(read_line()))   # SaslCancelled on "*"
    credentials = step                                  # a Credentials
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")

# The de-facto LOGIN prompts ("Username:" / "Password:"), as every client expects them.
LOGIN_USER_PROMPT = b"Username:"
LOGIN_PASSWORD_PROMPT = b"Password:"

# Generous: RFC 4616 asks servers to accept 255 octets per field; allow more for long
# passwords but refuse absurd blobs before decoding them.
MAX_BLOB = 4096


class SaslError(ValueError):
    """A malformed SASL response; the message is safe to show to the client."""


class SaslCancelled(SaslError):
    """The client answered a challenge with ``*`` (RFC 4422 §3.5 abort)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a PLAIN or LOGIN exchange yields. ``authzid`` is "" when not requested."""

    authzid: str
    authcid: str
    password: str

    def __repr__(self) -> str:  # never show the password in a log or traceback
        return f"Credentials(authzid={self.authzid!r}, authcid={self.authcid!r}, password=***)"


def encode_base64(data: bytes) -> bytes:
    """Base64 without line breaks, for a challenge line."""
    return base64.b64encode(data)


def decode_base64(text: bytes | str) -> bytes:
    """Strict base64 (RFC 4648 alphabet, padding required, no whitespace inside)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    if len(raw) > MAX_BLOB * 4 // 3 + 4:
        raise SaslError("SASL response too long")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("Invalid base64 in SASL response") from None


def decode_response(line: bytes | str) -> bytes:
    """A client's answer to a challenge: ``*`` cancels, an empty line is an empty response."""
    raw = line.encode("ascii", "replace") if isinstance(line, str) else bytes(line)
    raw = raw.strip()
    if raw == b"*":
        raise SaslCancelled("Authentication cancelled")
    return decode_base64(raw)


def decode_initial_response(arg: bytes | str) -> bytes:
    """The optional initial response on the AUTH/AUTHENTICATE line; ``=`` means empty
    (RFC 4954 §4, RFC 5034 §4)."""
    raw = arg.encode("ascii", "replace") if isinstance(arg, str) else bytes(arg)
    if raw.strip() == b"=":
        return b""
    return decode_base64(raw)


def _utf8(field: bytes, what: str) -> str:
    if b"\x00" in field:
        raise SaslError(f"NUL in SASL {what}")
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"SASL {what} is not valid UTF-8") from None


def decode_plain(blob: bytes) -> tuple[str, str, str]:
    """RFC 4616 message ``[authzid] NUL authcid NUL passwd`` → (authzid, authcid, password).

    Raises ``SaslError`` (a ValueError) for anything but exactly three fields with a
    non-empty authcid and password, all valid UTF-8.
    """
    if len(blob) > MAX_BLOB:
        raise SaslError("SASL PLAIN message too long")
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("SASL PLAIN message must be authzid NUL authcid NUL password")
    authzid, authcid, password = (
        _utf8(parts[0], "authorization identity"),
        _utf8(parts[1], "user name"),
        _utf8(parts[2], "password"),
    )
    if not authcid:
        raise SaslError("SASL PLAIN message has an empty user name")
    if not password:
        raise SaslError("SASL PLAIN message has an empty password")
    return authzid, authcid, password


def decode_login_field(blob: bytes, what: str) -> str:
    """One LOGIN answer (user name or password): non-empty UTF-8 without NUL."""
    if len(blob) > MAX_BLOB:
        raise SaslError(f"SASL LOGIN {what} too long")
    text = _utf8(blob, what)
    if not text:
        raise SaslError(f"SASL LOGIN {what} is empty")
    return text


class SaslExchange:
    """The server side of one PLAIN or LOGIN exchange, as a tiny pure state machine.

    ``next_step()`` returns the challenge octets to send (not yet base64-encoded) while
    the exchange needs more, then the ``Credentials``. ``feed()`` takes the decoded answer.
    """

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._answers: list[bytes] = []

    @classmethod
    def start(cls, mechanism: str, initial: bytes | None = None) -> SaslExchange:
        """Begin ``mechanism`` (case-insensitive); SaslError if it is not offered."""
        mech = mechanism.upper()
        if mech not in MECHANISMS:
            raise SaslError(f"Unsupported SASL mechanism {mechanism[:20]!r}")
        exchange = cls(mech)
        if initial is not None:
            exchange.feed(initial)
        return exchange

    def feed(self, answer: bytes) -> None:
        if self._done():
            raise SaslError("Unexpected SASL response")
        self._answers.append(answer)

    def _done(self) -> bool:
        return len(self._answers) >= (1 if self.mechanism == "PLAIN" else 2)

    def next_step(self) -> bytes | Credentials:
        answers = self._answers
        if self.mechanism == "PLAIN":
            if not answers:
                return b""  # empty challenge: "send your PLAIN message"
            return Credentials(*decode_plain(answers[0]))
        if not answers:
            return LOGIN_USER_PROMPT
        user = decode_login_field(answers[0], "user name")
        if len(answers) == 1:
            return LOGIN_PASSWORD_PROMPT
        return Credentials("", user, decode_login_field(answers[1], "password"))
