"""systemd socket activation: the server listens on the sockets it is handed (LISTEN_FDS).

A small launcher stands in for systemd: it puts listening sockets at file descriptors 3, 4,
… in its own process, sets LISTEN_FDS and LISTEN_PID to its own pid, and execs the server,
which keeps the pid, as systemd's fork + exec does.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from mailstead.activation import InheritedSockets
from mailstead.config import Listen

LAUNCHER = textwrap.dedent("""
    import fcntl, os, sys
    config, fds = sys.argv[1], [int(x) for x in sys.argv[2:]]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, …
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-m", "mailstead", "serve", "-c", config])
""")


def listening(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


def test_listeners_use_the_sockets_systemd_hands_over(tmp_path: Path) -> None:
    imap, pop3s, smtp, stray = listening(), listening(), listening(), listening()
    port = {name: s.getsockname()[1] for name, s in
            (("imap", imap), ("pop3s", pop3s), ("smtp", smtp), ("stray", stray))}
    srv = ServerProcess(tmp_path, textwrap.dedent(f"""
        [server]
        hostname = "mail.test"
        data_dir = "data"
        domains = ["example.org"]
        [imap]
        listen = ["127.0.0.1:{port['imap']}"]
        listen_tls = []
        [pop3]
        listen = []
        listen_tls = ["127.0.0.1:{port['pop3s']}"]
        [smtp]
        listen = ["127.0.0.1:{port['smtp']}"]
        [lmtp]
        listen = ["127.0.0.1:0"]
    """))
    srv.add_user("jo", "pw")
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    socks = (imap, pop3s, smtp, stray)
    with srv.log.open("ab") as log:
        srv.proc = subprocess.Popen(
            [sys.executable, str(launcher), str(srv.config), *(str(s.fileno()) for s in socks)],
            pass_fds=[s.fileno() for s in socks], stdout=log, stderr=log, env=srv.env,
        )
    for s in socks:  # the server holds them now; ours must not keep the ports
        s.close()
    try:
        listeners = srv.data / "listeners.json"
        deadline = time.monotonic() + 30
        while not listeners.exists():
            assert srv.proc.poll() is None, srv.log_text()
            assert time.monotonic() < deadline, srv.log_text()
            time.sleep(0.05)
        bound = {(e["protocol"], e["tls"]): e["port"] for e in json.loads(listeners.read_text())}
        assert bound[("imap", False)] == port["imap"]
        assert bound[("pop3", True)] == port["pop3s"]
        assert bound[("smtp", False)] == port["smtp"]
        log_text = srv.log_text()
        assert log_text.count("(socket from systemd)") == 3
        assert f"systemd passed a socket for 127.0.0.1:{port['stray']}" in log_text
        with pytest.raises(OSError):  # the stray one was closed, not left listening
            socket.create_connection(("127.0.0.1", port["stray"]), timeout=2).close()

        with smtplib.SMTP("127.0.0.1", port["smtp"], timeout=10) as s:
            s.sendmail("a@x.net", ["jo@example.org"], b"Subject: hi\r\n\r\nactivated\r\n")
        client = imaplib.IMAP4("127.0.0.1", port["imap"], timeout=10)
        client.login("jo", "pw")
        assert client.select("INBOX")[1] == [b"1"]
        client.logout()
        ctx = ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))
        pop = poplib.POP3_SSL("127.0.0.1", port["pop3s"], context=ctx, timeout=10)
        pop.user("jo")
        pop.pass_("pw")
        assert b"activated" in b"\n".join(pop.retr(1)[1])
        pop.quit()
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log_text()


def test_environment_for_another_process_is_ignored_and_cleared() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert len(InheritedSockets.from_environment(env)) == 0
    assert env == {}  # never passed on to children
    env = {"LISTEN_PID": "x", "LISTEN_FDS": "2"}
    assert len(InheritedSockets.from_environment(env)) == 0
    assert len(InheritedSockets.from_environment({})) == 0


def test_sockets_are_matched_by_address_not_by_spelling() -> None:
    try:
        v6 = listening("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    v4 = listening()
    sockets = InheritedSockets({
        ("127.0.0.1", v4.getsockname()[1]): v4, ("::1", v6.getsockname()[1]): v6,
    })
    assert sockets.take(Listen("localhost", v4.getsockname()[1])) is None  # a name: no
    assert sockets.take(Listen("0:0:0:0:0:0:0:1", v6.getsockname()[1])) is v6
    assert sockets.take(Listen("127.0.0.1", v4.getsockname()[1])) is v4
    assert len(sockets) == 0
    v4.close()
    v6.close()
