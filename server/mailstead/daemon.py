"""The daemon: one asyncio loop, Twisted's asyncio reactor on it, every listener on it.

Order matters: the reactor is installed on our loop before anything imports
``twisted.internet.reactor``. asyncio owns the loop, so the reactor is only
``startRunning``-ed (thread pool, ``callWhenRunning``) and stopped at the end.
Listeners form one ``MultiService`` tree: Twisted ports for IMAP/POP3/HTTP and
asyncio servers for aiosmtpd's SMTP/LMTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import TYPE_CHECKING, Any

from .activation import InheritedSockets, listener_name
from .bus import WorkerSetup
from .config import Config
from .connection.reactor import install_reactor, new_event_loop
from .listeners import ListenerService, StartupError, _bind_error
from .process import (
    quiet_client_resets,
    raise_open_files_limit,
    route_twisted_logs,
    sd_notify,
    shutdown_loop,
)

__all__ = ["ListenerService", "Mailstead", "StartupError", "_bind_error", "serve"]

if TYPE_CHECKING:
    from .datalock import DataFolderLock

log = logging.getLogger("mailstead")


class Mailstead:
    """The running server: store, hub, listeners, and their orderly start and stop."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 worker: WorkerSetup | None = None) -> None:
        self.config = config
        self.loop = loop
        self.worker = worker  # set in a worker process of a supervisor (worker.py)
        self.bus: Any = None  # bus.BusClient of a worker
        self.listeners: list[ListenerService] = []
        self.ctx: Any = None
        self.control: Any = None  # control.ControlServer once listening
        self._stopped = asyncio.Event()
        self._stopping = False
        self._started = False
        self._stop_pending: str | None = None  # a stop asked for while starting
        self._data_lock: DataFolderLock | None = None
        self.outbound: Any = None  # outbound.queue.OutboundQueue once started

    async def start(self) -> None:
        from .auth.cache import LoginCache
        from .auth.passwords import Argon2Params, PasswordHasher
        from .auth.throttle import LoginThrottle
        from .auth.users import Authenticator
        from .context import ServerContext
        from .metrics import install_metrics
        from .store import open_store
        from .store.hub import ChangeHub
        from .tls import TLSError, ensure_tls

        cfg = self.config
        reactor = install_reactor(self.loop)
        self._take_data_folder()
        tls = None
        cert, key = cfg.tls_paths()
        try:
            tls = ensure_tls(cert, key, cfg.hostname, configured=cfg.tls.cert is not None,
                             domains=cfg.domains)
        except TLSError as exc:
            if cfg.needs_tls() or cfg.tls.cert is not None:
                raise StartupError(str(exc)) from None
            log.warning("TLS disabled: %s", exc)
        except OSError as exc:
            raise StartupError(f"cannot create TLS certificate: {exc}") from None

        hub = ChangeHub()
        limits = cfg.limits
        try:
            store = await open_store(cfg, hub)
        except Exception as exc:
            raise StartupError(str(exc)) from None
        auth_cfg = cfg.auth
        hasher = PasswordHasher(auth_cfg.default_scheme, argon2=Argon2Params(
            auth_cfg.argon2_memory_kib, auth_cfg.argon2_time_cost, auth_cfg.argon2_parallelism,
        ))
        throttle = LoginThrottle(
            base_delay=auth_cfg.failure_delay, max_delay=auth_cfg.failure_delay_max,
            burst=auth_cfg.failure_burst, block=auth_cfg.failure_block_seconds,
        )
        auth = Authenticator(
            store, hasher, cfg.domains, throttle=throttle,
            throttle_loopback=auth_cfg.throttle_loopback,
            max_in_progress=limits.max_logins_in_progress,
            cache=LoginCache(auth_cfg.cache_ttl, auth_cfg.cache_size),
            login_queue_seconds=auth_cfg.login_queue_seconds,
            max_logins_queued=limits.max_logins_queued,
        )
        self.ctx = ServerContext(cfg, store, hub, auth, tls, self.loop)
        install_metrics(self.ctx)
        from .outbound.queue import OutboundQueue

        # Always: mail for remote recipients goes out through their MX or [relay].
        self.outbound = OutboundQueue(store, cfg, count=self.ctx.count)
        self.ctx.outbound = self.outbound
        # Where listeners really bound (port 0 picks one): autoconfig advertises these.
        self.ctx.bound_listeners = lambda: [
            (lst.proto, lst.kind, lst.bound.host, lst.bound.port)
            for lst in self.listeners
            if lst.bound
        ]
        if self.worker is not None:
            from .worker import attach

            self.bus = await attach(self, self.worker)
        inherited = InheritedSockets.from_environment()
        try:
            for i, (proto, kind, addr) in enumerate(cfg.listeners()):
                listener = ListenerService(proto, kind, addr,
                                           inherited.take(addr, listener_name(i, proto, kind)))
                from_systemd = listener.sock is not None
                await self._start_listener(listener, reactor)
                self.listeners.append(listener)
                log.info(
                    "listening for %s%s on %s%s",
                    proto,
                    " (TLS)" if kind == "tls" else "",
                    listener.bound,
                    "" if not from_systemd else " (socket from the supervisor)"
                    if self.worker else " (socket from systemd)",
                )
        except BaseException:
            inherited.close_unused()
            await self._stop_listeners()
            await store.close()
            raise
        inherited.close_unused()
        if self.worker is None:  # else the supervisor serves these
            from .control import ControlServer, socket_path

            self.control = ControlServer(self.ctx.sessions, socket_path(cfg.data_dir))
            await self.control.start()
        if self.worker is None or self.worker.index == 0:
            self.outbound.start()  # one queue runner per data folder: none sends twice
        self._started = True
        if self.worker is not None:
            self.bus.ready()
            log.info("worker %d ready (%d listeners)", self.worker.index, len(self.listeners))
        else:
            self._write_listeners_file()
            sd_notify("READY=1")
            log.info("Mailstead ready (%d listeners)", len(self.listeners))
        if self._stop_pending is not None:
            self.request_stop(self._stop_pending)

    def _take_data_folder(self) -> None:
        """Create the data folder owner-only and lock it before anything touches it."""
        from .datalock import DataFolderBusy, DataFolderLock
        from .files import private_dir

        data_dir = self.config.data_dir
        try:
            private_dir(data_dir)
            lock = DataFolderLock(data_dir)
            if self.worker is not None:
                lock.adopt(self.worker.lock_fd)  # the supervisor took it for us
            else:
                lock.acquire()
        except DataFolderBusy as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(
                f"cannot use data folder {data_dir}: {exc.strerror or exc}"
            ) from None
        self._data_lock = lock

    async def _start_listener(self, listener: ListenerService, reactor: Any) -> None:
        ctx = self.ctx
        proto, tls = listener.proto, listener.kind == "tls"
        if proto in ("smtp", "lmtp"):
            from .smtp.delivery import DeliveryHandler, smtp_factory
            from .smtp.inbound_auth import InboundAuth

            handler = DeliveryHandler(
                ctx.store,
                hostname=self.config.hostname,
                domains=self.config.domains,
                lmtp=proto == "lmtp",
                count=ctx.count,
                spool_dir=self.config.data_dir / "spool",
                memory=ctx.delivery_memory,
                postmaster=self.config.smtp.postmaster,
                inbound=InboundAuth.from_config(self.config) if proto == "smtp" else None,
            )
            factory = smtp_factory(
                handler,
                hostname=self.config.hostname,
                max_size=self.config.limits.max_message_size,
                # STARTTLS on the plain listeners (aiosmtpd drops bytes pipelined before
                # the handshake, RFC 3207 §4.2); implicit TLS on listen_tls.
                tls_context=ctx.tls.stdlib if ctx.tls is not None and not tls else None,
                limiter=ctx.smtp_per_ip if proto == "smtp" else ctx.lmtp_per_ip,
                max_per_ip=self.config.limits.max_connections_per_ip,
                shared=lambda: ctx.connections.shared,  # several workers: theirs
            )
            await listener.start_asyncio(factory, ctx.tls.stdlib if tls else None)
            return
        if proto == "submission":
            from .smtp.submission import listener_factory

            await listener.start_asyncio(listener_factory(ctx, implicit_tls=tls),
                                         ctx.tls.stdlib if tls else None)
            return
        factory = _twisted_factory(proto, ctx, tls)
        await listener.start_twisted(reactor, factory, ctx.tls.creator() if tls else None)

    def _write_listeners_file(self) -> None:
        """Where each listener actually bound (port 0 picks one): for scripts and tests."""
        from .files import write_private

        path = self.config.data_dir / "listeners.json"
        data = [
            {
                "protocol": lst.proto,
                "tls": lst.kind == "tls",
                "host": lst.bound.host,
                "port": lst.bound.port,
            }
            for lst in self.listeners
            if lst.bound
        ]
        write_private(path, json.dumps(data, indent=1).encode())

    async def _stop_listeners(self) -> None:
        for listener in self.listeners:
            try:
                await listener.stop()
            except Exception:
                log.exception("error stopping listener %s", listener.addr)

    def request_stop(self, reason: str = "shutting down") -> None:
        if not self._started:
            # Stopping half-built listeners would race ``start``: stop once it is done
            # (a failed start exits anyway).
            self._stop_pending = reason
            return
        if self._stopping:
            return
        self._stopping = True
        self.loop.create_task(self._graceful_stop(reason))

    async def _graceful_stop(self, reason: str) -> None:
        log.info("stopping: %s", reason)
        sd_notify("STOPPING=1")
        await self._stop_listeners()
        if self.control is not None:
            await self.control.stop()
        if self.ctx is not None:
            self.ctx.sessions.close_all("Server shutting down")
            grace = self.config.server.shutdown_grace
            if not await self.ctx.sessions.wait_empty(grace):
                log.warning("%d sessions did not close in %ds", len(self.ctx.sessions), grace)
            if self.outbound is not None:
                await self.outbound.stop(grace)
            await self.ctx.store.close()
        if self.bus is not None:
            self.bus.close()
        elif self.worker is None:
            try:
                (self.config.data_dir / "listeners.json").unlink()
            except OSError:
                pass
        if self._data_lock is not None:
            self._data_lock.release()  # the last thing done in the folder
        self._stopped.set()

    def reload(self) -> None:
        if self.ctx is not None and self.ctx.tls is not None:
            try:
                self.ctx.tls.reload()
            except Exception as exc:
                log.error("TLS reload failed, keeping the old certificate: %s", exc)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _twisted_factory(proto: str, ctx: Any, tls: bool) -> Any:
    if proto == "imap":
        from .imap.factory import IMAPFactory

        return IMAPFactory(ctx, implicit_tls=tls)
    if proto == "pop3":
        from .pop3.factory import POP3Factory

        return POP3Factory(ctx, implicit_tls=tls)
    if proto == "http":
        from .web.site import make_site

        return make_site(ctx)
    raise StartupError(f"unknown protocol {proto}")


def serve(config: Config) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT; returns the exit status."""
    # First: the supervisor's workers inherit it. (Debug: a start that fails says one line.)
    log.debug("open-files limit: %d", raise_open_files_limit())
    try:
        worker = WorkerSetup.from_environment()
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    if worker is None and config.server.workers > 1:
        from .supervisor import supervise

        return supervise(config)
    if worker is not None:
        from .worker import name_logs

        name_logs(worker.index)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(quiet_client_resets)
    reactor = install_reactor(loop)
    route_twisted_logs()
    app = Mailstead(config, loop, worker)
    # Before ``start``, so a signal sent the moment READY=1 (or listeners.json) appears,
    # as systemd may, is handled rather than killing the process.
    loop.add_signal_handler(signal.SIGTERM, app.request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, app.request_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    try:
        loop.run_until_complete(app.start())
    except StartupError as exc:
        log.error("%s", exc)
        shutdown_loop(loop, reactor)
        return 1
    try:
        loop.run_until_complete(app.wait_stopped())
    finally:
        shutdown_loop(loop, reactor)
    log.info("stopped")
    return 0
