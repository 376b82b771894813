"""The bus: columnar batches from publishers to subscribers by topic pattern.

A :class:`Batch` carries readings as numpy columns, so a solution works on thousands of readings
per call. A single-point batch holds readings of one point (``<device>/<point>``); a multi-point
batch holds readings of many points, with a point-id column (``point_ids``) beside the timestamps,
values and quality that indexes a :class:`PointTable` of topics. A connector publishes one
multi-point batch per block read or per drained group of MQTT messages, so the bus costs one
call per batch, not one per point. Events (alerts, forecasts, diagnoses) travel on the same bus
as :class:`Event` objects under topics such as ``alerts/<solution>``.

Who receives what: a subscription made with ``multipoint=True`` receives each multi-point batch
as published when every point in it matches its patterns, or the rows that match (one row
selection per batch and subscription, never one copy per point). Every other subscription
receives single-point batches as before: a multi-point batch is split once per publish into one
single-point batch per point, whose arrays are views of the published columns, shared by every
such subscriber. Routing of a multi-point batch is computed once per (table, set of
subscriptions) and cached on the table, so connectors make one table per read plan and reuse it.

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
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Batch", "Bus", "Event", "Overflow", "PointTable", "Quality", "Subscription", "topic_matches"]


class Quality(enum.IntEnum):
    """Quality of a reading, as stored in :attr:`Batch.quality` (uint8)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Overflow(str, enum.Enum):  # noqa: UP042 - StrEnum changes str() of a member, which callers may print
    """What a full subscription queue does with one more message."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class PointTable:
    """The points a multi-point :class:`Batch` can carry: point id ``i`` is ``topics[i]``.

    Make one per read plan (a Modbus device's block, an MQTT device's known topics) and reuse it:
    the bus caches which subscriptions want which points on the table, so routing a batch costs
    one lookup, not one pattern match per point.
    """

    __slots__ = ("topics", "units", "all_ids", "_index", "_route")

    def __init__(self, topics: Iterable[str], units: Iterable[str | None] | None = None):
        self.topics: tuple[str, ...] = tuple(topics)
        self.units: tuple[str | None, ...] = (None,) * len(self.topics) if units is None else tuple(units)
        if len(self.units) != len(self.topics):
            raise ValueError(f"point table: {len(self.topics)} topics but {len(self.units)} units; give one unit "
                             f"(or None) per topic")
        # one row per point in id order, the shape of a full poll: pass it as ``point_ids`` and the
        # bus skips the checks and searches such a batch needs otherwise
        self.all_ids = np.arange(len(self.topics))
        self.all_ids.flags.writeable = False
        self._index = {topic: i for i, topic in enumerate(self.topics)}
        if len(self._index) != len(self.topics):
            twice = sorted({t for t in self.topics if self.topics.count(t) > 1})
            raise ValueError(f"point table: topics listed twice: {', '.join(twice)}; a point has one id")
        # (bus, bus generation, routes): see Bus._table_routes
        self._route: tuple[Bus, int, tuple[tuple[Subscription, np.ndarray | None], ...]] | None = None

    def id_of(self, topic: str) -> int:
        """The point id of ``topic``; KeyError if the table does not hold it."""
        return self._index[topic]

    def __contains__(self, topic: object) -> bool:
        return topic in self._index

    def __len__(self) -> int:
        return len(self.topics)

    def __repr__(self) -> str:
        return f"PointTable({len(self.topics)} points)"


class Batch:
    """Readings as parallel columns: timestamps, values, quality; of one point or of many.

    ``ts`` is float64 seconds since the epoch, ``values`` any numpy array with the same first
    dimension (float64 for most points, object for strings), ``quality`` uint8 :class:`Quality`.
    A multi-point batch (made with :meth:`rows`) adds ``point_ids``, an integer column of ids
    into ``table``; a single-point batch has ``table`` and ``point_ids`` None and a ``topic``.
    Arrays are shared, not copied: treat a received batch as read-only.
    """

    __slots__ = ("_topic", "_unit", "table", "point_ids", "ts", "values", "quality", "_pieces")

    def __init__(
        self,
        topic: str,
        ts: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray | None = None,
        unit: str | None = None,
    ):
        self._topic = topic
        self._unit = unit
        self.table: PointTable | None = None
        self.point_ids: np.ndarray | None = None
        self.ts = ts
        self.values = values
        self.quality = np.zeros(len(ts), dtype=np.uint8) if quality is None else quality
        self._pieces: tuple[list[int], list[Batch]] | None = None  # (point ids, single-point pieces)

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

    @classmethod
    def rows(
        cls,
        table: PointTable,
        point_ids: np.ndarray | Iterable[int],
        ts: np.ndarray | float,
        values: np.ndarray,
        quality: np.ndarray | int | None = None,
    ) -> Batch:
        """A multi-point batch: row ``i`` is a reading of ``table.topics[point_ids[i]]``.

        ``ts`` may be one timestamp for every row (one poll), ``quality`` one quality for every
        row. Checks lengths and that every point id is in the table (``table.all_ids``, one row
        per point, needs no check).
        """
        ids = point_ids if point_ids is table.all_ids else np.asarray(point_ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"multi-point batch: point_ids must be integers, got dtype {ids.dtype}")
        n = len(ids)
        if type(ts) is float:
            ts_arr = np.full(n, ts)
        elif isinstance(ts, np.ndarray):
            ts_arr = ts if ts.dtype == np.float64 else ts.astype(np.float64)
        else:
            ts_arr = np.full(n, ts, dtype=np.float64) if np.ndim(ts) == 0 else np.asarray(ts, dtype=np.float64)
        if isinstance(quality, np.ndarray) and quality.dtype == np.uint8:
            q_arr = quality
        elif quality is None:
            q_arr = np.zeros(n, dtype=np.uint8)
        elif np.ndim(quality) == 0:
            q_arr = np.full(n, quality, dtype=np.uint8)
        else:
            q_arr = np.asarray(quality, dtype=np.uint8)
        val_arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if not (len(ts_arr) == len(val_arr) == len(q_arr) == n):
            raise ValueError(f"multi-point batch: point_ids, ts, values and quality differ in length "
                             f"({n}, {len(ts_arr)}, {len(val_arr)}, {len(q_arr)})")
        if n and ids is not table.all_ids and (int(ids.min()) < 0 or int(ids.max()) >= len(table)):
            raise ValueError(f"multi-point batch: point ids must lie in 0..{len(table) - 1} (the table's points), "
                             f"got {int(ids.min())}..{int(ids.max())}")
        return cls._make(table, ids, ts_arr, val_arr, q_arr)

    @classmethod
    def _make(cls, table: PointTable, ids: np.ndarray, ts: np.ndarray, values: np.ndarray,
              quality: np.ndarray) -> Batch:
        batch = cls.__new__(cls)
        batch._topic = ""  # a multi-point batch has no topic: readers check `table` first
        batch._unit = None
        batch.table = table
        batch.point_ids = ids
        batch.ts = ts
        batch.values = values
        batch.quality = quality
        batch._pieces = None
        return batch

    @property
    def multipoint(self) -> bool:
        """Whether this batch carries a point-id column (it may still hold rows of one point)."""
        return self.table is not None

    @property
    def topic(self) -> str:
        """The topic of a single-point batch. A multi-point batch has none: use :meth:`split`."""
        if self.table is None:
            return self._topic
        if len(self.table) == 1:
            return self.table.topics[0]
        raise ValueError(f"a multi-point batch ({len(self.table)} points) has no single topic: iterate "
                         f"batch.split() for single-point batches, or read batch.point_ids with batch.table")

    @property
    def unit(self) -> str | None:
        if self.table is None:
            return self._unit
        if len(self.table) == 1:
            return self.table.units[0]
        raise ValueError("a multi-point batch has one unit per point: read batch.table.units[point_id]")

    @property
    def device(self) -> str:
        return self.topic.split("/", 1)[0]

    @property
    def point(self) -> str:
        return self.topic.split("/", 1)[1] if "/" in self.topic else ""

    def topic_at(self, row: int) -> str:
        """The topic of row ``row`` (for single- and multi-point batches alike)."""
        if self.table is None:
            return self._topic
        assert self.point_ids is not None  # a multi-point batch always has its point-id column
        return self.table.topics[int(self.point_ids[row])]

    def select(self, rows: np.ndarray) -> Batch:
        """The rows picked by a boolean mask or an index array, as a batch of the same kind."""
        if self.table is None:
            return Batch(self._topic, self.ts[rows], self.values[rows], self.quality[rows], self._unit)
        assert self.point_ids is not None  # a multi-point batch always has its point-id column
        return Batch._make(self.table, self.point_ids[rows], self.ts[rows], self.values[rows], self.quality[rows])

    def split(self) -> list[Batch]:
        """One single-point batch per point present, in point-id order; a single-point batch
        gives itself. Rows of a point keep their order. Computed once per batch; when rows are
        grouped by point id in ascending order (as a connector publishes them) every piece's
        arrays are views of this batch's, otherwise one reordering copy serves all pieces."""
        return list(self._split()[1])

    def by_point(self) -> list[tuple[int, Batch]]:
        """:meth:`split` with each piece's point id (0 for a single-point batch)."""
        ids, pieces = self._split()
        return list(zip(ids, pieces))

    def _split(self) -> tuple[list[int], list[Batch]]:
        split = self._pieces
        if split is not None:
            return split
        if self.table is None:
            split = ([0], [self])
        elif self.point_ids is self.table.all_ids:
            split = self._split_poll()
        else:
            ids = self.point_ids
            assert ids is not None
            n = len(ids)
            ts, values, quality = self.ts, self.values, self.quality
            if n > 1 and not bool((ids[1:] >= ids[:-1]).all()):
                order = np.argsort(ids, kind="stable")
                ids, ts, values, quality = ids[order], ts[order], values[order], quality[order]
            if n == 0:
                bounds: list[int] = [0]
            else:
                bounds = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
            topics, units = self.table.topics, self.table.units
            point_ids = [int(ids[s]) for s in bounds[:-1]]
            split = (point_ids, [Batch(topics[pid], ts[s:e], values[s:e], quality[s:e], units[pid])
                                 for pid, s, e in zip(point_ids, bounds, bounds[1:])])
        self._pieces = split
        return split

    def _split_poll(self) -> tuple[list[int], list[Batch]]:
        """Pieces of a full poll (row i is point i): when every row has the same time (one poll)
        or the same quality, the pieces share one one-row array of it."""
        ts, values, quality = self.ts, self.values, self.quality
        n = len(ts)
        if not n:
            return [], []
        table = self.table
        assert table is not None
        same_ts = ts[:1] if ts[0] == ts[-1] and bool((ts == ts[0]).all()) else None
        same_q = quality[:1] if quality[0] == quality[-1] and bool((quality == quality[0]).all()) else None
        if same_ts is not None and same_q is not None:
            pieces = [Batch(topic, same_ts, values[i:i + 1], same_q, unit)
                      for i, (topic, unit) in enumerate(zip(table.topics, table.units))]
        else:
            pieces = [Batch(topic, ts[i:i + 1] if same_ts is None else same_ts, values[i:i + 1],
                            quality[i:i + 1] if same_q is None else same_q, unit)
                      for i, (topic, unit) in enumerate(zip(table.topics, table.units))]
        return list(range(n)), pieces

    def newest_numbers(self) -> list[tuple[str, tuple[float, float] | None]]:
        """Per point present (as :meth:`split`), its topic and its newest GOOD numeric reading as
        ``(timestamp, value)``, or None when the batch holds no such reading of it (bad quality
        throughout, or a text or bytes value): what a solution that acts on the latest value of
        each point wants from a block read."""
        newest: list[tuple[str, tuple[float, float] | None]] = []
        for piece in self._split()[1]:
            good = np.flatnonzero(piece.quality == Quality.GOOD)
            if not len(good) or piece.values.dtype.kind not in "fiub":
                newest.append((piece.topic, None))
            else:
                newest.append((piece.topic, (float(piece.ts[good[-1]]), float(piece.values[good[-1]]))))
        return newest

    def __len__(self) -> int:
        return len(self.ts)

    def last(self) -> tuple[float, Any, Quality]:
        """The newest reading as (timestamp, value, quality) (of a single-point batch)."""
        if self.table is not None and len(self.table) > 1:
            raise ValueError("a multi-point batch has no single newest reading: use Bus.latest(topic) or split()")
        return _reading(self, len(self.ts) - 1)

    def __repr__(self) -> str:
        if self.table is None:
            return f"Batch({self._topic!r}, n={len(self.ts)})"
        return f"Batch(<{len(self.table)} points>, n={len(self.ts)})"


def _newest(batch: Batch, topic: str) -> tuple[float, Any, Quality]:
    """The newest reading of ``topic`` in a batch that holds it."""
    table = batch.table
    if table is None:
        return _reading(batch, len(batch.ts) - 1)
    pid = table.id_of(topic)
    if batch.point_ids is table.all_ids:
        return _reading(batch, pid)
    return _reading(batch, int(np.flatnonzero(batch.point_ids == pid)[-1]))


def _reading(batch: Batch, row: int) -> tuple[float, Any, Quality]:
    value = batch.values[row]
    if isinstance(value, np.generic):
        value = value.item()
    return float(batch.ts[row]), value, Quality(int(batch.quality[row]))


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


def _is_exact(levels: list[str]) -> bool:
    """Whether a pattern's levels hold no wildcard and no glob, so it matches one topic only."""
    return not any(_GLOB_CHARS.search(lv) or lv in ("+", "#") for lv in levels)


def _compile(pattern: str) -> Callable[[str], bool]:
    """Turn a pattern into a predicate over topic strings."""
    if not pattern:
        raise ValueError("an empty topic pattern matches nothing: use '#' to match every topic")
    levels = pattern.split("/")
    if "#" in levels[:-1]:
        raise ValueError(f"topic pattern {pattern!r}: '#' is only allowed as the last level")
    if _is_exact(levels):
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
                 acknowledged: bool = False, multipoint: bool = False):
        if maxsize < 1:
            raise ValueError(f"subscription {name!r}: maxsize must be at least 1, got {maxsize}")
        if acknowledged and Overflow(overflow) is not Overflow.BLOCK:
            raise ValueError(f"subscription {name!r}: an acknowledged subscription cannot drop messages: use overflow=block")
        # acknowledged: a publisher's `await publish` returns only once this subscriber has called
        # acknowledge() for the message (the sync layer does, after the outbox has committed it)
        self.acknowledged = acknowledged
        # multipoint: receives multi-point batches (the rows it matches); otherwise single-point ones
        self.multipoint = multipoint
        self._acks: collections.deque[asyncio.Future[None]] = collections.deque()
        self.bus = bus
        self.name = name
        self.patterns = patterns
        self.maxsize = maxsize
        self.overflow = Overflow(overflow)
        self.dropped = 0  # messages dropped by the overflow policy
        self.delivered = 0
        matchers = [(p, _compile(p)) for p in patterns]  # compiled for every pattern: that also checks its syntax
        # exact topics in a set: a solution listing 100 points is matched against a 2,000-point table by 2,000 lookups
        self._exact = frozenset(p for p in patterns if _is_exact(p.split("/")))
        self._matchers = tuple(m for p, m in matchers if p not in self._exact)
        self._queue: collections.deque[Batch | Event] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    def matches(self, topic: str) -> bool:
        return topic in self._exact or any(m(topic) for m in self._matchers)

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
        self._generation = 0  # changes with the set of subscriptions: invalidates PointTable routes
        # topic -> the newest batch holding it (for a multi-point batch, its last row of the topic)
        self._latest: dict[str, Batch] = {}
        # newest batch of every point of a table (a poll), not yet spread over _latest's topics:
        # spread only when something reads or writes _latest, not once per topic per poll
        self._latest_tables: dict[PointTable, Batch] = {}
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
        multipoint: bool = False,
    ) -> Subscription:
        """Subscribe to every topic matching any of ``patterns``.

        With ``acknowledged=True``, :meth:`publish` waits until the subscriber has called
        :meth:`Subscription.acknowledge` for the message: the sync layer uses it so that a
        reading is acknowledged to its producer only once it is stored durably.

        With ``multipoint=True`` the subscriber receives multi-point batches as published (or the
        rows of them it matches) and must handle ``batch.point_ids``; otherwise it receives
        single-point batches only, whatever publishers send.
        """
        if isinstance(patterns, str):
            patterns = (patterns,)
        subscription = Subscription(self, name, tuple(patterns), maxsize, Overflow(overflow), acknowledged,
                                    multipoint)
        self._subscriptions.append(subscription)
        self._routes.clear()
        self._generation += 1
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._routes.clear()
            self._generation += 1

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        route = self._routes.get(topic)
        if route is None:
            route = tuple(s for s in self._subscriptions if s.matches(topic))
            self._routes[topic] = route
        return route

    def _table_routes(self, table: PointTable) -> tuple[tuple[Subscription, np.ndarray | None], ...]:
        """Per subscription that wants any point of ``table``: a boolean mask over point ids
        (None: it wants them all). Cached on the table until the subscriptions change."""
        cached = table._route
        if cached is not None and cached[0] is self and cached[1] == self._generation:
            return cached[2]
        routes: list[tuple[Subscription, np.ndarray | None]] = []
        for subscription in self._subscriptions:
            member = np.fromiter((subscription.matches(t) for t in table.topics), dtype=bool, count=len(table))
            if member.all():
                routes.append((subscription, None))
            elif member.any():
                routes.append((subscription, member))
        result = tuple(routes)
        table._route = (self, self._generation, result)
        return result

    def _deliveries(self, message: Batch | Event) -> list[tuple[Subscription, Batch | Event]]:
        """(subscription, what it gets) for one published message."""
        if type(message) is not Batch or message.table is None:
            return [(s, message) for s in self._route(message.topic)]
        out: list[tuple[Subscription, Batch | Event]] = []
        ids = message.point_ids
        for subscription, member in self._table_routes(message.table):
            if subscription.multipoint:
                if member is None:
                    out.append((subscription, message))
                    continue
                rows = member[ids]
                if rows.all():
                    out.append((subscription, message))
                elif rows.any():
                    out.append((subscription, message.select(rows)))
            else:
                # the single-point layer: pieces are made once per batch and shared
                ids_, pieces = message._split()
                if member is None:
                    out.extend(zip(itertools.repeat(subscription, len(pieces)), pieces))
                else:
                    out.extend((subscription, piece) for pid, piece in zip(ids_, pieces) if member[pid])
        return out

    async def publish(self, message: Batch | Event) -> None:
        """Deliver to every matching subscription; waits on full ``block`` subscriptions, and
        until every ``acknowledged`` subscription has confirmed the message."""
        self._account(message)
        pending = None
        if type(message) is Batch and message.table is not None:
            for subscription, delivered in self._deliveries(message):
                if not subscription._offer(delivered):
                    await subscription._put(delivered)
                if subscription.acknowledged and not subscription._closed:
                    pending = (pending or []) + [subscription._acks[-1]]
        else:
            # single-point batches and events: the hot path of per-point publishers, kept lean
            for subscription in self._route(message._topic if type(message) is Batch else message.topic):
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
            for subscription, delivered in self._deliveries(message):
                if not subscription._offer(delivered):
                    await subscription._put(delivered)
                if subscription.acknowledged and not subscription._closed:
                    pending.append(subscription._acks[-1])
        for ack in pending:
            await ack

    def publish_nowait(self, message: Batch | Event) -> int:
        """Deliver without waiting. A full ``block`` subscription counts a drop instead.

        For callers that cannot wait (callbacks from other threads handed over to the loop);
        returns how many deliveries were refused (a multi-point batch split for a single-point
        subscriber counts one per point).
        """
        self._account(message)
        refused = 0
        for subscription, delivered in self._deliveries(message):
            if not subscription._offer(delivered):
                subscription.dropped += 1
                refused += 1
        return refused

    def _account(self, message: Batch | Event) -> None:
        if type(message) is Batch:
            n = len(message.ts)
            self.published_batches += 1
            self.published_points += n
            if not n:
                return
            table = message.table
            ids = message.point_ids
            if table is not None and ids is table.all_ids:
                pending = self._latest_tables
                pending.pop(table, None)  # re-inserted last: spread in the order they came
                pending[table] = message
                return
            if self._latest_tables:
                self._spread_latest()
            if table is None:
                self._latest[message._topic] = message
            else:
                assert ids is not None  # a multi-point batch always has its point-id column
                topics = table.topics
                self._latest.update(dict.fromkeys([topics[i] for i in np.unique(ids).tolist()], message))
        else:
            self.published_events += 1

    def _spread_latest(self) -> None:
        pending, self._latest_tables = self._latest_tables, {}
        for table, batch in pending.items():
            self._latest.update(dict.fromkeys(table.topics, batch))

    def latest(self, topic: str) -> tuple[float, Any, Quality] | None:
        """The newest reading seen on ``topic`` as (timestamp, value, quality), or None."""
        if self._latest_tables:
            self._spread_latest()
        found = self._latest.get(topic)
        return None if found is None else _newest(found, topic)

    def latest_batch(self, topic: str) -> Batch | None:
        """The newest single-point batch seen on ``topic`` (a whole waveform window, say), or None.

        When the newest readings came in a multi-point batch, its rows of ``topic``."""
        if self._latest_tables:
            self._spread_latest()
        batch = self._latest.get(topic)
        if batch is None or batch.table is None:
            return batch
        pid = batch.table.id_of(topic)
        ids, pieces = batch._split()
        return pieces[ids.index(pid)]

    def latest_matching(self, pattern: str) -> dict[str, tuple[float, Any, Quality]]:
        """The newest reading of every topic matching ``pattern``."""
        matcher = _compile(pattern)
        if self._latest_tables:
            self._spread_latest()
        return {t: _newest(found, t) for t, found in self._latest.items() if matcher(t)}

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subscriptions)
