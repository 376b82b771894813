"""Turning bus messages into outbox items under the site's uplink policy.

raw: every reading goes up (batches of one topic in one ingest round share one block);
aggregate: per topic, fixed windows aligned to the epoch (``floor(ts / window)``), one row per
window with the configured statistics, emitted once the window is over;
events: :class:`~edgeplane.bus.Event` objects go up; readings on an events topic do not (they
are counted as ``filtered``, which is the point of the policy);
exception (report by exception): a reading goes up when it differs from the last one sent for its
topic by more than the rule's ``deadband`` (absolute, or a percent of the last value sent), when
its quality or its kind (number, NaN, text) changes, or when ``max_interval`` has passed since the
last one sent (a heartbeat, carried by the next reading that arrives). Holding the last value
sent therefore reconstructs every reading within the deadband. Readings held back are counted as
``suppressed``. They go up as ordinary raw blocks: the cloud end needs nothing new.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from edgeplane.bus import Batch, Event, PointTable
from edgeplane.sync.codec import encode_aggregate, encode_batch, encode_events
from edgeplane.sync.config import PolicyRule, SyncConfig
from edgeplane.sync.outbox import OutboxItem

__all__ = ["Aggregator", "ExceptionFilter", "PolicyMapper"]

_TABLE_CACHE = 1024  # point tables whose per-point rules are remembered


@dataclass
class _Window:
    start: float
    n: int = 0
    total: float = 0.0
    sq: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf
    first: float = np.nan
    last: float = np.nan


@dataclass
class Aggregator:
    """Windowed statistics of one topic."""

    rule: PolicyRule
    current: _Window | None = None
    done: list[_Window] = field(default_factory=list)

    def add(self, ts: np.ndarray, values: np.ndarray) -> None:
        window = float(self.rule.window or 1.0)
        values = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(values)
        ts, values = np.asarray(ts)[ok], values[ok]
        if not len(ts):
            return
        slots = np.floor(ts / window)
        # readings normally arrive in time order; split where the slot changes
        cuts = np.flatnonzero(np.diff(slots)) + 1
        for part_ts, part_v in zip(np.split(ts, cuts), np.split(values, cuts)):
            start = float(np.floor(part_ts[0] / window) * window)
            if self.current is None or self.current.start != start:
                if self.current is not None:
                    self.done.append(self.current)
                self.current = _Window(start)
            w = self.current
            w.n += len(part_v)
            w.total += float(part_v.sum())
            w.sq += float((part_v * part_v).sum())
            w.lo = min(w.lo, float(part_v.min()))
            w.hi = max(w.hi, float(part_v.max()))
            if np.isnan(w.first):
                w.first = float(part_v[0])
            w.last = float(part_v[-1])

    def close_due(self, now: float, force: bool = False) -> None:
        window = float(self.rule.window or 1.0)
        if self.current is not None and (force or now >= self.current.start + window):
            self.done.append(self.current)
            self.current = None

    def take(self) -> tuple[bytes, int] | None:
        if not self.done:
            return None
        done, self.done = self.done, []
        stats: dict[str, np.ndarray] = {}
        n = np.array([w.n for w in done], dtype=np.float64)
        total = np.array([w.total for w in done])
        for name in self.rule.stats:
            if name == "mean":
                stats[name] = total / n
            elif name == "count":
                stats[name] = n
            elif name == "sum":
                stats[name] = total
            elif name == "min":
                stats[name] = np.array([w.lo for w in done])
            elif name == "max":
                stats[name] = np.array([w.hi for w in done])
            elif name == "first":
                stats[name] = np.array([w.first for w in done])
            elif name == "last":
                stats[name] = np.array([w.last for w in done])
            elif name == "std":
                sq = np.array([w.sq for w in done])
                stats[name] = np.sqrt(np.maximum(sq / n - (total / n) ** 2, 0.0))
        return encode_aggregate(float(self.rule.window or 0), np.array([w.start for w in done]), stats)


@dataclass
class ExceptionFilter:
    """Report-by-exception state of one topic: the last reading sent."""

    rule: PolicyRule
    value: object = None  # last value sent (float, or any value for non-numeric points); None: nothing sent yet
    ts: float = -np.inf
    quality: int = -1

    def select(self, ts: np.ndarray, values: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Indices of the readings to send, in order; updates the state."""
        deadband = self.rule.deadband
        assert deadband is not None
        heartbeat = self.rule.max_interval or np.inf
        keep: list[int] = []
        last, last_ts, last_q = self.value, self.ts, self.quality
        numeric = values.dtype.kind in "fiub"
        # a plain loop over Python floats: each decision depends on the last one sent
        for i, (t, v, q) in enumerate(zip(ts.tolist(), values.tolist(), quality.tolist())):
            if last is None or q != last_q or t - last_ts >= heartbeat:
                send = True
            elif numeric:
                if v != v or last != last:  # NaN: send on the change into or out of it
                    send = (v != v) != (last != last)
                else:
                    send = abs(v - last) > deadband.threshold(cast(float, last)) or (deadband.amount == 0 and v != last)
            else:
                send = v != last
            if send:
                keep.append(i)
                last, last_ts, last_q = v, t, q
        self.value, self.ts, self.quality = last, last_ts, last_q
        return np.asarray(keep, dtype=np.int64)


class PolicyMapper:
    """Maps bus messages to outbox items; keeps the aggregation state."""

    def __init__(self, config: SyncConfig):
        self.config = config
        self._rules: dict[str, PolicyRule | None] = {}
        self._table_rules: dict[PointTable, list[PolicyRule | None]] = {}
        self.aggregators: dict[str, Aggregator] = {}
        self.exceptions: dict[str, ExceptionFilter] = {}
        self.filtered = 0  # readings on events-only topics, not sent by design
        self.suppressed = 0  # readings held back by report-by-exception (within the deadband)
        self.read_readings = 0

    def rule(self, topic: str) -> PolicyRule | None:
        try:
            return self._rules[topic]
        except KeyError:
            rule = self._rules[topic] = self.config.rule_for(topic)
            return rule

    def rules_of(self, table: PointTable) -> list[PolicyRule | None]:
        """The rule of every point of a multi-point batch's table, by point id (cached)."""
        rules = self._table_rules.get(table)
        if rules is None:
            if len(self._table_rules) >= _TABLE_CACHE:
                self._table_rules.clear()  # tables made per message (MQTT) must not pile up
            rules = self._table_rules[table] = [self.rule(t) for t in table.topics]
        return rules

    def map(self, messages: list[Batch | Event], now: float) -> list[OutboxItem]:
        """Outbox items for one ingest round. Multi-point batches are taken as they come: their
        rows are grouped by point (views of the batch's columns) and each point's rows go through
        its topic's rule exactly as a single-point batch's would."""
        raw: dict[str, list[Batch]] = defaultdict(list)
        events: dict[str, list[Event]] = defaultdict(list)
        for message in messages:
            if isinstance(message, Event):
                if self.rule(message.topic) is not None:
                    events[message.topic].append(message)
                continue
            if message.table is None:
                rule = self.rule(message.topic)
                if rule is not None:
                    self._take(message, rule, raw)
                continue
            rules = self.rules_of(message.table)
            for point_id, piece in message.by_point():
                rule = rules[point_id]
                if rule is not None:
                    self._take(piece, rule, raw)
        items: list[OutboxItem] = []
        for topic, batches in raw.items():
            rule = self.rule(topic)
            assert rule is not None
            batch = batches[0] if len(batches) == 1 else _concat(batches)
            block, count = encode_batch(batch)
            items.append(OutboxItem(topic, rule.rank, "raw", count, now, now + rule.ttl, block))
        for topic, evs in events.items():
            rule = self.rule(topic)
            assert rule is not None
            block, count = encode_events(evs)
            items.append(OutboxItem(topic, rule.rank, "events", count, now, now + rule.ttl, block))
        items.extend(self.flush(now))
        return items

    def _take(self, message: Batch, rule: PolicyRule, raw: dict[str, list[Batch]]) -> None:
        """Apply ``rule`` to the readings of one point (a single-point batch)."""
        topic = message.topic
        self.read_readings += len(message.ts)
        if rule.mode == "raw":
            raw[topic].append(message)
        elif rule.mode == "aggregate":
            agg = self.aggregators.get(topic)
            if agg is None:
                agg = self.aggregators[topic] = Aggregator(rule)
            if message.values.dtype.kind in "fiub":
                agg.add(message.ts, message.values)
        elif rule.mode == "exception":
            flt = self.exceptions.get(topic)
            if flt is None:
                flt = self.exceptions[topic] = ExceptionFilter(rule)
            keep = flt.select(np.asarray(message.ts), message.values, np.asarray(message.quality))
            self.suppressed += len(message.ts) - len(keep)
            if len(keep) == len(message.ts):
                raw[topic].append(message)
            elif len(keep):
                raw[topic].append(Batch(topic, np.asarray(message.ts)[keep], message.values[keep],
                                        np.asarray(message.quality)[keep], message.unit))
        else:
            self.filtered += len(message.ts)

    def flush(self, now: float, force: bool = False) -> list[OutboxItem]:
        """Aggregate windows that are over (all of them with ``force``, e.g. at stop)."""
        items = []
        for topic, agg in self.aggregators.items():
            agg.close_due(now, force)
            taken = agg.take()
            if taken is not None:
                block, count = taken
                items.append(OutboxItem(topic, agg.rule.rank, "aggregate", count, now, now + agg.rule.ttl, block))
        return items


def _concat(batches: list[Batch]) -> Batch:
    values = [b.values for b in batches]
    kinds = {v.dtype.kind for v in values}
    merged = np.concatenate(values) if kinds <= set("fiub") or len(kinds) == 1 else np.concatenate([v.astype(object) for v in values])
    return Batch(batches[0].topic, np.concatenate([b.ts for b in batches]), merged,
                 np.concatenate([b.quality for b in batches]), batches[0].unit)
