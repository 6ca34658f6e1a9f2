"""Counters and histograms as plain numbers per thread, summed only when scraped.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock per call (and
a histogram walks its buckets under it); the IMAP loop counts and times every command
and every store read, so under load that was about 3 % of the loop thread. Here each
thread adds to dictionaries only it writes (no lock, no race), and ``collect`` (the
registry calls it at scrape time) copies every thread's numbers and sums them into the
same families and samples prometheus_client would have made: ``<name>_total`` and
``<name>_created`` for a counter; ``_bucket``, ``_count``, ``_sum`` and ``_created`` for
a histogram.

Copies are taken under the GIL (``dict.copy`` and ``list`` run without releasing it), so
a scrape never sees a dictionary change size. A scrape may see a histogram's bucket
counted and its sum not yet: the next scrape has both, as monotonic counters allow.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# prometheus_client's own switch for the ``_created`` series (read at its import, too).
_USE_CREATED = os.environ.get(
    "PROMETHEUS_DISABLE_CREATED_SERIES", "False"
).lower() not in ("true", "1", "t")


@dataclass(frozen=True, eq=False)
class Family:
    """One metric family: a counter (``buckets`` empty) or a histogram."""

    name: str
    documentation: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# A series is a family and its label values; it is the key of every thread's numbers.
Series = tuple[Family, tuple[str, ...]]


class _Tally:
    """One thread's numbers: counter values, and per histogram series its bucket counts
    (one more for +Inf) followed by the sum. Only the owning thread writes them."""

    __slots__ = ("counts", "hists", "thread")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.counts: dict[Series, float] = {}
        self.hists: dict[Series, list[float]] = {}
        self.thread = thread


class PlainCounters:
    """The collector: ``add`` and ``observe`` from any thread, ``collect`` at scrape."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = tuple(families)
        self._local = threading.local()
        self._lock = threading.Lock()  # only when a thread first counts, and at scrape
        self._tallies: list[_Tally] = []
        self._retired = _Tally(None)  # numbers of threads that have ended
        self._created: dict[Series, float] = {}

    def series(self, family: Family, labels: tuple[str, ...] = ()) -> Series:
        """The series of ``family`` with these label values; it is exported from now on
        (at 0 until counted), like a prometheus_client child once ``labels()`` made it."""
        key = (family, labels)
        if key not in self._created:
            self._created.setdefault(key, time.time())
        return key

    def _tally(self) -> _Tally:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = _Tally(threading.current_thread())
            with self._lock:
                self._tallies.append(tally)
            self._local.tally = tally
        return tally

    def add(self, series: Series, n: float) -> None:
        counts = self._tally().counts
        counts[series] = counts.get(series, 0.0) + n

    def observe(self, series: Series, seconds: float) -> None:
        hists = self._tally().hists
        cells = hists.get(series)
        if cells is None:
            cells = hists[series] = [0.0] * (len(series[0].buckets) + 2)
        # The first bucket whose upper bound (``le``) is >= the value; past the last: +Inf.
        cells[bisect.bisect_left(series[0].buckets, seconds)] += 1
        cells[-1] += seconds

    # --- scrape -----------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return []  # (the registry would otherwise collect once to learn the names)

    def collect(self) -> Iterator[Metric]:
        counts, hists = self._totals()
        created = dict(self._created)
        for family in self.families:
            mine = [(labels, at) for (fam, labels), at in created.items() if fam is family]
            if family.buckets:
                yield _histogram(family, mine, hists)
            else:
                metric = CounterMetricFamily(
                    family.name, family.documentation, labels=family.labelnames
                )
                for labels, at in mine:
                    metric.add_metric(list(labels), counts.get((family, labels), 0.0),
                                      created=at if _USE_CREATED else None)
                yield metric

    def _totals(self) -> tuple[dict[Series, float], dict[Series, list[float]]]:
        counts: dict[Series, float] = {}
        hists: dict[Series, list[float]] = {}
        with self._lock:
            # A thread that has ended writes no more: fold it into the retired numbers.
            for tally in [t for t in self._tallies if not _alive(t)]:
                self._tallies.remove(tally)
                _merge(self._retired, tally.counts.copy(), tally.hists.copy())
            tallies = [self._retired, *self._tallies]
        for tally in tallies:
            _merge_into(counts, hists, tally.counts.copy(), tally.hists.copy())
        return counts, hists


def _alive(tally: _Tally) -> bool:
    return tally.thread is None or tally.thread.is_alive()


def _merge(into: _Tally, counts: dict[Series, float], hists: dict[Series, list[float]]) -> None:
    _merge_into(into.counts, into.hists, counts, hists)


def _merge_into(counts: dict[Series, float], hists: dict[Series, list[float]],
                more_counts: dict[Series, float], more_hists: dict[Series, list[float]]) -> None:
    for key, value in more_counts.items():
        counts[key] = counts.get(key, 0.0) + value
    for key, cells in more_hists.items():
        cells = list(cells)
        total = hists.get(key)
        if total is None:
            hists[key] = cells
        else:
            for i, value in enumerate(cells):
                total[i] += value


def _histogram(family: Family, mine: list[tuple[tuple[str, ...], float]],
               hists: dict[Series, list[float]]) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(family.name, family.documentation, labels=family.labelnames)
    bounds = [floatToGoString(b) for b in family.buckets] + ["+Inf"]
    for labels, at in mine:
        cells = hists.get((family, labels)) or [0.0] * (len(bounds) + 1)
        running = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(bounds, cells[:-1], strict=True):
            running += n
            buckets.append((bound, running))
        metric.add_metric(list(labels), buckets, cells[-1])
        if _USE_CREATED:
            names = dict(zip(family.labelnames, labels, strict=True))
            metric.samples.append(Sample(family.name + "_created", names, at, None))
    return metric
