"""Authentication commands: STARTTLS, LOGIN, AUTHENTICATE (SASL-IR, RFC 4959)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import ClassVar

from .tokens import Command, Parser


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``AUTHENTICATE mech [initial]``; the initial response (RFC 4959) is decoded.

    ``b""`` means the client sent ``=`` (an empty initial response); None means none.
    """

    mechanism: str
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: bytes
    password: bytes
    name: ClassVar[str] = "LOGIN"

def parse_authenticate(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("authentication mechanism")
    mechanism = p.keyword("authentication mechanism")
    initial = None
    if p.try_sp():
        token = p.word("initial response")  # not atom(): GSSAPI tokens exceed MAX_ATOM
        if token == b"=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(token, validate=True)
            except binascii.Error:
                p.fail("Invalid base64 in initial response")
    p.finish("initial response" if initial is not None else "mechanism")
    return Authenticate(tag, mechanism, initial)


def parse_login(p: Parser, tag: bytes, uid: bool) -> Command:
    p.sp("user name")
    user = p.astring("user name")
    p.sp("password")
    password = p.astring("password")
    p.finish("password")
    return Login(tag, user, password)

