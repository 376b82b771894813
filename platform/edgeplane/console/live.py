"""What the console keeps while it runs: recent history per point, recent events, the last
uplink acknowledgement, and the one-per-second stream of changed values that every open page gets.

Cost is bounded by design: one sampler task per host (not per page) reads the bus's latest
values once a second, keeps at most ``history_points`` samples per topic, and encodes one
``values`` message that every page's server-sent-event stream shares. Events reach it through a
``drop_oldest`` subscription, so the console can never slow a publisher (drops are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeplane.bus import Batch, Overflow, Subscription, topic_matches

if TYPE_CHECKING:
    from edgeplane.host import Host

log = logging.getLogger(__name__)

__all__ = ["LiveData"]

# event topics are few and repeat: remember which match a pattern instead of compiling it each time
_matches = functools.lru_cache(maxsize=4096)(topic_matches)
_MAX_STREAMS = 64  # open pages; more are refused (503) rather than slowing the host
_EVENTS_KEPT = 500


_MAX_HISTORY_TOPICS = 10_000  # beyond this many numeric topics, new ones get no plot (counted)


class _Ring:
    """The last ``size`` (ts, value) samples of one topic in two fixed arrays: 16 bytes a sample."""

    __slots__ = ("ts", "values", "count", "next")

    def __init__(self, size: int):
        self.ts = np.empty(size)
        self.values = np.empty(size)
        self.count = 0
        self.next = 0

    def append(self, ts: float, value: float) -> None:
        self.ts[self.next] = ts
        self.values[self.next] = value
        self.next = (self.next + 1) % len(self.ts)
        self.count = min(self.count + 1, len(self.ts))

    def items(self) -> list[tuple[float, float]]:
        if not self.count:
            return []
        order = np.roll(np.arange(len(self.ts)), -self.next)[-self.count:]
        return list(zip(self.ts[order].tolist(), self.values[order].tolist(), strict=True))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    return None


def _show(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return _show(value.item())
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class LiveData:
    """Samples the host's bus for the console. ``start()`` on the host's loop, ``stop()`` after."""

    def __init__(self, host: Host, history_points: int, interval: float = 1.0):
        self.host = host
        self.interval = interval
        self.history_points = history_points
        self._history: dict[str, _Ring] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=_EVENTS_KEPT)
        self._seen_ts: dict[str, float] = {}
        self._streams: set[asyncio.Queue[bytes]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._subscription: Subscription | None = None
        self.last_ack: float | None = None  # wall time the uplink last confirmed an envelope
        self._acked = 0
        self.closing = asyncio.Event()
        self.ticks = 0
        metrics = host.metrics
        self._m_streams = metrics.gauge("edgeplane_console_streams", "Open console pages (server-sent event streams)")
        self._m_refused = metrics.counter("edgeplane_console_streams_refused_total", "Console streams refused: too many open pages")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._subscription = self.host.bus.subscribe("#", name="console", maxsize=2000, overflow=Overflow.DROP_OLDEST,
                                                     multipoint=True)  # it reads events; batches are skipped whole
        self._tasks = [asyncio.get_running_loop().create_task(self._sample_loop(), name="console:sample"),
                       asyncio.get_running_loop().create_task(self._event_loop(), name="console:events")]

    async def stop(self) -> None:
        self.closing.set()
        for queue in list(self._streams):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")  # wakes the stream, which then sees ``closing``
        if self._subscription is not None:
            self._subscription.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- what panels and pages read ----------------------------------------------------------

    def history(self, topic: str) -> list[tuple[float, float]]:
        ring = self._history.get(topic)
        return ring.items() if ring is not None else []

    def latest(self, topic: str) -> tuple[float, Any, int] | None:
        found = self.host.bus.latest(topic)
        return None if found is None else (found[0], found[1], int(found[2]))

    def events(self, pattern: str = "#", limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for event in reversed(self._events):
            if pattern == "#" or _matches(pattern, event["topic"]):
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    def snapshot(self) -> dict[str, list[Any]]:
        """Every topic's newest reading: ``{topic: [ts, value, quality]}``."""
        return {t: [ts, _show(v), int(q)] for t, (ts, v, q) in self.host.bus.latest_matching("#").items()}

    # -- streams ------------------------------------------------------------------------------

    def open_stream(self) -> asyncio.Queue[bytes] | None:
        if len(self._streams) >= _MAX_STREAMS:
            self._m_refused.inc()
            return None
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self._streams.add(queue)
        self._m_streams.set(len(self._streams))
        return queue

    def close_stream(self, queue: asyncio.Queue[bytes]) -> None:
        self._streams.discard(queue)
        self._m_streams.set(len(self._streams))

    @property
    def streams(self) -> int:
        return len(self._streams)

    # -- the loops ----------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        while True:
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - the console must never take the host down
                self.host.metrics.errors.labels(part="console", kind="sample").inc()
                log.exception("console: sampling failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    def _sample(self) -> None:
        self.ticks += 1
        changed: dict[str, list[Any]] = {}
        keep = self.history_points
        for topic, (ts, value, quality) in self.host.bus.latest_matching("#").items():
            if self._seen_ts.get(topic) == ts:
                continue
            self._seen_ts[topic] = ts
            changed[topic] = [ts, _show(value), int(quality)]
            number = _number(value)
            if number is not None:
                ring = self._history.get(topic)
                if ring is None:
                    if len(self._history) >= _MAX_HISTORY_TOPICS:
                        self.host.metrics.dropped.labels(part="console", reason="history_topics").inc()
                        continue
                    ring = self._history[topic] = _Ring(keep)
                ring.append(ts, number)
        sync = self.host.sync
        if sync is not None and sync.envelopes_sent != self._acked:
            self._acked = sync.envelopes_sent
            self.last_ack = time.time()
        if self._streams:
            message = ("event: values\ndata: " + json.dumps({"now": time.time(), "values": changed},
                                                            separators=(",", ":")) + "\n\n").encode()
            for queue in self._streams:
                if queue.full():  # a stalled page: it misses this tick, the host does not wait
                    continue
                queue.put_nowait(message)

    async def _event_loop(self) -> None:
        assert self._subscription is not None
        async for message in self._subscription:
            if isinstance(message, Batch):
                continue
            self._events.append({"topic": message.topic, "kind": message.kind, "ts": message.ts,
                                 "source": message.source, "severity": message.severity, "data": message.data})
