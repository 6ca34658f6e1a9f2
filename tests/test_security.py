"""Security: login throttling, limits, a full store, TLS on every protocol, certificate reload."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import poplib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from conftest import BASE_CONFIG, ServerProcess
from mailstead.auth.throttle import LoginThrottle
from mailstead.auth.users import Authenticator


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_delays_grow_exponentially_and_are_capped() -> None:
    clock = FakeClock()
    t = LoginThrottle(base_delay=0.5, max_delay=4.0, burst=100, clock=clock)
    assert [t.failure("10.0.0.1", "bob") for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    # Another address guessing the same user is slowed by the user's count too.
    assert t.failure("10.0.0.2", "BOB") == 4
    # An unrelated address and user are not slowed at all.
    assert t.failure("10.0.0.3", "carol") == 0.5
    # Failures are forgotten after the window.
    clock.now += 301
    assert t.failure("10.0.0.1", "bob") == 0.5


def test_throttle_blocks_an_address_after_a_burst_for_a_while() -> None:
    clock = FakeClock()
    t = LoginThrottle(burst=3, block=60, clock=clock)
    for _ in range(3):
        assert not t.blocked("10.0.0.9")
        t.failure("10.0.0.9", f"user{clock.now}")
        clock.now += 1
    assert t.blocked("10.0.0.9")
    assert not t.blocked("10.0.0.10")
    clock.now += 61
    assert not t.blocked("10.0.0.9")


def test_success_clears_the_users_failures_not_the_addresses() -> None:
    t = LoginThrottle(burst=100, clock=FakeClock())
    t.failure("10.0.0.1", "bob")
    t.failure("10.0.0.1", "bob")
    t.success("10.0.0.1", "bob")
    assert t.failure("10.0.0.2", "bob") == 0.5
    assert t.failure("10.0.0.1", "other") == 2  # third failure of that address


def test_wrong_user_costs_a_password_check_like_a_wrong_password() -> None:
    """Equal timing by construction: an unknown user still verifies (a dummy hash)."""
    calls: list[str | None] = []

    class Hasher:
        async def verify_async(self, password: str, stored: str | None):
            calls.append(stored)
            return False, None

    class Store:
        async def get_user(self, name: str):
            return None

    auth = Authenticator(Store(), Hasher(), ["example.org"],  # type: ignore[arg-type]
                         throttle=LoginThrottle(base_delay=0.0))
    assert asyncio.run(auth.check("nobody", "pw", "10.1.1.1")) is None
    assert calls == [None]  # PasswordHasher.verify spends the time on its dummy hash


THROTTLED = BASE_CONFIG + """
[auth]
failure_delay = 0.05
failure_delay_max = 0.2
failure_burst = 3
failure_block_seconds = 60
throttle_loopback = true
"""


def imap_from(port: int, source: str) -> imaplib.IMAP4:
    """An IMAP client whose connection comes from ``source`` (another loopback address)."""

    class Bound(imaplib.IMAP4):
        def _create_socket(self, timeout):  # type: ignore[no-untyped-def]
            return socket.create_connection((self.host, self.port), timeout,
                                             source_address=(source, 0))

    return Bound("127.0.0.1", port, timeout=10)


def test_a_guessing_address_is_blocked_without_slowing_others(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, THROTTLED).start()
    try:
        srv.add_user("victim", "right-password")
        attacker = imap_from(srv.port("imap"), "127.0.0.2")
        for i in range(3):
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                attacker.login("victim", f"guess-{i}")
        # The third failure ended that connection ([auth] max_failures_per_connection);
        # the address is blocked now, even with the right password, before any check.
        attacker.shutdown()
        attacker = imap_from(srv.port("imap"), "127.0.0.2")
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            attacker.login("victim", "right-password")
        pop = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
        pop.sock.close()
        # The legitimate user from another address logs in at once.
        start = time.perf_counter()
        good = imap_from(srv.port("imap"), "127.0.0.3")
        good.login("victim", "right-password")
        assert time.perf_counter() - start < 5
        good.logout()
        attacker.shutdown()
        log = srv.log_text()
        # Passwords never reach the log; each failure is one line with the address.
        assert "guess-" not in log and "right-password" not in log
        failed = [x for x in log.splitlines() if " imap login_failed " in x]
        assert sum("remote=127.0.0.2:" in x and "user=victim" in x for x in failed) == 3
    finally:
        srv.stop()


def test_pop3_blocked_address_gets_sys_temp(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, THROTTLED).start()
    try:
        srv.add_user("pat", "pw")
        for i in range(3):
            p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
            p.user("pat")
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                p.pass_(f"bad{i}")
            p.close()
        p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
        p.user("pat")
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.pass_("pw")
        p.close()
        blob = base64.b64encode(b"\0pat\0sasl-secret").decode()
        p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
        with pytest.raises(poplib.error_proto):
            p._shortcmd(f"AUTH PLAIN {blob}")
        p.close()
        log = srv.log_text()
        assert "sasl-secret" not in log and blob not in log and "bad0" not in log
    finally:
        srv.stop()


BODY = (b"x" * 998 + b"\r\n") * 60

LIMITED = BASE_CONFIG.replace("[limits]\n", """[limits]
max_mailboxes_per_user = 10
max_mailbox_depth = 3
max_store_bytes = 700000
""")


def test_mailbox_limits_and_a_full_store(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, LIMITED).start()
    try:
        srv.add_user("fill", "pw")
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
        imap.login("fill", "pw")
        assert imap.create("a/b/c")[0] == "OK"  # creates a and a/b too (RFC 3501 §6.3.3)
        typ, data = imap.create("a/b/c/d")
        assert typ == "NO" and b"deeper" in data[0]
        assert imap.create("x1")[0] == "OK"  # 6 default + a, a/b, a/b/c + x1 = 10
        typ, data = imap.create("x2")
        assert typ == "NO" and data[0].startswith(b"[LIMIT]")
        # Fill the store: deliveries are refused with 452, never half-stored.
        accepted = 0
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
            for i in range(40):
                msg = f"Subject: fill {i}\r\n\r\n".encode() + BODY
                try:
                    smtp.sendmail("a@x.net", ["fill@example.org"], msg)
                    accepted += 1
                except smtplib.SMTPDataError as exc:
                    assert exc.smtp_code == 452
                    break
            else:
                pytest.fail("the store never filled up")
        typ, data = imap.append("INBOX", None, None, b"Subject: a\r\n\r\n" + BODY)
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        imap.select("INBOX")
        assert int(imap.search(None, "ALL")[1][0].split()[-1]) == accepted
        imap.logout()
        assert srv.stop() == 0
        # Everything acknowledged survives a restart intact, and the store still works.
        srv.start()
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
        imap.login("fill", "pw")
        imap.select("INBOX")
        typ, data = imap.fetch("1:*", "(BODY.PEEK[TEXT])")
        bodies = [d[1] for d in data if isinstance(d, tuple)]
        assert len(bodies) == accepted and all(b == BODY for b in bodies)
        imap.store("1:3", "+FLAGS", "\\Deleted")
        imap.expunge()
        assert imap.append("INBOX", None, None, b"Subject: a\r\n\r\nfits again\r\n")[0] == "OK"
        imap.logout()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log_text()


def test_smtp_starttls_discards_pipelined_commands_and_smtps_works(
    fresh_server: ServerProcess,
) -> None:
    text = BASE_CONFIG.replace('[smtp]\nlisten = ["127.0.0.1:0"]',
                               '[smtp]\nlisten = ["127.0.0.1:0"]\nlisten_tls = ["127.0.0.1:0"]')
    fresh_server.config.write_text(text)
    srv = fresh_server.start()
    srv.add_user("tina", "pw")
    ctx = ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))
    sock = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    sock.sendall(b"EHLO x\r\n")
    lines = [f.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(f.readline())
    assert any(b"STARTTLS" in line for line in lines)
    # The MAIL pipelined behind STARTTLS must not survive into the TLS session.
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.net>\r\n")
    assert f.readline().startswith(b"220")
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO x\r\n")
    line = tf.readline()
    while line[3:4] == b"-":
        line = tf.readline()
    tls.sendall(b"RCPT TO:<tina@example.org>\r\n")
    assert tf.readline().startswith(b"503")  # no MAIL FROM: it was discarded
    tls.close()
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("smtp", tls=True), context=ctx,
                          timeout=10) as smtp:
        assert smtp.sendmail("a@x.net", ["tina@example.org"], b"Subject: s\r\n\r\nx\r\n") == {}
    srv.stop()


def test_sighup_swaps_the_certificate_without_dropping_sessions(
    fresh_server: ServerProcess,
) -> None:
    srv = fresh_server.start()
    srv.add_user("hugo", "pw")
    tls_dir = srv.data / "tls"
    old_ca = tls_dir / "old-ca.pem"
    shutil.copy(tls_dir / "ca.pem", old_ca)
    ctx = ssl.create_default_context(cafile=str(old_ca))
    before = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imap", tls=True), ssl_context=ctx)
    before.login("hugo", "pw")
    subprocess.run([sys.executable, "-m", "mailstead", "cert", "self-signed", "--hostname",
                    "renewed.test", "--out", str(tls_dir), "--force"], check=True,
                   env=srv.env, capture_output=True)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate reloaded" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert before.noop()[0] == "OK"  # the old session goes on
    new_ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    after = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imap", tls=True), ssl_context=new_ctx)
    der = after.sock.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    assert "renewed.test" in cert.subject.rfc4514_string()
    after.logout()
    before.logout()
    assert srv.stop() == 0


def test_mismatched_key_pair_is_a_clear_startup_error(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "mailstead", "cert", "self-signed", "--hostname",
                        f"{name}.test", "--out", str(tmp_path / name)], check=True, env=srv.env,
                       capture_output=True)
    srv.config.write_text(BASE_CONFIG + f"""
[tls]
cert = "{tmp_path / 'a' / 'cert.pem'}"
key = "{tmp_path / 'b' / 'key.pem'}"
""")
    res = subprocess.run([sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                         capture_output=True, text=True, env=srv.env, timeout=60)
    assert res.returncode == 1
    assert "cannot be used together" in res.stderr or "key" in res.stderr.lower()
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
