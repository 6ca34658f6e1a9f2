"""Issue 15: IPv4 and IPv6 listeners on the same port, side by side.

Twisted's IPv6 endpoint leaves ``IPV6_V6ONLY`` off (Linux's default), so ``[::]:143`` took
IPv4 too and ``0.0.0.0:143`` beside it failed; the server now binds its IPv6 sockets with
``IPV6_V6ONLY`` itself (``activation.bind_ipv6``). Loopback only: 127.0.0.1 and ::1."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from pathlib import Path

import pytest

from conftest import ServerProcess
from mailstead.activation import bind_ipv6


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")


def _port_free_on_both() -> int:
    """A port that nothing holds on 127.0.0.1 or ::1 (released before the server binds it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as v4:
            v4.bind(("127.0.0.1", 0))
            port = v4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6:
                    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    v6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both loopbacks")


def test_bind_ipv6_sets_v6only_and_listens() -> None:
    sock = bind_ipv6("::1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.family == socket.AF_INET6 and sock.getsockname()[0] == "::1"
    finally:
        sock.close()
    with pytest.raises(OSError):
        bind_ipv6("::ffff:127.0.0.1", 0)  # a v4 address cannot go to an IPv6-only socket


def test_ipv4_and_ipv6_listeners_on_one_port(tmp_path: Path) -> None:
    imap_port, pop3_port, smtp_port = (_port_free_on_both() for _ in range(3))
    config = f"""
[server]
hostname = "mail.test"
data_dir = "data"
domains = ["example.org"]
shutdown_grace = 5

[imap]
listen = ["127.0.0.1:{imap_port}", "[::1]:{imap_port}"]
listen_tls = []

[pop3]
listen = ["127.0.0.1:{pop3_port}", "[::1]:{pop3_port}"]
listen_tls = []

[smtp]
listen = ["127.0.0.1:{smtp_port}", "[::1]:{smtp_port}"]

[lmtp]
listen = []
"""
    srv = ServerProcess(tmp_path / "srv", config)
    srv.add_user("vic")
    srv.start()
    try:
        for host in ("127.0.0.1", "::1"):
            with imaplib.IMAP4(host, imap_port, timeout=10) as imap:
                imap.login("vic", "secret")
            pop = poplib.POP3(host, pop3_port, timeout=10)
            assert pop.getwelcome().startswith(b"+OK")
            pop.quit()
            with smtplib.SMTP(host, smtp_port, timeout=10) as smtp:
                assert smtp.noop()[0] == 250
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log_text()
