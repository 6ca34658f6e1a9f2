"""The plain per-thread counters behind ``Metrics``: exact sums from many threads, numbers
of ended threads kept, and the same exposition prometheus_client's own types produce."""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mailstead.metrics import _BUCKETS, Metrics


def test_counts_from_many_threads_add_up_exactly() -> None:
    m = Metrics()
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(5000):
            m.count("commands", protocol="imap", command="NOOP")
            m.observe("store", 0.001, op="read")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m.count("commands", protocol="imap", command="NOOP")  # and this thread's own
    get = m.registry.get_sample_value
    assert get("mailstead_commands_total", {"protocol": "imap", "command": "NOOP"}) == 20001
    assert get("mailstead_store_seconds_count", {"op": "read"}) == 20000
    assert get("mailstead_store_seconds_bucket", {"op": "read", "le": "0.001"}) == 20000
    assert get("mailstead_store_seconds_bucket", {"op": "read", "le": "0.0005"}) == 0


def test_numbers_of_an_ended_thread_are_kept_once() -> None:
    m = Metrics()
    t = threading.Thread(target=lambda: m.count("delivered", 3))
    t.start()
    t.join()
    get = m.registry.get_sample_value
    # The first scrape folds the ended thread's tally away; later ones must neither lose
    # nor count it again.
    assert [get("mailstead_deliveries_total") for _ in range(3)] == [3, 3, 3]
    m.count("delivered", 2)
    assert get("mailstead_deliveries_total") == 5


def _samples(text: bytes) -> list[str]:
    """The exposition's lines, with the time stamps of ``_created`` series blanked."""
    out = []
    for line in text.decode().splitlines():
        if line.startswith(("process_", "python_", "# HELP process_", "# TYPE process_",
                            "# HELP python_", "# TYPE python_")):
            continue
        out.append(re.sub(r"(_created(\{[^}]*\})?) \S+$", r"\1 T", line))
    return sorted(out)


def test_exposition_is_what_prometheus_client_types_give() -> None:
    m = Metrics()
    m.count("commands", 2, protocol="imap", command="fetch")
    m.count("delivered")
    for seconds in (0.0001, 0.003, 0.003, 7.0, 99.0):
        m.observe("command", seconds, protocol="imap", command="FETCH")
    m.observe("other", 0.5, label="x")

    # The same events on prometheus_client's own types, as Metrics used them before.
    reg = CollectorRegistry()
    commands = Counter("mailstead_commands", "Commands executed", ["protocol", "command"],
                       registry=reg)
    commands.labels("imap", "FETCH").inc(2)
    Counter("mailstead_deliveries", "Messages delivered into mailboxes", registry=reg).inc()
    seconds_ = Histogram("mailstead_command_seconds", "Time to execute a command",
                         ["protocol", "command"], buckets=_BUCKETS, registry=reg)
    for seconds in (0.0001, 0.003, 0.003, 7.0, 99.0):
        seconds_.labels("imap", "FETCH").observe(seconds)
    Histogram("mailstead_duration_seconds", "Other measured durations", ["name", "label"],
              buckets=_BUCKETS, registry=reg).labels("other", "x").observe(0.5)
    expected = set(_samples(generate_latest(reg)))

    ours = _samples(m.render())
    wanted_families = ("mailstead_commands", "mailstead_deliveries",
                       "mailstead_command_seconds", "mailstead_duration_seconds")
    mine = {
        line for line in ours
        if any(re.match(rf"(# (HELP|TYPE) )?{name}(_total|_created|_bucket|_count|_sum)?[ {{]",
                        line) for name in wanted_families)
    }
    assert mine == expected
