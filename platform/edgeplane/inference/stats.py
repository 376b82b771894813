"""Per-model request statistics, kept as plain numbers on the hot path and exposed at scrape time.

Observing one prometheus histogram sample costs a lock and a few microseconds; a batch of 64
requests would pay that 64 times. Here a whole batch is counted with one numpy call, and
``/metrics`` reads the totals through a collector (as the bus's counters are).
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["BucketCounts", "ModelStats", "StatsCollector"]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
PRIORITIES = ("realtime", "bulk")


class BucketCounts:
    """A histogram's bucket counts and sum, updated many samples at a time."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bound_list = [float(b) for b in bounds]
        # plain ints: one sample is a bisect and a list increment (numpy costs more than that for one value)
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bound_list, value)] += 1
        self.total += value

    def observe_many(self, values: Iterable[float] | np.ndarray) -> None:
        if not isinstance(values, np.ndarray) or len(values) <= 8:
            for value in values.tolist() if isinstance(values, np.ndarray) else values:
                self.observe(value)
            return
        counts = self.counts
        for i, n in enumerate(np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(counts)).tolist()):
            counts[i] += n
        self.total += float(values.sum())

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = np.cumsum(self.counts)
        labels = [repr(float(b)) if not float(b).is_integer() else str(float(b)) for b in self.bounds]
        return [*zip(labels, (float(c) for c in cumulative[:-1])), ("+Inf", float(cumulative[-1]))]


class ModelStats:
    """Counts for one model name (across its versions)."""

    def __init__(self, name: str):
        self.name = name
        self.latency = {p: BucketCounts(LATENCY_BUCKETS) for p in PRIORITIES}
        self.run_time = BucketCounts(LATENCY_BUCKETS)
        self.batch_size = BucketCounts(BATCH_BUCKETS)
        self.requests = dict.fromkeys(PRIORITIES, 0)
        self.depth: Callable[[str], int] = lambda priority: 0


class StatsCollector:
    """Exposes every model's :class:`ModelStats` to prometheus."""

    def __init__(self, stats: Callable[[], Iterable[ModelStats]]):
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        latency = HistogramMetricFamily("edgeplane_inference_latency_seconds", "Request latency (queue + run) by model and class",
                                        labels=["model", "priority"])
        run_time = HistogramMetricFamily("edgeplane_inference_run_seconds", "Time of one batched model run", labels=["model"])
        batch = HistogramMetricFamily("edgeplane_inference_batch_size", "Rows per model run", labels=["model"])
        requests = CounterMetricFamily("edgeplane_inference_requests", "Requests accepted by model and class", labels=["model", "priority"])
        depth = GaugeMetricFamily("edgeplane_inference_queue_depth", "Requests waiting by model and class", labels=["model", "priority"])
        for s in self._stats():
            for p in PRIORITIES:
                latency.add_metric([s.name, p], s.latency[p].buckets(), s.latency[p].total)
                requests.add_metric([s.name, p], s.requests[p])
                depth.add_metric([s.name, p], s.depth(p))
            run_time.add_metric([s.name], s.run_time.buckets(), s.run_time.total)
            batch.add_metric([s.name], s.batch_size.buckets(), s.batch_size.total)
        yield from (latency, run_time, batch, requests, depth)
