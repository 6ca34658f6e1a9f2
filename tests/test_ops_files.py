"""Owner-only files whatever the umask (issue 15 #1, #6), and config defaults (#12).

Everything Mailstead writes — the data folder, the store with its WAL and SHM, the lock,
listeners.json, the TLS material, the spool, exports and `cert self-signed` output — is
0700 (folders) or 0600 (files). The server and the CLI run in subprocesses started under
umask 000 and 022, as a hand-run command or a plain `serve` would be. The example config
shows the built-in defaults, and the data folder's default does not follow the config file.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, ServerProcess
from mailstead.config import SCHEMA, load_config

UMASKS = [pytest.param(0o000, id="umask000"), pytest.param(0o022, id="umask022")]
MBOX = (b"From a@example.net Thu Nov  5 09:00:00 2026\nSubject: one\n\nfirst\n\n"
        b"From a@example.net Thu Nov  5 09:01:00 2026\nSubject: two\n\nsecond\n")


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything below it, by path relative to root."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def assert_owner_only(root: Path) -> dict[str, int]:
    found = modes(root)
    wrong = {
        name: f"{mode:04o}" for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert not wrong, f"not owner-only under {root}: {wrong}"
    return found


def cli(srv: ServerProcess, umask: int, *args: str, stdin: str | None = None,
        config: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mailstead", *args, *(["-c", str(srv.config)] if config else [])]
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=srv.env,
                         timeout=60, umask=umask)
    assert res.returncode == 0, res.stderr
    return res


def start(srv: ServerProcess, umask: int) -> None:
    """``srv.start()`` with the server under ``umask``."""
    with srv.log.open("ab") as log:
        srv.proc = subprocess.Popen(
            [sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=srv.env, umask=umask)
    listeners = srv.data / "listeners.json"
    deadline = time.monotonic() + 30
    while not listeners.exists():
        assert srv.proc.poll() is None, srv.log_text()
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    srv.ports = {(e["protocol"], e["tls"]): e["port"] for e in json.loads(listeners.read_text())}


@pytest.mark.parametrize("umask", UMASKS)
def test_the_server_and_the_cli_keep_the_data_folder_owner_only(
    tmp_path: Path, umask: int,
) -> None:
    srv = ServerProcess(tmp_path)
    cli(srv, umask, "user", "add", "amy", "--password-stdin", stdin="pw\n")
    assert_owner_only(srv.data)  # the CLI created the folder and the store
    start(srv, umask)
    try:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
            smtp.sendmail("a@x.net", ["amy@example.org"], b"Subject: s\r\n\r\nbody\r\n")
        running = assert_owner_only(srv.data)
        for name in ("mailstead.sqlite3", "mailstead.sqlite3-wal", "mailstead.sqlite3-shm",
                     "mailstead.lock", "listeners.json", "tls", "tls/key.pem",
                     "tls/cert.pem", "tls/ca.pem", "spool"):
            assert name in running, sorted(running)
    finally:
        assert srv.stop() == 0
    assert_owner_only(srv.data)


@pytest.mark.parametrize("umask", UMASKS)
def test_exports_and_generated_certificates_are_owner_only(
    tmp_path: Path, umask: int,
) -> None:
    srv = ServerProcess(tmp_path)
    (tmp_path / "in.mbox").write_bytes(MBOX)
    cli(srv, umask, "user", "add", "amy", "--password-stdin", stdin="pw\n")
    cli(srv, umask, "import", "mbox", str(tmp_path / "in.mbox"), "--user", "amy",
        "--mailbox", "Old Mail")
    cli(srv, umask, "export", "maildir", str(tmp_path / "out" / "amy"), "--user", "amy")
    found = assert_owner_only(tmp_path / "out")
    assert any(name.startswith("amy/.Old Mail/cur/") for name in found), sorted(found)
    cli(srv, umask, "export", "mbox", str(tmp_path / "old.mbox"), "--user", "amy",
        "--mailbox", "Old Mail")
    assert stat.S_IMODE((tmp_path / "old.mbox").stat().st_mode) == 0o600
    cli(srv, umask, "cert", "self-signed", "--hostname", "mx.test", "--out",
        str(tmp_path / "certs" / "mx"), config=False)
    assert set(assert_owner_only(tmp_path / "certs")) == {
        ".", "mx", "mx/cert.pem", "mx/key.pem", "mx/ca.pem"}


def test_files_left_readable_by_an_older_version_are_tightened(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    cli(srv, 0o022, "user", "add", "amy", "--password-stdin", stdin="pw\n")
    start(srv, 0o022)
    assert srv.stop() == 0
    for name, mode in (("", 0o777), ("mailstead.sqlite3", 0o666), ("tls", 0o755),
                       ("tls/key.pem", 0o644), ("tls/cert.pem", 0o666)):
        os.chmod(srv.data / name, mode)
    cli(srv, 0o022, "user", "list")
    assert stat.S_IMODE(srv.data.stat().st_mode) == 0o700
    assert stat.S_IMODE((srv.data / "mailstead.sqlite3").stat().st_mode) == 0o600
    start(srv, 0o022)
    try:
        assert_owner_only(srv.data)
        assert "made" in srv.log_text() and "owner-only (was 0644)" in srv.log_text()
    finally:
        assert srv.stop() == 0


# --- the example config shows the built-in defaults (#12) -------------------------------

def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _comments_above_keys(text: str) -> dict[tuple[str, str], str]:
    """(section, key) -> the comment lines right above the key, joined."""
    out: dict[tuple[str, str], str] = {}
    section, block = "", []
    for line in text.splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section, block = m.group(1), []
        elif line.startswith("#"):
            block.append(line.lstrip("# "))
        elif m := re.match(r"(\w+) =", line):
            out[(section, m.group(1))] = " ".join(block)
            block = []
        else:
            block = []
    return out


def test_the_example_config_shows_every_built_in_default_or_says_it_differs() -> None:
    path = ROOT / "config" / "mailstead.toml"
    text = path.read_text()
    raw = tomllib.loads(text)
    comments = _comments_above_keys(text)
    differing = set()
    for section, keys in SCHEMA.items():
        for key, (_, default) in keys.items():
            assert key in raw.get(section, {}), f"[{section}] {key} is missing from {path}"
            if raw[section][key] == default:
                continue
            differing.add((section, key))
            note = comments[(section, key)]
            assert "Example value" in note and f"built-in default is {_toml(default)}" in note, (
                f"[{section}] {key} = {_toml(raw[section][key])} is not the built-in default "
                f"{_toml(default)}, and the comment above it does not say so")
    assert differing == {("server", "data_dir"), ("imap", "listen_tls"), ("pop3", "listen_tls"),
                         ("submission", "listen"), ("submission", "listen_tls")}
    assert load_config(path, env={}).data_dir == ROOT / "data"  # what scripts/run uses


def test_data_dir_defaults_to_var_lib_wherever_the_config_file_is(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "mailstead"
    etc.mkdir(parents=True)
    (etc / "mailstead.toml").write_text('[server]\nhostname = "mail.example.org"\n')
    assert load_config(etc / "mailstead.toml", env={}).data_dir == Path("/var/lib/mailstead")
    assert load_config(None, env={}).data_dir == Path("/var/lib/mailstead")
    (etc / "mailstead.toml").write_text('[server]\ndata_dir = "mail"\n')
    assert load_config(etc / "mailstead.toml", env={}).data_dir == etc / "mail"  # relative
