"""Authentication commands: STARTTLS, LOGIN, AUTHENTICATE (SASL PLAIN and LOGIN)."""

from __future__ import annotations

from ...auth.sasl import (
    MECHANISMS,
    SaslCancelled,
    SaslError,
    SaslExchange,
    decode_response,
    encode_base64,
)
from ..response import Result, bad, no, ok
from ..session_api import Session
from ..syntax.auth import Authenticate, Login, StartTLS


async def handle_starttls(s: Session, cmd: StartTLS) -> Result | None:
    if s.ctx.tls is None:
        return no("TLS is not available")
    if s.tls_active:
        return bad("TLS is already active")
    s.out.write(ok("Begin TLS negotiation now").line(cmd.tag))
    # Anything the client pipelined after STARTTLS was sent in the clear: drop it.
    s.discard_pending_input()
    s.start_tls()
    return None


async def handle_login(s: Session, cmd: Login) -> Result | None:
    try:
        login = cmd.user.decode("utf-8")
        password = cmd.password.decode("utf-8")
    except UnicodeDecodeError:
        return bad("User name and password must be UTF-8")
    return await s.login(login, password)


async def handle_authenticate(s: Session, cmd: Authenticate) -> Result | None:
    if cmd.mechanism.upper() not in MECHANISMS:
        return no(f"Unsupported mechanism {cmd.mechanism[:20]}", "CANNOT")
    if not s.plaintext_ok:
        return no("Plaintext authentication requires TLS", "PRIVACYREQUIRED")
    try:
        exchange = SaslExchange.start(cmd.mechanism, cmd.initial_response)
        while isinstance(step := exchange.next_step(), bytes):
            s.out.write(b"+ " + encode_base64(step) + b"\r\n")
            line = await s.read_line()
            if line.too_long:
                return bad("Authentication response too long")
            exchange.feed(decode_response(line.data))
    except SaslCancelled:
        return bad("Authentication cancelled")
    except SaslError as exc:
        return bad(f"Invalid authentication data: {exc}")
    # The authzid rule, failures, throttling and session limits: auth/policy.py.
    return await s.login(step.authcid, step.password, step.authzid,
                         mech=cmd.mechanism.upper())
