"""The shared inference service: one per host, serving every solution's models.

::

    service = InferenceService(config, metrics, base_dir=site.base_dir, model_dirs=plugin_model_dirs)
    await service.start()
    outputs = await service.infer("rul", {"x": window}, priority="bulk", caller="pdm")
    await service.swap("rul", "4")          # hot swap: load + warm beside, switch, roll back on failure
    await service.stop()

Solutions should use ``service.client(name)``, which fixes the caller (for the per-caller queue
limit) so one flooding solution cannot starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, overload

import numpy as np

from edgeplane.errors import LifecycleError
from edgeplane.inference.batching import ItemOutputs, ModelServer, Priority
from edgeplane.inference.config import InferenceConfig
from edgeplane.inference.errors import InferenceError, ModelRunError, ServiceStoppedError, SwapError
from edgeplane.inference.manifest import ModelManifest
from edgeplane.inference.registry import ModelRegistry
from edgeplane.inference.runtime import LoadedModel, ProviderReport, choose_providers, load_model, usable_cpus
from edgeplane.inference.stats import ModelStats, StatsCollector
from edgeplane.inference.trust import TrustPolicy
from edgeplane.inference.workers import RunThreads

__all__ = ["InferenceClient", "InferenceService"]

log = logging.getLogger("edgeplane.inference")


def _lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's niceness (Linux: per thread); ignored where unsupported."""
    if nice > 0 and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class InferenceClient:
    """The service as one caller sees it: ``await client.infer(model, inputs)``."""

    def __init__(self, service: InferenceService, caller: str):
        self.service = service
        self.caller = caller

    async def infer(self, model: str, inputs: dict[str, np.ndarray] | np.ndarray, *, priority: Priority = "realtime") -> dict[str, np.ndarray]:
        """As :meth:`InferenceService.infer`, for this caller."""
        service = self.service
        # straight to the model's server: one coroutine level less per request than going through service.infer
        server = service._servers.get(model) or await service._server(model)
        return await server.submit(inputs, priority, self.caller)

    @overload
    async def infer_many(self, model: str, requests: Sequence[dict[str, np.ndarray] | np.ndarray], *,
                         priority: Priority = ..., return_exceptions: Literal[False] = ...) -> ItemOutputs: ...

    @overload
    async def infer_many(self, model: str, requests: Sequence[dict[str, np.ndarray] | np.ndarray], *,
                         priority: Priority = ..., return_exceptions: bool) -> Sequence[dict[str, np.ndarray] | ModelRunError]: ...

    async def infer_many(self, model: str, requests: Sequence[dict[str, np.ndarray] | np.ndarray], *,
                         priority: Priority = "bulk", return_exceptions: bool = False) -> Any:
        return await self.service.infer_many(model, requests, priority=priority, caller=self.caller, return_exceptions=return_exceptions)

    async def manifest(self, model: str) -> ModelManifest:
        """The manifest of the version of ``model`` served now (loaded if it is not yet): its inputs,
        outputs and provenance, e.g. the feature windows it was trained with. Ask again after a
        swap (a fleet rollout changes the version in use); when loaded, this costs a lock."""
        return (await self.service._server(model)).current.manifest


class InferenceService:
    """ONNX Runtime models served to many callers with dynamic batching, on GPU or CPU.

    Lifecycle: ``created -> running -> stopped``; a stopped service cannot be started again.
    """

    def __init__(self, config: InferenceConfig, metrics: Any, *, base_dir: Path, model_dirs: Iterable[Path] = ()):
        self.config = config
        self.metrics = metrics
        self.base_dir = Path(base_dir)
        self.registry = ModelRegistry(config.models_dir(self.base_dir), model_dirs)
        cpus = self.cpus = usable_cpus()
        self.bulk_threads = max(1, cpus // 2) if config.bulk_threads == "auto" else config.bulk_threads
        # threads of one realtime run; with a separate bulk session (decided at start, by provider)
        # auto leaves the cores bulk runs take to it, so neither class waits for the other's threads
        self.intra_op_threads = cpus if config.intra_op_threads == "auto" else config.intra_op_threads
        self.separate_bulk = False
        # two lanes per model may run at once; a few models share the pool
        self.workers = max(2, min(8, 2 * cpus)) if config.workers == "auto" else config.workers
        self.report: ProviderReport | None = None
        self.trust: TrustPolicy | None = None
        self.state = "created"
        self._servers: dict[str, ModelServer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._executor: ThreadPoolExecutor | None = None  # loading, verifying, warming up
        self._realtime_executor: RunThreads | None = None
        self._bulk_executor: RunThreads | None = None
        # sessions of versions swapped out, watched until they are really freed (for tests and /metrics)
        self._retired: list[weakref.ref[Any]] = []
        m = metrics
        # latency, batch size, requests and queue depth: counted per batch, read at scrape time
        self._stats: dict[str, ModelStats] = {}
        self._collector = StatsCollector(lambda: list(self._stats.values()))
        m.registry.register(self._collector)
        self._m_errors = m.counter("edgeplane_inference_errors", "Failed requests and loads, by model and kind", ["model", "kind"])
        self._m_loaded = m.gauge("edgeplane_inference_model_loaded", "1 for the version being served", ["model", "version", "provider"])
        self._m_provider = m.gauge("edgeplane_inference_provider", "1 for the execution provider inference runs on", ["provider"])
        self._m_swaps = m.counter("edgeplane_inference_swaps", "Hot swaps by model and result", ["model", "result"])

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Choose providers (by real attempt), load the trust policy and the preloaded models."""
        if self.state != "created":
            raise LifecycleError(f"cannot start an inference service that is {self.state}: create a new one")
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="inference-load")
        loop = asyncio.get_running_loop()
        self.trust = await loop.run_in_executor(self._executor, self._load_trust)
        self.report = await loop.run_in_executor(self._executor, choose_providers, tuple(self.config.providers))
        self._m_provider.labels(provider=self.report.primary).set(1)
        self.separate_bulk = self.config.bulk_session == "separate" or (
            self.config.bulk_session == "auto" and self.report.primary == "CPUExecutionProvider"
        )
        if self.config.intra_op_threads == "auto" and self.separate_bulk:
            self.intra_op_threads = max(1, self.cpus - self.bulk_threads)
        # realtime runs have threads of their own: neither a model load nor a bulk batch can hold them up
        self._realtime_executor = RunThreads(self.workers, "inference-realtime")
        # bulk batches run on their own, lower-priority threads: the OS gives realtime runs the cores first. With a
        # separate bulk session one bulk run already uses the whole bulk budget (bulk_threads cores), so bulk runs of
        # every model take turns on one thread: two at once would take the cores left to realtime
        self._bulk_executor = RunThreads(1 if self.separate_bulk else self.workers, "inference-bulk",
                                         initializer=functools.partial(_lower_thread_priority, self.config.bulk_nice))
        level = logging.WARNING if self.report.gpu_present and "cuda" in self.report.rejected else logging.INFO
        log.log(level, "%s, %d intra-op threads per realtime run, %s, %d workers", self.report.summary(), self.intra_op_threads,
                f"{self.bulk_threads} per bulk run (own session)" if self.separate_bulk else "bulk on the same session", self.workers)
        self.state = "running"
        try:
            names = self.registry.names() if self.config.preload == "all" else list(self.config.preload)
            for name in names:
                await self.load(name)
        except BaseException:
            await self.stop()
            raise

    def _load_trust(self) -> TrustPolicy:
        return TrustPolicy.from_files(self.config.key_files(self.base_dir), self.config.trust.required)

    async def stop(self) -> None:
        """Stop serving; requests still queued fail with ServiceStoppedError. Idempotent."""
        if self.state == "stopped":
            return
        self.state = "stopped"
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(s.stop() for s in servers))
        for server in servers:
            self._m_loaded.labels(model=server.name, version=server.current.version, provider=server.current.providers[0]).set(0)
        executors = [e for e in (self._executor, self._realtime_executor, self._bulk_executor) if e is not None]
        self._executor = self._realtime_executor = self._bulk_executor = None
        for executor in executors:
            # runs already in a thread finish there; do not block the loop waiting for them
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    async def __aenter__(self) -> InferenceService:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- what runs -----------------------------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers really in use, best first (empty before start)."""
        return list(self.report.providers) if self.report else []

    def loaded(self) -> dict[str, LoadedModel]:
        """The version being served, by model name."""
        return {name: server.current for name, server in self._servers.items()}

    def client(self, caller: str) -> InferenceClient:
        return InferenceClient(self, caller)

    # -- requests ------------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | np.ndarray,
        *,
        priority: Priority = "realtime",
        caller: str = "anonymous",
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (arrays with the batch on axis 0); returns outputs by name.

        Loads the model on first use. Raises InputError (wrong names/shapes/dtypes),
        QueueFullError (this caller's queue limit), ModelRunError (the model failed on this
        request), or the registry's errors if the model cannot be loaded.
        """
        server = self._servers.get(model) or await self._server(model)
        return await server.submit(inputs, priority, caller)

    @overload
    async def infer_many(self, model: str, requests: Sequence[dict[str, np.ndarray] | np.ndarray], *, priority: Priority = ...,
                         caller: str = ..., return_exceptions: Literal[False] = ...) -> ItemOutputs: ...

    @overload
    async def infer_many(self, model: str, requests: Sequence[dict[str, np.ndarray] | np.ndarray], *, priority: Priority = ...,
                         caller: str = ..., return_exceptions: bool) -> Sequence[dict[str, np.ndarray] | ModelRunError]: ...

    async def infer_many(
        self,
        model: str,
        requests: Sequence[dict[str, np.ndarray] | np.ndarray],
        *,
        priority: Priority = "bulk",
        caller: str = "anonymous",
        return_exceptions: bool = False,
    ) -> Any:
        """Run ``model`` on many requests at once; returns each request's outputs by name, in order.

        The requests are joined into one queued request (one future, one slot of the caller's
        queue limit, one check of the joined arrays for a one-input model), so a caller with
        many windows to score pays the service's per-request cost once. What comes back is an
        :class:`ItemOutputs` sequence: ``results[i]`` cuts request ``i``'s rows out of the joined
        run when asked (views, no copies), and ``results.outputs`` is the joined run itself, one
        array per output with every request's rows in order, for a caller that can take a block
        (no per-request dicts at all). A joined request larger than the class's ``max_batch``
        runs in slices of ``max_batch`` rows. One malformed request refuses the whole call
        (InputError names it). If the model fails on the joined run, the requests are run one
        by one: each that fails is counted in the run errors and, with ``return_exceptions``,
        comes back as a ModelRunError in its place in a plain list (otherwise the first is
        raised, naming its index).
        """
        server = self._servers.get(model) or await self._server(model)
        return await server.submit_many(requests, priority, caller, return_exceptions)

    async def _server(self, model: str) -> ModelServer:
        if self.state != "running":
            raise ServiceStoppedError(f"the inference service is {self.state}; cannot run model {model!r}")
        await self.load(model)
        return self._servers[model]

    # -- loading and swapping ------------------------------------------------------------------

    def _pinned(self, name: str) -> str | None:
        settings = self.config.per_model.get(name)
        return settings.version if settings else None

    async def _prepare(self, name: str, version: str | None) -> LoadedModel:
        """Verify (sha256, signature) and load a version in a worker thread, warmed up."""
        assert self._executor is not None and self.trust is not None and self.report is not None
        loop = asyncio.get_running_loop()
        trust, report, threads = self.trust, self.report, self.intra_op_threads
        warm = self.config.batching_for(name).max_batch if self.config.warmup else None
        registry = self.registry
        bulk_threads = self.bulk_threads if self.separate_bulk else None
        spinning = self.config.spin_wait
        bulk_executor = self._bulk_executor

        def in_bulk_thread(fn: Callable[[], Any]) -> Any:
            assert bulk_executor is not None
            return bulk_executor.call(fn)

        def work() -> LoadedModel:
            verified = registry.verify(name, version, trust)
            return load_model(verified.manifest, verified.model_bytes, verified.trust, report.providers, threads, warm, bulk_threads,
                              spinning=spinning, in_bulk_thread=in_bulk_thread)

        began = time.perf_counter()
        model = await loop.run_in_executor(self._executor, work)
        log.info("loaded model %r version %r (%s, %s, %.0f ms)", name, model.version, model.providers[0], model.trust,
                 1000 * (time.perf_counter() - began))
        return model

    def _make_server(self, name: str, model: LoadedModel) -> ModelServer:
        errors = self._m_errors
        stats = self._stats.setdefault(name, ModelStats(name))
        assert self._realtime_executor is not None and self._bulk_executor is not None
        return ModelServer(
            model,
            self.config.batching_for(name),
            self._realtime_executor,
            self._bulk_executor,
            stats,
            errors=lambda kind: errors.labels(model=name, kind=kind),
            dropped=self.metrics.dropped.labels(part="inference", reason="queue_full"),
            bulk_switch_interval=self.config.bulk_switch_interval,
        )

    async def load(self, name: str, version: str | None = None) -> LoadedModel:
        """Serve ``name`` (the pinned or newest version, or ``version``); swaps if another version is served."""
        if self.state != "running":
            raise ServiceStoppedError(f"the inference service is {self.state}; cannot load model {name!r}")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            server = self._servers.get(name)
            if server is not None:
                if version is None or server.current.version == version:
                    return server.current
            else:
                try:
                    model = await self._prepare(name, version or self._pinned(name))
                except InferenceError:
                    self._m_errors.labels(model=name, kind="load").inc()
                    raise
                if self.state != "running":
                    raise ServiceStoppedError(f"the inference service stopped while model {name!r} was loading")
                server = self._make_server(name, model)
                server.start()
                self._servers[name] = server
                self._m_loaded.labels(model=name, version=model.version, provider=model.providers[0]).set(1)
                return model
        return await self.swap(name, version)

    async def swap(self, name: str, version: str) -> LoadedModel:
        """Hot swap ``name`` to ``version``: load and warm it beside the served one, then switch.

        Requests already running finish on the old version; queued ones run on the new one. If
        the new version cannot be verified, loaded or warmed up, nothing changes and SwapError
        says why. The old version's memory is released when its last running batch ends.
        """
        if self.state != "running":
            raise ServiceStoppedError(f"the inference service is {self.state}; cannot swap model {name!r}")
        server = self._servers.get(name)
        if server is None:
            return await self.load(name, version)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            old = server.current
            if old.version == version:
                return old
            failure: str | None = None
            try:
                new = await self._prepare(name, version)
            except (InferenceError, OSError) as e:
                # keep only the text: the exception's traceback would keep the failed session alive
                failure = f"{type(e).__name__}: {e}"
            if failure is not None:
                self._m_swaps.labels(model=name, result="rolled_back").inc()
                self._m_errors.labels(model=name, kind="swap").inc()
                log.error("hot swap of model %r to version %r failed, version %r keeps serving: %s", name, version, old.version, failure)
                raise SwapError(f"hot swap of model {name!r} to version {version!r} failed and was rolled back "
                                f"(version {old.version!r} keeps serving): {failure}")
            if server is not self._servers.get(name):
                raise ServiceStoppedError(f"model {name!r} was unloaded during the swap")
            server.current = new  # atomic for the event loop: the next batch runs on the new version
            self._m_loaded.labels(model=name, version=old.version, provider=old.providers[0]).set(0)
            self._m_loaded.labels(model=name, version=new.version, provider=new.providers[0]).set(1)
            self._m_swaps.labels(model=name, result="ok").inc()
            self._retired += [weakref.ref(old.session), weakref.ref(old.bulk_session)]
            self._retired = [ref for ref in self._retired if ref() is not None]
            log.info("model %r swapped from version %r to %r", name, old.version, version)
            del old
            return new

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; its queued requests fail with ServiceStoppedError."""
        server = self._servers.pop(name, None)
        if server is None:
            return
        await server.stop()
        self._m_loaded.labels(model=name, version=server.current.version, provider=server.current.providers[0]).set(0)

    def retired_sessions_alive(self) -> int:
        """Sessions of swapped-out versions not yet freed (they wait for their running batches)."""
        return sum(1 for ref in self._retired if ref() is not None)
