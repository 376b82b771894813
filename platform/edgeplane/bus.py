"""The bus: columnar batches from publishers to subscribers by topic pattern.

A :class:`Batch` carries many readings of one point (``<device>/<point>``) as numpy arrays,
so a solution works on thousands of readings per call. Events (alerts, forecasts, diagnoses)
travel on the same bus as :class:`Event` objects under topics such as ``alerts/<solution>``.

Patterns match topics level by level (levels are separated by ``/``): ``+`` or ``*`` matches one
whole level, a level with ``*``/``?``/``[...]`` in it is a glob (``inv*``), and a final ``#``
matches any number of remaining levels (``alerts/#``).

Every subscription has a bounded queue and an overflow policy:

* ``block``: the publisher waits until the subscriber has room (back-pressure to the source);
* ``drop_oldest``: the oldest queued message is dropped to make room, and counted.

Nothing is dropped silently: :attr:`Subscription.dropped` and the ``edgeplane_bus_dropped``
metric count every drop.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable

import numpy as np

__all__ = ["Batch", "Bus", "Event", "Overflow", "Quality", "Subscription", "topic_matches"]


class Quality(enum.IntEnum):
    """Quality of a reading, as stored in :attr:`Batch.quality` (uint8)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Overflow(str, enum.Enum):
    """What a full subscription queue does with one more message."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


_EMPTY_QUALITY = np.zeros(0, dtype=np.uint8)


class Batch:
    """Readings of one point: parallel arrays of timestamps, values and quality.

    ``ts`` is float64 seconds since the epoch, ``values`` any numpy array with the same first
    dimension (float64 for most points, object for strings), ``quality`` uint8 :class:`Quality`.
    Arrays are shared, not copied: treat a received batch as read-only.
    """

    __slots__ = ("topic", "ts", "values", "quality", "unit")

    def __init__(
        self,
        topic: str,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray | None = None,
        unit: str | None = None,
    ):
        self.topic = topic
        self.ts = ts
        self.values = values
        self.quality = np.zeros(len(ts), dtype=np.uint8) if quality is None else quality
        self.unit = unit

    @classmethod
    def of(
        cls,
        topic: str,
        ts: Iterable[float] | float,
        values: Iterable[Any] | Any,
        quality: Iterable[int] | int | None = None,
        unit: str | None = None,
    ) -> Batch:
        """Build a batch from Python scalars or sequences; checks that lengths agree."""
        ts_arr = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        val_arr = np.asarray(values)
        if val_arr.ndim == 0:
            val_arr = val_arr.reshape(1)
        if val_arr.dtype.kind in "iub":
            val_arr = val_arr.astype(np.float64)
        if quality is None:
            q_arr = np.zeros(len(ts_arr), dtype=np.uint8)
        else:
            q_arr = np.atleast_1d(np.asarray(quality, dtype=np.uint8))
            if len(q_arr) == 1 and len(ts_arr) > 1:
                q_arr = np.full(len(ts_arr), q_arr[0], dtype=np.uint8)
        if not (len(ts_arr) == len(val_arr) == len(q_arr)):
            raise ValueError(
                f"batch for {topic!r}: ts, values and quality differ in length "
                f"({len(ts_arr)}, {len(val_arr)}, {len(q_arr)})"
            )
        return cls(topic, ts_arr, val_arr, q_arr, unit)

    @property
    def device(self) -> str:
        return self.topic.split("/", 1)[0]

    @property
    def point(self) -> str:
        return self.topic.split("/", 1)[1] if "/" in self.topic else ""

    def __len__(self) -> int:
        return len(self.ts)

    def last(self) -> tuple[float, Any, Quality]:
        """The newest reading as (timestamp, value, quality)."""
        value = self.values[-1]
        if isinstance(value, np.generic):
            value = value.item()
        return float(self.ts[-1]), value, Quality(int(self.quality[-1]))

    def __repr__(self) -> str:
        return f"Batch({self.topic!r}, n={len(self.ts)})"


@dataclass(slots=True)
class Event:
    """Something a solution concluded: an alert, a forecast, a diagnosis.

    ``topic`` routes it (``alerts/<solution>``, ``forecasts/<solution>``...), ``kind`` says what it
    is, ``data`` holds its JSON-serialisable content (evidence, values, horizons).
    """

    topic: str
    kind: str
    ts: float
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None


_GLOB_CHARS = re.compile(r"[*?\[]")


def _glob_level(level: str) -> str:
    """Regex for one glob level: '*' and '?' never cross a '/'."""
    out, i = [], 0
    while i < len(level):
        ch = level[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and "]" in level[i + 1 :]:
            end = level.index("]", i + 1)
            body = level[i + 1 : end]
            body = body.replace("\\", "\\\\")
            out.append("[^/" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _compile(pattern: str):
    """Turn a pattern into a predicate over topic strings."""
    if not pattern:
        raise ValueError("an empty topic pattern matches nothing: use '#' to match every topic")
    levels = pattern.split("/")
    if "#" in levels[:-1]:
        raise ValueError(f"topic pattern {pattern!r}: '#' is only allowed as the last level")
    if not any(_GLOB_CHARS.search(lv) or lv in ("+", "#") for lv in levels):
        return lambda topic: topic == pattern
    tail = levels[-1] == "#"
    body = levels[:-1] if tail else levels
    parts: list[str] = []
    for level in body:
        if level in ("+", "*"):
            parts.append("[^/]+")
        elif _GLOB_CHARS.search(level):
            parts.append(_glob_level(level))
        else:
            parts.append(re.escape(level))
    regex = "/".join(parts)
    if tail:
        regex = f"{regex}(?:/.*)?" if regex else ".*"
    compiled = re.compile(f"^{regex}$")
    return lambda topic: compiled.match(topic) is not None


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (see the module docstring for the syntax)."""
    return _compile(pattern)(topic)


class Subscription:
    """A bounded queue of messages for one subscriber. Iterate it with ``async for``."""

    def __init__(self, bus: Bus, name: str, patterns: tuple[str, ...], maxsize: int, overflow: Overflow,
                 acknowledged: bool = False):
        if maxsize < 1:
            raise ValueError(f"subscription {name!r}: maxsize must be at least 1, got {maxsize}")
        if acknowledged and Overflow(overflow) is not Overflow.BLOCK:
            raise ValueError(f"subscription {name!r}: an acknowledged subscription cannot drop messages: use overflow=block")
        # acknowledged: a publisher's `await publish` returns only once this subscriber has called
        # acknowledge() for the message (the sync layer does, after the outbox has committed it)
        self.acknowledged = acknowledged
        self._acks: collections.deque[asyncio.Future[None]] = collections.deque()
        self.bus = bus
        self.name = name
        self.patterns = patterns
        self.maxsize = maxsize
        self.overflow = Overflow(overflow)
        self.dropped = 0  # messages dropped by the overflow policy
        self.delivered = 0
        self._matchers = tuple(_compile(p) for p in patterns)
        self._queue: collections.deque[Batch | Event] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    def matches(self, topic: str) -> bool:
        return any(m(topic) for m in self._matchers)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def _offer(self, message: Batch | Event) -> bool:
        """Queue without waiting. False if the queue is full under the block policy."""
        queue = self._queue
        if len(queue) >= self.maxsize:
            if self.overflow is Overflow.BLOCK:
                return False
            queue.popleft()
            self.dropped += 1
        queue.append(message)
        if self.acknowledged:
            self._acks.append(asyncio.get_running_loop().create_future())
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return True

    async def _put(self, message: Batch | Event) -> None:
        while not self._offer(message):
            if self._closed:
                return
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            finally:
                if putter in self._putters:
                    self._putters.remove(putter)

    async def get(self) -> Batch | Event:
        """The next message; waits for one."""
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        message = self._queue.popleft()
        self.delivered += 1
        if self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
        return message

    def get_nowait(self) -> Batch | Event | None:
        """The next message, or None if the queue is empty."""
        if not self._queue:
            return None
        message = self._queue.popleft()
        self.delivered += 1
        if self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
        return message

    def __aiter__(self) -> AsyncIterator[Batch | Event]:
        return self

    async def __anext__(self) -> Batch | Event:
        return await self.get()

    def acknowledge(self, count: int) -> None:
        """Confirm the oldest ``count`` delivered messages: their publishers' awaits return."""
        for _ in range(min(count, len(self._acks))):
            ack = self._acks.popleft()
            if not ack.done():
                ack.set_result(None)

    def close(self) -> None:
        """Unsubscribe; a waiting ``get`` ends the iteration, blocked publishers are released."""
        if self._closed:
            return
        self._closed = True
        self.acknowledge(len(self._acks))
        self.bus._remove(self)
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)
        for putter in self._putters:
            if not putter.done():
                putter.set_result(None)

    def __repr__(self) -> str:
        return f"Subscription({self.name!r}, {list(self.patterns)}, depth={self.depth}, dropped={self.dropped})"


class Bus:
    """Routes batches and events from publishers to matching subscriptions."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}  # topic -> matching subscriptions
        self._latest: dict[str, Batch] = {}
        self.published_batches = 0
        self.published_points = 0
        self.published_events = 0

    def subscribe(
        self,
        patterns: str | Iterable[str],
        *,
        name: str = "anonymous",
        maxsize: int = 1000,
        overflow: Overflow | str = Overflow.BLOCK,
        acknowledged: bool = False,
    ) -> Subscription:
        """Subscribe to every topic matching any of ``patterns``.

        With ``acknowledged=True``, :meth:`publish` waits until the subscriber has called
        :meth:`Subscription.acknowledge` for the message: the sync layer uses it so that a
        reading is acknowledged to its producer only once it is stored durably.
        """
        if isinstance(patterns, str):
            patterns = (patterns,)
        subscription = Subscription(self, name, tuple(patterns), maxsize, Overflow(overflow), acknowledged)
        self._subscriptions.append(subscription)
        self._routes.clear()
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._routes.clear()

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        route = self._routes.get(topic)
        if route is None:
            route = tuple(s for s in self._subscriptions if s.matches(topic))
            self._routes[topic] = route
        return route

    async def publish(self, message: Batch | Event) -> None:
        """Deliver to every matching subscription; waits on full ``block`` subscriptions, and
        until every ``acknowledged`` subscription has confirmed the message."""
        self._account(message)
        pending = None
        for subscription in self._route(message.topic):
            if not subscription._offer(message):
                await subscription._put(message)
            if subscription.acknowledged and not subscription._closed:
                # _offer queued this message's ack last, and nothing ran since
                pending = (pending or []) + [subscription._acks[-1]]
        if pending:
            for ack in pending:
                await ack

    async def publish_many(self, messages: Iterable[Batch | Event]) -> None:
        """Publish several messages in order: one call for everything a poll read.

        Same semantics as :meth:`publish` for each message, with one await at most per full
        ``block`` subscription instead of one per message.
        """
        pending = []
        for message in messages:
            self._account(message)
            for subscription in self._route(message.topic):
                if not subscription._offer(message):
                    await subscription._put(message)
                if subscription.acknowledged and not subscription._closed:
                    pending.append(subscription._acks[-1])
        for ack in pending:
            await ack

    def publish_nowait(self, message: Batch | Event) -> int:
        """Deliver without waiting. A full ``block`` subscription counts a drop instead.

        For callers that cannot wait (callbacks from other threads handed over to the loop);
        returns how many subscriptions had to drop the message.
        """
        self._account(message)
        refused = 0
        for subscription in self._route(message.topic):
            if not subscription._offer(message):
                subscription.dropped += 1
                refused += 1
        return refused

    def _account(self, message: Batch | Event) -> None:
        if type(message) is Batch:
            self.published_batches += 1
            self.published_points += len(message.ts)
            if len(message.ts):
                self._latest[message.topic] = message
        else:
            self.published_events += 1

    def latest(self, topic: str) -> tuple[float, Any, Quality] | None:
        """The newest reading seen on ``topic`` as (timestamp, value, quality), or None."""
        batch = self._latest.get(topic)
        return batch.last() if batch is not None else None

    def latest_batch(self, topic: str) -> Batch | None:
        """The newest batch seen on ``topic`` (a whole waveform window, say), or None."""
        return self._latest.get(topic)

    def latest_matching(self, pattern: str) -> dict[str, tuple[float, Any, Quality]]:
        """The newest reading of every topic matching ``pattern``."""
        matcher = _compile(pattern)
        return {t: b.last() for t, b in self._latest.items() if matcher(t)}

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subscriptions)
