"""Prometheus metrics: ``ctx.count``/``ctx.observe`` events mapped onto metric families.

The code that counts things names an event and gives its labels as arguments, so it stays
free of Prometheus; this module maps them onto labelled families a dashboard can aggregate:

==================================================  ===========================================
``count(...)``                                      metric
==================================================  ===========================================
``"connections", protocol=``                        ``mailstead_connections_total{protocol}``
``"logins", protocol=, result="ok"|"failed"``       ``mailstead_logins_total{protocol,result}``
``"commands", protocol=, command=``                 ``mailstead_commands_total{protocol,command}``
``"delivered"``                                     ``mailstead_deliveries_total``
``"rejections", protocol=, reason=``                ``mailstead_rejections_total{protocol,reason}``
``"delivered_bytes"``                               ``mailstead_delivered_bytes_total``
``"outbound_attempts"``                             ``mailstead_outbound_attempts_total``
``"outbound_delivered"``                            ``mailstead_outbound_deliveries_total``
``"outbound_deferred"``                             ``mailstead_outbound_deferrals_total``
``"outbound_bounces", reason=``                     ``mailstead_outbound_bounces_total{reason}``
anything else (no labels), e.g. ``"imap_appends"``  ``mailstead_events_total{event}``
==================================================  ===========================================

Durations (``observe(...)``): ``"command", protocol=, command=`` →
``mailstead_command_seconds{protocol,command}``, ``"store", op=`` →
``mailstead_store_seconds{op}``, anything else → ``mailstead_duration_seconds{name,label}``.
Command labels are upper-cased, as on the wire. Gauges are read at scrape time, and so are
the counted and timed families: each thread adds to plain numbers of its own, without a lock
per call, and a scrape sums them (``metrics_counters.py``).

Besides: the process (``process_*``: CPU, memory, open files, start time) and Python
(``python_info``), ``mailstead_build_info{version,python}``, and, when the metrics belong to
a server (``config`` given), the store's size and room and the certificate's expiry (see
``ServerCollector``). Reading those touches files: ``render`` belongs in a thread.

Each ``Metrics`` owns its ``CollectorRegistry`` (never the global one), so several servers in
one process (tests) do not collide.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import __version__
from .metrics_counters import Family, PlainCounters, Series

if TYPE_CHECKING:
    from .context import ServerContext

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "install_metrics"]

# Labels each counted family needs; any other event name is counted with none.
_COUNT_LABELS: dict[str, tuple[str, ...]] = {
    "connections": ("protocol",),
    "logins": ("protocol", "result"),
    "commands": ("protocol", "command"),
    "delivered": (),
    "delivered_bytes": (),
    "rejections": ("protocol", "reason"),
    "outbound_attempts": (),
    "outbound_delivered": (),
    "outbound_deferred": (),
    "outbound_bounces": ("reason",),
}
# Commands take well under a millisecond when cached, seconds when a big mailbox is searched.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# The families counted with ``count`` and timed with ``observe``: plain numbers per thread
# (metrics_counters.py), read at scrape time, under the names prometheus_client gave them.
_CONNECTIONS = Family("mailstead_connections", "Client connections accepted", ("protocol",))
_LOGINS = Family("mailstead_logins", "Login attempts", ("protocol", "result"))
_COMMANDS = Family("mailstead_commands", "Commands executed", ("protocol", "command"))
_DELIVERIES = Family("mailstead_deliveries", "Messages delivered into mailboxes")
_DELIVERED_BYTES = Family("mailstead_delivered_bytes", "Bytes of messages delivered")
_REJECTIONS = Family("mailstead_rejections",
                     "Connections, recipients and messages refused, by reason",
                     ("protocol", "reason"))
# Outbound, per recipient and attempt (outbound/queue.py); bounce reasons:
# rejected (5xx), expired (queue_lifetime), null_mx, no_domain, no_address.
_OUTBOUND_ATTEMPTS = Family("mailstead_outbound_attempts",
                            "Delivery attempts of queued recipients")
_OUTBOUND_DELIVERIES = Family("mailstead_outbound_deliveries",
                              "Queued recipients the remote accepted")
_OUTBOUND_DEFERRALS = Family("mailstead_outbound_deferrals",
                             "Attempts that failed temporarily (retried)")
_OUTBOUND_BOUNCES = Family("mailstead_outbound_bounces",
                           "Queued recipients given up on, by reason", ("reason",))
_EVENTS = Family("mailstead_events", "Other counted events", ("event",))
_COMMAND_SECONDS = Family("mailstead_command_seconds", "Time to execute a command",
                          ("protocol", "command"), _BUCKETS)
_STORE_SECONDS = Family("mailstead_store_seconds",
                        "Time of a store operation, queueing included", ("op",), _BUCKETS)
_DURATIONS = Family("mailstead_duration_seconds", "Other measured durations",
                    ("name", "label"), _BUCKETS)
_FAMILIES = (
    _CONNECTIONS, _LOGINS, _COMMANDS, _DELIVERIES, _DELIVERED_BYTES, _REJECTIONS,
    _OUTBOUND_ATTEMPTS, _OUTBOUND_DELIVERIES, _OUTBOUND_DEFERRALS, _OUTBOUND_BOUNCES,
    _EVENTS, _COMMAND_SECONDS, _STORE_SECONDS, _DURATIONS,
)
# Families without labels, exported at 0 from the start (as prometheus_client does).
_UNLABELLED = {
    "delivered": _DELIVERIES,
    "delivered_bytes": _DELIVERED_BYTES,
    "outbound_attempts": _OUTBOUND_ATTEMPTS,
    "outbound_delivered": _OUTBOUND_DELIVERIES,
    "outbound_deferred": _OUTBOUND_DEFERRALS,
}


class Metrics:
    """The server's metrics, in a registry of their own.

    ``open_sessions`` is called at each scrape for the ``mailstead_open_sessions`` gauge
    (the daemon passes ``lambda: len(ctx.sessions)``); leave it None to omit the gauge.
    ``count`` and ``observe`` are cheap and thread-safe (the store reports latencies from
    its threads): each thread adds to numbers of its own, summed at scrape time.
    """

    def __init__(
        self, open_sessions: Callable[[], int] | None = None, *, config: Any = None,
        certificate: Path | None = None, queue_size: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Event and labels -> series, so a repeated event costs one lookup. Filled from
        # any thread; a race only resolves the same series twice.
        self._count_series: dict[tuple[str | None, ...], Series] = {}
        self._observe_series: dict[tuple[str, str | None, str | None, str | None, str],
                                   Series] = {}
        reg = self.registry
        self._plain = PlainCounters(_FAMILIES)
        for family in _UNLABELLED.values():
            self._plain.series(family)
        reg.register(self._plain)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        Info("mailstead_build", "The running Mailstead", registry=reg).info(
            {"version": __version__, "python": platform.python_version()}
        )
        if config is not None:
            reg.register(ServerCollector(config, certificate))
        if open_sessions is not None:
            gauge = Gauge("mailstead_open_sessions", "Open IMAP and POP3 sessions", registry=reg)
            gauge.set_function(lambda: float(open_sessions()))
        if queue_size is not None:
            queued = Gauge("mailstead_queue_recipients",
                           "Recipients waiting in the outbound queue", registry=reg)
            queued.set_function(lambda: float(queue_size()))

    def count(
        self, event: str, n: int = 1, *, protocol: str | None = None,
        command: str | None = None, result: str | None = None, reason: str | None = None,
    ) -> None:
        """Record ``n`` occurrences of ``event`` with its labels (see the module table).

        A label missing for its family, or given for an event that takes none, is a
        programming error and raises ``ValueError``.
        """
        if n <= 0:
            return  # Prometheus counters only go up; a zero batch is nothing to record.
        key = (event, protocol, command, result, reason)
        series = self._count_series.get(key)
        if series is None:
            series = self._count_series[key] = self._count_of(
                event, protocol, command, result, reason
            )
        self._plain.add(series, n)

    def _count_of(
        self, event: str, protocol: str | None, command: str | None, result: str | None,
        reason: str | None = None,
    ) -> Series:
        given = {"protocol": protocol, "command": command, "result": result, "reason": reason}
        needed = _COUNT_LABELS.get(event, ())
        wrong = sorted(name for name, value in given.items() if (value is None) == (name in needed))
        if wrong:
            raise ValueError(f"metric event {event!r}: wrong labels {', '.join(wrong)}")
        series = self._plain.series
        if event == "connections":
            return series(_CONNECTIONS, (str(protocol),))
        if event == "logins":
            return series(_LOGINS, (str(protocol), str(result)))
        if event == "commands":
            return series(_COMMANDS, (str(protocol), (command or "").upper()))
        if event in _UNLABELLED:
            return series(_UNLABELLED[event])
        if event == "rejections":
            return series(_REJECTIONS, (str(protocol), str(reason)))
        if event == "outbound_bounces":
            return series(_OUTBOUND_BOUNCES, (str(reason),))
        return series(_EVENTS, (event,))

    def observe(
        self, name: str, seconds: float, *, protocol: str | None = None,
        command: str | None = None, op: str | None = None, label: str = "",
    ) -> None:
        """Record a duration: ``"command"`` (``protocol`` and ``command``), ``"store"``
        (``op``, e.g. read/write), anything else generically by ``name`` and ``label``."""
        key = (name, protocol, command, op, label)
        series = self._observe_series.get(key)
        if series is None:
            if name == "command" and protocol is not None and command is not None:
                series = self._plain.series(_COMMAND_SECONDS, (protocol, command.upper()))
            elif name == "store" and op is not None:
                series = self._plain.series(_STORE_SECONDS, (op,))
            elif protocol is None and command is None and op is None:
                series = self._plain.series(_DURATIONS, (name, label))
            else:
                raise ValueError(f"duration {name!r}: wrong labels")
            self._observe_series[key] = series
        self._plain.observe(series, seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (send with ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class ServerCollector:
    """Gauges read from files at each scrape: the store's size and room, whether the
    server can take mail (as ``/healthz`` judges it), and the certificate's expiry."""

    def __init__(self, config: Any, certificate: Path | None) -> None:
        from .web.health import CertificateDates

        self.config = config
        self.certificate = CertificateDates(certificate) if certificate is not None else None

    def describe(self) -> list[Metric]:
        return []  # (or the registry would read the files once to learn the names)

    def collect(self) -> Iterator[Metric]:
        from .web.health import storage_state

        state = storage_state(self.config)
        yield GaugeMetricFamily("mailstead_store_bytes",
                                "Bytes of the mail store on disk (database and WAL)",
                                value=state.file_bytes)
        yield GaugeMetricFamily("mailstead_store_used_bytes",
                                "Bytes of the database in use (free pages not counted)",
                                value=state.used_bytes)
        if state.limit_bytes:
            yield GaugeMetricFamily("mailstead_store_limit_bytes",
                                    "[limits] max_store_bytes", value=state.limit_bytes)
        if state.disk_free_bytes is not None:
            yield GaugeMetricFamily("mailstead_disk_free_bytes",
                                    "Free bytes in the data folder's file system",
                                    value=state.disk_free_bytes)
        yield GaugeMetricFamily("mailstead_accepting_mail",
                                "1 when the store can take mail (see /healthz), else 0",
                                value=1.0 if state.ok else 0.0)
        expiry = self.certificate.expiry() if self.certificate is not None else None
        if expiry is not None:
            yield GaugeMetricFamily("mailstead_tls_certificate_expiry_timestamp_seconds",
                                    "When the server's TLS certificate expires (Unix time)",
                                    value=expiry)


def install_metrics(ctx: ServerContext) -> Metrics:
    """Create the metrics for ``ctx`` (a ``ServerContext``) and hook them up; idempotent.

    Sets ``ctx.metrics`` (which ``ctx.count``/``ctx.observe`` forward to), gives the gauge
    the live session count, and reports store latencies when the store offers the
    ``on_latency(op, seconds)`` hook and nobody else has taken it.
    """
    if ctx.metrics is not None:
        return ctx.metrics
    tls = getattr(ctx, "tls", None)
    metrics = Metrics(
        open_sessions=lambda: len(ctx.sessions), config=ctx.config,
        certificate=getattr(tls, "cert", None),
        # The runner refreshes this at each look at the queue (no store read at scrape).
        queue_size=lambda: int(getattr(getattr(ctx, "outbound", None), "pending", 0)),
    )
    ctx.metrics = metrics
    if hasattr(ctx.store, "on_latency") and ctx.store.on_latency is None:
        ctx.store.on_latency = lambda op, seconds: ctx.observe("store", seconds, op=op)
    return metrics
