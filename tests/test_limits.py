"""Limits and resource exhaustion, against real server processes.

* ``[limits] max_connections_per_ip``: the connections beyond it are refused with a clear
  response (``* BYE [UNAVAILABLE]``, ``-ERR [SYS/TEMP]``, SMTP ``421``) while the
  existing sessions and the other protocols keep working, and a freed slot is reusable.
* ``[limits] max_sessions_per_user`` for IMAP: ``NO [LIMIT]``, the connection stays usable.
* APPEND over ``max_message_size``: ``{n}`` is refused before the octets are sent
  (``NO [TOOBIG]``, no ``+``); ``{n+}`` is answered ``BAD [TOOBIG]`` at once and the
  connection closed when the client streams the literal anyway, without memory growth.
* Slow readers (``FETCH 1:* (BODY.PEEK[])`` of tens of MB, never read; pipelined POP3
  RETRs never read) do not slow other sessions down, the server's RSS stays bounded, and
  IMAP drops a client with more than ~16 MB of unread output.
* Over-long lines in every protocol get an error and the session goes on; in IMAP and
  POP3 the error comes when the line passes the limit, and a line that goes on past a hard
  cap (1 MiB) closes the connection, without memory growth.

Memory is the server process's private resident memory (RssAnon + RssShmem: VmRSS without
the mapped database and libraries) and VmHWM from /proc; the figures are printed in the
terminal summary.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import fuzzlib as F
from conftest import ServerProcess

MiB = 1024 * 1024
PER_IP = 5
PER_USER = 3
MAX_MESSAGE = 1_000_000
MAX_LINE = 4096


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f} MiB"


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[ServerProcess]:
    """A server with small connection and session limits."""
    F.register_summary(request.config)
    srv = ServerProcess(tmp_path_factory.mktemp("limited"), F.server_config(limits={
        "max_connections_per_ip": PER_IP, "max_sessions_per_user": PER_USER,
        "max_message_size": MAX_MESSAGE, "max_line_length": MAX_LINE,
    })).start()
    try:
        F.create_users(srv, "lim1", "lim2", "lim3")
        F.append_messages(srv, "lim2", [F.message("lim", 100)])
        yield srv
        srv.stop()
    finally:
        srv.kill()
    found = F.problems(srv.log_text())
    assert not found, "\n\n".join(found[:5])


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
          ) -> Iterator[ServerProcess]:
    """A server with room for many connections, for the memory tests."""
    F.register_summary(request.config)
    srv = ServerProcess(tmp_path_factory.mktemp("roomy"), F.server_config(limits={
        "max_connections_per_ip": 100, "max_sessions_per_user": 100,
        "max_message_size": MAX_MESSAGE, "max_line_length": MAX_LINE,
    })).start()
    try:
        F.create_users(srv, "big", "popbig", "other", "small")
        F.append_messages(srv, "small", [F.message("small", 300) for _ in range(3)])
        F.append_messages(srv, "other", [F.message("other", 2000) for _ in range(5)])
        yield srv
        srv.stop()
    finally:
        srv.kill()
    found = F.problems(srv.log_text())
    assert not found, "\n\n".join(found[:5])


def rss(srv: ServerProcess) -> dict[str, int]:
    assert srv.proc is not None
    return F.rss_kb(srv.proc.pid)


def greeting(proto: str, port: int) -> tuple[F.LineClient, bytes]:
    c = F.LineClient(port, timeout=5)
    return c, (c.smtp_reply()[0] if proto in ("smtp", "lmtp") else c.line())


def accepts(srv: ServerProcess, proto: str) -> bool:
    """True when a new connection of ``proto`` gets a normal greeting."""
    c, first = greeting(proto, srv.port(proto))
    c.close()
    return first.startswith((b"* OK", b"+OK", b"220"))


# --- connections per IP ----------------------------------------------------------------------
REFUSAL = {
    "imap": b"* BYE [UNAVAILABLE] ",
    "pop3": b"-ERR [SYS/TEMP] ",
    # RFC 5321 §3.1 / §4.2.2: 421 "Service not available, closing transmission channel".
    "smtp": b"421 ",
}


def _noop(proto: str, c: F.LineClient) -> bool:
    if proto == "imap":
        return c.imap("N1", "NOOP")[-1].startswith(b"N1 OK")
    if proto == "pop3":  # NOOP is TRANSACTION only; CAPA answers in any state
        ok = c.cmd("CAPA").startswith(b"+OK")
        c.pop3_multi()
        return ok
    return c.smtp("NOOP")[-1].startswith(b"250")


def hold(srv: ServerProcess, proto: str, n: int, timeout: float = 10.0) -> list[F.LineClient]:
    """``n`` connections with a normal greeting (retrying while the server still counts
    connections of an earlier test that it has not seen closed yet)."""
    deadline = time.monotonic() + timeout
    while True:
        held = []
        for _ in range(n):
            c, first = greeting(proto, srv.port(proto))
            held.append(c)
            if not first.startswith((b"* OK", b"+OK", b"220")):
                break
        else:
            return held
        for c in held:
            c.close()
        assert time.monotonic() < deadline, f"could not open {n} {proto} connections: {first!r}"
        time.sleep(0.1)


def _per_ip_limit(srv: ServerProcess, proto: str) -> None:
    port = srv.port(proto)
    held = hold(srv, proto, PER_IP)
    try:
        for _ in range(2):  # the extra ones: a clear refusal, then the server closes
            c, first = greeting(proto, port)
            with c:
                assert first.startswith(REFUSAL[proto]), first
                assert c.eof(5.0), "the refused connection was not closed"
        for c in held:  # the existing sessions keep working
            assert _noop(proto, c)
        for other in ("imap", "pop3", "smtp", "lmtp"):  # and so do the other protocols
            if other != proto:
                F.alive(srv, other)
        held.pop().close()  # a freed slot can be used again
        wait_until(lambda: accepts(srv, proto), what="the freed slot")
    finally:
        for c in held:
            c.close()


def test_imap_connections_beyond_the_per_ip_limit_get_bye_unavailable(
    limited: ServerProcess,
) -> None:
    _per_ip_limit(limited, "imap")


def test_pop3_connections_beyond_the_per_ip_limit_get_err_sys_temp(
    limited: ServerProcess,
) -> None:
    _per_ip_limit(limited, "pop3")


def test_smtp_connections_beyond_the_per_ip_limit_get_421(limited: ServerProcess) -> None:
    _per_ip_limit(limited, "smtp")


def test_the_per_ip_limit_counts_each_protocol_on_its_own(limited: ServerProcess) -> None:
    """Full IMAP does not lock POP3 out (and the reverse): each has its own count."""
    held = hold(limited, "imap", PER_IP)
    try:
        held += hold(limited, "pop3", PER_IP)
        for c, proto in zip(held, ["imap"] * PER_IP + ["pop3"] * PER_IP, strict=True):
            assert _noop(proto, c)
    finally:
        for c in held:
            c.close()


# --- sessions per user ---------------------------------------------------------------------------
def test_imap_sessions_beyond_the_per_user_limit_get_no_limit(limited: ServerProcess) -> None:
    wait_until(lambda: accepts(limited, "imap"), what="IMAP connections to be released")
    port = limited.port("imap")
    sessions = [F.imap_login(port, "lim2", "INBOX") for _ in range(PER_USER)]
    try:
        with F.LineClient(port) as extra:
            assert extra.line().startswith(b"* OK")
            r = extra.imap("X1", f"LOGIN lim2 {F.PASSWORD}")
            assert r[-1].startswith(b"X1 NO [LIMIT]"), r
            # The refused login leaves a usable, unauthenticated connection.
            assert extra.imap("X2", "NOOP")[-1].startswith(b"X2 OK")
            plain = F.sasl_plain("lim2")
            r = extra.imap("X3", "AUTHENTICATE PLAIN " + plain)
            assert r[-1].startswith(b"X3 NO [LIMIT]"), r
            # Another user is not affected.
            r = extra.imap("X4", f"LOGIN lim3 {F.PASSWORD}")
            assert r[-1].startswith(b"X4 OK"), r
        for s in sessions:
            assert s.imap("N", "NOOP")[-1].startswith(b"N OK")
        r = sessions[0].imap("LO", "LOGOUT")
        assert r[-1].startswith(b"LO OK"), r
        sessions.pop(0).close()

        def can_login() -> bool:
            with F.LineClient(port) as c:
                c.line()
                ok = c.imap("Y1", f"LOGIN lim2 {F.PASSWORD}")[-1].startswith(b"Y1 OK")
                c.imap("Y2", "LOGOUT")
                return ok

        wait_until(can_login, what="the freed session slot")
    finally:
        for s in sessions:
            s.close()


# --- APPEND over the size limit ----------------------------------------------------------------
def test_append_over_the_limit_is_refused_before_the_literal_is_sent(
    limited: ServerProcess,
) -> None:
    wait_until(lambda: accepts(limited, "imap"), what="IMAP connections to be released")
    with F.imap_login(limited.port("imap"), "lim1", "INBOX") as c:
        c.send(b"A1 APPEND INBOX {%d}\r\n" % (MAX_MESSAGE + 1))
        first = c.line()
        assert first.startswith(b"A1 NO [TOOBIG]"), first  # and no "+" before it
        assert c.imap("A2", "NOOP")[-1].startswith(b"A2 OK")
        huge = b"A3 APPEND INBOX (\\Seen) {99999999999999999999}\r\n"
        c.send(huge)
        first = c.line()
        assert first.startswith(b"A3 NO [TOOBIG]"), first
        # Exactly at the limit is fine (APPENDLIMIT is the largest size accepted).
        msg = F.message("exact", 10)
        msg += b"x" * (MAX_MESSAGE - len(msg) - 2) + b"\r\n"
        assert len(msg) == MAX_MESSAGE
        c.send(b"A4 APPEND INBOX {%d}\r\n" % len(msg))
        assert c.line().startswith(b"+ ")
        c.send(msg + b"\r\n")
        r = c.imap_collect("A4", 30)
        assert r[-1].startswith(b"A4 OK"), r
        r = c.imap("A5", "STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 1)" in r[0], r


def test_non_synchronising_literal_over_the_limit_is_refused_at_once_then_closed(
    roomy: ServerProcess,
) -> None:
    size = 64 * MiB
    with F.imap_login(roomy.port("imap"), "small", "INBOX") as c:
        c.imap("W", "NOOP")
        before = rss(roomy)
        c.send(b"A1 APPEND INBOX {%d+}\r\n" % size)
        # Answered before a single octet of the literal is sent ...
        first = c.line(10)
        assert first.startswith(b"A1 BAD [TOOBIG]"), first
        chunk = b"Subject: big\r\n" + b"x" * (MiB - 16) + b"\r\n"
        started = time.monotonic()
        sent = 0
        try:  # ... and the connection is closed when the client streams it anyway.
            for _ in range(size // MiB):
                c.send(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        took = time.monotonic() - started
        assert sent < size, "the server read the whole refused literal"
        assert _closed_by_server(c.sock, 10)
        after = rss(roomy)
    with F.imap_login(roomy.port("imap"), "small", "INBOX") as c:
        r = c.imap("A3", "STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 3)" in r[0], r
    grew = after["Private"] - before["Private"]
    F.MEMORY["APPEND {64 MiB+} refused"] = (
        f"RSS {mib(before['Private'])} -> {mib(after['Private'])} (peak {mib(after['VmHWM'])}), "
        f"closed after {sent / MiB:.0f} MiB sent in {took:.2f}s")
    assert grew < 16 * 1024, f"RSS grew by {mib(grew)} while refusing a 64 MiB literal"


# --- slow readers --------------------------------------------------------------------------------
def _slow_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    s.settimeout(10)
    s.connect((F.HOST, port))
    return s


def _read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError(data)
        data += chunk
    return data


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    """Drain what the server sent; True when it closed or reset the connection."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            if not s.recv(1 << 20):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_slow_imap_readers_do_not_harm_others_and_get_dropped(roomy: ServerProcess) -> None:
    messages = [F.message("big", 900_000) for _ in range(48)]  # 43 MB in the mailbox
    F.append_messages(roomy, "big", messages)
    total = sum(len(m) for m in messages)
    other = F.imap_login(roomy.port("imap"), "other", "INBOX")
    # As many as the user's expensive-command turns (max_expensive_commands_per_user, 2):
    # each streams until its client's window is full, then waits for it to read.
    readers = 2
    before = rss(roomy)
    slow = []
    try:
        for i in range(readers):
            s = _slow_socket(roomy.port("imap"))
            assert _read_line(s).startswith(b"* OK")
            s.sendall(f"L LOGIN big {F.PASSWORD}\r\nS EXAMINE INBOX\r\n".encode())
            while not _read_line(s).startswith(b"S OK"):
                pass
            s.sendall(b"F%d FETCH 1:* (BODY.PEEK[])\r\n" % i)
            slow.append(s)
        started = time.monotonic()
        worst = 0.0
        peak = before["Private"]
        deadline = time.monotonic() + 8
        rounds = 0
        while time.monotonic() < deadline:
            rounds += 1
            t = time.monotonic()
            assert other.imap("N", "NOOP")[-1].startswith(b"N OK")
            r = other.imap("F", "FETCH 1:* (BODY.PEEK[] FLAGS)")
            assert r[-1].startswith(b"F OK") and len(r) == 6, r[-1]
            worst = max(worst, time.monotonic() - t)
            peak = max(peak, rss(roomy)["Private"])
            time.sleep(0.2)
        # FETCH writes only as fast as the client reads and drops one that has read
        # nothing for 30 s (OUTPUT_STALL_SECONDS); reading earlier would revive it.
        time.sleep(max(0.0, started + 34 - time.monotonic()))
        dropped = sum(_closed_by_server(s, 10) for s in slow)
        after = rss(roomy)
    finally:
        other.close()
        for s in slow:
            s.close()
    F.MEMORY[f"{readers} slow IMAP readers of a {total / MiB:.0f} MiB FETCH"] = (
        f"RSS {mib(before['Private'])} -> peak {mib(peak)} -> {mib(after['Private'])} (VmHWM "
        f"{mib(before['VmHWM'])} -> {mib(after['VmHWM'])}); other session's NOOP+FETCH "
        f"worst {worst * 1000:.0f} ms over {rounds} rounds; {dropped}/{readers} dropped")
    assert worst < 1.0, f"another session waited {worst:.2f}s behind the slow readers"
    # Each slow reader may cost up to ~16 MiB of buffered output plus a batch in flight.
    bound = readers * 24 * 1024 + 64 * 1024
    assert peak - before["Private"] < bound, f"RSS grew by {mib(peak - before['Private'])}"
    assert dropped == readers, f"only {dropped} of {readers} slow readers were dropped"
    assert "dropping a client that does not read its responses" in roomy.log_text()


def test_slow_pop3_reader_does_not_harm_others_and_memory_stays_bounded(
    roomy: ServerProcess,
) -> None:
    messages = [F.message("popbig", 900_000) for _ in range(40)]
    F.append_messages(roomy, "popbig", messages)
    before = rss(roomy)
    s = _slow_socket(roomy.port("pop3"))
    peak = before["Private"]
    worst = 0.0
    try:
        assert _read_line(s).startswith(b"+OK")
        s.sendall(f"USER popbig\r\nPASS {F.PASSWORD}\r\n".encode())
        assert _read_line(s).startswith(b"+OK")
        assert _read_line(s).startswith(b"+OK")
        s.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, 41)) * 3)  # ~100 MB asked
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            t = time.monotonic()
            F.alive_pop3(roomy.port("pop3"), "small")
            worst = max(worst, time.monotonic() - t)
            peak = max(peak, rss(roomy)["Private"])
            time.sleep(0.2)
    finally:
        s.close()
    after = rss(roomy)
    F.MEMORY["slow POP3 reader, 120 pipelined RETRs of 0.9 MB"] = (
        f"RSS {mib(before['Private'])} -> peak {mib(peak)} -> {mib(after['Private'])}; "
        f"another POP3 login+NOOP worst {worst * 1000:.0f} ms")
    assert worst < 1.0
    assert peak - before["Private"] < 48 * 1024, f"RSS grew by {mib(peak - before['Private'])}"


# --- over-long lines ---------------------------------------------------------------------------
def test_over_long_imap_line_gets_bad_and_the_session_goes_on(roomy: ServerProcess) -> None:
    size = MAX_LINE + 1
    with F.imap_login(roomy.port("imap"), "small", "INBOX") as c:
        c.send(b"L1 SEARCH TEXT " + b"x" * size + b"\r\n")
        r = c.imap_collect("L1", 60)
        assert r[-1].startswith(b"L1 BAD"), r
        # ... also when the over-long line announces a literal: it is not waited for.
        c.send(b"L2 APPEND INBOX " + b"y" * size + b" {5}\r\n")
        r = c.imap_collect("L2", 60)
        assert r[-1].startswith(b"L2 BAD"), r
        assert c.imap("L3", "FETCH 1 (FLAGS)")[-1].startswith(b"L3 OK")


def _stream_line(c: F.LineClient, size: int) -> int:
    """Send ``size`` octets of one line without its end; how many went out before the
    server closed."""
    sent, chunk = 0, b"x" * MiB
    try:
        while sent < size:
            c.send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_endless_imap_line_is_answered_at_the_limit_and_closed_past_the_cap(
    roomy: ServerProcess,
) -> None:
    size = 32 * MiB
    with F.imap_login(roomy.port("imap"), "small", "INBOX") as c:
        before = rss(roomy)
        c.send(b"L1 SEARCH TEXT " + b"x" * (MAX_LINE + 10))
        r = c.imap_collect("L1", 10)  # before the line ends
        assert r[-1].startswith(b"L1 BAD"), r
        sent = _stream_line(c, size)
        assert _closed_by_server(c.sock, 10)
        assert b"* BYE" in c.buf or sent < size
        after = rss(roomy)
    F.MEMORY[f"IMAP line of {size} octets"] = (
        f"RSS {mib(before['Private'])} -> {mib(after['Private'])}, closed after "
        f"{sent / MiB:.0f} MiB")
    assert sent < size
    assert after["Private"] - before["Private"] < 16 * 1024


@pytest.mark.parametrize("size", [1025, 8193], ids=["1025", "8193"])
def test_over_long_pop3_line_gets_err_and_the_session_goes_on(roomy: ServerProcess,
                                                              size: int) -> None:
    with F.pop3_login(roomy.port("pop3"), "small") as c:
        c.send(b"LIST " + b"1" * size + b"\r\n")
        reply = c.line(30)
        assert reply.startswith(b"-ERR"), reply
        assert c.cmd("STAT").startswith(b"+OK 3 ")
        assert c.cmd("QUIT").startswith(b"+OK")


def test_endless_pop3_line_is_answered_at_the_limit_and_closed_past_the_cap(
    roomy: ServerProcess,
) -> None:
    size = 32 * MiB
    with F.pop3_login(roomy.port("pop3"), "small") as c:
        before = rss(roomy)
        c.send(b"LIST " + b"1" * 9000)
        reply = c.line(10)  # before the line ends
        assert reply == b"-ERR Line too long", reply
        sent = _stream_line(c, size)
        assert _closed_by_server(c.sock, 10)
        after = rss(roomy)
    F.MEMORY[f"POP3 line of {size} octets"] = (
        f"RSS {mib(before['Private'])} -> {mib(after['Private'])}, closed after "
        f"{sent / MiB:.0f} MiB")
    assert sent < size
    assert after["Private"] - before["Private"] < 16 * 1024


@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
def test_endless_smtp_line_is_answered_at_the_limit_and_closed_past_the_cap(
    roomy: ServerProcess, proto: str
) -> None:
    size = 32 * MiB
    hello = "LHLO" if proto == "lmtp" else "EHLO"
    with F.LineClient(roomy.port(proto), timeout=60) as c:
        assert c.smtp_reply()[0].startswith(b"220")
        assert c.smtp(f"{hello} client.test")[-1].startswith(b"250")
        before = rss(roomy)
        c.send(b"NOOP " + b"x" * 9000)
        reply = c.line(10)  # before the line ends
        assert reply.startswith(b"500"), reply
        sent = _stream_line(c, size)
        assert _closed_by_server(c.sock, 10)
        after = rss(roomy)
    F.MEMORY[f"{proto.upper()} line of {size} octets"] = (
        f"RSS {mib(before['Private'])} -> {mib(after['Private'])}, closed after "
        f"{sent / MiB:.0f} MiB")
    assert sent < size
    assert after["Private"] - before["Private"] < 16 * 1024


@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
@pytest.mark.parametrize("size", [600, 20_000], ids=["600", "20000"])
def test_over_long_smtp_lines_get_500_and_the_session_goes_on(roomy: ServerProcess,
                                                              proto: str, size: int) -> None:
    hello = "LHLO" if proto == "lmtp" else "EHLO"
    with F.LineClient(roomy.port(proto), timeout=60) as c:
        assert c.smtp_reply()[0].startswith(b"220")
        assert c.smtp(f"{hello} client.test")[-1].startswith(b"250")
        before = rss(roomy)
        # A command line longer than RFC 5321's 512 octets.
        reply = c.smtp(b"NOOP " + b"x" * size)
        assert reply[-1].startswith(b"500"), reply
        assert c.smtp("NOOP")[-1].startswith(b"250")
        # A text line longer than 1000 octets: the message is refused, the session goes on.
        assert c.smtp("MAIL FROM:<a@example.net>")[-1].startswith(b"250")
        assert c.smtp("RCPT TO:<small@example.org>")[-1].startswith(b"250")
        assert c.smtp("DATA")[-1].startswith(b"354")
        reply = c.smtp(b"Subject: long\r\n\r\n" + b"y" * max(size, 1200) + b"\r\n.")
        assert reply[-1][:1] == b"5", reply
        assert c.smtp("NOOP")[-1].startswith(b"250")
        after = rss(roomy)
    F.MEMORY[f"{proto.upper()} lines of {size} octets"] = (
        f"RSS {mib(before['Private'])} -> {mib(after['Private'])}")
    assert after["Private"] - before["Private"] < 16 * 1024


@pytest.mark.parametrize("body", ["long-line", "too-big"])
def test_lmtp_refused_data_gets_one_reply_per_recipient(roomy: ServerProcess,
                                                        body: str) -> None:
    if body == "long-line":
        data = b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n"
    else:
        data = b"Subject: x\r\n\r\n" + (b"z" * 998 + b"\r\n") * (MAX_MESSAGE // 1000 + 10)
    with F.LineClient(roomy.port("lmtp"), timeout=10) as c:
        assert c.smtp_reply()[0].startswith(b"220")
        assert c.smtp("LHLO client.test")[-1].startswith(b"250")
        assert c.smtp("MAIL FROM:<a@example.net>")[-1].startswith(b"250")
        assert c.smtp("RCPT TO:<small@example.org>")[-1].startswith(b"250")
        assert c.smtp("RCPT TO:<other@example.org>")[-1].startswith(b"250")
        assert c.smtp("DATA")[-1].startswith(b"354")
        c.send(data + b".\r\n")
        first = c.smtp_reply()
        assert first[-1][:1] in (b"4", b"5"), first
        c.send(b"NOOP\r\n")
        second = c.smtp_reply(3.0)
        # The second reply must be for the second recipient, not the answer to NOOP.
        assert second[-1][:1] in (b"4", b"5"), (first, second)
        assert c.smtp_reply(3.0)[-1].startswith(b"250")  # and then NOOP's


# --- pipelining --------------------------------------------------------------------------------
def _pipeline(srv: ServerProcess, proto: str, commands: int) -> tuple[dict[str, int], int, int]:
    """Pipeline ``commands`` NOOPs as fast as the server takes them while a thread reads
    every response; returns (RSS before, peak RSS while sending, octets of responses)."""
    if proto == "imap":
        c, line = F.imap_login(srv.port("imap"), "small", "INBOX"), b"a NOOP\r\n"
    else:
        c, line = F.pop3_login(srv.port("pop3"), "small"), b"NOOP\r\n"
    got = [0]
    stop = threading.Event()

    def drain() -> None:
        c.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                data = c.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            got[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    before = rss(srv)
    peak = before["Private"]
    reader.start()
    block = line * 50_000
    try:
        c.sock.settimeout(30)
        for i in range(commands // 50_000):
            c.sock.sendall(block)
            if i % 4 == 0:
                peak = max(peak, rss(srv)["Private"])
        peak = max(peak, rss(srv)["Private"])
    finally:
        stop.set()
        reader.join(5)
        c.close()
    return before, peak, got[0]


@pytest.mark.parametrize("proto", [
    "imap",
    "pop3",
])
def test_pipelined_commands_do_not_grow_memory_without_bound(roomy: ServerProcess,
                                                            proto: str) -> None:
    commands = 1_000_000
    before, peak, answered = _pipeline(roomy, proto, commands)
    grew = peak - before["Private"]
    size = commands * len(b"a NOOP\r\n" if proto == "imap" else b"NOOP\r\n")
    F.MEMORY[f"{proto.upper()} {commands} pipelined NOOPs ({size / MiB:.1f} MiB), "
             "responses read"] = (
        f"RSS {mib(before['Private'])} -> peak {mib(peak)} (+{mib(grew)}); "
        f"{answered / MiB:.1f} MiB of responses read while sending")
    assert grew < 48 * 1024, f"RSS grew by {mib(grew)} for {commands} pipelined NOOPs"
