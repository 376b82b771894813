"""Prometheus metrics, one registry per host.

Hot paths (the bus) keep plain integer counters and are read only when ``/metrics`` is scraped,
through a custom collector, so that publishing a reading never takes a lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from edgeplane.host import Host

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


class Metrics:
    """A host's metrics. Plugins get (or create) their own with :meth:`counter` etc."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self.commands = self.counter("edgeplane_commands_total", "Commands by result", ["device", "status"])
        self.restarts = self.counter("edgeplane_restarts_total", "Restarts of a supervised part after a failure", ["part"])
        self.errors = self.counter("edgeplane_errors_total", "Errors by part and kind", ["part", "kind"])
        self.dropped = self.counter(
            "edgeplane_dropped_total", "Messages or readings dropped, by part and reason", ["part", "reason"]
        )

    def _get(self, kind: type[MetricT], name: str, doc: str, labels: Iterable[str], **kwargs: Any) -> MetricT:
        metric = self._metrics.get(name)
        if metric is None:
            made = kind(name, doc, list(labels), registry=self.registry, **kwargs)
            self._metrics[name] = made
            return made
        if not isinstance(metric, kind):
            raise ValueError(f"metric {name!r} already exists as a {type(metric).__name__}")
        return metric

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Iterable[str] = (), buckets: Iterable[float] | None = None) -> Histogram:
        kwargs = {"buckets": tuple(buckets)} if buckets is not None else {}
        return self._get(Histogram, name, doc, labels, **kwargs)

    def watch_host(self, host: Host) -> None:
        """Expose the bus counters and each part's health, read at scrape time."""
        self.registry.register(_HostCollector(host))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (for tests and the CLI); 0 if it was never set."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class _HostCollector:
    def __init__(self, host: Host):
        self.host = host

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        bus = self.host.bus
        yield CounterMetricFamily("edgeplane_bus_points", "Readings published on the bus", value=bus.published_points)
        yield CounterMetricFamily("edgeplane_bus_batches", "Batches published on the bus", value=bus.published_batches)
        yield CounterMetricFamily("edgeplane_bus_events", "Events published on the bus", value=bus.published_events)
        dropped = CounterMetricFamily(
            "edgeplane_bus_dropped", "Messages dropped by a subscription's overflow policy", labels=["subscription"]
        )
        depth = GaugeMetricFamily("edgeplane_bus_queue_depth", "Messages waiting in a subscription", labels=["subscription"])
        for sub in bus.subscriptions:
            dropped.add_metric([sub.name], sub.dropped)
            depth.add_metric([sub.name], sub.depth)
        yield dropped
        yield depth
        health = GaugeMetricFamily("edgeplane_part_up", "1 when a part is ok or degraded, else 0", labels=["part", "state"])
        for name, part_health in self.host.health().items():
            state = part_health["state"]
            health.add_metric([name, state], 1.0 if state in ("ok", "degraded", "finished") else 0.0)
        yield health
