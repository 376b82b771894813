"""Dynamic batching for one model: two latency classes, per-caller limits, runs in a thread pool.

Each served model has two lanes, ``realtime`` and ``bulk``, each with its own queue and its own
worker task. A lane's worker takes what is queued (waiting up to its ``max_delay`` for a batch to
fill up to ``max_batch`` rows), concatenates the requests along the first axis, runs the model
in the thread pool and splits the outputs back per request.

Realtime is never queued behind bulk: the two lanes run independently (a realtime batch can
start while a bulk batch runs), and the bulk lane does not start a new batch while realtime
work is queued or running. Bulk batches are bounded (``bulk_max_batch``), which bounds the CPU
a realtime request has to share.

The model a batch runs on is read when the batch starts: after a hot swap, queued requests go to
the new version while batches already running finish on the old one.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from typing import Any, Literal, Sequence

import numpy as np

from edgeplane.inference.config import BatchingConfig
from edgeplane.inference.errors import InputError, QueueFullError, ServiceStoppedError
from edgeplane.inference.runtime import LoadedModel
from edgeplane.inference.stats import ModelStats

__all__ = ["ModelServer", "Priority", "check_inputs", "concatenate_inputs", "split_outputs"]

Priority = Literal["realtime", "bulk"]


def check_inputs(model: LoadedModel, inputs: Any) -> tuple[dict[str, np.ndarray], int]:
    """Validate a request against the model's signature; returns the feeds and the row count."""
    specs = model.inputs
    # fast path for the common case: one input, given as an array of the right dtype and shape
    if len(specs) == 1 and type(inputs) is np.ndarray and model.batchable:
        spec = specs[0]
        shape = inputs.shape
        if inputs.dtype == spec.dtype and len(shape) == len(spec.shape) and shape[1:] == spec.shape[1:]:
            return {spec.name: inputs}, shape[0]
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
    if len(model.inputs) == 1 and len(items) > 1 and all(type(item) is np.ndarray and item.ndim >= 1 for item in items):
        # the common case (many windows for a one-input model): join first, check the join once
        try:
            joined = np.concatenate(items, axis=0)
        except ValueError:
            joined = None  # shapes disagree: the item-by-item check below names the bad one
        if joined is not None and all(item.dtype == joined.dtype for item in items):
            feeds, rows = check_inputs(model, joined)
            return feeds, rows, [len(item) for item in items]
    checked = [check_inputs(model, item) for item in items]
    splits = [rows for _, rows in checked]
    if len(checked) == 1:
        return checked[0][0], splits[0], splits
    feeds = {spec.name: np.concatenate([f[spec.name] for f, _ in checked], axis=0) for spec in model.inputs}
    return feeds, sum(splits), splits


def split_outputs(outputs: dict[str, np.ndarray], splits: list[int]) -> list[dict[str, np.ndarray]]:
    """The outputs of a joined request cut back per item (views, no copies)."""
    bounds = np.cumsum(splits)[:-1]
    per_name = {name: np.split(value, bounds) for name, value in outputs.items()}
    return [{name: parts[i] for name, parts in per_name.items()} for i in range(len(splits))]


class Request:
    __slots__ = ("caller", "enqueued", "feeds", "future", "model", "rows")

    def __init__(self, feeds: dict[str, np.ndarray], rows: int, caller: str, model: LoadedModel, future: asyncio.Future[Any]):
        self.feeds = feeds
        self.rows = rows  # one request may carry many rows (infer_many joins many into one)
        self.caller = caller
        self.model = model  # the version its inputs were checked against
        self.future = future
        self.enqueued = time.perf_counter()


class _Lane:
    def __init__(self, priority: str, max_batch: int, max_delay: float, concurrency: int):
        self.priority = priority
        self.bulk = priority == "bulk"
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.concurrency = concurrency
        self.queue: collections.deque[Request] = collections.deque()
        self.rows = 0
        self.in_flight = 0
        self.wakeup = asyncio.Event()  # a request arrived (or a batch filled up)
        self.slot = asyncio.Event()  # a running batch finished
        self.task: asyncio.Task[None] | None = None
        self.runs: set[asyncio.Task[None]] = set()


class ModelServer:
    """Serves one model name: holds its current version and batches requests to it."""

    def __init__(self, model: LoadedModel, settings: BatchingConfig, executor: Executor, bulk_executor: Executor,
                 stats: ModelStats, errors: Any, dropped: Any):
        self.current = model
        self.settings = settings
        self.executor = executor
        self.bulk_executor = bulk_executor
        self.stats = stats
        self.errors = errors  # kind -> prometheus counter child
        self.dropped = dropped
        self.realtime = _Lane("realtime", settings.max_batch, settings.realtime_max_delay, settings.concurrency)
        self.bulk = _Lane("bulk", settings.bulk_max_batch or settings.max_batch, settings.max_delay, settings.concurrency)
        self.pending_by_caller: dict[str, int] = {}
        self.pending = 0
        self.realtime_idle = asyncio.Event()
        self.realtime_idle.set()
        self.running = False
        stats.depth = self.depth

    @property
    def name(self) -> str:
        return self.current.name

    def start(self) -> None:
        self.running = True
        loop = asyncio.get_running_loop()
        for lane in (self.realtime, self.bulk):
            lane.task = loop.create_task(self._work(lane), name=f"inference:{self.name}:{lane.priority}")

    async def stop(self) -> None:
        """Stop batching; queued requests fail with ServiceStoppedError, running ones finish."""
        self.running = False
        tasks = [lane.task for lane in (self.realtime, self.bulk) if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in (self.realtime, self.bulk):
            while lane.queue:
                request = lane.queue.popleft()
                if not request.future.done():
                    request.future.set_exception(
                        ServiceStoppedError(f"the inference service stopped before {self.current.label} ran this request")
                    )
            lane.rows = 0
        runs = [t for lane in (self.realtime, self.bulk) for t in lane.runs]
        await asyncio.gather(*runs, return_exceptions=True)

    def depth(self, priority: str) -> int:
        return len((self.realtime if priority == "realtime" else self.bulk).queue)

    async def submit(self, inputs: Any, priority: str, caller: str) -> dict[str, np.ndarray]:
        """Queue one request (any number of rows) and wait for its outputs."""
        lane = self._lane(priority)
        model = self.current
        try:
            feeds, rows = check_inputs(model, inputs)
        except InputError:
            self.errors("input").inc()
            raise
        return await self._enqueue(lane, model, feeds, rows, caller)

    async def submit_many(self, items: Sequence[Any], priority: str, caller: str) -> list[dict[str, np.ndarray]]:
        """Queue many requests as one: one check each, one join, one future, outputs cut back per item."""
        lane = self._lane(priority)
        if not items:
            return []
        model = self.current
        try:
            feeds, rows, splits = concatenate_inputs(model, items)
        except InputError:
            self.errors("input").inc()
            raise
        outputs = await self._enqueue(lane, model, feeds, rows, caller)
        return split_outputs(outputs, splits)

    def _lane(self, priority: str) -> _Lane:
        if not self.running:
            raise ServiceStoppedError(f"{self.current.label} is not being served (the service is stopped)")
        if priority == "realtime":
            return self.realtime
        if priority == "bulk":
            return self.bulk
        raise ValueError(f"priority must be 'realtime' or 'bulk', not {priority!r}")

    async def _enqueue(self, lane: _Lane, model: LoadedModel, feeds: dict[str, np.ndarray], rows: int, caller: str) -> dict[str, np.ndarray]:
        priority = lane.priority
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
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        request = Request(feeds, rows, caller, model, future)
        lane.queue.append(request)
        lane.rows += rows
        self.pending_by_caller[caller] = waiting + 1
        self.pending += 1
        self.stats.requests[priority] += 1
        if not lane.bulk:
            self.realtime_idle.clear()
        if not lane.wakeup.is_set() and (lane.max_delay <= 0 or lane.rows >= lane.max_batch or len(lane.queue) == 1):
            lane.wakeup.set()
        try:
            return await future
        finally:
            self.pending -= 1
            left = self.pending_by_caller[caller] - 1
            if left:
                self.pending_by_caller[caller] = left
            else:
                del self.pending_by_caller[caller]

    def _take(self, lane: _Lane) -> list[Request]:
        queue = lane.queue
        batch: list[Request] = []
        rows = 0
        limit = lane.max_batch if self.current.batchable else 1
        while queue and (not batch or rows + queue[0].rows <= limit):
            request = queue.popleft()
            lane.rows -= request.rows
            if request.future.done():  # its caller gave up (cancelled) while it waited
                continue
            batch.append(request)
            rows += request.rows
        return batch

    async def _work(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not lane.queue:
                lane.wakeup.clear()
                if not lane.bulk and not lane.in_flight:
                    self.realtime_idle.set()
                await lane.wakeup.wait()
                continue
            if lane.in_flight >= lane.concurrency:
                lane.slot.clear()
                await lane.slot.wait()
                continue
            if lane.bulk and not self.realtime_idle.is_set():
                # bulk does not start a batch while realtime work is queued or running
                await self.realtime_idle.wait()
                continue
            if lane.max_delay > 0 and lane.rows < lane.max_batch:
                # let the batch fill up, at most max_delay after its oldest request arrived
                remaining = lane.queue[0].enqueued + lane.max_delay - time.perf_counter()
                if remaining > 0:
                    lane.wakeup.clear()
                    try:
                        await asyncio.wait_for(lane.wakeup.wait(), remaining)
                    except TimeoutError:
                        pass
                    continue
            batch = self._take(lane)
            if batch:
                lane.in_flight += 1
                task = loop.create_task(self._run(lane, batch, loop))
                lane.runs.add(task)
                task.add_done_callback(lane.runs.discard)

    async def _run(self, lane: _Lane, batch: list[Request], loop: asyncio.AbstractEventLoop) -> None:
        try:
            model = self.current
            if any(r.model is not model for r in batch):
                batch = self._recheck(batch, model)
                if not batch:
                    return
            rows = [r.rows for r in batch]
            began = time.perf_counter()
            try:
                executor = self.bulk_executor if lane.bulk else self.executor
                results = await loop.run_in_executor(executor, model.run_batch, [r.feeds for r in batch], rows, lane.bulk, lane.max_batch)
            except Exception as e:  # noqa: BLE001 - the pool itself failed (shut down): fail this batch only
                results = [ServiceStoppedError(f"{model.label} could not run: {type(e).__name__}: {e}")] * len(batch)
            now = time.perf_counter()
            stats = self.stats
            stats.run_time.observe(now - began)
            stats.batch_size.observe(sum(rows))
            stats.latency[lane.priority].observe_many(now - np.fromiter((r.enqueued for r in batch), np.float64, len(batch)))
            names = model.output_names
            failed = 0
            for request, result in zip(batch, results):
                if request.future.done():  # the caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    failed += 1
                    request.future.set_exception(result)
                else:
                    request.future.set_result(dict(zip(names, result)))
            if failed:
                self.errors("run").inc(failed)
            # drop references now: a swapped-out version is freed as soon as its last batch ends
            del model, results, batch
        finally:
            lane.in_flight -= 1
            lane.slot.set()
            if not lane.bulk and not lane.in_flight and not lane.queue:
                self.realtime_idle.set()

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
                    if not request.future.done():
                        request.future.set_exception(InputError(f"{e} (the model was swapped while this request waited)"))
                    continue
            kept.append(request)
        return kept
