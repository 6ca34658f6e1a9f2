"""The connection layer on real sockets over loopback: every way a session ends closes the
connection, over plain TCP, implicit TLS and STARTTLS/STLS, for IMAP and POP3 (issue 10:
the IMAP side never closed over TLS); the login deadline, the TLS handshake deadline and
the global connection cap with small configured values (issue 12 #11).

"Closed" means what a client sees: the server's TLS close_notify (or TCP FIN) arrives,
and once the client answers it, the server closes the TCP connection too, so its
session, per-user and per-address slots are free again.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fuzzlib as F
from conftest import ServerProcess

LOGIN_TIMEOUT = 2.0
HANDSHAKE_TIMEOUT = 2.0
MODES = ["plain", "implicit", "starttls"]


def config(**limits: object) -> str:
    return F.server_config(tls=True, auth={
        "failure_delay": 0.05, "failure_delay_max": 0.2,
    }, limits={
        "login_timeout_seconds": LOGIN_TIMEOUT,
        "tls_handshake_timeout_seconds": HANDSHAKE_TIMEOUT,
        "max_sessions_per_user": 1,
        **limits,
    })


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("conn-tls"), config()).start()
    try:
        yield server
        server.stop()
    finally:
        server.kill()
    found = F.problems(server.log_text())
    assert not found, "\n\n".join(found[:5])


_names = iter(range(1, 1_000_000))


@pytest.fixture
def user(srv: ServerProcess) -> str:
    name = f"c{next(_names)}"
    F.create_users(srv, name)
    return name


class Client:
    """A line client for IMAP or POP3 over plain TCP, implicit TLS or STARTTLS/STLS."""

    def __init__(self, srv: ServerProcess, proto: str, mode: str, *, greet: bool = True,
                 timeout: float = 10.0) -> None:
        self.proto = proto
        self.tls = ssl.create_default_context(cafile=str(srv.data / "tls" / "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", srv.port(proto, mode == "implicit")),
                                       timeout=timeout)
        self.sock: socket.socket = raw
        if mode == "implicit":
            self.sock = self.tls.wrap_socket(raw, server_hostname="mail.test")
        self.buf = b""
        if greet:
            first = self.line()
            assert first.startswith((b"* OK", b"+OK")), first
        if mode == "starttls":
            self.starttls()

    def starttls(self) -> None:
        reply = self.cmd("S STARTTLS" if self.proto == "imap" else "STLS")
        assert reply.startswith((b"S OK", b"+OK")), reply
        self.sock = self.tls.wrap_socket(self.sock, server_hostname="mail.test")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def imap(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}\r\n".encode())
        out = [self.line()]
        while not out[-1].startswith(tag.encode() + b" "):
            out.append(self.line())
        return out

    def login(self, user: str, password: str = F.PASSWORD) -> list[bytes]:
        if self.proto == "imap":
            return self.imap("L", f"LOGIN {user} {password}")
        return [self.cmd(f"USER {user}"), self.cmd(f"PASS {password}")]

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes within ``timeout``: TLS close_notify or FIN first,
        then (TLS) the TCP close once we answer with our close_notify."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        except ssl.SSLError:
            return True
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                raw = self.sock.unwrap()
            except (OSError, ssl.SSLError):
                return True
            raw.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                return raw.recv(1) == b""
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def logged_in(srv: ServerProcess, proto: str, mode: str, user: str) -> Client:
    c = Client(srv, proto, mode)
    reply = c.login(user)
    assert reply[-1].startswith((b"L OK", b"+OK")), reply
    return c


# --- every close closes, over TLS too ----------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_logout_closes_the_connection(srv: ServerProcess, user: str, proto: str,
                                      mode: str) -> None:
    c = logged_in(srv, proto, mode, user)
    if proto == "imap":
        reply = c.imap("Z", "LOGOUT")
        assert reply[0].startswith(b"* BYE") and reply[-1].startswith(b"Z OK"), reply
    else:
        assert c.cmd("QUIT").startswith(b"+OK")
    started = time.monotonic()
    assert c.closed(5), "the server did not close after LOGOUT/QUIT"
    assert time.monotonic() - started < 3
    c.close()
    # The session slot is free again ([limits] max_sessions_per_user = 1).
    again = logged_in(srv, proto, mode, user)
    again.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_too_many_failed_logins_close_the_connection(srv: ServerProcess, user: str, proto: str,
                                                     mode: str) -> None:
    c = Client(srv, proto, mode)
    for i in range(3):  # [auth] max_failures_per_connection defaults to 3
        reply = c.login(user, f"wrong{i}")
        assert b"AUTHENTICATIONFAILED" in reply[-1] or reply[-1].startswith(b"-ERR [AUTH]")
    if proto == "imap":
        assert c.line() == b"* BYE Too many failed logins"
    else:
        assert b"too many failures" in reply[-1]
    assert c.closed(5), "the server did not close after the last failed login"
    c.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_no_login_in_time_closes_the_connection(srv: ServerProcess, proto: str,
                                                mode: str) -> None:
    started = time.monotonic()
    c = Client(srv, proto, mode)
    c.send(b"N NOOP\r\n" if proto == "imap" else b"CAPA\r\n")  # activity does not help
    goodbye = c.line(LOGIN_TIMEOUT + 5)
    while not goodbye.startswith((b"* BYE", b"-ERR")):
        goodbye = c.line(LOGIN_TIMEOUT + 5)
    took = time.monotonic() - started
    assert goodbye in (b"* BYE Autologout; no login within the time allowed",
                       b"-ERR No login within the time allowed, closing connection"), goodbye
    assert LOGIN_TIMEOUT - 0.5 < took < LOGIN_TIMEOUT + 3, took
    assert c.closed(5)
    c.close()


@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_a_tls_handshake_that_never_finishes_is_dropped(srv: ServerProcess, proto: str,
                                                         mode: str) -> None:
    port = srv.port(proto, mode == "implicit")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    if mode == "starttls":
        raw.recv(4096)  # the greeting
        raw.sendall(b"S STARTTLS\r\n" if proto == "imap" else b"STLS\r\n")
    raw.settimeout(HANDSHAKE_TIMEOUT + 5)
    try:
        while raw.recv(4096):  # the OK to STARTTLS; then no ClientHello from us
            pass
    except ConnectionResetError:
        pass
    took = time.monotonic() - started
    assert took < HANDSHAKE_TIMEOUT + 3, took
    if mode == "implicit":  # (STARTTLS: the login deadline would also have closed it)
        assert took < LOGIN_TIMEOUT + 3
    raw.close()


# --- shutdown ---------------------------------------------------------------------------
def test_shutdown_closes_tls_sessions_at_once(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, config(max_sessions_per_user=10).replace(
        "shutdown_grace = 5", "shutdown_grace = 8")).start()
    try:
        F.create_users(srv, "s1", *MODES)
        clients = [logged_in(srv, "imap", mode, "s1") for mode in MODES]
        # (one POP3 session per maildrop: a user of its own for each)
        clients += [logged_in(srv, "pop3", mode, mode) for mode in MODES]
        silent = logged_in(srv, "imap", "implicit", "s1")  # never answers the close
        assert srv.proc is not None
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for c in clients:
            goodbye = c.line(5)
            assert goodbye in (b"* BYE Server shutting down",
                               b"-ERR [SYS/TEMP] Server shutting down"), goodbye
            assert c.closed(5), (c.proto, goodbye)
        srv.proc.wait(10)
        took = time.monotonic() - started
        # Not the 8 s grace: every session closed, the silent one was cut after 2 s.
        assert took < 6, f"the server took {took:.1f}s to stop"
        for c in [*clients, silent]:
            c.close()
    finally:
        srv.kill()
    assert "Traceback" not in srv.log_text()


# --- the global connection cap ---------------------------------------------------------------
def test_the_global_cap_refuses_clearly_and_frees_slots(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, config(max_connections=3)).start()
    try:
        held = [Client(srv, "imap", "plain"), Client(srv, "pop3", "implicit"),
                Client(srv, "imap", "starttls")]
        refused = Client(srv, "imap", "plain", greet=False)
        assert refused.line().startswith(b"* BYE [UNAVAILABLE] Server busy")
        assert refused.closed(5)
        refused = Client(srv, "pop3", "implicit", greet=False)
        assert refused.line().startswith(b"-ERR [SYS/TEMP] Server busy")
        assert refused.closed(5)
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is taken again once the server saw the close
            c = Client(srv, "pop3", "plain", greet=False)
            first = c.line()
            if first.startswith(b"+OK") or time.monotonic() > deadline:
                break
            c.close()
            time.sleep(0.1)
        assert first.startswith(b"+OK"), first
        for h in [*held, c]:
            h.close()
        assert "refused" in srv.log_text() and "reason=server_full" in srv.log_text()
    finally:
        srv.stop()
