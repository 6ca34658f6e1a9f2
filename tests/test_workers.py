"""``[server] workers = 2``: one supervisor, two worker processes, the same ports.

Which worker a connection lands on is the kernel's choice; the tests find out with
``mailstead who --json`` (the supervisor adds each session's worker and pid) and open
connections until they have one on each worker where that matters.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import poplib
import re
import signal
import smtplib
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from fuzzlib import create_users, problems, server_config

TRIES = 40  # connections opened at most to land one on a given worker


def who(server: ServerProcess) -> list[dict[str, object]]:
    return list(json.loads(server.cli("who", "--json").stdout))


def workers_of(server: ServerProcess, user: str) -> list[int]:
    return sorted(int(str(s["worker"])) for s in who(server) if s["user"] == user)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def imap_login(server: ServerProcess, user: str) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    conn.login(user, "secret")
    return conn


def login_on_other_worker(server: ServerProcess, user: str, held: list[imaplib.IMAP4],
                          than: int) -> tuple[imaplib.IMAP4, int]:
    """A new IMAP session of ``user`` on a worker other than ``than``; the connections
    that landed on ``than`` on the way are appended to ``held`` (still open)."""
    for _ in range(TRIES):
        before = workers_of(server, user).count(1 - than)
        conn = imap_login(server, user)
        if workers_of(server, user).count(1 - than) > before:
            return conn, 1 - than
        held.append(conn)
    raise AssertionError(f"no connection landed on worker {1 - than} in {TRIES} tries")


@pytest.fixture
def workers_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    limits = getattr(request, "param", {})
    srv = ServerProcess(tmp_path / "srv", server_config(workers=2, fsync=False, limits=limits))
    create_users(srv, "alice", "bob", "carol")
    srv.start()
    yield srv
    srv.kill()


def test_two_workers_serve_every_protocol_on_the_same_ports(
        workers_server: ServerProcess) -> None:
    srv = workers_server
    assert srv.proc is not None
    assert len(children(srv.proc.pid)) == 2
    held = [imap_login(srv, "alice")]
    first = workers_of(srv, "alice")[0]
    conn, _ = login_on_other_worker(srv, "alice", held, first)
    held.append(conn)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("x@example.net", ["alice@example.org"],
                      b"Subject: via smtp\r\n\r\nhello\r\n")
    for c in held:  # both workers see the delivery, whichever worker took it
        c.select("INBOX")
        typ, data = c.search(None, "ALL")
        assert typ == "OK" and data[0] == b"1"
    pop = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    assert pop.stat()[0] == 1
    pop.quit()
    for c in held:
        c.logout()


def _idle_push(idler: socket.socket, reader: object, appender: imaplib.IMAP4) -> float:
    """Seconds from APPEND's OK on one worker to the EXISTS on the other's IDLE."""
    rfile = reader  # the idler's file
    idler.sendall(b"i IDLE\r\n")
    assert rfile.readline().startswith(b"+")  # type: ignore[attr-defined]
    typ, _ = appender.append("INBOX", None, None, b"Subject: push\r\n\r\nhi\r\n")
    done = time.perf_counter()
    assert typ == "OK"
    line = rfile.readline()  # type: ignore[attr-defined]
    latency = time.perf_counter() - done
    assert line.endswith(b"EXISTS\r\n"), line
    idler.sendall(b"DONE\r\n")
    while not rfile.readline().startswith(b"i OK"):  # type: ignore[attr-defined]
        pass
    return latency


def test_idle_sees_another_workers_append_at_once(workers_server: ServerProcess) -> None:
    srv = workers_server
    idler = socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=5)
    rfile = idler.makefile("rb")
    rfile.readline()
    idler.sendall(b"a LOGIN bob secret\r\nb SELECT INBOX\r\n")
    while not rfile.readline().startswith(b"b OK"):
        pass
    held: list[imaplib.IMAP4] = []
    appender, _ = login_on_other_worker(srv, "bob", held, workers_of(srv, "bob")[0])
    latencies = [_idle_push(idler, rfile, appender) for _ in range(7)]
    print("cross-worker IDLE push, ms after APPEND OK:",  # shown with pytest -s
          " ".join(f"{x * 1000:.1f}" for x in latencies))
    # The writer polls for other processes' commits every 0.5 s; the bus hint makes the
    # other worker look at once, so the push comes in milliseconds, not in ~250 ms.
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.2, latencies
    idler.close()
    for c in [appender, *held]:
        c.logout()
    assert not problems(srv.log_text())


def _pop3(srv: ServerProcess) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)


def _pop3_sessions(srv: ServerProcess) -> list[dict[str, object]]:
    return [s for s in who(srv) if s["protocol"] == "pop3"]


def test_pop3_lock_holds_across_workers_and_a_killed_worker_frees_it(
        workers_server: ServerProcess) -> None:
    srv = workers_server
    assert srv.proc is not None
    holder = _pop3(srv)
    holder.user("carol")
    holder.pass_("secret")
    (held,) = _pop3_sessions(srv)
    for _ in range(TRIES):  # a second login of carol, until one is on the other worker
        other = _pop3(srv)
        other.user("carol")
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            other.pass_("secret")
        on = [s["worker"] for s in _pop3_sessions(srv) if s["user"] is None]
        other.quit()
        wait_for(lambda: len(_pop3_sessions(srv)) == 1, "the refused session to end")
        if on == [1 - int(str(held["worker"]))]:
            break
    else:
        raise AssertionError(f"no POP3 connection landed on the other worker in {TRIES}")
    os.kill(int(str(held["pid"])), signal.SIGKILL)
    wait_for(lambda: len(children(srv.proc.pid)) == 2  # type: ignore[union-attr]
             and int(str(held["pid"])) not in children(srv.proc.pid),  # type: ignore[union-attr]
             "the killed worker to be started again")
    assert "restarting it" in srv.log_text()
    again = _pop3(srv)  # the kernel dropped the dead worker's flock: carol may log in
    again.user("carol")
    assert again.pass_("secret").startswith(b"+OK")
    again.quit()


@pytest.mark.parametrize("workers_server", [{"max_sessions_per_user": 2}], indirect=True)
def test_sessions_per_user_are_counted_across_workers(workers_server: ServerProcess) -> None:
    srv = workers_server
    first = imap_login(srv, "alice")
    home = workers_of(srv, "alice")[0]
    for _ in range(TRIES):  # a second session, on the other worker
        conn = imap_login(srv, "alice")
        if len(set(workers_of(srv, "alice"))) == 2:
            break
        conn.logout()
        wait_for(lambda: len(workers_of(srv, "alice")) == 1, "the logout to free its slot")
    else:
        raise AssertionError(f"no connection landed on worker {1 - home} in {TRIES} tries")
    # Each worker holds one session of alice: only a count over both refuses a third.
    for _ in range(4):
        with pytest.raises(imaplib.IMAP4.error, match=r"Too many sessions"):
            imap_login(srv, "alice")
    conn.logout()
    wait_for(lambda: len(workers_of(srv, "alice")) == 1, "the logout to free its slot")
    imap_login(srv, "alice").logout()
    first.logout()


def test_sigterm_stops_every_worker_cleanly(workers_server: ServerProcess) -> None:
    srv = workers_server
    assert srv.proc is not None
    pids = children(srv.proc.pid)
    conns = [imap_login(srv, "alice") for _ in range(4)]
    assert srv.stop(timeout=20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text()
    assert not (srv.data / "listeners.json").exists()
    for c in conns:
        with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
            c.noop()
            c.noop()
    log = srv.log_text()
    assert log.count("]: stopped") == 2 and "supervisor: stopped" in log
    assert not problems(log)
    srv.start()  # the data folder's lock went with them
    assert srv.stop() == 0


class RawImap:
    """A bare IMAP connection that knows which worker serves it (its ID says)."""

    def __init__(self, srv: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self.worker = -1
        if self.greeting.startswith(b"* OK"):
            lines = self.command(b"w ID NIL")
            found = re.search(rb'"x-worker" "(\d+)"', b"".join(lines))
            assert found is not None, lines
            self.worker = int(found.group(1))

    def command(self, line: bytes) -> list[bytes]:
        tag = line.split(b" ", 1)[0]
        self.sock.sendall(line + b"\r\n")
        lines = [self.file.readline()]
        while not lines[-1].startswith(tag + b" ") and lines[-1]:
            lines.append(self.file.readline())
        return lines

    def close(self) -> None:
        self.sock.close()


def raw_on(srv: ServerProcess, worker: int) -> RawImap:
    for _ in range(TRIES):
        conn = RawImap(srv)
        if conn.worker == worker:
            return conn
        conn.close()
    raise AssertionError(f"no connection landed on worker {worker} in {TRIES} tries")


@pytest.mark.parametrize("workers_server", [{"max_connections_per_ip": 3}], indirect=True)
def test_connections_per_address_are_counted_across_workers(
        workers_server: ServerProcess) -> None:
    srv = workers_server
    held = [raw_on(srv, 0), raw_on(srv, 0), raw_on(srv, 1)]
    wait_for(lambda: len(who(srv)) == 3, "the probes that landed elsewhere to close")
    # Two on one worker, one on the other: only the count over both is at the limit.
    for _ in range(4):
        refused = RawImap(srv)
        assert refused.greeting.startswith(b"* BYE"), refused.greeting
        refused.close()
    held.pop().close()
    wait_for(lambda: len(who(srv)) == 2, "the closed connection to be counted out")
    assert RawImap(srv).greeting.startswith(b"* OK")


def _smtp_greeting(srv: ServerProcess, protocol: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", srv.port(protocol)), timeout=10)
    return sock, sock.makefile("rb").readline()


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
@pytest.mark.parametrize("workers_server", [{"max_connections_per_ip": 3}], indirect=True)
def test_smtp_and_lmtp_connections_per_address_are_counted_across_workers(
        workers_server: ServerProcess, protocol: str) -> None:
    srv = workers_server
    # The kernel spreads connections over both workers by their source ports: counted per
    # worker, ten would let in up to six (unless all ten land on one worker: 1 in 512).
    tries = [_smtp_greeting(srv, protocol) for _ in range(10)]
    admitted = [sock for sock, greeting in tries if greeting.startswith(b"220")]
    refused = [greeting for _, greeting in tries if not greeting.startswith(b"220")]
    assert len(admitted) == 3, [g for _, g in tries]
    assert all(g.startswith(b"421 4.7.0") for g in refused), refused
    for sock, greeting in tries:
        if not greeting.startswith(b"220"):
            sock.close()
    admitted.pop().close()

    def another_admitted() -> bool:  # once the release has reached the supervisor
        sock, greeting = _smtp_greeting(srv, protocol)
        if greeting.startswith(b"220"):
            admitted.append(sock)
            return True
        sock.close()
        return False

    wait_for(another_admitted, "the closed connection to be counted out")
    sock, greeting = _smtp_greeting(srv, protocol)  # and the limit holds again
    assert greeting.startswith(b"421"), greeting
    sock.close()
    for sock in admitted:
        sock.close()


def test_submitted_messages_per_hour_are_counted_across_workers(tmp_path: Path) -> None:
    config = server_config(workers=2, fsync=False) + """
[submission]
listen = ["127.0.0.1:0"]
listen_tls = []
max_messages_per_hour = 3
"""
    srv = ServerProcess(tmp_path / "srv", config)
    create_users(srv, "erin", "frank")
    srv.start()
    try:
        answers = []
        # A connection each, so the kernel spreads them over both workers: counted per
        # worker, up to six would pass (unless all fourteen land on one: 1 in 8192).
        for _ in range(14):
            with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as conn:
                conn.login("erin", "secret")
                answers.append(conn.mail("erin@example.org")[0])
                if answers[-1] == 250:
                    conn.rcpt("frank@example.org")
                    assert conn.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
        assert answers.count(250) == 3, answers
        assert set(answers) == {250, 451}, answers
    finally:
        srv.kill()


def test_failed_logins_are_throttled_across_workers(tmp_path: Path) -> None:
    config = server_config(workers=2, fsync=False, auth={
        "throttle_loopback": True, "failure_burst": 3, "failure_delay": 0.01,
        "failure_delay_max": 0.02, "failure_block_seconds": 60})
    srv = ServerProcess(tmp_path / "srv", config)
    create_users(srv, "dave")
    srv.start()
    try:
        for worker in (0, 0, 1):  # two failures on one worker, the third on the other
            conn = raw_on(srv, worker)
            assert b"a NO" in b"".join(conn.command(b"a LOGIN dave wrong"))
            conn.close()
        for worker in (0, 1):  # the burst is over both: the address is blocked on each
            conn = raw_on(srv, worker)
            answer = b"".join(conn.command(b"a LOGIN dave secret"))
            assert b"Too many failed logins" in answer, answer
            conn.close()
    finally:
        srv.kill()


@pytest.mark.parametrize(("value", "error"), [
    ("0", "between 1 and 256"), ("257", "between 1 and 256"), ('"many"', '"auto"'),
    ("true", '"auto"'), ("1.5", '"auto"'),
])
def test_workers_key_is_validated(tmp_path: Path, value: str, error: str) -> None:
    from mailstead.config import ConfigError, load_config

    path = tmp_path / "m.toml"
    path.write_text(f"[server]\nworkers = {value}\n")
    with pytest.raises(ConfigError, match=r"\[server\] workers") as info:
        load_config(path, env={})
    assert error in str(info.value)


def test_workers_auto_is_the_core_count(tmp_path: Path) -> None:
    from mailstead.config import load_config

    path = tmp_path / "m.toml"
    path.write_text('[server]\nworkers = "auto"\n')
    assert load_config(path, env={}).server.workers == (os.cpu_count() or 1)
    assert load_config(path, env={"MAILSTEAD_SERVER__WORKERS": "3"}).server.workers == 3


def test_a_worker_adopts_only_a_descriptor_that_holds_the_lock(tmp_path: Path) -> None:
    from mailstead.datalock import DataFolderBusy, DataFolderLock

    owner = DataFolderLock(tmp_path)
    owner.acquire()
    stray = os.open(tmp_path / "mailstead.lock", os.O_RDWR)  # the file, not the held lock
    try:
        with pytest.raises(DataFolderBusy, match="does not hold the lock"):
            DataFolderLock(tmp_path).adopt(stray)
        adopted = DataFolderLock(tmp_path)
        adopted.adopt(os.dup(owner.fileno()))
        assert adopted.held
        adopted.release()
    finally:
        os.close(stray)
        owner.release()


def test_only_one_worker_runs_the_outbound_queue(tmp_path: Path) -> None:
    from dns_stub import DnsStub
    from outbound_harness import RECORDS, Sink, ThreadedMx, wait_sync
    from test_outbound_ops import enqueue_from_outside, outbound_config, queue_json

    class SlowSink(Sink):  # each DATA in flight long enough for a second runner to look
        async def handle_DATA(self, server: object, session: object,
                              envelope: object) -> str:
            await asyncio.sleep(1.0)
            return await super().handle_DATA(server, session, envelope)

    sink = SlowSink()
    mx = ThreadedMx(sink)
    dns_stub = DnsStub(dict(RECORDS))
    dns_stub.start_thread()
    config = outbound_config(mx.port, dns_stub.port).replace(
        "shutdown_grace = 5", "shutdown_grace = 5\nworkers = 2")
    srv = ServerProcess(tmp_path / "srv", config)
    try:
        srv.start()
        srv.add_user("alice")
        ids = [enqueue_from_outside(srv, [f"r{i}@example.net"]) for i in range(3)]
        wait_sync(lambda: not queue_json(srv), timeout=20, what="the queue to empty")
        time.sleep(2.0)  # a second runner's copies would be in by now
        # Two runners would both find each due message: each must go out exactly once.
        assert sorted(r for m in sink.received for r in m.rcpts) == sorted(
            f"r{i}@example.net" for i in range(3)), (ids, sink.received)
        srv.stop()
        assert not problems(srv.log_text())
    finally:
        srv.kill()
        mx.stop()
        dns_stub.stop()


def test_a_select_shows_what_another_worker_just_committed(
        workers_server: ServerProcess) -> None:
    """Each worker keeps its own copy of a mailbox's rows for SELECT (store/mailbox_rows.py):
    a SELECT right after the other worker's commit, before any hint or poll reaches this
    worker, still shows it (the copy is checked against the store's modseq)."""
    srv = workers_server
    reader = imap_login(srv, "carol")
    reader_worker = workers_of(srv, "carol")[0]
    held: list[imaplib.IMAP4] = []
    writer, _ = login_on_other_worker(srv, "carol", held, reader_worker)
    message = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    for _ in range(20):
        assert writer.append("INBOX", "", None, message)[0] == "OK"
    assert reader.select("INBOX") == ("OK", [b"20"])  # this worker's copy is made
    writer.select("INBOX")
    for step in range(6):
        # The other worker commits; this worker's SELECT comes straight after its OK.
        writer.uid("STORE", f"{step + 1}", "+FLAGS", f"(\\Deleted $Step{step})")
        writer.expunge()
        assert writer.append("INBOX", "(\\Flagged)", None, message)[0] == "OK"
        writer.uid("STORE", f"{21 + step}", "+FLAGS", "(\\Seen)")
        typ, data = reader.select("INBOX")
        assert (typ, data) == ("OK", [b"20"]), step
        typ, data = reader.uid("FETCH", "1:*", "(FLAGS)")
        text = b" ".join(d for d in data if isinstance(d, bytes))
        uids = [int(u) for u in re.findall(rb"UID (\d+)", text)]
        assert uids == [*range(step + 2, 21), *range(21, 22 + step)], step
        assert re.search(rb"UID %d FLAGS \((\\Seen \\Flagged|\\Flagged \\Seen)\)"
                         % (21 + step), text), text
    for c in [reader, writer, *held]:
        c.logout()
    assert not problems(srv.log_text())
