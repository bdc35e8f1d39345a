"""Per-request Prometheus series kept as plain numbers, exposed at scrape time.

prometheus-client takes a lock and walks its bucket list on every inc/observe: about
half of the metering cost per request. The proxy updates these series from one event
loop thread, so plain dict adds are safe; the collector turns them into metric families
only when Prometheus scrapes (which runs on the same loop).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Hist:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((floatToGoString(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


class CounterFamily:
    """A labelled counter: label tuple → value."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            fam.add_metric(list(key), value)
        return fam


class HistFamily:
    """A labelled histogram: label tuple → Hist."""

    __slots__ = ("bounds", "doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], Hist] = {}

    def get(self, key: tuple[str, ...]) -> Hist:
        h = self.series.get(key)
        if h is None:
            h = self.series[key] = Hist(self.bounds)
        return h

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, h in self.series.items():
            fam.add_metric(list(key), h.buckets(), h.sum)
        return fam


class HotCollector(Collector):
    def __init__(self, families: Iterable[CounterFamily | HistFamily]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        for f in self._families:
            yield f.family()
