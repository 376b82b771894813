"""Dynamic batching for one model: two latency classes, per-caller limits, runs in worker threads.

Each served model has two lanes, ``realtime`` and ``bulk``, each with its own queue, its own
threads (:class:`~edgeplane.inference.workers.RunThreads`, one queue put per batch the loop
starts) and (on CPU) its own onnxruntime session with its own intra-op threads. A lane takes what
is queued (waiting up to its ``max_delay`` for a batch to fill up to ``max_batch`` rows), and runs
it in a worker thread, which joins the requests along the first axis, runs the model, cuts the
outputs back per request (an ``infer_many`` request gets its joined run whole, as
:class:`ItemOutputs`, cut per item on access) and hands the whole batch back to the event loop
with one ``call_soon_threadsafe`` (one for every batch that ends before the loop gets to the
first). A realtime worker whose run ends while a full batch is queued takes that batch itself and
runs it (under one short lock over the lanes' queues), so a busy lane passes from batch to batch
without a thread wake-up or a wait for the loop. There is no task per batch and no thread hop per
request: the event loop's cost per request is one future and the bookkeeping around it.

Realtime is never queued behind bulk: a realtime request is dispatched in the same turn of the
event loop when its lane has a free slot (a realtime batch can start while a bulk batch runs), the
bulk lane does not start a new batch while realtime work is queued or running, bulk batches
are bounded (``bulk_max_batch``), the outcomes of bulk batches that end while a realtime batch
runs are handed to their callers in the loop turn after the realtime one's (so the bulk callers'
wake-ups and next requests do not queue in the loop ahead of the realtime caller), and while bulk batches
run the interpreter's GIL switch interval is shortened (0.1 ms) so that a realtime thread coming
back from onnxruntime waits for the interpreter tens of microseconds at most, not up to the
default 5 ms.

The model a batch runs on is read when the batch starts: after a hot swap, queued requests go to
the new version while batches already running finish on the old one.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import operator
import sys
import threading
import time
from typing import Any, Callable, Iterator, Literal, Sequence, TypeAlias, overload

import numpy as np

from edgeplane.inference.config import BatchingConfig
from edgeplane.inference.errors import InputError, ModelRunError, QueueFullError, ServiceStoppedError
from edgeplane.inference.runtime import LoadedModel
from edgeplane.inference.stats import ModelStats
from edgeplane.inference.workers import RunThreads

__all__ = ["ItemOutputs", "ModelServer", "Priority", "SwitchIntervalWhileBulk", "check_inputs", "concatenate_inputs", "split_outputs"]

Priority = Literal["realtime", "bulk"]
Outputs = dict[str, np.ndarray]
# what a worker thread hands back per request: outputs or an error; for infer_many the joined run's
# outputs cut per item on access, or (when the joined run failed) one outputs dict or error per item
Outcome: TypeAlias = "Outputs | BaseException | ItemOutputs | list[Outputs | BaseException]"


def check_inputs(model: LoadedModel, inputs: Any) -> tuple[dict[str, np.ndarray], int]:
    """Validate a request against the model's signature; returns the feeds and the row count."""
    specs = model.inputs
    # fast path for the common case: one input of fixed trailing shape, given as an array of the right dtype
    fast = model.single_input
    if fast is not None and type(inputs) is np.ndarray:
        name, dtype, tail = fast
        shape = inputs.shape
        if shape and shape[1:] == tail and (inputs.dtype is dtype or inputs.dtype == dtype):
            return {name: inputs}, shape[0]
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise InputError(
                f"{model.label} has {len(specs)} inputs, so pass a dict of arrays by name "
                f"(expected signature: {model.signature_text})"
            )
        inputs = {specs[0].name: inputs}
    expected = {s.name for s in specs}
    if set(inputs) != expected:
        missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
        raise InputError(f"{model.label}: inputs {', '.join(parts)} (expected signature: {model.signature_text})")
    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        value = inputs[spec.name]
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError) as e:
                raise InputError(f"{model.label}: input {spec.name!r} cannot be read as {spec.dtype}: {e} "
                                 f"(expected signature: {model.signature_text})") from None
        elif value.dtype != spec.dtype:
            raise InputError(
                f"{model.label}: input {spec.name!r} has dtype {value.dtype} but the model expects {spec.dtype}; "
                f"convert it with .astype(np.{spec.dtype}) (expected signature: {model.signature_text})"
            )
        shape = value.shape
        if len(shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, shape)):
            want = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
            raise InputError(
                f"{model.label}: input {spec.name!r} has shape {list(shape)} but the model expects {want} "
                f"(expected signature: {model.signature_text})"
            )
        if shape:
            if rows is None:
                rows = shape[0]
            elif shape[0] != rows and model.batchable:
                raise InputError(f"{model.label}: inputs disagree on the batch size ({spec.name!r} has {shape[0]} rows, others {rows})")
        feeds[spec.name] = value
    if not model.batchable:
        rows = 1
    return feeds, rows or 1


def concatenate_inputs(model: LoadedModel, items: Sequence[Any]) -> tuple[dict[str, np.ndarray], int, list[int]]:
    """Check each of many requests and join them into one: (feeds, total rows, rows per item)."""
    if not model.batchable:
        raise InputError(f"{model.label} has a fixed first axis, so it cannot run many requests as one: call infer() per request")
    fast = model.single_input
    if fast is not None and len(items) > 1:
        joined = _join_rows(items, *fast)
        if joined is not None:
            return joined
    checked = [check_inputs(model, item) for item in items]
    splits = [rows for _, rows in checked]
    if len(checked) == 1:
        return checked[0][0], splits[0], splits
    feeds = {spec.name: np.concatenate([f[spec.name] for f, _ in checked], axis=0) for spec in model.inputs}
    return feeds, sum(splits), splits


_SHAPE, _DTYPE = operator.attrgetter("shape"), operator.attrgetter("dtype")


def _join_rows(items: Sequence[Any], name: str, dtype: np.dtype, tail: tuple[int, ...]
               ) -> tuple[dict[str, np.ndarray], int, list[int]] | None:
    """The common case of infer_many (many C-contiguous windows of the one input's dtype and trailing shape)
    joined with one pass over the items' shapes and dtypes and one copy of their bytes; None for anything
    else, which the item-by-item check then accepts or refuses by name.

    ``np.concatenate`` of 64 one-row arrays costs about 5x ``bytes.join`` of the same buffers here.
    """
    if type(items[0]) is not np.ndarray:
        return None
    try:
        # lists and list.count, not sets: each .shape is a new tuple, and hashing 64 of them costs twice the compare
        shapes = list(map(_SHAPE, items))
        dtypes = list(map(_DTYPE, items))
    except AttributeError:  # an item that is not an array (a list, a dict of inputs)
        return None
    if dtypes[0] != dtype or dtypes.count(dtype) != len(dtypes):
        return None
    first = shapes[0]
    equal = shapes.count(first) == len(shapes)
    if any(len(s) != len(tail) + 1 or s[1:] != tail for s in ([first] if equal else shapes)):
        return None
    try:
        data = bytearray().join(items)  # a writable buffer: onnxruntime and the caller may treat it as any array
    except (BufferError, TypeError, ValueError):  # an item that is not C-contiguous, or not an ndarray
        return None
    joined = np.frombuffer(data, dtype=dtype).reshape(-1, *tail)
    rows = joined.shape[0]
    splits = [first[0]] * len(items) if equal else [s[0] for s in shapes]
    return {name: joined}, rows, splits


def split_outputs(outputs: Outputs, splits: Sequence[int]) -> list[Outputs]:
    """The outputs of a joined request cut back per item (views, no copies)."""
    count = len(splits)
    total = sum(splits)
    size = splits[0] if count else 0
    if count and size * count == total and all(n == size for n in splits):
        # equal items (the common case: many one-row windows): one reshape, then numpy iterates the views
        per_name = {name: list(value.reshape(count, size, *value.shape[1:])) for name, value in outputs.items()}
    else:
        bounds = np.cumsum(splits)[:-1]
        per_name = {name: np.split(value, bounds) for name, value in outputs.items()}
    if len(per_name) == 1:
        ((name, parts),) = per_name.items()
        return [{name: part} for part in parts]
    return [{name: parts[i] for name, parts in per_name.items()} for i in range(count)]


class ItemOutputs(Sequence[Outputs]):
    """What ``infer_many`` returns: the outputs of one joined run, cut per request when asked.

    ``results[i]`` is request ``i``'s outputs by name, views into the joined arrays (no copy);
    ``results.outputs`` is the joined run itself, one array per output with every request's rows
    in order, for callers that can take a block; ``results.splits`` is rows per request. Cutting
    happens on access, so a call costs one join, one run and this object, not a dict per
    request: a caller scoring 64 one-row windows pays for the 64 dicts only if it asks for them.
    Each access builds a new dict of views (keep it if you read it twice).
    """

    __slots__ = ("_bounds", "_size", "outputs", "splits")

    def __init__(self, outputs: Outputs, splits: Sequence[int]):
        self.outputs = outputs
        self.splits = list(splits)
        # equal items (the common case): item i starts at i * size; else bounds from a cumulative sum
        first = self.splits[0] if self.splits else 0
        self._size: int | None = first if all(n == first for n in self.splits) else None
        self._bounds: list[int] | None = None

    def __len__(self) -> int:
        return len(self.splits)

    def _slice(self, i: int) -> slice:
        size = self._size
        if size is not None:
            return slice(i * size, (i + 1) * size)
        bounds = self._bounds
        if bounds is None:
            bounds = self._bounds = [0, *itertools.accumulate(self.splits)]
        return slice(bounds[i], bounds[i + 1])

    @overload
    def __getitem__(self, index: int) -> Outputs: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outputs]: ...

    def __getitem__(self, index: int | slice) -> Outputs | list[Outputs]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.splits)))]
        count = len(self.splits)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"item {index} of {count} requests")
        cut = self._slice(index)
        return {name: value[cut] for name, value in self.outputs.items()}

    def __iter__(self) -> Iterator[Outputs]:
        return iter(split_outputs(self.outputs, self.splits))

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of as many requests' outputs with the same names and values."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        if len(other) != len(self):
            return False
        for mine, theirs in zip(self, other):
            if not isinstance(theirs, dict) or mine.keys() != theirs.keys():
                return False
            if not all(np.array_equal(mine[k], theirs[k]) for k in mine):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable, like a list

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {list(value.shape)}" for name, value in self.outputs.items())
        return f"<ItemOutputs of {len(self.splits)} requests ({shapes})>"


class SwitchIntervalWhileBulk:
    """Shortens the interpreter's GIL switch interval while any bulk batch runs, then restores it.

    A thread that comes back from onnxruntime needs the GIL to hand its result over; while the
    event loop (or a bulk thread cutting outputs) holds it, the thread waits until the holder
    lets go, at the latest one switch interval (5 ms by default) after it asked. Measured under
    the benchmark's bulk load (benchmarks/inference.py, its GIL probe) that wait is short even at
    5 ms, because the loop lets go at every epoll: p99 50-75 us at 0.5 ms, 23-26 us at 0.1 ms.
    What a realtime request pays beyond that under load is threads waiting for a core (their
    run-queue time in /proc, the same idle and under bulk when other processes hold the cores).
    The interval is process-wide, so this is one counted hold per process (every service and
    model shares it), and it is only shortened, never lengthened: a host that set a shorter one
    keeps it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: float | None = None
        self._applied: float | None = None

    def hold(self, interval: float) -> None:
        with self._lock:
            self._holders += 1
            if self._holders == 1 and interval > 0:
                current = sys.getswitchinterval()
                if interval < current:
                    self._saved, self._applied = current, interval
                    sys.setswitchinterval(interval)

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._saved is not None:
                # restore only what this object changed (someone else may have set it since)
                if self._applied is not None and abs(sys.getswitchinterval() - self._applied) < 1e-9:
                    sys.setswitchinterval(self._saved)
                self._saved = self._applied = None

    @property
    def holders(self) -> int:
        return self._holders


SWITCH_INTERVAL = SwitchIntervalWhileBulk()


class Request:
    __slots__ = ("caller", "enqueued", "feeds", "future", "model", "rows", "splits")

    def __init__(self, feeds: dict[str, np.ndarray], rows: int, caller: str, model: LoadedModel,
                 future: asyncio.Future[Any], splits: list[int] | None = None):
        self.feeds = feeds
        self.rows = rows  # one request may carry many rows (infer_many joins many items into one)
        self.caller = caller
        self.model = model  # the version its inputs were checked against
        self.future = future
        self.splits = splits  # rows per item of an infer_many request; None for infer
        self.enqueued = time.perf_counter()


class _Lane:
    def __init__(self, priority: str, max_batch: int, max_delay: float, concurrency: int, executor: RunThreads):
        self.priority = priority
        self.bulk = priority == "bulk"
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.concurrency = concurrency
        self.executor = executor
        self.queue: collections.deque[Request] = collections.deque()
        # rows queued = rows_in - rows_out: rows_in is written by the loop alone (no lock on the per-request
        # path), rows_out under the server's lock by whoever takes a batch (the loop, or a realtime worker)
        self.rows_in = 0
        self.rows_out = 0
        self.in_flight = 0
        self.timer: asyncio.TimerHandle | None = None  # wakes the lane when its oldest request's max_delay is up
        self.running: set[asyncio.Future[None]] = set()  # one per batch in a worker thread
        self.pump_scheduled = False
        # batches that ended in a worker thread, waiting for the loop; delivery_posted: a _deliver call is on its way
        self.finished: list[tuple[list[Request], list[Outcome], int, float, float, asyncio.Future[None], bool]] = []
        self.delivery_posted = False


class ModelServer:
    """Serves one model name: holds its current version and batches requests to it."""

    def __init__(self, model: LoadedModel, settings: BatchingConfig, executor: RunThreads, bulk_executor: RunThreads,
                 stats: ModelStats, errors: Callable[[str], Any], dropped: Any, *, bulk_switch_interval: float = 0.0):
        self.current = model
        self.settings = settings
        self.stats = stats
        self.errors = errors  # kind -> prometheus counter child
        self.dropped = dropped
        self.bulk_switch_interval = bulk_switch_interval
        self.realtime = _Lane("realtime", settings.max_batch, settings.realtime_max_delay, settings.concurrency, executor)
        self.bulk = _Lane("bulk", settings.bulk_max_batch or settings.max_batch, settings.max_delay, settings.concurrency, bulk_executor)
        self.pending_by_caller: dict[str, int] = {}
        self.pending = 0
        self.running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # held by whoever takes a batch off a lane's queue (the loop, or a realtime worker that starts its next
        # batch itself), and around batches in flight and finished batches waiting for the loop; held for a few
        # list operations, never across a run. Queuing a request takes no lock (an append, at the other end)
        self._lock = threading.Lock()
        # bulk completions that came back while a realtime batch ran, delivered in the loop turn after its own
        self._deferred: list[tuple[_Lane, list[Request], list[Outcome], int, float, float, asyncio.Future[None], bool]] = []
        self._flush_scheduled = False
        stats.depth = self.depth

    @property
    def name(self) -> str:
        return self.current.name

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.running = True

    async def stop(self) -> None:
        """Stop batching; queued requests fail with ServiceStoppedError, running ones finish."""
        self.running = False
        for lane in (self.realtime, self.bulk):
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            with self._lock:
                queued = list(lane.queue)
                lane.queue.clear()
                lane.rows_out = lane.rows_in
            for request in queued:
                self._release(request)
                if not request.future.done():
                    request.future.set_exception(
                        ServiceStoppedError(f"the inference service stopped before {self.current.label} ran this request")
                    )
        running = [f for lane in (self.realtime, self.bulk) for f in lane.running]
        await asyncio.gather(*running, return_exceptions=True)

    def depth(self, priority: str) -> int:
        return len((self.realtime if priority == "realtime" else self.bulk).queue)

    def submit(self, inputs: Any, priority: str, caller: str) -> asyncio.Future[Outputs]:
        """Queue one request (any number of rows); await the future for its outputs.

        Not a coroutine: the caller's own ``await`` is the only one on the way (each coroutine
        level costs every request a frame and a resume).
        """
        lane = self._lane(priority)
        model = self.current
        try:
            feeds, rows = check_inputs(model, inputs)
        except InputError:
            self.errors("input").inc()
            raise
        return self._enqueue(lane, model, feeds, rows, caller, None)

    async def submit_many(self, items: Sequence[Any], priority: str, caller: str,
                          return_exceptions: bool = False) -> Sequence[Outputs | ModelRunError]:
        """Queue many requests as one: one join, one future; outputs come back per item, in order.

        If the joined run fails, the worker runs the items one by one, so only the items that
        make the model fail get a ModelRunError (each counted in the run errors): returned in
        place with ``return_exceptions``, else the first one is raised.
        """
        lane = self._lane(priority)
        if not items:
            return []
        model = self.current
        try:
            feeds, rows, splits = concatenate_inputs(model, items)
        except InputError:
            self.errors("input").inc()
            raise
        results: ItemOutputs | list[Outputs | ModelRunError] = await self._enqueue(lane, model, feeds, rows, caller, splits)
        # ItemOutputs: the joined run worked; a list: it failed and the items ran alone, some may have failed
        if not return_exceptions and not isinstance(results, ItemOutputs):
            for i, result in enumerate(results):
                if isinstance(result, ModelRunError):
                    failed = sum(isinstance(r, ModelRunError) for r in results)
                    raise ModelRunError(f"{result} (item {i} of {len(results)} in infer_many; {failed} failed: "
                                        f"pass return_exceptions=True to get the other items' outputs)")
        return results

    def _lane(self, priority: str) -> _Lane:
        if not self.running:
            raise ServiceStoppedError(f"{self.current.label} is not being served (the service is stopped)")
        if priority == "realtime":
            return self.realtime
        if priority == "bulk":
            return self.bulk
        raise ValueError(f"priority must be 'realtime' or 'bulk', not {priority!r}")

    def _enqueue(self, lane: _Lane, model: LoadedModel, feeds: dict[str, np.ndarray], rows: int, caller: str,
                 splits: list[int] | None) -> asyncio.Future[Any]:
        waiting = self.pending_by_caller.get(caller, 0)
        settings = self.settings
        if waiting >= settings.max_queue_per_caller or self.pending >= settings.max_queue:
            self.errors("queue_full").inc()
            self.dropped.inc()
            if waiting >= settings.max_queue_per_caller:
                raise QueueFullError(
                    f"{model.label}: caller {caller!r} already has {settings.max_queue_per_caller} requests waiting "
                    f"(its queue limit); await earlier results before sending more, or raise "
                    f"inference.per_model.{self.name}.max_queue_per_caller"
                )
            raise QueueFullError(f"{model.label}: {settings.max_queue} requests are waiting (inference.batching.max_queue); try again later")
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        # no lock: appending is atomic, and a worker that takes a batch meanwhile only pops from the left
        lane.queue.append(Request(feeds, rows, caller, model, future, splits))
        lane.rows_in += rows
        self.pending_by_caller[caller] = waiting + 1
        self.pending += 1
        self.stats.requests[lane.priority] += 1
        if not lane.pump_scheduled:
            # one dispatch per turn of the loop, after every caller that is ready this turn has queued
            # its request (a dispatch per request would run the first of 64 callers alone)
            lane.pump_scheduled = True
            self._loop.call_soon(self._scheduled_pump, lane)
        # the request counts against its caller's limit until its batch is handed back (or it is dropped)
        return future

    def _release(self, request: Request) -> None:
        self.pending -= 1
        caller = request.caller
        left = self.pending_by_caller[caller] - 1
        if left:
            self.pending_by_caller[caller] = left
        else:
            del self.pending_by_caller[caller]

    # -- dispatch (event loop) --------------------------------------------------------------

    def _pump(self, lane: _Lane) -> None:
        """Start as many batches as the lane may run now; arm its timer if a batch should fill up."""
        while self.running:
            with self._lock:
                queue = lane.queue
                if not queue or lane.in_flight >= lane.concurrency:
                    return
                if lane.bulk and (self.realtime.queue or self.realtime.in_flight):
                    return  # bulk does not start a batch while realtime work is queued or running
                if lane.max_delay > 0 and lane.rows_in - lane.rows_out < lane.max_batch:
                    # let the batch fill up, at most max_delay after its oldest request arrived
                    remaining = queue[0].enqueued + lane.max_delay - time.perf_counter()
                    if remaining > 0:
                        if lane.timer is None:
                            assert self._loop is not None
                            lane.timer = self._loop.call_later(remaining, self._timer_fired, lane)
                        return
                batch, cancelled = self._take(lane)
                if batch:
                    lane.in_flight += 1  # the slot is this batch's from here on
            for request in cancelled:
                self._release(request)
            if batch:
                self._launch(lane, batch)

    def _scheduled_pump(self, lane: _Lane) -> None:
        lane.pump_scheduled = False
        self._pump(lane)

    def _timer_fired(self, lane: _Lane) -> None:
        lane.timer = None
        self._pump(lane)

    def _take(self, lane: _Lane) -> tuple[list[Request], list[Request]]:
        """The lane's next batch and the requests whose callers gave up while they waited (holding the lock)."""
        queue = lane.queue
        batch: list[Request] = []
        cancelled: list[Request] = []
        rows = 0
        limit = lane.max_batch if self.current.batchable else 1
        while queue and (not batch or rows + queue[0].rows <= limit):
            request = queue.popleft()
            lane.rows_out += request.rows
            if request.future.done():  # its caller gave up (cancelled) while it waited
                cancelled.append(request)
                continue
            batch.append(request)
            rows += request.rows
        return batch, cancelled

    def _launch(self, lane: _Lane, batch: list[Request]) -> None:
        """Hand a batch that holds one of the lane's slots (counted in ``in_flight``) to a worker thread."""
        model = self.current
        if any(r.model is not model for r in batch):
            batch = self._recheck(batch, model)
            if not batch:
                with self._lock:
                    lane.in_flight -= 1
                return
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        lane.running.add(done)
        if lane.bulk:
            SWITCH_INTERVAL.hold(self.bulk_switch_interval)
        try:
            lane.executor.submit(self._execute, lane, batch, model, done)
        except RuntimeError as e:  # the pool is shut down: fail this batch only
            error = ServiceStoppedError(f"{model.label} could not run: {e}")
            self._finish(lane, batch, [error] * len(batch), len(batch), 0.0, 0.0, done, False)

    # -- the worker thread ------------------------------------------------------------------

    def _execute(self, lane: _Lane, batch: list[Request], model: LoadedModel, done: asyncio.Future[None]) -> None:
        """Run batches in one of the lane's slots (in a worker thread), handing each one's outcomes back in one call.

        When a realtime run ends and a full batch on the same model version is queued, the worker
        takes it and runs it itself: the slot passes on without waking another thread and without
        waiting for the loop, which only hears that a batch finished. Otherwise the slot goes back
        to the loop with the outcomes.
        """
        while True:
            began = time.perf_counter()
            outcomes: list[Outcome]
            failed = 0  # counted here, off the event loop
            try:
                results = model.run_batch([r.feeds for r in batch], [r.rows for r in batch], lane.bulk, lane.max_batch)
                outcomes = [self._outcome(model, lane, r, result) for r, result in zip(batch, results)]
                if any(isinstance(result, BaseException) for result in results):
                    for outcome in outcomes:
                        if isinstance(outcome, list):
                            failed += sum(isinstance(o, BaseException) for o in outcome)
                        elif isinstance(outcome, BaseException):
                            failed += 1
            except Exception as e:  # noqa: BLE001 - the run machinery itself failed: fail this batch, keep serving
                outcomes = [ModelRunError(f"{model.label} could not run: {type(e).__name__}: {e}")] * len(batch)
                failed = len(batch)
            ended = time.perf_counter()
            with self._lock:
                following = self._take_next(lane, model)
                lane.finished.append((batch, outcomes, failed, began, ended, done, following is not None))
                # one loop callback (one wake-up) for every batch that ends before the loop gets to the first
                post = not lane.delivery_posted
                lane.delivery_posted = True
            if post:
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._deliver, lane)
                except RuntimeError:
                    return  # the event loop is closed: nobody is waiting any more
            if following is None:
                return
            batch = following

    def _take_next(self, lane: _Lane, model: LoadedModel) -> list[Request] | None:
        """In a realtime worker whose run just ended, holding the lock: the lane's next batch on ``model``, if a
        full one is queued.

        Only a full batch: a smaller one is left to the loop, which starts it after every caller
        ready in its turn has queued (a worker taking what is there would split those callers
        into more, smaller runs). Only realtime: a bulk thread that went from batch to batch
        would hold a core without the gaps the loop's hand-off leaves for realtime runs, and
        whether a bulk batch may start (no realtime work queued or running) stays the loop's
        call; in the benchmark's bulk load the loop, not the hand-off, bounds bulk rows/s.
        Requests whose callers gave up are taken too (reading their futures is the loop's
        business): they run, and the loop drops their outcomes. A swap ends the chain: the loop
        starts the first batch on the new version (and the old version is freed with its last batch).
        """
        queue = lane.queue
        if lane.bulk or not queue or not self.running or self.current is not model or queue[0].model is not model:
            return None
        if lane.rows_in - lane.rows_out < lane.max_batch and model.batchable:
            return None  # not a full batch: the loop starts it, with every request that comes in its turn
        batch: list[Request] = []
        rows = 0
        limit = lane.max_batch if model.batchable else 1
        while queue and (not batch or rows + queue[0].rows <= limit) and queue[0].model is model:
            request = queue.popleft()
            lane.rows_out += request.rows
            batch.append(request)
            rows += request.rows
        return batch

    @staticmethod
    def _outcome(model: LoadedModel, lane: _Lane, request: Request, result: list[np.ndarray] | ModelRunError) -> Outcome:
        splits = request.splits
        names = model.output_names
        if splits is None:
            if isinstance(result, BaseException):
                return result
            return {names[0]: result[0]} if len(names) == 1 else dict(zip(names, result))
        if not isinstance(result, BaseException):
            return ItemOutputs(dict(zip(names, result)), splits)
        if len(splits) == 1:
            return [result]
        # the joined run failed: run the items one by one so only the bad ones fail
        runs: list[list[np.ndarray] | ModelRunError] = []
        start = 0
        for n in splits:
            feeds = {name: value[start : start + n] for name, value in request.feeds.items()}
            runs += model.run_batch([feeds], [n], lane.bulk, lane.max_batch)
            start += n
        worked = [run for run in runs if not isinstance(run, BaseException)]
        if len(worked) == len(runs):  # every item ran alone: one block again
            return ItemOutputs({name: np.concatenate([run[i] for run in worked], axis=0) for i, name in enumerate(names)}, splits)
        return [run if isinstance(run, BaseException) else dict(zip(names, run)) for run in runs]

    # -- back on the event loop -------------------------------------------------------------

    def _deliver(self, lane: _Lane) -> None:
        """The outcomes of every batch of the lane that ended since the last delivery, oldest first."""
        with self._lock:
            finished, lane.finished = lane.finished, []
            lane.delivery_posted = False
        for batch, outcomes, failed, began, ended, done, continued in finished:
            self._finish(lane, batch, outcomes, failed, began, ended, done, continued)

    def _finish(self, lane: _Lane, batch: list[Request], outcomes: list[Outcome], failed: int, began: float, ended: float,
                done: asyncio.Future[None], continued: bool) -> None:
        """A batch's outcomes, back on the loop (``continued``: its worker went on with the lane's next batch).

        A bulk batch that ends while a realtime batch runs is held until that batch's outcomes are
        out, then handed out in the loop's next turn: its callers' wake-ups (and the requests they
        send next) would otherwise queue in the loop ahead of the realtime caller's. The hold lasts
        one realtime run (and one turn of the loop) at most.
        """
        if lane.bulk and self.realtime.in_flight:
            self._deferred.append((lane, batch, outcomes, failed, began, ended, done, continued))
            return
        self._complete(lane, batch, outcomes, failed, began, ended, done, continued)

    def _complete(self, lane: _Lane, batch: list[Request], outcomes: list[Outcome], failed: int, began: float, ended: float,
                  done: asyncio.Future[None], continued: bool) -> None:
        try:
            stats = self.stats
            if ended > began:
                stats.run_time.observe(ended - began)
                stats.batch_size.observe(sum(r.rows for r in batch))
            now = time.perf_counter()
            stats.latency[lane.priority].observe_many([now - r.enqueued for r in batch])
            release = self._release
            for request, outcome in zip(batch, outcomes):
                release(request)
                future = request.future
                if future.done():  # the caller was cancelled
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            if failed:
                self.errors("run").inc(failed)
        finally:
            if not continued:  # else the worker still holds the slot, running the lane's next batch
                with self._lock:
                    lane.in_flight -= 1
                lane.running.discard(done)
                if lane.bulk:
                    SWITCH_INTERVAL.release()
                if not done.done():
                    done.set_result(None)
            if not lane.bulk and self._deferred and not self._flush_scheduled:
                # the bulk outcomes held meanwhile go out in the loop's next turn, after the realtime callers'
                # wake-ups queued above (handed out here, they would make this callback, and so the turn the
                # realtime callers wait for, as long as all of them)
                assert self._loop is not None
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_deferred)
            self._pump(lane)
            if not lane.bulk and not lane.in_flight and not lane.queue:
                self._pump(self.bulk)  # realtime went idle: bulk may go on

    def _flush_deferred(self) -> None:
        self._flush_scheduled = False
        deferred, self._deferred = self._deferred, []
        for held in deferred:
            self._complete(*held)

    def _recheck(self, batch: list[Request], model: LoadedModel) -> list[Request]:
        """After a swap, requests checked against the previous version are checked again."""
        kept = []
        for request in batch:
            if request.model is not model:
                try:
                    request.feeds, request.rows = check_inputs(model, request.feeds)
                    request.model = model
                except InputError as e:
                    self.errors("input").inc()
                    self._release(request)
                    if not request.future.done():
                        request.future.set_exception(InputError(f"{e} (the model was swapped while this request waited)"))
                    continue
            kept.append(request)
        return kept
