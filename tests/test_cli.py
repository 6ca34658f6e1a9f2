"""Every CLI command, config errors, and the daemon's start/stop contract."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from conftest import BASE_CONFIG, ServerProcess


def run_cli(srv: ServerProcess, *args: str, input: str | None = None, config: bool = True):
    return srv.cli(*args, input=input, check=False, config=config)


def test_user_commands_round_trip(fresh_server: ServerProcess) -> None:
    srv = fresh_server
    assert run_cli(srv, "user", "list").stdout == ""
    res = run_cli(srv, "user", "add", "Carol", "--password-stdin", input="pw1\n")
    assert res.returncode == 0, res.stderr
    assert "user Carol added" in res.stdout
    res = run_cli(srv, "user", "add", "carol", "--password-stdin", input="pw\n")
    assert res.returncode == 1 and res.stderr.startswith("mailstead: user carol already exists")
    res = run_cli(srv, "user", "add", "dave", "--password-stdin", input="\n")
    assert res.returncode == 1 and "must not be empty" in res.stderr
    res = run_cli(srv, "user", "add", "dave")  # no terminal, no --password-stdin
    assert res.returncode == 1 and "--password-stdin" in res.stderr
    assert run_cli(srv, "user", "list").stdout.split() == ["Carol"]
    assert (
        run_cli(srv, "user", "passwd", "carol", "--password-stdin", input="pw2\n").returncode == 0
    )
    res = run_cli(srv, "user", "passwd", "nobody", "--password-stdin", input="pw\n")
    assert res.returncode == 1 and "no such user" in res.stderr
    assert run_cli(srv, "user", "del", "CAROL", "--yes").returncode == 0
    assert run_cli(srv, "user", "list").stdout == ""
    res = run_cli(srv, "user", "del", "carol", "--yes")
    assert res.returncode == 1 and "no such user" in res.stderr
    assert "Traceback" not in res.stderr


def test_user_add_while_running_then_delivery_shows_in_status(
    fresh_server: ServerProcess,
) -> None:
    srv = fresh_server.start()
    srv.add_user("erin", "pw")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("a@x.net", ["erin@example.org"], b"Subject: s\r\n\r\nbody\r\n")
    res = run_cli(srv, "mailbox", "status", "erin")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        "MAILBOX",
        "MESSAGES",
        "UNSEEN",
        "UIDVALIDITY",
        "UIDNEXT",
        "HIGHESTMODSEQ",
        "BYTES",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"}
    assert rows["INBOX"][1:3] == ["1", "1"] and rows["INBOX"][4] == "2"
    as_json = json.loads(run_cli(srv, "mailbox", "status", "erin", "inbox", "--json").stdout)
    assert as_json[0]["mailbox"] == "INBOX" and as_json[0]["messages"] == 1
    assert as_json[0]["bytes"] > len(b"Subject: s\r\n\r\nbody\r\n")
    res = run_cli(srv, "mailbox", "status", "erin", "Nope")
    assert res.returncode == 1 and "no such mailbox" in res.stderr
    res = run_cli(srv, "mailbox", "status", "ghost")
    assert res.returncode == 1 and "no such user" in res.stderr
    assert srv.stop() == 0


def test_check_prints_effective_listeners(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path,
        BASE_CONFIG.replace('[lmtp]\nlisten = ["127.0.0.1:0"]', '[lmtp]\nlisten = ["[::1]:2424"]'),
    )
    res = run_cli(srv, "check")
    assert res.returncode == 0, res.stderr
    assert "configuration OK" in res.stdout
    assert "lmtp  plain [::1]:2424" in res.stdout
    assert "imap  tls   127.0.0.1:0" in res.stdout
    assert f"data_dir: {tmp_path / 'data'}" in res.stdout  # relative to the config file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nhostnme = 'x'\n", "[server] hostnme: unknown key"),
        ("[bogus]\nx = 1\n", "unknown section [bogus]"),
        ("[limits]\nmax_message_size = 'big'\n", "[limits] max_message_size: expected an integer"),
        ("[limits]\nmax_message_size = -1\n", "[limits] max_message_size: must be greater than 0"),
        ("[imap]\nlisten = ['localhost']\n", "[imap] listen: 'localhost' is not \"host:port\""),
        ("[imap]\nlisten = ['127.0.0.1:99999']\n", "out of range"),
        ("[imap]\nlisten = '127.0.0.1:143'\n", "[imap] listen: expected a list"),
        ("[auth]\nplaintext_on_loopback = 'yes'\n", "expected true or false"),
        ("[store]\nbackend = 'mysql'\n", "[store] backend: 'mysql' is not one of sqlite"),
        ("[tls]\ncert = 'a.pem'\n", "[tls] cert and key: set both or neither"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    srv = ServerProcess(tmp_path, text)
    for args in (("check",), ("serve",)):
        res = run_cli(srv, *args)
        assert res.returncode != 0
        assert message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_env_override_and_missing_file(tmp_path: Path, monkeypatch) -> None:
    srv = ServerProcess(tmp_path, BASE_CONFIG)
    env = srv.env | {
        "MAILSTEAD_SERVER__HOSTNAME": "env.test",
        "MAILSTEAD_IMAP__LISTEN": '["127.0.0.1:1443"]',
    }
    res = subprocess.run(
        [sys.executable, "-m", "mailstead", "check", "-c", str(srv.config)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "hostname: env.test" in res.stdout and "imap  plain 127.0.0.1:1443" in res.stdout
    env = srv.env | {"MAILSTEAD_SERVER__NOPE": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "mailstead", "check", "-c", str(srv.config)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 78 and "MAILSTEAD_SERVER__NOPE" in res.stderr  # EX_CONFIG
    res = run_cli(srv, "check", "-c", str(tmp_path / "missing.toml"), config=False)
    assert res.returncode == 78 and "does not exist" in res.stderr


def test_port_in_use_exits_with_one_clear_line(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        srv = ServerProcess(
            tmp_path,
            BASE_CONFIG.replace(
                '[pop3]\nlisten = ["127.0.0.1:0"]', f'[pop3]\nlisten = ["127.0.0.1:{port}"]'
            ),
        )
        res = subprocess.run(
            [sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
            capture_output=True,
            text=True,
            env=srv.env,
            timeout=60,
        )
    finally:
        blocker.close()
    assert res.returncode == 1
    assert f"cannot listen for pop3 on 127.0.0.1:{port}: address already in use" in res.stderr
    assert "Traceback" not in res.stderr


def test_sigterm_stops_gracefully_and_sighup_reloads(fresh_server: ServerProcess) -> None:
    srv = fresh_server.start()
    assert (srv.data / "tls" / "cert.pem").exists()
    assert "generated a self-signed TLS certificate" in srv.log_text()
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate reloaded" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS certificate reloaded" in srv.log_text()
    assert srv.stop() == 0
    log = srv.log_text()
    assert "stopping: SIGTERM" in log and "Traceback" not in log
    assert not (srv.data / "listeners.json").exists()


def test_cert_self_signed_writes_a_ca_chain(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    out = tmp_path / "certs"
    res = run_cli(
        srv, "cert", "self-signed", "--hostname", "mx.example.org", "--domain", "example.org",
        "--out", str(out), config=False,
    )
    assert res.returncode == 0, res.stderr
    chain = x509.load_pem_x509_certificates((out / "cert.pem").read_bytes())
    leaf, ca = chain
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "mx.example.org", "autoconfig.example.org", "autodiscover.example.org", "localhost"]
    assert leaf.issuer == ca.subject
    res = run_cli(srv, "cert", "self-signed", "--hostname", "x", "--out", str(out), config=False)
    assert res.returncode == 1 and "--force" in res.stderr


def test_json_logs_one_object_per_line_with_session_and_login(tmp_path: Path) -> None:
    import imaplib

    srv = ServerProcess(tmp_path)
    srv.add_user("jo", "pw")
    log_path = tmp_path / "json.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailstead", "serve", "--log-format", "json", "-c",
             str(srv.config)], stdout=log, stderr=log, env=srv.env,
        )
    try:
        listeners = srv.data / "listeners.json"
        deadline = time.monotonic() + 30
        while not listeners.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = next(e["port"] for e in json.loads(listeners.read_text())
                    if e["protocol"] == "imap" and not e["tls"])
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        imap.login("jo", "pw")
        imap.logout()
        smtp_port = next(e["port"] for e in json.loads(listeners.read_text())
                         if e["protocol"] == "smtp")
        import smtplib

        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.noop()
        deadline = time.monotonic() + 10
        while '"smtp"' not in log_path.read_text() or '"disconnect"' not in \
                log_path.read_text().rsplit('"smtp"', 1)[-1]:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    events = [e for e in entries if e.get("proto") == "imap"]
    assert [e["event"] for e in events] == ["connect", "login", "logout", "disconnect"]
    assert len({e["session_id"] for e in events}) == 1
    assert all(e["remote"].startswith("127.0.0.1:") for e in events)
    assert events[1]["user"] == "jo" and events[1]["mech"] == "LOGIN"
    assert events[-1]["user"] == "jo" and events[-1]["tls"] is False
    smtp = [e for e in entries if e.get("proto") == "smtp"]
    assert [e["event"] for e in smtp] == ["connect", "disconnect"]
    assert smtp[0]["session_id"] == smtp[1]["session_id"] != events[0]["session_id"]


def _mail(subject: str) -> bytes:
    return f"From: a@example.org\nSubject: {subject}\n\nbody\n".encode()


def test_user_add_and_import_respect_the_mailbox_limits(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "srv", BASE_CONFIG + "max_mailboxes_per_user = 4\nmax_mailbox_depth = 2\n"
    )
    assert run_cli(srv, "user", "add", "bob", "--password-stdin", input="pw\n").returncode == 0
    status = json.loads(run_cli(srv, "mailbox", "status", "bob", "--json").stdout)
    assert [s["mailbox"] for s in status] == ["Drafts", "INBOX", "Sent", "Trash"]

    src = tmp_path / "md"
    for folder, name in (("", "1.a:2,S"), (".Deep.er.still", "2.b:2,S"), (".Extra", "3.c:2,S")):
        (src / folder / "cur").mkdir(parents=True, exist_ok=True)
        for sub in ("new", "tmp"):
            (src / folder / sub).mkdir(exist_ok=True)
        (src / folder / "cur" / name).write_bytes(_mail(name))
    res = run_cli(srv, "import", "maildir", str(src), "--user", "bob")
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "imported 1, skipped 0 duplicates, 2 failed"
    assert "mailbox name 'Deep/er/still' refused: mailbox name is nested deeper than 2" \
        in res.stderr
    assert "mailbox 'Extra' not created: at most 4 mailboxes per user" in res.stderr
    assert "Traceback" not in res.stderr

    mbox = tmp_path / "old.mbox"
    mbox.write_bytes(b"From a@example.org Thu Jan  1 00:00:00 2026\n" + _mail("m"))
    res = run_cli(srv, "import", "mbox", str(mbox), "--user", "bob", "--mailbox", "New")
    assert res.returncode == 1
    assert res.stderr == ("mailstead: mailbox 'New' not created: at most 4 mailboxes per user "
                          "([limits] max_mailboxes_per_user)\n")
    res = run_cli(srv, "import", "mbox", str(mbox), "--user", "bob", "--mailbox", "Sent")
    assert res.returncode == 0, res.stderr  # an existing mailbox takes mail as before


async def test_user_add_and_import_respect_max_store_bytes(tmp_path: Path) -> None:
    from mailstead.config import load_config
    from mailstead.store import open_store
    from mailstead.store.api import StorageFull

    srv = ServerProcess(tmp_path / "srv", BASE_CONFIG + "max_store_bytes = 131072\n")
    # Fill the store through the same factory until one more user does not fit. Names
    # have one length and hashes are shorter than the CLI's: its user cannot fit either.
    store = await open_store(load_config(srv.config))
    try:
        made = 0
        with pytest.raises(StorageFull):
            for made in range(10_000):
                await store.create_user(f"u{made:05d}", "$fake$" + "h" * 54)
        assert made > 0
    finally:
        await store.close()
    res = run_cli(srv, "user", "add", "u99999", "--password-stdin", input="pw\n")
    assert res.returncode == 1
    assert res.stderr == "mailstead: the mail store is full\n"
    mbox = tmp_path / "one.mbox"
    # Bigger than a page: it cannot hide in the free room of a table's existing page.
    big = _mail("big") + (b"x" * 76 + b"\n") * 200
    mbox.write_bytes(b"From a@example.org Thu Jan  1 00:00:00 2026\n" + big)
    res = run_cli(srv, "import", "mbox", str(mbox), "--user", "u00000", "--mailbox", "INBOX")
    assert res.returncode == 1
    assert res.stderr.endswith("mailstead: the mail store is full\n"), res.stderr
    listing = run_cli(srv, "user", "list")
    assert listing.returncode == 0 and len(listing.stdout.split()) == made
