"""The HTTP listener: client autoconfiguration, metrics and health, on ``twisted.web``.

``make_site(ctx)`` returns the ``Site`` the daemon binds for every ``[http] listen`` address.
One leaf resource routes by exact path (there is no tree to walk and nothing to list):

=================================================  ======  ===================================
path                                               method  answer
=================================================  ======  ===================================
``/mail/config-v1.1.xml``,                         GET     Mozilla autoconfig
``/.well-known/autoconfig/mail/config-v1.1.xml``
``/autodiscover/autodiscover.xml`` (any case)      POST,   Microsoft Autodiscover (POX)
                                                   GET
``/mail/mobileconfig?emailaddress=…``              GET     Apple configuration profile
``/metrics``                                       GET     Prometheus text format
``/healthz``                                       GET     ``ok`` when the store answers in 2 s
=================================================  ======  ===================================

HEAD works wherever GET does. Errors are short ``text/plain`` answers; an unexpected
exception is logged once and answered 500 without details (no traceback reaches a client).
Request bodies are capped at ``MAX_BODY`` (413).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.web import http, resource, server

from ..metrics import CONTENT_TYPE_LATEST, install_metrics
from ..twisted_types import StreamTransport
from .autoconfig import (
    MOBILECONFIG_CONTENT_TYPE,
    AddressError,
    AutodiscoverRequestError,
    MailSettings,
    build_autoconfig,
    build_autodiscover,
    build_mobileconfig,
    parse_autodiscover_request,
)

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# A body over MAX_BODY is read and thrown away up to here, so the client gets a clean 413
# rather than a reset connection; past this the connection is cut at once.
DRAIN_LIMIT = 1024 * 1024
HEALTH_TIMEOUT = 2.0
# Idle connections are closed after this (Twisted's default is 12 hours).
IDLE_TIMEOUT = 60

XML = "text/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
AUTOCONFIG_PATHS = (b"/mail/config-v1.1.xml", b"/.well-known/autoconfig/mail/config-v1.1.xml")
AUTODISCOVER_PATH = b"/autodiscover/autodiscover.xml"

# A handler returns the body, or NOT_DONE_YET when it answers later.
Handler = Callable[[server.Request], bytes | int]


class _Request(server.Request):
    """A request whose body is kept only up to ``MAX_BODY`` bytes, in memory.

    Twisted would otherwise buffer any body (in a temporary file past 100 kB) before we see
    the request. The handler answers 413 when ``body_too_large`` is set.
    """

    # Twisted declares ``content = None`` (typed None) and documents a binary file.
    content: io.BytesIO  # type: ignore[assignment]
    body_too_large = False
    _received = 0
    _cut = False

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        if length is not None and length > MAX_BODY:
            self.body_too_large = True
            if length > DRAIN_LIMIT:
                self._cut_off()

    def handleContentChunk(self, data: bytes) -> None:
        if self._cut:
            return
        self._received += len(data)
        if self._received > DRAIN_LIMIT:
            self._cut_off()
        elif self._received > MAX_BODY:
            if not self.body_too_large:
                self.body_too_large = True
                self.content = io.BytesIO()  # free what was kept
        else:
            self.content.write(data)

    def _cut_off(self) -> None:
        """Answer 413 now and close, without waiting for a body we will not read."""
        self._cut = True
        # Or Twisted would send "100 Continue" after our answer.
        self.requestHeaders.removeHeader(b"expect")
        body = b"request body too large\n"
        cast(StreamTransport, self.channel.transport).write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.channel.loseConnection()

    def process(self) -> None:
        if self._cut:
            return  # already answered; the connection is closing
        super().process()


def _reply(request: server.Request, code: int, body: bytes, content_type: str = TEXT) -> bytes:
    """Set status and headers for a complete answer; returns the body for ``render``."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type.encode())
    request.setHeader(b"content-length", str(len(body)).encode())
    return body


def _arg(request: server.Request, name: bytes) -> str | None:
    values = request.args.get(name) if request.args else None
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _peer(request: server.Request) -> str:
    addr = request.getClientAddress()
    return getattr(addr, "host", "?")


class MailsteadResource(resource.Resource):
    """The whole site as one leaf: routing is a dict lookup on the path."""

    isLeaf = True

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.routes: dict[bytes, tuple[frozenset[bytes], Handler]] = {}
        get = frozenset({b"GET", b"HEAD"})
        for path in AUTOCONFIG_PATHS:
            self.routes[path] = (get, self.autoconfig)
        self.routes[AUTODISCOVER_PATH] = (get | {b"POST"}, self.autodiscover)
        self.routes[b"/mail/mobileconfig"] = (get, self.mobileconfig)
        self.routes[b"/metrics"] = (get, self.metrics)
        self.routes[b"/healthz"] = (get, self.healthz)

    def render(self, request: server.Request) -> bytes | int:
        # Twisted announces its name and version by default; there is no need to.
        request.setHeader(b"server", b"Mailstead")
        path = request.path
        if path.lower() == AUTODISCOVER_PATH:
            path = AUTODISCOVER_PATH  # Outlook and others differ in case
        route = self.routes.get(path)
        if route is None:
            return _reply(request, http.NOT_FOUND, b"not found\n")
        methods, handler = route
        if request.method not in methods:
            request.setHeader(b"allow", b", ".join(sorted(methods)))
            return _reply(request, http.NOT_ALLOWED, b"method not allowed\n")
        if getattr(request, "body_too_large", False):
            request.setHeader(b"connection", b"close")
            return _reply(request, http.REQUEST_ENTITY_TOO_LARGE, b"request body too large\n")
        try:
            return handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method.decode(), path.decode("latin-1"))
            return _reply(request, http.INTERNAL_SERVER_ERROR, b"internal error\n")

    # --- settings -------------------------------------------------------------------------

    def settings(self) -> MailSettings:
        """What the listeners offer right now (built per request: cheap, never stale)."""
        cfg = self.ctx.config
        return MailSettings.from_listeners(
            cfg.hostname, cfg.domains, current_listeners(self.ctx), self.ctx.tls is not None
        )

    # --- handlers -------------------------------------------------------------------------

    def autoconfig(self, request: server.Request) -> bytes:
        # ``emailaddress`` is accepted and not needed: the file is the same for every user.
        # Unchecked client text: logged as a short repr, so it cannot forge log lines.
        asked = (_arg(request, b"emailaddress") or "")[:100]
        log.info("autoconfig for %r from %s", asked, _peer(request))
        return _reply(request, http.OK, build_autoconfig(self.settings()), XML)

    def autodiscover(self, request: server.Request) -> bytes:
        if request.method == b"POST":
            try:
                raw = parse_autodiscover_request(cast(io.BytesIO, request.content).getvalue())
            except AutodiscoverRequestError as exc:
                return _reply(request, http.BAD_REQUEST, f"{exc}\n".encode())
        else:
            raw = _arg(request, b"emailaddress") or ""
        settings = self.settings()
        try:
            address = settings.normalise_address(raw)
        except AddressError as exc:
            return _reply(request, http.BAD_REQUEST, f"{exc}\n".encode())
        log.info("autodiscover for %s from %s", address, _peer(request))
        return _reply(request, http.OK, build_autodiscover(settings, address), XML)

    def mobileconfig(self, request: server.Request) -> bytes:
        settings = self.settings()
        try:
            address = settings.normalise_address(_arg(request, b"emailaddress"))
        except AddressError as exc:
            return _reply(request, http.BAD_REQUEST, f"{exc}\n".encode())
        body = build_mobileconfig(settings, address)
        filename = re.sub(r"[^A-Za-z0-9.-]", "_", address.partition("@")[2]) or "mail"
        request.setHeader(
            b"content-disposition", f'attachment; filename="{filename}.mobileconfig"'.encode()
        )
        log.info("mobileconfig for %s from %s", address, _peer(request))
        return _reply(request, http.OK, body, MOBILECONFIG_CONTENT_TYPE)

    def metrics(self, request: server.Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        metrics = install_metrics(self.ctx)
        return _reply(request, http.OK, metrics.render(), CONTENT_TYPE_LATEST)

    def healthz(self, request: server.Request) -> int:
        """Ask the store something cheap; answer when it does (or does not) reply."""
        request.setHeader(b"cache-control", b"no-store")
        ctx = self.ctx
        gone = False

        async def probe() -> None:
            # A user that never exists: one indexed lookup, no rows.
            await asyncio.wait_for(ctx.store.get_user("healthcheck-probe"), HEALTH_TIMEOUT)

        def answer(code: int, text: bytes) -> None:
            if gone:
                return
            try:
                request.write(_reply(request, code, text))
                request.finish()
            except Exception:
                log.exception("HTTP /healthz: could not answer")

        def failed(failure: Any) -> None:
            if gone:
                return  # the client left and we cancelled the probe
            exc = failure.value
            if isinstance(exc, TimeoutError):
                log.warning("health check: the store did not answer in %.0f s", HEALTH_TIMEOUT)
                answer(http.SERVICE_UNAVAILABLE, b"store not answering\n")
            else:
                log.warning("health check: the store failed: %s", exc)
                answer(http.SERVICE_UNAVAILABLE, b"store unavailable\n")

        def client_gone(_: Any) -> None:
            nonlocal gone
            gone = True
            task.cancel()

        task = ctx.loop.create_task(probe())
        d = Deferred.fromFuture(task)
        d.addCallbacks(lambda _: answer(http.OK, b"ok\n"), failed)
        # notifyFinish errs back when the connection drops before we answer.
        request.notifyFinish().addErrback(client_gone)
        return server.NOT_DONE_YET


def current_listeners(ctx: Any) -> list[tuple[str, str, str, int]]:
    """(protocol, "plain"|"tls", host, port) of every listener, with the real bound ports.

    The daemon sets ``ctx.bound_listeners`` (a callable). Without it the
    configured addresses are used, and a port 0 (pick any) is looked up in the daemon's
    ``listeners.json``; listeners still unknown keep port 0 and are left out of documents.
    """
    bound = ctx.bound_listeners
    if bound is not None:
        return [(p, k, h, int(port)) for p, k, h, port in bound()]
    configured = [(p, k, a.host, a.port) for p, k, a in ctx.config.listeners()]
    if all(port for *_, port in configured):
        return configured
    try:
        entries = json.loads((ctx.config.data_dir / "listeners.json").read_text())
        actual = [(e["protocol"], "tls" if e["tls"] else "plain", e["host"], e["port"])
                  for e in entries]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return configured
    # The file lists the listeners in configuration order; use it only if it matches.
    if [(p, k, h) for p, k, h, _ in actual] != [(p, k, h) for p, k, h, _ in configured]:
        return configured
    return actual


class _Site(server.Site):
    """A ``Site`` without Twisted's access log: the handlers log what is worth logging,
    and a Prometheus scrape every few seconds is not."""

    def log(self, request: http.Request) -> None:
        pass


def make_site(ctx: Any) -> server.Site:
    """The ``twisted.web`` factory for an ``[http] listen`` address.

    Metrics are installed on ``ctx`` here if the daemon has not done so already (they are
    only ever read over HTTP), so ``/metrics`` works either way.
    """
    install_metrics(ctx)
    site = _Site(
        MailsteadResource(ctx),
        requestFactory=_Request,
        parsePOSTFormSubmission=False,
        timeout=IDLE_TIMEOUT,
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
