"""What ships beside the code (issue 15 #13, #14): the container's config, Dockerfile and
compose file, the systemd units (exit status for config errors, IPv6 sockets), the
license, the constraints file and its refresh script, and what scripts/run says."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, ServerProcess
from mailstead.config import is_loopback, load_config
from test_activation import LAUNCHER

# --- container and systemd (#14) --------------------------------------------------------

def test_the_container_keeps_lmtp_on_loopback_and_probes_health_early() -> None:
    cfg = load_config(ROOT / "docker" / "mailstead.toml", env={})
    assert cfg.lmtp.listen and all(is_loopback(a.host) for a in cfg.lmtp.listen)
    assert [a.host for a in cfg.imap.listen] == ["0.0.0.0"]  # the others stay reachable
    assert cfg.data_dir == Path("/var/lib/mailstead")
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    instruction = re.search(r"^HEALTHCHECK (.*)$", dockerfile, re.MULTILINE)
    assert instruction is not None
    flags = dict(re.findall(r"--([a-z-]+)=(\d+)s", instruction.group(1)))
    # The first probe comes after one interval: short, and inside the start period.
    assert int(flags["interval"]) <= 10 < int(flags["start-period"])
    assert "start-interval" not in flags  # the legacy builder (scripts/docker-smoke) rejects it
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    assert re.search(r"^ +start_interval: 2s$", compose, re.MULTILINE)
    active = [line for line in compose.splitlines() if not line.strip().startswith("#")]
    assert not any("./certs" in line for line in active)  # never a root-owned empty folder
    assert not any(":1024" in line for line in active)  # LMTP is opened deliberately


def _unit_values(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith(f"{key}=")]


def test_a_broken_config_exits_with_the_status_systemd_does_not_restart(
    tmp_path: Path,
) -> None:
    unit = ROOT / "scripts" / "mailstead.service"
    prevented = {int(v) for value in _unit_values(unit, "RestartPreventExitStatus")
                 for v in value.split()}
    srv = ServerProcess(tmp_path, "[imap]\nlisten = ['127.0.0.1:99999']\n")
    res = subprocess.run([sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                         capture_output=True, text=True, env=srv.env, timeout=60)
    assert "out of range" in res.stderr and res.returncode in prevented
    # A failure that a restart may fix (here: the data folder is a file) is not prevented.
    srv = ServerProcess(tmp_path / "other")
    srv.data.write_text("not a folder\n")
    res = subprocess.run([sys.executable, "-m", "mailstead", "serve", "-c", str(srv.config)],
                         capture_output=True, text=True, env=srv.env, timeout=60)
    assert res.returncode != 0 and res.returncode not in prevented
    assert _unit_values(unit, "Restart") == ["on-failure"]


def test_the_socket_unit_listens_on_ipv6_beside_every_ipv4_address(tmp_path: Path) -> None:
    unit = ROOT / "scripts" / "mailstead.socket"
    streams = _unit_values(unit, "ListenStream")
    v4 = [s for s in streams if not s.startswith("[")]
    twin = {"0.0.0.0": "[::]", "127.0.0.1": "[::1]"}
    for addr in v4:
        host, port = addr.rsplit(":", 1)
        assert f"{twin[host]}:{port}" in streams, f"no IPv6 socket beside {addr}"
    assert len(streams) == 2 * len(v4)
    assert _unit_values(unit, "BindIPv6Only") == ["ipv6-only"]
    if shutil.which("systemd-analyze"):
        service = (ROOT / "scripts" / "mailstead.service").read_text()
        (tmp_path / "mailstead.service").write_text(
            service.replace("/usr/local/bin/mailstead", "/bin/true"))
        shutil.copy(unit, tmp_path / "mailstead.socket")
        res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mailstead.socket"),
                              str(tmp_path / "mailstead.service")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_handed_over_ipv4_and_ipv6_sockets_of_one_port_are_both_served(tmp_path: Path) -> None:
    """What the socket unit hands over: per port one IPv4 and one IPv6-only socket."""
    socks: list[socket.socket] = []
    ports = {}
    for proto in ("imap", "smtp"):
        v4 = socket.socket(socket.AF_INET)
        v4.bind(("127.0.0.1", 0))
        v6 = socket.socket(socket.AF_INET6)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ports[proto] = v4.getsockname()[1]
        v6.bind(("::1", ports[proto]))
        for sock in (v4, v6):
            sock.listen(8)
            socks.append(sock)
    srv = ServerProcess(tmp_path, textwrap.dedent(f"""
        [server]
        hostname = "mail.test"
        data_dir = "data"
        domains = ["example.org"]
        [imap]
        listen = ["127.0.0.1:{ports['imap']}", "[::1]:{ports['imap']}"]
        [pop3]
        listen = []
        [smtp]
        listen = ["127.0.0.1:{ports['smtp']}", "[::1]:{ports['smtp']}"]
        [lmtp]
        listen = []
    """))
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    with srv.log.open("ab") as log:
        srv.proc = subprocess.Popen(
            [sys.executable, str(tmp_path / "launcher.py"), str(srv.config),
             *(str(s.fileno()) for s in socks)],
            pass_fds=[s.fileno() for s in socks], stdout=log, stderr=log, env=srv.env)
    for sock in socks:
        sock.close()
    try:
        deadline = time.monotonic() + 30
        while not (srv.data / "listeners.json").exists():
            assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log_text()
            time.sleep(0.05)
        assert srv.log_text().count("(socket from systemd)") == 4
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, ports["imap"]), timeout=10) as conn:
                assert conn.makefile("rb").readline().startswith(b"* OK")
            with smtplib.SMTP(host, ports["smtp"], timeout=10) as smtp:
                assert smtp.noop()[0] == 250
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0


# --- packaging and first run (#13) ------------------------------------------------------

def test_the_license_file_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The Mailstead developers" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_dependency_and_the_refresh_script_renews_them(
    tmp_path: Path,
) -> None:
    committed = _pins((ROOT / "constraints.txt").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=! ;]", req, maxsplit=1)[0]).lower()
        assert name in committed, f"{name} is not pinned in constraints.txt"
    res = subprocess.run([str(ROOT / "scripts" / "refresh-constraints"), "--from-venv",
                          sys.prefix, "-o", str(tmp_path / "c.txt")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    fresh = _pins((tmp_path / "c.txt").read_text())
    assert set(fresh) == set(committed)  # the same closure: nothing missing, nothing extra
    for name, version in fresh.items():
        assert importlib.metadata.version(name) == version
    for user in ("scripts/_venv.sh", "docker/Dockerfile"):
        assert "-c constraints.txt" in (ROOT / user).read_text().replace(
            '"$CONSTRAINTS"', "constraints.txt"), user
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text()


def _fake_venv(root: Path) -> Path:
    """A venv that is already installed: scripts/run must start the server at once."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, body in (("python", f'exec {sys.executable} "$@"'),
                       ("mailstead", f'exec {sys.executable} -m mailstead "$@"')):
        (venv / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (venv / "bin" / name).chmod(0o755)
    stamp = venv / ".mailstead-installed"
    stamp.touch()
    # Newer than any file of a fresh checkout whatever the clock granularity, so that
    # _venv.sh's "pyproject.toml/constraints.txt newer than the stamp" never holds here.
    later = time.time() + 3600
    os.utime(stamp, (later, later))
    return venv


def test_scripts_run_says_to_add_a_user_while_there_is_none(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    env = srv.env | {"MAILSTEAD_VENV": str(_fake_venv(tmp_path)),
                     "MAILSTEAD_CONFIG": str(srv.config)}
    for expect_hint in (True, False):
        proc = subprocess.Popen([str(ROOT / "scripts" / "run")], env=env, cwd=tmp_path,
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while not any("Mailstead ready" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        # A greeting means the loop serves, so the signal handlers are in place (they are
        # installed just after "ready": a SIGTERM before that would kill the process).
        port = next(e["port"] for e in json.loads((srv.data / "listeners.json").read_text())
                    if e["protocol"] == "imap" and not e["tls"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.makefile("rb").readline().startswith(b"* OK")
        proc.send_signal(signal.SIGTERM)
        lines += proc.stderr.readlines()
        assert proc.wait(20) == 0, lines
        hints = [line for line in lines if "add a user next:" in line]
        assert hints == ([f"mailstead: no users yet; add a user next: {env['MAILSTEAD_VENV']}"
                          f"/bin/mailstead user add alice -c {srv.config} (in another "
                          "terminal)\n"] if expect_hint else []), lines
        assert not any("installing" in line for line in lines), lines
        if expect_hint:
            srv.add_user("alice")
