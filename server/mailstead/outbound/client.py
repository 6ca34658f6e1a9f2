"""The SMTP client that hands queued mail to a remote MX or to the smarthost.

It is the standard library's ``smtplib``, run on the outbound threads (``queue.py``), not
an asyncio client: smtplib is complete and long-tested for exactly this (EHLO with HELO
fallback, STARTTLS, AUTH PLAIN/LOGIN, dot-stuffing, one reply per RCPT), it is already
there, and a delivery is a handful of round trips per message, so a thread per active
destination costs nothing the loop would notice. The loop never waits on it: each call
below is blocking and is run with ``run_in_executor``; one ``Session`` is only ever used
by one thread at a time.

Towards an MX, TLS is opportunistic: STARTTLS when offered, the certificate not checked,
plain text once more when the handshake fails (RFC 7435; MTA-STS and DANE, which make it
checkable and required, are for later). Towards the
smarthost, TLS is as configured and verified by default, and the password is only ever
sent inside TLS.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


class SessionFailure(Exception):
    """The connection could not be set up or was lost: try the next host, or defer."""


class TLSFailure(SessionFailure):
    """STARTTLS was offered but failed. With opportunistic TLS the caller connects once
    more without it (RFC 7435 §3: TLS where it works, never less delivery than without),
    as Postfix does at its "may" level; with a required TLS it is a failure."""


def _reply(code: int, text: bytes | str) -> Reply:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return Reply(code, " ".join(text.split()))


def _tls_context(verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Target:
    """How to reach one host: ``tls`` is "opportunistic" (an MX), or the smarthost's
    "starttls" (required), "implicit" (port 465 style) or "none"."""

    name: str
    address: str
    port: int
    tls: str = "opportunistic"
    verify: bool = False
    ca_file: str | None = None
    username: str = ""
    password: str = ""

    def __str__(self) -> str:
        return self.name if self.name == self.address else f"{self.name}[{self.address}]"


class Session:
    """One open SMTP connection; several messages may go over it, one after another."""

    def __init__(self, smtp: smtplib.SMTP, target: Target, tls: bool) -> None:
        self.smtp = smtp
        self.target = target
        self.tls = tls

    @classmethod
    def open(cls, target: Target, *, helo: str, connect_timeout: float,
             command_timeout: float) -> Session:
        """Connect, greet, STARTTLS and AUTH as ``target`` says (blocking)."""
        smtp: smtplib.SMTP
        if target.tls == "implicit":
            smtp = smtplib.SMTP_SSL(local_hostname=helo, timeout=connect_timeout,
                                    context=_tls_context(target.verify, target.ca_file))
        else:
            smtp = smtplib.SMTP(local_hostname=helo, timeout=connect_timeout)
        # The name TLS sends as SNI and checks the certificate against. smtplib takes it
        # only from a constructor that also connects, to the name, while we connect to
        # an address we resolved ourselves.
        smtp._host = target.name  # type: ignore[attr-defined]
        try:
            code, text = smtp.connect(target.address, target.port)
            if smtp.sock is not None:
                smtp.sock.settimeout(command_timeout)
            if code != 220:
                raise SessionFailure(f"greeting: {_reply(code, text)}")
            smtp.ehlo_or_helo_if_needed()
            tls = target.tls == "implicit"
            if target.tls in ("opportunistic", "starttls") and smtp.has_extn("starttls"):
                try:  # (TLS 1.3 may report a refused handshake only at the next read)
                    smtp.starttls(context=_tls_context(target.verify, target.ca_file))
                    smtp.ehlo()
                except (OSError, smtplib.SMTPException) as exc:
                    raise TLSFailure(f"STARTTLS failed: {type(exc).__name__}: {exc}") from None
                tls = True
            elif target.tls == "starttls":
                raise SessionFailure(f"{target} does not offer STARTTLS ([relay] tls)")
            if target.username:
                if not tls:  # (config refuses this; never send a password in the clear)
                    raise SessionFailure("not sending the relay password without TLS")
                try:
                    _login(smtp, target)
                except smtplib.SMTPAuthenticationError as exc:
                    raise SessionFailure(
                        f"AUTH refused by {target}: {_reply(exc.smtp_code, exc.smtp_error)}"
                    ) from None
        except SessionFailure:
            _close(smtp)
            raise
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            _close(smtp)
            raise SessionFailure(f"{type(exc).__name__}: {exc}") from None
        return cls(smtp, target, tls)

    def send(self, mail_from: str, recipients: list[str], data: bytes) -> dict[str, Reply]:
        """One transaction: the reply that decided each recipient's fate (blocking).

        Raises SessionFailure when the connection breaks; then nothing is known to have
        been accepted (a reply to the final dot that never came is no acceptance)."""
        smtp = self.smtp
        options: list[str] = []
        if smtp.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        if smtp.has_extn("8bitmime") and any(b > 0x7F for b in data):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in [mail_from, *recipients]):
            if not smtp.has_extn("smtputf8"):  # RFC 6531 §3.5: it cannot be sent there
                return dict.fromkeys(recipients, Reply(
                    553, f"5.6.7 {self.target} does not take non-ASCII addresses (SMTPUTF8)"))
            options.append("SMTPUTF8")
        try:
            code, text = smtp.mail(mail_from, options)
            if code // 100 != 2:
                self._reset()
                refused = _reply(code, text)
                return dict.fromkeys(recipients, refused)
            replies: dict[str, Reply] = {}
            accepted: list[str] = []
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                replies[rcpt] = _reply(code, text)
                if code // 100 == 2:
                    accepted.append(rcpt)
            if not accepted:
                self._reset()
                return replies
            try:
                final = _reply(*smtp.data(data))
            except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                final = _reply(exc.smtp_code, exc.smtp_error)
                self._reset()
            for rcpt in accepted:
                replies[rcpt] = final
            return replies
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            raise SessionFailure(f"{type(exc).__name__}: {exc}") from None

    def _reset(self) -> None:
        code, _ = self.smtp.rset()
        if code != 250:
            raise SessionFailure(f"RSET answered {code}")

    def abort(self) -> None:
        """Break the connection from another thread: a blocked read fails at once."""
        sock = self.smtp.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (OSError, ValueError, smtplib.SMTPException):
            pass
        _close(self.smtp)


def _login(smtp: smtplib.SMTP, target: Target) -> None:
    """AUTH with one mechanism, PLAIN or else LOGIN: unlike ``smtplib.login``, never a
    second try of a refused password with another mechanism (providers count those)."""
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
    if mechanism is None:
        raise SessionFailure(f"{target} offers neither AUTH PLAIN nor LOGIN")
    smtp.user, smtp.password = target.username, target.password
    method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
    smtp.auth(mechanism, method)


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass
