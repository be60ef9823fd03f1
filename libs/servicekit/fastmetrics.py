"""Lock-free counters and histograms for per-message hot paths, exported via prometheus-client.

prometheus-client's own Counter/Histogram take a lock and cost 0.3-1.5 us per update, a
large slice of a ~20 us message budget. The services are single-threaded event loops, so
plain integer updates are safe; a custom collector turns them into standard metric families
at scrape time. Use these only where an update happens per message; everything else uses
prometheus-client directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)


class FastCounter:
    """A counter with fixed label names; ``child(*values)`` returns a cheap incrementable cell."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._cells: dict[tuple[str, ...], list[float]] = {}

    def child(self, *labelvalues: str) -> list[float]:
        """A one-element list; callers do ``cell[0] += n`` on the hot path."""
        cell = self._cells.get(labelvalues)
        if cell is None:
            cell = self._cells[labelvalues] = [0.0]
        return cell

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        self.child(*labelvalues)[0] += amount

    def value(self, *labelvalues: str) -> float:
        cell = self._cells.get(labelvalues)
        return cell[0] if cell else 0.0

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in self._cells.items():
            family.add_metric(list(labels), cell[0])
        return family


class HistogramCell:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastHistogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(buckets)
        self._cells: dict[tuple[str, ...], HistogramCell] = {}

    def child(self, *labelvalues: str) -> HistogramCell:
        cell = self._cells.get(labelvalues)
        if cell is None:
            cell = self._cells[labelvalues] = HistogramCell(self.bounds)
        return cell

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in self._cells.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(self.bounds, cell.counts, strict=False):
                cumulative += count
                buckets.append((_format_bound(bound), cumulative))
            cumulative += cell.counts[-1]
            buckets.append(("+Inf", cumulative))
            family.add_metric(list(labels), buckets, cell.sum)
        return family


def _format_bound(bound: float) -> str:
    return repr(float(bound))


class FastMetricsCollector(Collector):
    """Registers a group of fast metrics with a prometheus-client registry."""

    def __init__(self, metrics: Iterable[FastCounter | FastHistogram]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield metric.collect()


def register_fast(
    metrics: Iterable[FastCounter | FastHistogram], registry: CollectorRegistry = REGISTRY
) -> None:
    registry.register(FastMetricsCollector(metrics))
