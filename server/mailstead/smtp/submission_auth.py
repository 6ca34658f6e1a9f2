"""Submission's AUTH (RFC 4954) on aiosmtpd: which connections may authenticate, and
the PLAIN and LOGIN mechanisms through the login policy IMAP and POP3 use.

aiosmtpd's ``authenticator`` callable is synchronous, and a password check must not block
the loop, so these are aiosmtpd's other hook, ``auth_<MECHANISM>`` coroutines, decoding
with ``auth/sasl.py``. aiosmtpd offers every ``auth_*`` method of a handler as a SASL
mechanism, so no other method here may start with ``auth_``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from ..auth.policy import ConnectionLogins, Outcome
from ..auth.sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USER_PROMPT,
    SaslError,
    decode_initial_response,
    decode_login_field,
    decode_plain,
)
from ..config import is_loopback
from .protocol import MailsteadProtocol

log = logging.getLogger("mailstead.smtp.submission")

NEED_TLS = "538 5.7.11 Encryption required: use STARTTLS (or port 465) before AUTH"


def safe_text(text: str) -> str:
    """Client text fit for one log line or reply."""
    return repr(text[:100])[1:-1]


class MailsteadSubmission(MailsteadProtocol, SMTP):
    """aiosmtpd's SMTP with our DATA reading (``protocol``) and AUTH allowed."""

    mailstead_logins: ConnectionLogins | None = None

    async def smtp_AUTH(self, arg: str) -> None:
        handler: SubmissionAuth = self.event_handler
        if self.session is not None and self.session.host_name and not handler.may_authenticate(
            self
        ):
            await self.push(NEED_TLS)
            return
        await SMTP.smtp_AUTH(self, arg)

    def connection_lost(self, error: Exception | None) -> None:
        if self.mailstead_logins is not None:
            self.mailstead_logins.connection_closed()
        super().connection_lost(error)


def is_tls(server: Any) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def peer_ip(session: Session) -> str:
    return session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")


class SubmissionAuth:
    """The EHLO and AUTH hooks of ``SubmissionHandler``; it sets ``ctx``,
    ``plaintext_on_loopback`` and ``count``."""

    ctx: Any
    plaintext_on_loopback: bool
    count: Any

    def may_authenticate(self, server: Any) -> bool:
        if is_tls(server):
            return True
        return self.plaintext_on_loopback and is_loopback(peer_ip(server.session))

    # --- EHLO and AUTH -----------------------------------------------------------------
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO lines, with AUTH only where a password may be sent."""
        session.host_name = hostname
        if self.may_authenticate(server):
            return responses
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                blob = await server.challenge_auth("")
                if blob is MISSING:  # "*" or bad base64: aiosmtpd has answered
                    return AuthResult(success=False, handled=True)
            else:
                blob = decode_initial_response(args[1])
            authzid, authcid, password = decode_plain(blob)
        except SaslError as exc:
            await server.push(f"501 5.5.2 {exc}")
            return AuthResult(success=False, handled=True)
        return await self._login(server, authcid, password, authzid)

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                blob = await server.challenge_auth(LOGIN_USER_PROMPT)
                if blob is MISSING:
                    return AuthResult(success=False, handled=True)
            else:
                blob = decode_initial_response(args[1])
            login = decode_login_field(blob, "user name")
            blob = await server.challenge_auth(LOGIN_PASSWORD_PROMPT)
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
            password = decode_login_field(blob, "password")
        except SaslError as exc:
            await server.push(f"501 5.5.2 {exc}")
            return AuthResult(success=False, handled=True)
        return await self._login(server, login, password, "")

    async def _login(self, server: Any, login: str, password: str, authzid: str) -> AuthResult:
        ip = peer_ip(server.session)
        if server.mailstead_logins is None:
            server.mailstead_logins = self.ctx.connections.logins.connection(ip)
        logins: ConnectionLogins = server.mailstead_logins
        result = await logins.attempt(login, password, authzid)
        if result.outcome is Outcome.GONE:
            return AuthResult(success=False, handled=True)
        if result.outcome is Outcome.REFUSED:
            log.warning("submission login for %s from %s refused: %s", safe_text(login), ip,
                        result.reason)
            return AuthResult(success=False, handled=False,
                              message=f"454 4.7.0 {result.reason}")
        if result.failed or result.user is None:
            self.count("logins", protocol="submission", result="failed")
            log.warning("submission login failed for %s from %s (failure %d)", safe_text(login),
                        ip, logins.failures)
            if result.disconnect:
                await server.push("421 4.7.0 Too many failed logins, closing connection")
                server.transport.close()
                return AuthResult(success=False, handled=True)
            return AuthResult(success=False, handled=False)  # aiosmtpd's 535 5.7.8
        # Submission is no IMAP/POP3 session: [limits] max_sessions_per_user does not
        # apply, and the slot the policy took goes back at once.
        logins.release()
        self.count("logins", protocol="submission", result="ok")
        log.info("submission login ok for %s from %s", result.user.name, ip)
        return AuthResult(success=True, auth_data=result.user)
