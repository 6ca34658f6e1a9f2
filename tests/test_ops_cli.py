"""Issue 15 (defects 4, 8, 11): one user-name rule, ``mailstead check`` that tries what
``serve`` needs, and the command line's manners (pipes, -c, --version, confirmations)."""

from __future__ import annotations

import imaplib
import os
import pty
import select
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BASE_CONFIG, ServerProcess
from mailstead.migrate.passwd import LineError, parse_line
from mailstead.usernames import UserNameError, parse_user_name

DOMAINS = ("example.org", "mail.test")


def run(srv: ServerProcess, *args: str, input: str | None = None,
        config: bool = True) -> subprocess.CompletedProcess[str]:
    return srv.cli(*args, input=input, check=False, config=config)


# --- defect 4: one rule for user names ---------------------------------------------------


@pytest.mark.parametrize(("given", "name"), [
    ("alice", "alice"), (" Alice ", "Alice"), ("alice@example.org", "alice"),
    ("Bob.Smith@MAIL.TEST", "Bob.Smith"), ("a_b-c.d", "a_b-c.d"), ("x" * 64, "x" * 64),
])  # fmt: skip
def test_user_name_rule_accepts(given: str, name: str) -> None:
    assert parse_user_name(given, DOMAINS) == name


@pytest.mark.parametrize(("given", "reason"), [
    ("", "empty"), ("alice@elsewhere.net", "domain elsewhere.net is not one of this"),
    ("@example.org", "nothing comes before the @"), ("a/b", "'/' cannot be in"),
    ("a+b", "'+' cannot be in"), ("a b", "' ' cannot be in"), ("a\x01b", "control"),
    ("a@b@example.org", "'@' cannot be in"), (".a", "start or end with '.'"),
    ("a..b", "'..'"), ("x" * 65, "longer than 64"), ("é", "'é' cannot be in"),
])  # fmt: skip
def test_user_name_rule_refuses_with_a_reason(given: str, reason: str) -> None:
    with pytest.raises(UserNameError, match=None) as info:
        parse_user_name(given, DOMAINS)
    assert reason in str(info.value)


def test_import_passwd_lines_follow_the_same_rule() -> None:
    entry = parse_line(1, "carol@example.org:{PLAIN}pw:::", list(DOMAINS))
    assert entry is not None and entry.name == "carol"
    for line, reason in (("a/b:{PLAIN}pw", "'/' cannot be in a user name"),
                         ("x+y:{PLAIN}pw", "'+' cannot be in a user name"),
                         ("z@other.net:{PLAIN}pw", "domain other.net is not one")):
        with pytest.raises(LineError, match=None) as info:
            parse_line(2, line, list(DOMAINS))
        assert reason in str(info.value), line


def test_user_add_with_a_domain_creates_an_account_that_logs_in_and_gets_mail(
    fresh_server: ServerProcess,
) -> None:
    srv = fresh_server.start()
    res = run(srv, "user", "add", "alice@Example.org", "--password-stdin", input="pw\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "user alice added"
    assert run(srv, "user", "list").stdout.split() == ["alice"]
    for bad, reason in (("bob@elsewhere.net", "domain elsewhere.net is not one of"),
                        ("a/b", "'/' cannot be in a user name"),
                        ("tab\tname", "control characters")):
        res = run(srv, "user", "add", bad, "--password-stdin", input="pw\n")
        assert res.returncode == 1 and reason in res.stderr, res.stderr
        assert len(res.stderr.splitlines()) == 1
    assert run(srv, "user", "list").stdout.split() == ["alice"]
    for login in ("alice", "alice@example.org", "ALICE@mail.test"):
        with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10) as imap:
            assert imap.login(login, "pw")[0] == "OK"
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
        assert smtp.sendmail("x@y.net", ["alice@example.org"], b"Subject: s\r\n\r\nb\r\n") == {}
    status = run(srv, "mailbox", "status", "alice@example.org", "INBOX", "--json")
    assert '"messages": 1' in status.stdout, status.stderr
    assert srv.stop() == 0


# --- defect 11: the command line -----------------------------------------------------------


def test_config_option_before_or_after_the_command_and_version(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    before = run(srv, "-c", str(srv.config), "user", "add", "dana", "--password-stdin",
                 input="pw\n", config=False)
    assert before.returncode == 0, before.stderr
    assert run(srv, "user", "list").stdout.split() == ["dana"]  # -c after the command
    other = ServerProcess(tmp_path / "other")
    # Given on both sides, the one after the command wins.
    res = run(srv, "-c", str(other.config), "user", "list", "-c", str(srv.config),
              config=False)
    assert res.stdout.split() == ["dana"]
    res = run(srv, "--version", config=False)
    assert res.returncode == 0 and res.stdout.startswith("mailstead 0.")


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    srv.add_user("erin")
    # The reading end is closed before anything is written: every write fails (EPIPE),
    # as when `| head` has read what it wanted.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailstead", "user", "list", "-c", str(srv.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=srv.env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_unknown_or_existing_users_are_refused_before_the_password_is_asked(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path)
    srv.add_user("frank")
    # No terminal and no --password-stdin: the password cannot be asked, so an answer
    # about the user shows it was checked first.
    res = run(srv, "user", "passwd", "nobody", input="")
    assert (res.returncode, res.stderr) == (1, "mailstead: no such user: nobody\n")
    res = run(srv, "user", "add", "frank", input="")
    assert (res.returncode, res.stderr) == (1, "mailstead: user frank already exists\n")


@pytest.mark.parametrize("password", [" ", "   ", "\t "])
def test_a_password_of_only_white_space_is_refused(tmp_path: Path, password: str) -> None:
    srv = ServerProcess(tmp_path)
    res = run(srv, "user", "add", "gina", "--password-stdin", input=password + "\n")
    assert res.returncode == 1 and "only white space" in res.stderr
    assert run(srv, "user", "list").stdout == ""


def _on_terminal(srv: ServerProcess, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin/stdout, answer its prompt."""
    main_fd, term_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailstead", *args, "-c", str(srv.config)],
        stdin=term_fd, stdout=term_fd, stderr=term_fd, env=srv.env, start_new_session=True,
    )
    os.close(term_fd)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            if select.select([main_fd], [], [], 0.5)[0]:
                seen += os.read(main_fd, 4096)
        os.write(main_fd, answer)
        status = proc.wait(30)
        while select.select([main_fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        os.close(main_fd)
    return status, seen.decode(errors="replace")


def test_user_del_asks_unless_yes_and_refuses_without_a_terminal(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    srv.add_user("hal")
    res = run(srv, "user", "del", "hal", input="")
    assert res.returncode == 1
    assert "without confirmation" in res.stderr and "--yes" in res.stderr
    status, text = _on_terminal(srv, ["user", "del", "hal"], b"n\n")
    assert status == 1 and "Delete user hal and all their mail (0 message(s) in 6" in text
    assert run(srv, "user", "list").stdout.split() == ["hal"]
    status, text = _on_terminal(srv, ["user", "del", "hal"], b"y\n")
    assert status == 0 and "user hal deleted" in text, text
    assert run(srv, "user", "list").stdout == ""
    srv.add_user("hal")
    assert run(srv, "user", "del", "hal", "--yes").returncode == 0


def test_cert_reload_failure_names_the_bad_file(fresh_server: ServerProcess) -> None:
    srv = fresh_server.start()
    cert = srv.data / "tls" / "cert.pem"
    cert.write_text("not a certificate\n")
    srv.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while "TLS reload failed" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in srv.log_text().splitlines() if "TLS reload failed" in x)
    assert line.endswith(f"TLS certificate {cert} holds no PEM certificate"), line
    assert srv.stop() == 0


# --- defect 8: check tries what serve needs ---------------------------------------------


def _check(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    return run(ServerProcess(tmp_path, BASE_CONFIG + extra), "check")


def test_check_passes_a_config_that_starts(tmp_path: Path) -> None:
    res = _check(tmp_path, "")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "configuration OK"


def test_check_refuses_a_hostname_with_a_space(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, BASE_CONFIG.replace('"mail.test"', '"mail test"', 1))
    for command in ("check", "serve"):
        res = run(srv, command)
        assert res.returncode == 78  # EX_CONFIG
        assert "[server] hostname: 'mail test' is not a host name" in res.stderr
        assert len(res.stderr.splitlines()) == 1


def test_check_tries_the_certificate_and_key(tmp_path: Path) -> None:
    from mailstead.tls import generate_self_signed

    missing = _check(tmp_path / "a", '\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n')
    assert missing.returncode == 1
    assert f"tls: cert {tmp_path / 'a' / 'c.pem'} and key" in missing.stderr
    assert "do not exist" in missing.stderr and "configuration NOT OK" in missing.stdout
    for pair in ("one", "two"):
        generate_self_signed(tmp_path / pair / "c.pem", tmp_path / pair / "k.pem", "mail.test")
    other = tmp_path / "two" / "k.pem"
    mismatch = _check(tmp_path / "one", f'\n[tls]\ncert = "c.pem"\nkey = "{other}"\n')
    assert mismatch.returncode == 1
    assert f"TLS key {other} does not belong to the certificate" in mismatch.stderr
    good = _check(tmp_path / "one", '\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n')
    assert good.returncode == 0, good.stderr
    assert "loads, expires" in good.stdout


def test_check_resolves_listen_addresses_and_finds_duplicates(tmp_path: Path) -> None:
    text = BASE_CONFIG.replace('[smtp]\nlisten = ["127.0.0.1:0"]',
                               '[smtp]\nlisten = ["no-such-host.invalid:2525"]')
    text = text.replace('[lmtp]\nlisten = ["127.0.0.1:0"]',
                        '[lmtp]\nlisten = ["127.0.0.1:2424", "127.0.0.1:2424"]')
    res = run(ServerProcess(tmp_path, text), "check")
    assert res.returncode == 1
    errors = res.stderr.splitlines()
    assert any("[smtp] no-such-host.invalid:2525: the address 'no-such-host.invalid' does "
               "not resolve" in e for e in errors), errors
    assert any("[lmtp] 127.0.0.1:2424: also used by [lmtp]" in e for e in errors), errors


def test_check_finds_a_data_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be\n")
    res = _check(tmp_path, "").stdout  # first: fine
    assert "configuration OK" in res
    srv = ServerProcess(tmp_path, BASE_CONFIG.replace('data_dir = "data"',
                                                      'data_dir = "blocker/data"'))
    res = run(srv, "check")
    assert res.returncode == 1 and "blocker is not a folder" in res.stderr, res.stderr
