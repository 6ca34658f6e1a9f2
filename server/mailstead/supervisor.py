"""``[server] workers = N`` (N > 1): a small supervisor process and N worker processes.

One Python process runs on one core. The supervisor takes the data folder's lock, binds
every configured listener itself (or takes the sockets systemd passed it) and starts N
workers, each an ordinary ``mailstead serve`` that receives those sockets exactly as
from systemd socket activation (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES`` with
each listener's name, ``activation.py``); the kernel spreads ``accept()`` over the
workers. Each worker also inherits the lock's open file (``datalock.DataFolderLock.adopt``)
and one end of a socket pair, its bus to the supervisor (``bus.py``): the supervisor
passes each worker's change hints to the others, answers the shared counters and the
login throttle (``coordinator.py``) and relays ``mailstead who``/``kick``.

A worker that dies is started again after a delay that doubles while it keeps dying
soon after its start (``RESTART_DELAYS``), and what it held is dropped. SIGTERM and SIGINT
stop every worker gracefully; the supervisor exits when all have exited. SIGHUP is
passed on (TLS reload). ``listeners.json`` and systemd's READY=1 come once every worker
of the first start is ready; a worker that fails to start then fails the whole start.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .activation import InheritedSockets, listener_name
from .auth.throttle import LoginThrottle
from .bus import ENV_WORKER, MAX_LINE, WorkerSetup, encode
from .config import Config, Listen
from .control import ControlServer, socket_path
from .coordinator import Holds, SharedThrottleState
from .daemon import StartupError
from .listeners import bind_listener
from .process import sd_notify
from .smtp.ratelimit import SubmissionRate

log = logging.getLogger("mailstead.supervisor")

RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_SECONDS = 30.0  # a worker that lived this long starts again without delay growth
CONTROL_TIMEOUT = 5.0


class Worker:
    """One worker process and the supervisor's end of its bus."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = False
        self.started = 0.0
        self.failures = 0  # deaths in a row soon after starting

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(message))


class Supervisor:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.workers = [Worker(i) for i in range(config.server.workers)]
        # Per listener: (name, kind, one socket per worker, or one shared by all).
        self.sockets: list[tuple[str, str, list[socket.socket]]] = []
        self.holds = Holds()
        auth = config.auth
        self.throttle = SharedThrottleState(LoginThrottle(
            base_delay=auth.failure_delay, max_delay=auth.failure_delay_max,
            burst=auth.failure_burst, block=auth.failure_block_seconds))
        # Submitted messages per user, for every worker (the limit comes with each ask).
        self.submission_rate = SubmissionRate(config.submission.max_messages_per_hour)
        self.control: RelayControl | None = None
        self.stopping = False
        self._lock: Any = None
        self._all_ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_call = 0
        self.start_failed: str | None = None

    # --- start ------------------------------------------------------------------------
    async def start(self) -> None:
        from .daemon import Mailstead

        cfg = self.config
        holder = Mailstead(cfg, self.loop)
        holder._take_data_folder()  # the same lock and message as a single server
        self._lock = holder._data_lock
        self._prepare()
        inherited = InheritedSockets.from_environment()
        try:
            for i, (proto, kind, addr) in enumerate(cfg.listeners()):
                group = self._bind(addr, inherited)
                self.sockets.append((listener_name(i, proto, kind), kind, group))
                log.info("listening for %s%s on %s", proto, " (TLS)" if kind == "tls" else "",
                         Listen(addr.host, group[0].getsockname()[1]))
        finally:
            inherited.close_unused()
        self.loop.add_signal_handler(signal.SIGCHLD, self._reap)
        for worker in self.workers:
            await self._spawn(worker)
        await self._all_ready.wait()
        if self.start_failed is not None:
            raise StartupError(self.start_failed)
        if self.stopping:  # a signal came while the workers were starting
            return
        self.control = RelayControl(self, socket_path(cfg.data_dir))
        await self.control.start()
        self._write_listeners_file()
        sd_notify("READY=1")
        log.info("Mailstead ready (%d workers, %d listeners)", len(self.workers),
                 len(self.sockets))

    def _bind(self, addr: Listen, inherited: InheritedSockets) -> list[socket.socket]:
        """The sockets of one listener: one per worker on the same port (SO_REUSEPORT:
        the kernel spreads new connections evenly by their addresses, where one shared
        socket would mostly go to whichever worker wakes first), or the one socket
        systemd passed, shared by all."""
        given = inherited.take(addr)
        if given is not None:
            given.set_inheritable(False)  # each worker gets its own copy, placed
            return [given]
        group = [bind_listener(addr, reuse_port=True)]
        port = group[0].getsockname()[1]  # port 0: the others join the one it picked
        try:
            group += [bind_listener(Listen(addr.host, port), reuse_port=True)
                      for _ in self.workers[1:]]
        except BaseException:
            for sock in group:
                sock.close()
            raise
        return group

    def _prepare(self) -> None:
        """What must happen once, before any worker: the TLS pair and the schema."""
        from .store import prepare_store
        from .tls import TLSError, ensure_tls

        cfg = self.config
        cert, key = cfg.tls_paths()
        try:  # a worker that cannot use TLS reports it itself; here only create it once
            ensure_tls(cert, key, cfg.hostname, configured=cfg.tls.cert is not None,
                       domains=cfg.domains)
        except (TLSError, OSError):
            pass
        try:
            prepare_store(cfg)
        except Exception as exc:
            raise StartupError(str(exc)) from None

    async def _spawn(self, worker: Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen = [group[worker.index % len(group)].fileno() for _, _, group in self.sockets]
        names = ":".join(name for name, _, _ in self.sockets)
        bus_fd, lock_fd = 3 + len(listen), 4 + len(listen)
        setup = WorkerSetup(worker.index, bus_fd, lock_fd).environment()
        sources = [*listen, child.fileno(), self._lock.fileno()]

        def place() -> None:  # in the child, between fork and exec
            top = 5 + len(listen)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, top) for fd in sources]
            for target, fd in enumerate(high, start=3):
                os.dup2(fd, target)  # inheritable, unlike every other descriptor
                os.close(fd)
            os.environ.pop("NOTIFY_SOCKET", None)  # only the supervisor tells systemd
            os.environ.update({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(len(listen)),
                               "LISTEN_FDNAMES": names, ENV_WORKER: setup})

        worker.ready = False
        worker.started = time.monotonic()
        # close_fds=False: the descriptors are placed by ``place``; every other one the
        # supervisor has is non-inheritable and closes at exec. The supervisor runs no
        # thread, so the work between fork and exec is safe.
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "mailstead", *sys.argv[1:]], close_fds=False,
            preexec_fn=place, stdin=subprocess.DEVNULL)
        child.close()
        parent.setblocking(False)
        reader, worker.writer = await asyncio.open_unix_connection(sock=parent, limit=MAX_LINE)
        self.loop.create_task(self._serve_bus(worker, reader, worker.writer))
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    # --- the bus ----------------------------------------------------------------------
    async def _serve_bus(self, worker: Worker, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self._handle(worker, json.loads(line))
        except (ConnectionError, ValueError) as exc:
            log.warning("bus of worker %d failed: %s", worker.index, exc)
        finally:
            writer.close()
            if worker.writer is writer:
                worker.writer = None
            dropped = self.holds.drop_worker(worker.index)
            if dropped:
                log.info("dropped %d holds of worker %d", dropped, worker.index)

    def _handle(self, worker: Worker, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op in ("hint", "queue"):
            for other in self.workers:
                if other is not worker:
                    other.send(msg)
        elif op == "acquire":
            holds = [(str(k), int(n)) for k, n in msg.get("holds", [])]
            worker.send({"op": "reply", "id": msg.get("id"),
                         "failed": self.holds.acquire(worker.index, holds)})
        elif op == "release":
            self.holds.release(worker.index, [str(k) for k in msg.get("keys", [])])
        elif op == "failure":
            ip = str(msg.get("ip", ""))
            delay, blocked = self.throttle.failure(ip, str(msg.get("user", "")))
            worker.send({"op": "reply", "id": msg.get("id"), "delay": delay})
            if blocked:
                for each in self.workers:
                    each.send({"op": "block", "ip": ip, "seconds": blocked})
        elif op == "success":
            self.throttle.success(str(msg.get("ip", "")), str(msg.get("user", "")))
        elif op == "rate":
            self.submission_rate.per_hour = int(msg.get("per_hour", 0))
            worker.send({"op": "reply", "id": msg.get("id"),
                         "allowed": self.submission_rate.allowed(int(msg.get("user", 0)))})
        elif op == "sent":
            self.submission_rate.record(int(msg.get("user", 0)))
        elif op == "ready":
            worker.ready = True
            if all(w.ready for w in self.workers):
                self._all_ready.set()
        elif op == "reply":
            fut = self._calls.get(msg.get("id", -1))
            if fut is not None and not fut.done():
                fut.set_result(msg.get("answer") or {})

    async def ask_all(self, request: dict[str, Any]) -> list[tuple[Worker, dict[str, Any]]]:
        """Send a control request to every ready worker; their answers, in order."""
        asked: list[tuple[Worker, asyncio.Future[dict[str, Any]]]] = []
        for worker in self.workers:
            if worker.ready and worker.writer is not None:
                self._next_call += 1
                fut = self.loop.create_future()
                self._calls[self._next_call] = fut
                worker.send({"op": "control", "id": self._next_call, "request": request})
                asked.append((worker, fut))
        answers = []
        for worker, fut in asked:
            try:
                answers.append((worker, await asyncio.wait_for(fut, CONTROL_TIMEOUT)))
            except TimeoutError:
                log.warning("worker %d did not answer a control request", worker.index)
        self._calls.clear()
        return answers

    # --- children ---------------------------------------------------------------------
    def _reap(self) -> None:
        for worker in self.workers:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            worker.proc, worker.ready = None, False
            code = proc.returncode
            how = f"signal {-code}" if code < 0 else f"status {code}"
            if self.stopping:
                log.info("worker %d (pid %d) exited with %s", worker.index, proc.pid, how)
            elif not self._all_ready.is_set():
                self.start_failed = (f"worker {worker.index} exited with {how} while starting "
                                     "(its log lines above say why)")
                self.request_stop("a worker failed to start")
                self._all_ready.set()
            else:
                lived = time.monotonic() - worker.started
                worker.failures = 0 if lived >= STABLE_SECONDS else worker.failures + 1
                delay = RESTART_DELAYS[min(max(worker.failures - 1, 0), len(RESTART_DELAYS) - 1)]
                log.error("worker %d (pid %d) exited with %s after %.0f s; restarting it "
                          "in %.1f s", worker.index, proc.pid, how, lived, delay)
                self.loop.call_later(delay, self._restart, worker)
        if self.stopping and all(w.proc is None for w in self.workers):
            self._stopped.set()

    def _restart(self, worker: Worker) -> None:
        if not self.stopping and worker.proc is None:
            self.loop.create_task(self._respawn(worker))

    async def _respawn(self, worker: Worker) -> None:
        try:
            await self._spawn(worker)
        except OSError as exc:  # e.g. out of descriptors or processes: try again later
            log.error("cannot start worker %d again: %s; trying in %.0f s", worker.index,
                      exc, RESTART_DELAYS[-1])
            worker.proc = None
            self.loop.call_later(RESTART_DELAYS[-1], self._restart, worker)

    # --- signals and stop -------------------------------------------------------------
    def signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signum)

    def reload(self) -> None:
        log.info("reload: passing SIGHUP to the workers")
        self.signal_workers(signal.SIGHUP)

    def request_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: %s", reason)
        sd_notify("STOPPING=1")
        self.signal_workers(signal.SIGTERM)
        self._all_ready.set()  # a start still waiting for its workers gives up
        self._reap()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self.control is not None:
            await self.control.stop()
        for _, _, group in self.sockets:
            for sock in group:
                sock.close()
        try:
            (self.config.data_dir / "listeners.json").unlink()
        except OSError:
            pass
        if self._lock is not None:
            self._lock.release()

    def _write_listeners_file(self) -> None:
        from .files import write_private

        data = [{"protocol": name.split("-")[2], "tls": kind == "tls",
                 "host": self._host(group[0]), "port": group[0].getsockname()[1]}
                for name, kind, group in self.sockets]
        write_private(self.config.data_dir / "listeners.json",
                      json.dumps(data, indent=1).encode())

    @staticmethod
    def _host(sock: socket.socket) -> str:
        return str(sock.getsockname()[0])


class RelayControl(ControlServer):
    """``control.sock`` of a supervised server: each request goes to every worker, and
    the answers are merged (``who`` lists everyone's sessions with their worker)."""

    def __init__(self, supervisor: Supervisor, path: Any) -> None:
        from .context import SessionRegistry

        super().__init__(SessionRegistry(), path)
        self.supervisor = supervisor

    async def reply(self, line: bytes) -> dict[str, Any]:
        local = self.answer(line)  # validates the request the same way a worker would
        if not local.get("ok"):
            return local
        answers = await self.supervisor.ask_all(json.loads(line))
        failed = [a for _, a in answers if not a.get("ok")]
        if failed:
            return failed[0]
        merged: dict[str, Any] = {"ok": True}
        if "sessions" in local:
            merged["sessions"] = [
                {**s, "worker": w.index, "pid": w.proc.pid if w.proc else None}
                for w, a in answers for s in a.get("sessions", [])]
        if "closed" in local:
            merged["closed"] = sum(int(a.get("closed", 0)) for _, a in answers)
        return merged


def supervise(config: Config) -> int:
    """Run the supervisor in the foreground until every worker has exited."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sup = Supervisor(config, loop)
    stop: Callable[[str], None] = sup.request_stop
    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, sup.reload)
    code = 0
    try:
        loop.run_until_complete(sup.start())
    except StartupError as exc:
        log.error("%s", exc)
        sup.request_stop("start failed")
        code = 1
    try:
        loop.run_until_complete(sup.wait_stopped())
    finally:
        loop.close()
    log.info("stopped")
    return code
