"""The host: one process that runs a site.

It opens the local store, starts the shared services (inference, sync) and the site's
simulators, then connectors and solutions, each as a supervised part (restart with exponential
backoff up to a cap, health per part), serves metrics and health over HTTP, applies a changed
site file without touching unchanged parts, and stops everything in reverse order.

Lifecycle: ``created -> starting -> running -> stopping -> stopped``. A stopped host cannot be
started again: make a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeplane.bus import Batch, Bus, Event, Overflow, Subscription
from edgeplane.clock import Clock, SimulatedClock, WallClock
from edgeplane.commands import CommandGuard, CommandResult
from edgeplane.components import (
    AnyConnector,
    AnySolution,
    Connector,
    Context,
    Health,
    HealthState,
    PartKey,
    PartKind,
    RateLimitedLog,
    Solution,
)
from edgeplane.config import DeviceConfig, SimulatorConfig, Site, SolutionConfig
from edgeplane.errors import LifecycleError
from edgeplane.metrics import Metrics
from edgeplane.plugins import Plugins
from edgeplane.store import LocalStore

if TYPE_CHECKING:
    from aiohttp import web

    from edgeplane.companions import CompanionProcess
    from edgeplane.inference import InferenceService
    from edgeplane.sync import SyncService

log = logging.getLogger(__name__)

# what a part runs (constrained, not bound: each is one of the types Part.obj holds)
PartT = TypeVar("PartT", "AnyConnector", "AnySolution", "CompanionProcess")
PartConfig = DeviceConfig | SolutionConfig | SimulatorConfig


def _named(message: Batch | Event) -> str:
    """What a log line calls a message: its topic (a multi-point batch has none of its own)."""
    if isinstance(message, Batch) and message.table is not None and len(message.table) > 1:
        return f"a batch of {len(message)} readings of {len(message.table)} points ({message.table.topics[0]}, ...)"
    return message.topic


class HostState(str, enum.Enum):  # noqa: UP042 - StrEnum changes str() of a member, which callers may print
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class Part:
    """One supervised connector or solution."""

    key: PartKey
    obj: AnyConnector | AnySolution | CompanionProcess | None  # None: it could not be created
    config: PartConfig
    health: Health
    task: asyncio.Task[None] | None = None
    feed: asyncio.Task[None] | None = None
    subscription: Subscription | None = None
    up_once: asyncio.Event = field(default_factory=asyncio.Event)  # started successfully at least once
    tried_once: asyncio.Event = field(default_factory=asyncio.Event)  # first start attempt is over


class Host:
    """Runs one site. ``async with Host(site, plugins) as host:`` starts and stops it."""

    def __init__(self, site: Site, plugins: Plugins, *, clock: Clock | None = None, http_port: int | None = -1,
                 start_timeout: float = 10.0, local_site: dict[str, Any] | None = None):
        self.site = site
        # the site document as the local file has it, before any cloud overlay: what desired
        # config from the cloud is merged onto
        self.local_site = local_site if local_site is not None else site.raw
        self.plugins = plugins
        self.registry = plugins.registry
        # every secret any version of the site resolved: health, reports and logs blank them out
        self.redactor = site.redactor
        if clock is None:
            clock = SimulatedClock(site.core.clock.start or time.time()) if site.core.clock.mode == "simulated" else WallClock()
        self.clock = clock
        self.bus = Bus()
        self.metrics = Metrics()
        self.metrics.watch_host(self)
        self.store = LocalStore(site.store_dir())
        self.commands = CommandGuard(
            # a device that could not be created is listed (without a connector): the guard names it
            connectors=lambda: {k.name: p.obj if isinstance(p.obj, Connector) else None
                                for k, p in self.parts.items() if k.kind == "device"},
            site_limits=lambda: self.site.limits,
            clock=self.clock,
            metrics=self.metrics,
            store=self.store,
        )
        # -1: as the site file says; None: off; a number: that port (0 picks a free one)
        self._http_port = site.core.http.port if http_port == -1 else http_port
        self._start_timeout = start_timeout
        self.http_address: tuple[str, int] | None = None
        self._http_runner: web.AppRunner | None = None
        self.inference: InferenceService | None = None  # when the site has an inference section
        self.sync: SyncService | None = None  # when the site has a sync section
        self.parts: dict[PartKey, Part] = {}
        self.state = HostState.CREATED
        self._stopped = asyncio.Event()
        self.started_at: float | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state is not HostState.CREATED:
            raise LifecycleError(f"cannot start a host that is {self.state.value}: create a new Host")
        self.state = HostState.STARTING
        self.started_at = time.monotonic()
        log.info("starting site %r with %d devices and %d solutions", self.site.id, len(self.site.devices), len(self.site.solutions))
        try:
            await self.store.open()
            await self._start_inference()
            await self._start_sync()
            # serving health first: importing the HTTP stack later would stall the loop just as
            # the devices begin to work (a late first decision at an intersection)
            if self._http_port is not None:
                await self._start_http()
            # simulators first: the devices the connectors talk to must be up before them
            await self._launch([p for p in (self._make_simulator(n, c) for n, c in self.site.core.simulators.items()) if p])
            # solutions subscribe before any connector publishes, so no early reading is missed
            solutions = [self._make_solution(n, c) for n, c in self.site.solutions.items() if c.enabled]
            connectors = [self._make_connector(n, c) for n, c in self.site.devices.items() if c.enabled]
            await self._launch([p for p in connectors if p])
            await self._launch([p for p in solutions if p])
        except BaseException:
            await self.stop()
            raise
        self.state = HostState.RUNNING
        self.plugins.host_started(self)
        log.info("site %r running (%s)", self.site.id, ", ".join(f"{k}={v['state']}" for k, v in self.health().items()) or "no parts")

    async def stop(self) -> None:
        """Stop in reverse order: solutions, connectors, sync (flushing what it can), inference,
        simulators, the store. Idempotent."""
        if self.state in (HostState.STOPPING, HostState.STOPPED):
            await self._stopped.wait()
            return
        was_running = self.state is HostState.RUNNING
        self.state = HostState.STOPPING
        if was_running:
            self.plugins.host_stopping(self)
        keys = list(self.parts)
        solutions = [k for k in keys if k.kind == "solution"]
        connectors = [k for k in keys if k.kind == "device"]
        simulators = [k for k in keys if k.kind == "simulator"]
        for group in (reversed(solutions), reversed(connectors)):
            await asyncio.gather(*(self._stop_part(k) for k in group))
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self.sync is not None:
            # after the connectors: what they published last still goes up. Bounded whatever the
            # link does: the sync layer's own steps are bounded, this is the backstop
            await self._bounded(self.sync.stop(), 4 * self.sync.flush_timeout + 5, "the sync layer")
        if self.inference is not None:
            await self._bounded(self.inference.stop(), self.site.core.supervision.stop_timeout, "the inference service")
        # simulators last: one of them may be the broker the sync layer was flushing to
        await asyncio.gather(*(self._stop_part(k) for k in reversed(simulators)))
        await self.store.close()
        self.state = HostState.STOPPED
        self._stopped.set()
        log.info("site %r stopped", self.site.id)

    @staticmethod
    async def _bounded(awaitable: Awaitable[None], timeout: float, what: str) -> None:
        """Await a stop step for at most ``timeout`` s; past that it is cancelled and abandoned
        (never awaited again: a step that swallows its cancellation must not hang the stop)."""
        task = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            log.warning("%s did not stop within %.0f s; abandoning it", what, timeout)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("%s did not stop cleanly: %s: %s", what, type(task.exception()).__name__, task.exception())

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_until_stopped(self, *, reload_site: Callable[[], Site] | None = None) -> None:
        """Start, then run until SIGTERM/SIGINT (graceful stop); SIGHUP reloads the site file.

        A second SIGTERM/SIGINT while stopping (the impatient second Ctrl-C) kills every child
        process group the host started and exits at once with 128 + the signal number.
        """
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        installed = []

        def on_signal(signum: int) -> None:
            if not stop_requested.is_set():
                log.info("%s received: stopping (send it again to exit at once)", signal.Signals(signum).name)
                stop_requested.set()
            else:
                self._exit_now(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
        if reload_site is not None:
            def on_hup() -> None:
                loop.create_task(self._reload_from(reload_site))
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, on_hup)
                installed.append(signal.SIGHUP)
        try:
            await self.start()
            # what was made while starting (plugins, models, tables) lives as long as the process: out of the
            # collector's sight, a full collection costs 2-3 ms instead of 33-56 ms (a late decision at an
            # intersection; benchmarks/traffic.py --gc-freeze). Only here, in the one host of a process.
            gc.freeze()
            await stop_requested.wait()
            log.info("stop requested; stopping in reverse order")
        finally:
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _exit_now(self, signum: int) -> None:
        """Leave without the graceful stop: children first (they would outlive us), then exit.
        The outbox needs nothing: every record it acknowledged is committed already."""
        from edgeplane.companions import kill_all

        killed = kill_all()
        log.warning("%s received again: killed %d child process group(s); exiting now without a graceful stop",
                    signal.Signals(signum).name, killed)
        logging.shutdown()
        os._exit(128 + signum)

    async def _reload_from(self, reload_site: Callable[[], Site]) -> None:
        from edgeplane.errors import SiteError

        try:
            site = reload_site()
        except SiteError as e:
            log.error("site file changed but is invalid; still running the previous version\n%s", e)
            self.metrics.errors.labels(part="host", kind="reload_invalid").inc()
            return
        await self.reload(site)

    async def _start_inference(self) -> None:
        # onnxruntime costs ~0.6 s and tens of MB to import: only a site that asks for it pays
        config = self.site.core.inference
        if config is None:
            return
        from edgeplane.inference import InferenceService

        self.inference = InferenceService(config, self.metrics, base_dir=self.site.base_dir, model_dirs=self.registry.models)
        await self.inference.start()

    async def _start_sync(self) -> None:
        config = self.site.core.sync
        if config is None:
            return
        from edgeplane.sync import SyncService

        self.sync = SyncService(
            config, site_id=self.site.id, bus=self.bus, clock=self.clock, metrics=self.metrics,
            store_dir=self.site.store_dir() / "sync", base_site=self.local_site, base_dir=self.site.base_dir,
            transports=self.registry.transports, devices=lambda: self.site.devices, apply_config=self._apply_desired_config,
            apply_model=self._apply_model, execute_command=self._execute_cloud_command,
        )
        await self.sync.start()

    async def _apply_desired_config(self, document: dict[str, Any]) -> None:
        """Desired config from the cloud: validated like a local file, applied by reload."""
        from edgeplane.config import parse_site

        site = parse_site(document, self.registry, source="desired config from the cloud", base_dir=self.site.base_dir)
        await self.reload(site)

    async def _apply_model(self, *, name: str, version: str, path: Path, sha256: str,
                           manifest: dict[str, Any] | None = None) -> None:
        """A model version from the cloud: added to the registry (with the signed manifest it came
        with, if any, so that a site requiring signed models can accept it), then verified, warmed
        and swapped in."""
        if self.inference is None:
            raise LifecycleError(f"model {name} {version} arrived, but this site has no inference section to serve it")
        from edgeplane.inference.manifest import ModelManifest, Provenance

        provenance = Provenance(source=f"cloud downlink (sha256 {sha256})")
        given = ModelManifest.model_validate(manifest) if manifest is not None else None
        inference = self.inference
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: inference.registry.add(path, name, version, provenance, replace=True, manifest=given)
        )
        await inference.swap(name, version)

    async def _execute_cloud_command(self, device: str, point: str, value: Any) -> CommandResult:
        return await self.commands.execute(device, point, value, source="cloud")

    # -- parts ------------------------------------------------------------------------------

    def _context(self, key: PartKey, logger_name: str) -> Context:
        name = key.name
        return Context(
            name=name,
            bus=self.bus,
            clock=self.clock,
            commands=self.commands,
            metrics=self.metrics,
            log=logging.getLogger(logger_name),
            site_id=self.site.id,
            site_dir=self.site.base_dir,
            inference=self.inference.client(name) if self.inference is not None else None,
            store=self.store,
            part=key,
        )

    def _make_simulator(self, name: str, config: SimulatorConfig) -> Part | None:
        from edgeplane.companions import CompanionProcess

        made = self._make_part(PartKey.simulator(name), CompanionProcess, config, f"edgeplane.simulator.{name}")
        return made[0] if made else None

    def _make_connector(self, name: str, config: DeviceConfig) -> Part | None:
        cls = self.registry.connectors[config.connector]
        made = self._make_part(PartKey.device(name), cls, config, f"edgeplane.device.{name}")
        return made[0] if made else None

    def _make_solution(self, name: str, config: SolutionConfig) -> Part | None:
        cls = self.registry.solutions[config.type]
        made = self._make_part(PartKey.solution(name), cls, config, f"edgeplane.solution.{name}")
        if made is None:
            return None
        part, solution = made
        patterns = solution.subscriptions()
        if patterns:
            # a simulation has no deadline to miss and must not lose data: it waits instead
            overflow = config.overflow or (Overflow.BLOCK if getattr(self.clock, "simulated", False) else cls.overflow)
            part.subscription = self.bus.subscribe(
                patterns, name=part.key, maxsize=config.queue_size or cls.queue_size, overflow=overflow,
                multipoint=cls.multipoint,
            )
        return part

    def _make_part(self, key: PartKey, cls: Callable[[str, Any, Context], PartT],
                   config: PartConfig, logger_name: str) -> tuple[Part, PartT] | None:
        """The part and its object; None (the part recorded as failed) when the object cannot be made."""
        try:
            obj = cls(key.name, config, self._context(key, logger_name))
        except Exception as e:  # noqa: BLE001 - a broken part must not take the host down
            log.error("%s could not be created: %s: %s (check its section in the site file)", key, type(e).__name__, e)
            self.metrics.errors.labels(part=key, kind="create").inc()
            health = Health(HealthState.FAILED, f"could not be created: {e}")
            part = Part(key, None, config, health)
            part.tried_once.set()
            self.parts[key] = part
            return None
        part = Part(key, obj, config, obj.health)
        self.parts[key] = part
        return part, obj

    async def _launch(self, parts: list[Part]) -> None:
        """Start parts under supervision; wait (bounded) until each has tried to start once."""
        for part in parts:
            part.task = asyncio.create_task(self._supervise(part), name=part.key)
            if part.subscription is not None:
                part.feed = asyncio.create_task(self._feed(part), name=f"{part.key}:feed")
        if parts:
            waits = [asyncio.create_task(p.tried_once.wait()) for p in parts]
            done, pending = await asyncio.wait(waits, timeout=self._start_timeout)
            for task in pending:
                task.cancel()
            slow = [p.key for p in parts if not p.tried_once.is_set()]
            if slow:
                log.warning("still starting after %.0f s: %s (the host goes on)", self._start_timeout, ", ".join(slow))

    async def _supervise(self, part: Part) -> None:
        policy = self.site.core.supervision
        backoff = policy.backoff_initial
        obj = part.obj
        assert obj is not None  # only parts whose object was made are launched
        while True:
            began = time.monotonic()
            try:
                part.health.set(HealthState.STARTING)
                await obj.start()
                if part.health.state is HealthState.STARTING:
                    part.health.set(HealthState.OK)
                part.up_once.set()
                part.tried_once.set()
                await obj.run()
                part.health.set(HealthState.FINISHED)
                log.info("%s finished", part.key)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - supervision: every failure is retried
                part.tried_once.set()
                part.health.restarts += 1
                part.health.set(HealthState.FAILED, f"{type(e).__name__}: {e}")
                self.metrics.restarts.labels(part=part.key).inc()
                if time.monotonic() - began > policy.backoff_max:
                    backoff = policy.backoff_initial  # it had been up a long while: a fresh failure
                log.error("%s failed: %s: %s; restarting in %.1f s", part.key, type(e).__name__, e, backoff,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(obj.stop(), policy.stop_timeout)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, policy.backoff_max)

    async def _feed(self, part: Part) -> None:
        """Hand a solution's subscription to its on_batch/on_event, one message at a time."""
        obj, subscription = part.obj, part.subscription
        assert isinstance(obj, Solution) and subscription is not None  # only solutions with a subscription are fed
        errors = self.metrics.errors.labels(part=part.key, kind="on_batch")
        dropped = self.metrics.dropped.labels(part=part.key, reason="handler_error")
        down = self.metrics.dropped.labels(part=part.key, reason="solution_down")
        limited = RateLimitedLog(obj.log)
        await part.tried_once.wait()
        async for message in subscription:
            if part.health.state in (HealthState.FAILED, HealthState.STARTING):
                # keep draining while it restarts, so its queue never stalls the publishers
                down.inc()
                continue
            try:
                if isinstance(message, Batch):
                    await obj.on_batch(message)
                else:
                    await obj.on_event(message)
            except Exception as e:  # noqa: BLE001 - one bad message must not stop the solution
                errors.inc()
                dropped.inc()
                part.health.set(HealthState.DEGRADED, f"last message failed: {type(e).__name__}: {e}")
                limited.warning(type(e).__name__, "%s could not handle %s: %s: %s (message dropped, counted)",
                                part.key, _named(message), type(e).__name__, e)

    async def _stop_part(self, key: PartKey) -> None:
        part = self.parts.pop(key, None)
        if part is None:
            return
        if part.subscription is not None:
            part.subscription.close()
        for task in (part.feed, part.task):
            if task is not None and not task.done():
                task.cancel()
                # a library that swallows the cancellation (asyncio.wait_for racing an answer,
                # on Python 3.11) must not hang the whole stop
                done, _ = await asyncio.wait({task}, timeout=self.site.core.supervision.stop_timeout)
                if not done:
                    log.warning("%s ignored cancellation for %.0f s; abandoning it", key, self.site.core.supervision.stop_timeout)
                elif not task.cancelled() and task.exception() is not None:
                    log.debug("%s ended with %r while stopping", key, task.exception())
        if part.obj is not None:
            try:
                await asyncio.wait_for(part.obj.stop(), self.site.core.supervision.stop_timeout)
            except Exception as e:  # noqa: BLE001 - stopping goes on for the others
                log.warning("%s did not stop cleanly: %s: %s", key, type(e).__name__, e)
        part.health.set(HealthState.STOPPED)

    # -- reload -----------------------------------------------------------------------------

    async def reload(self, site: Site) -> dict[str, list[PartKey]]:
        """Apply a changed site: restart only the devices and solutions whose entries changed.

        Returns the keys that were added, removed, restarted and kept. Sections that need a new
        process (http, store, clock) are logged, not applied.
        """
        if self.state is not HostState.RUNNING:
            raise LifecycleError(f"cannot reload a host that is {self.state.value}")
        if site.id != self.site.id:
            raise LifecycleError(f"a reload cannot change the site id ({self.site.id!r} -> {site.id!r}): start a new host")
        for section in ("http", "store", "clock", "inference", "sync"):
            if getattr(site.core, section) != getattr(self.site.core, section):
                log.warning("the %r section changed: it takes effect at the next start", section)
        old_site = self.site
        self.redactor.merge(site.redactor)  # secrets the new version resolved are redacted from now on
        plan: dict[str, list[PartKey]] = {"added": [], "removed": [], "restarted": [], "kept": []}

        def diff(kind: PartKind, old: Mapping[str, PartConfig], new: Mapping[str, PartConfig]) -> tuple[list[str], list[str]]:
            to_stop, to_start = [], []
            for name in old:
                if name not in new or not getattr(new[name], "enabled", True):
                    to_stop.append(name)
                    plan["removed"].append(PartKey(kind, name))
                elif new[name].model_dump() != old[name].model_dump():  # by value: classes may be rebuilt
                    to_stop.append(name)
                    to_start.append(name)
                    plan["restarted"].append(PartKey(kind, name))
                else:
                    plan["kept"].append(PartKey(kind, name))
            for name in new:
                if name not in old and getattr(new[name], "enabled", True):
                    to_start.append(name)
                    plan["added"].append(PartKey(kind, name))
            return to_stop, to_start

        stop_simulators, start_simulators = diff("simulator", old_site.core.simulators, site.core.simulators)
        stop_devices, start_devices = diff("device", old_site.devices, site.devices)
        stop_solutions, start_solutions = diff("solution", old_site.solutions, site.solutions)
        self.site = site
        for name in stop_solutions:
            await self._stop_part(PartKey.solution(name))
        for name in stop_devices:
            await self._stop_part(PartKey.device(name))
        for name in stop_simulators:
            await self._stop_part(PartKey.simulator(name))
        await self._launch([p for p in (self._make_simulator(n, site.core.simulators[n]) for n in start_simulators) if p])
        new_solutions = [self._make_solution(n, site.solutions[n]) for n in start_solutions]
        await self._launch([p for p in (self._make_connector(n, site.devices[n]) for n in start_devices) if p])
        await self._launch([p for p in new_solutions if p])
        log.info("site reloaded: %s", ", ".join(f"{k} {len(v)}" for k, v in plan.items()))
        return plan

    def device(self, name: str) -> AnyConnector:
        """The running connector object of a device."""
        obj = self._obj(PartKey.device(name))
        assert isinstance(obj, Connector)  # a device part holds its connector
        return obj

    def solution(self, name: str) -> AnySolution:
        """The running solution object of a solution entry."""
        obj = self._obj(PartKey.solution(name))
        assert isinstance(obj, Solution)  # a solution part holds its solution
        return obj

    def _obj(self, key: PartKey) -> AnyConnector | AnySolution | CompanionProcess:
        part = self.parts.get(key)
        if part is None or part.obj is None:
            raise KeyError(f"{key} is not running; running: {', '.join(self.parts) or 'nothing'}")
        return part.obj

    # -- health and http --------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Each part's health; exception text in it has the site's secrets blanked out."""
        out: dict[str, dict[str, Any]] = {}
        for key, part in self.parts.items():
            health = part.health.as_dict()
            if isinstance(health.get("detail"), str):
                health["detail"] = self.redactor.redact(health["detail"])
            out[key] = health
        return out

    @property
    def running(self) -> bool:
        """Started and not stopping (what ``/healthz`` answers 200 for)."""
        return self.state is HostState.RUNNING

    @property
    def ready(self) -> bool:
        """Running, and every part has started successfully at least once."""
        return self.state is HostState.RUNNING and all(p.up_once.is_set() for p in self.parts.values())

    async def _start_http(self) -> None:
        from edgeplane.monitoring import start_monitoring

        self._http_runner, self.http_address = await start_monitoring(self, self.site.core.http.host, self._http_port or 0)
        log.info("metrics and health on http://%s:%d/ (/metrics, /healthz, /readyz)", *self.http_address)
