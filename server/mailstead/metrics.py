"""Prometheus metrics: ``ctx.count``/``ctx.observe`` events mapped onto metric families.

The code that counts things speaks in flat event names (``imap_logins_ok``,
``imap_command_fetch``, ``delivered``…) so it stays free of Prometheus; this module turns
those names into labelled families a dashboard can aggregate:

=========================================  ====================================================
event (``ctx.count``)                      metric
=========================================  ====================================================
``<proto>_connections``                    ``mailstead_connections_total{protocol}``
``<proto>_logins_ok`` / ``_logins_failed`` ``mailstead_logins_total{protocol,result}``
``imap_command_<cmd>``, ``pop3_<cmd>``     ``mailstead_commands_total{protocol,command}``
``delivered``                              ``mailstead_deliveries_total``
``delivered_bytes``                        ``mailstead_delivered_bytes_total``
anything else                              ``mailstead_events_total{event}``
=========================================  ====================================================

Durations (``ctx.observe``): ``imap_command``/``pop3_command`` →
``mailstead_command_seconds{protocol,command}``, ``store`` → ``mailstead_store_seconds{op}``,
anything else → ``mailstead_duration_seconds{name,label}``. Gauges are read at scrape time.

Each ``Metrics`` owns its ``CollectorRegistry`` (never the global one), so several servers in
one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "install_metrics"]

_CONNECTION_PROTOCOLS = frozenset({"imap", "pop3", "smtp", "lmtp", "http"})
# POP3 counts commands as ``pop3_<command>`` (e.g. ``pop3_retr``); other ``pop3_*`` names
# (``pop3_deleted``, ``pop3_in_use``…) are events, so only real command verbs map to commands.
_POP3_COMMANDS = frozenset(
    {"user", "pass", "apop", "auth", "stat", "list", "retr", "dele", "noop", "rset", "top",
     "uidl", "quit", "capa", "stls", "utf8"}
)  # fmt: skip
# IMAP command names come from a fixed handler table (unknown commands are answered BAD
# before counting), so the label set stays small. Upper-case, as on the wire.
_COMMAND_PREFIXES = {"imap_command_": "imap"}
# Commands take well under a millisecond when cached, seconds when a big mailbox is searched.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's metrics, in a registry of their own.

    ``open_sessions`` is called at each scrape for the ``mailstead_open_sessions`` gauge
    (the daemon passes ``lambda: len(ctx.sessions)``); leave it None to omit the gauge.
    Methods are cheap and thread-safe (the store may report latencies from its threads).
    """

    def __init__(self, open_sessions: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._count_children: dict[str, Any] = {}
        self._observe_children: dict[tuple[str, str], Any] = {}
        reg = self.registry
        self.connections = Counter(
            "mailstead_connections", "Client connections accepted", ["protocol"], registry=reg
        )
        self.logins = Counter(
            "mailstead_logins", "Login attempts", ["protocol", "result"], registry=reg
        )
        self.commands = Counter(
            "mailstead_commands", "Commands executed", ["protocol", "command"], registry=reg
        )
        self.deliveries = Counter(
            "mailstead_deliveries", "Messages delivered into mailboxes", registry=reg
        )
        self.delivered_bytes = Counter(
            "mailstead_delivered_bytes", "Bytes of messages delivered", registry=reg
        )
        self.events = Counter("mailstead_events", "Other counted events", ["event"], registry=reg)
        self.command_seconds = Histogram(
            "mailstead_command_seconds",
            "Time to execute a command",
            ["protocol", "command"],
            buckets=_BUCKETS,
            registry=reg,
        )
        self.store_seconds = Histogram(
            "mailstead_store_seconds",
            "Time of a store operation, queueing included",
            ["op"],
            buckets=_BUCKETS,
            registry=reg,
        )
        self.durations = Histogram(
            "mailstead_duration_seconds",
            "Other measured durations",
            ["name", "label"],
            buckets=_BUCKETS,
            registry=reg,
        )
        if open_sessions is not None:
            gauge = Gauge("mailstead_open_sessions", "Open IMAP and POP3 sessions", registry=reg)
            gauge.set_function(lambda: float(open_sessions()))

    def count(self, name: str, n: int = 1) -> None:
        """Record ``n`` occurrences of the event ``name`` (see the module table)."""
        if n <= 0:
            return  # Prometheus counters only go up; a zero batch is nothing to record.
        # Resolving labels costs a lock and several lookups; events repeat (every RETR,
        # every FETCH), so remember which child counter each event name lands on.
        child = self._count_children.get(name)
        if child is None:
            child = self._count_children[name] = self._count_child(name)
        child.inc(n)

    def _count_child(self, name: str) -> Any:
        proto, _, rest = name.partition("_")
        if rest == "connections" and proto in _CONNECTION_PROTOCOLS:
            return self.connections.labels(proto)
        if rest in ("logins_ok", "logins_failed"):
            return self.logins.labels(proto, rest.removeprefix("logins_"))
        if name == "delivered":
            return self.deliveries
        if name == "delivered_bytes":
            return self.delivered_bytes
        if proto == "pop3" and rest in _POP3_COMMANDS:
            return self.commands.labels("pop3", rest.upper())
        for prefix, protocol in _COMMAND_PREFIXES.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return self.commands.labels(protocol, name[len(prefix) :].upper())
        return self.events.labels(name)


    def observe(self, name: str, seconds: float, label: str = "") -> None:
        """Record a duration: ``imap_command``/``pop3_command`` (label = command), ``store``
        (label = operation, e.g. read/write), anything else generically."""
        key = (name, label)
        child = self._observe_children.get(key)
        if child is None:
            if name in ("imap_command", "pop3_command"):
                child = self.command_seconds.labels(name.partition("_")[0], label.upper())
            elif name == "store":
                child = self.store_seconds.labels(label)
            else:
                child = self.durations.labels(name, label)
            self._observe_children[key] = child
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (send with ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


def install_metrics(ctx: Any) -> Metrics:
    """Create the metrics for ``ctx`` (a ``ServerContext``) and hook them up; idempotent.

    Sets ``ctx.metrics`` (which ``ctx.count``/``ctx.observe`` forward to), gives the gauge
    the live session count, and reports store latencies when the store offers the
    ``on_latency(op, seconds)`` hook and nobody else has taken it.
    """
    if ctx.metrics is not None:
        return ctx.metrics
    metrics = Metrics(open_sessions=lambda: len(ctx.sessions))
    ctx.metrics = metrics
    if hasattr(ctx.store, "on_latency") and ctx.store.on_latency is None:
        ctx.store.on_latency = lambda op, seconds: ctx.observe("store", seconds, op)
    return metrics
