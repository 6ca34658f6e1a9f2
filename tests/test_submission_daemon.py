"""The submission listeners of a real ``mailstead serve``, aliases through the CLI and
inbound delivery, and swaks as a second real client."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, ServerProcess, stored_messages

CONFIG = BASE_CONFIG + """
[submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[auth]
plaintext_on_loopback = false
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("submission"), CONFIG).start()
    for name in ("alice", "bob", "carol"):
        server.add_user(name)
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()


def tls_context(srv: ServerProcess) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))
    ctx.check_hostname = False
    return ctx


MSG = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: via daemon\r\n\r\nhi\r\n"


def test_the_daemon_serves_587_and_465_and_delivers_locally(srv: ServerProcess) -> None:
    before = len(stored_messages(srv, "bob"))
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as conn:
        conn.ehlo("c.test")
        assert not conn.has_extn("auth") and conn.has_extn("starttls")
        conn.starttls(context=tls_context(srv))
        conn.ehlo("c.test")
        conn.login("alice", "secret")
        assert conn.sendmail("alice@example.org", ["bob@example.org"], MSG) == {}
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submission", tls=True), timeout=10,
                          context=tls_context(srv)) as conn:
        conn.login("alice@example.org", "secret")
        assert conn.sendmail("alice@example.org", ["bob@mail.test"], MSG) == {}
    stored = stored_messages(srv, "bob")[before:]
    assert len(stored) == 2 and all(b"\r\nMessage-ID: <" in m for m in stored)


def test_the_inbound_smtp_listener_still_offers_no_auth_and_relays_nothing(
    srv: ServerProcess,
) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as conn:
        conn.ehlo("c.test")
        assert not conn.has_extn("auth")
        code, text = conn.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code == 502 and b"submission port" in text
        conn.docmd("MAIL", "FROM:<alice@example.org>")
        code, _ = conn.docmd("RCPT", "TO:<someone@remote.example>")
        assert code == 550


def test_alias_cli_and_inbound_delivery_to_aliases(srv: ServerProcess) -> None:
    assert srv.cli("alias", "add", "Team@Example.org", "bob", "carol").stdout == (
        "alias team@example.org -> bob, carol\n")
    srv.cli("alias", "add", "@mail.test", "carol")
    assert srv.cli("alias", "list").stdout == "@mail.test carol\nteam@example.org bob carol\n"
    for args, why in ((["x@elsewhere.net", "bob"], "not one of this server's domains"),
                      (["bob@example.org", "carol"], "is the address of user bob"),
                      (["a+b@example.org", "bob"], "subaddress"),
                      (["no-at-sign", "bob"], "local@domain"),
                      (["no at@example.org", "bob"], "spaces"),
                      (["a..b@example.org", "bob"], "'..'"),
                      (["x@example.org", "nobody"], "no such user: nobody")):
        res = srv.cli("alias", "add", *args, check=False)
        assert res.returncode == 1 and why in res.stderr and "Traceback" not in res.stderr
    b0, c0 = len(stored_messages(srv, "bob")), len(stored_messages(srv, "carol"))
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as conn:
        assert conn.sendmail("x@remote.example", ["team@example.org"], MSG) == {}
        assert conn.sendmail("x@remote.example", ["whoever+tag@mail.test"], MSG) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            conn.sendmail("x@remote.example", ["whoever@example.org"], MSG)  # no catch-all
    assert len(stored_messages(srv, "bob")) == b0 + 1
    assert len(stored_messages(srv, "carol")) == c0 + 2
    srv.cli("alias", "del", "team@example.org")
    res = srv.cli("alias", "del", "team@example.org", check=False)
    assert res.returncode == 1 and "no such alias" in res.stderr
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as conn, pytest.raises(
        smtplib.SMTPRecipientsRefused
    ):
        conn.sendmail("x@remote.example", ["team@example.org"], MSG)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
@pytest.mark.parametrize("how", ["starttls", "implicit"])
def test_swaks_submits_with_auth(srv: ServerProcess, tmp_path: Path, how: str) -> None:
    before = len(stored_messages(srv, "bob"))
    port = srv.port("submission", tls=how == "implicit")
    tls = ["--tls"] if how == "starttls" else ["--tls-on-connect"]
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), *tls,
         "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
         "--from", "alice@example.org", "--to", "bob@example.org",
         "--h-From", "alice@example.org", "--header", f"Subject: swaks {how}"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "235 " in res.stdout
    [stored] = stored_messages(srv, "bob")[before:]
    assert f"Subject: swaks {how}".encode() in stored


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_cannot_spoof_another_users_sender(srv: ServerProcess) -> None:
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(srv.port("submission")), "--tls",
         "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "secret",
         "--from", "bob@example.org", "--to", "carol@example.org"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode != 0
    assert "550 5.7.1 Sender <bob@example.org> is not yours" in res.stdout


def test_lmtp_answers_once_per_recipient_when_an_alias_reaches_several_users(
    srv: ServerProcess,
) -> None:
    srv.cli("alias", "add", "both@example.org", "alice", "carol")
    before = {u: len(stored_messages(srv, u)) for u in ("alice", "bob", "carol")}
    with smtplib.LMTP("127.0.0.1", srv.port("lmtp"), timeout=10) as conn:
        conn.ehlo("mta.test")
        assert conn.docmd("MAIL", "FROM:<x@remote.example>")[0] == 250
        for rcpt in ("both@example.org", "bob@example.org", "carol@example.org"):
            assert conn.docmd("RCPT", f"TO:<{rcpt}>")[0] == 250
        assert conn.docmd("DATA")[0] == 354
        conn.send(MSG + b".\r\n")
        replies = [conn.getreply() for _ in range(3)]
    assert [code for code, _ in replies] == [250, 250, 250]
    after = {u: len(stored_messages(srv, u)) for u in ("alice", "bob", "carol")}
    # carol is named twice (the alias and her own address): one copy.
    assert after == {"alice": before["alice"] + 1, "bob": before["bob"] + 1,
                     "carol": before["carol"] + 1}
    srv.cli("alias", "del", "both@example.org")
