"""The classes plugins subclass: :class:`Connector` and :class:`Solution`, and their :class:`Context`.

The host makes one object per device entry (connectors) and per solution entry, hands it a
:class:`Context`, and supervises it:

1. ``await obj.start()`` connects or prepares; raising here is retried with backoff;
2. ``await obj.run()`` is the long-lived work (a poll loop, a subscription); if it raises, the
   host calls ``stop()``, waits (exponential backoff, capped) and starts again; if it returns,
   the object is finished (a replay that reached its end);
3. a solution's subscriptions are fed to ``await obj.on_batch(batch)`` / ``on_event(event)`` by
   the host; an exception there is counted and logged, that message is dropped, the solution
   goes on;
4. ``await obj.stop()`` when the host stops or the entry is removed by a reload.

Nothing here may block the event loop: run CPU-heavy work with ``await context.run_blocking(...)``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import numpy as np

from edgeplane.bus import Batch, Bus, Event, Overflow, Quality
from edgeplane.config.base import DeviceConfig, PointSpec, SolutionConfig

if TYPE_CHECKING:
    from edgeplane.clock import Clock
    from edgeplane.commands import CommandGuard, CommandResult
    from edgeplane.inference.service import InferenceClient
    from edgeplane.metrics import Metrics
    from edgeplane.store import LocalStore

__all__ = ["AnyConnector", "AnySolution", "Connector", "Context", "Health", "HealthState", "PartKey", "PartKind", "Solution"]


class HealthState(str, enum.Enum):  # noqa: UP042 - StrEnum would change str(state), which logs and metrics show
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"  # running, but something is wrong (a link down, bad quality)
    FAILED = "failed"  # crashed; the supervisor will restart it after a backoff
    STOPPED = "stopped"
    FINISHED = "finished"  # run() returned: nothing more to do


@dataclass
class Health:
    """The health of one supervised part, shown by ``/healthz`` and the metrics."""

    state: HealthState = HealthState.STARTING
    detail: str = ""
    since: float = field(default_factory=time.time)
    restarts: int = 0

    def set(self, state: HealthState, detail: str = "") -> None:
        if state != self.state or detail != self.detail:
            self.state, self.detail, self.since = state, detail, time.time()

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "detail": self.detail, "since": self.since, "restarts": self.restarts}


class RateLimitedLog:
    """Logs a message at most once per ``interval`` per key; counts what it held back."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger], interval: float = 60.0):
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last, held = self._last.get(key, (-1e18, 0))
        if now - last >= self.interval:
            suffix = f" ({held} more like this held back)" if held else ""
            self.logger.warning(message + suffix, *args)
            self._last[key] = (now, 0)
        else:
            self._last[key] = (last, held + 1)


PartKind = Literal["device", "solution", "simulator"]


class PartKey(str):
    """The key of one supervised part of a host: ``device:<name>``, ``solution:<name>`` or ``simulator:<name>``.

    Made once from its kind and name and never split again: ``key.kind`` and ``key.name`` say
    what it is. It is a ``str`` (the same text as before), so metric labels and lookups such as
    ``host.parts["device:inv1"]`` keep working.
    """

    __slots__ = ()

    def __new__(cls, kind: PartKind, name: str) -> PartKey:
        if kind not in get_args(PartKind):
            raise ValueError(f"a part is a {', '.join(get_args(PartKind))}, not {kind!r}")
        return super().__new__(cls, f"{kind}:{name}")

    @classmethod
    def device(cls, name: str) -> PartKey:
        return cls("device", name)

    @classmethod
    def solution(cls, name: str) -> PartKey:
        return cls("solution", name)

    @classmethod
    def simulator(cls, name: str) -> PartKey:
        return cls("simulator", name)

    @property
    def kind(self) -> PartKind:
        return self.partition(":")[0]  # type: ignore[return-value]  # made from a PartKind in __new__

    @property
    def name(self) -> str:
        return self.partition(":")[2]


@dataclass
class Context:
    """What the host gives each connector and solution."""

    name: str
    bus: Bus
    clock: Clock
    commands: CommandGuard
    metrics: Metrics
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    site_id: str
    site_dir: Path = field(default_factory=Path.cwd)  # relative paths in config are relative to it
    # this part's client of the shared inference service, when the site configures one
    inference: InferenceClient | None = None
    # the site's local store: `await store.put_state(key, value)` / `get_state(key)` keep small
    # JSON state (a commissioning baseline, a learned offset) across restarts
    store: LocalStore | None = None
    # which part this is (``part.kind``, ``part.name``); the host sets it, e.g. for metric labels
    part: PartKey | None = None

    async def publish(self, batch: Batch | Event) -> None:
        await self.bus.publish(batch)

    async def emit(self, topic: str, kind: str, data: dict[str, Any] | None = None, severity: str | None = None) -> Event:
        """Publish an event (alert, forecast, diagnosis) stamped with this part's name and the clock."""
        event = Event(topic=topic, kind=kind, ts=self.clock.now(), source=self.name, data=data or {}, severity=severity)
        await self.bus.publish(event)
        return event

    async def command(self, device: str, point: str, value: Any, *, timeout: float = 5.0, reason: str = "") -> CommandResult:
        """Write a value through the guarded command path; the result says ok/rejected/failed/timeout."""
        return await self.commands.execute(device, point, value, source=self.name, timeout=timeout, reason=reason)

    async def run_blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run CPU-bound or blocking work in a thread, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))


class _Supervised:
    """What connectors and solutions share: a name, a config, a context, health."""

    def __init__(self, name: str, config: Any, context: Context):
        self.name = name
        self.config = config
        self.context = context
        self.health = Health()
        self.log = context.log

    async def start(self) -> None:
        """Connect or prepare. Raise to have the host retry with backoff."""

    async def run(self) -> None:
        """The long-lived work. The default waits until the host stops this part."""
        await asyncio.Event().wait()

    async def stop(self) -> None:
        """Release what ``start`` acquired. Called also after a failure, before a restart."""


ConfigT = TypeVar("ConfigT", bound=DeviceConfig)
PointT = TypeVar("PointT", bound=PointSpec)
SolutionConfigT = TypeVar("SolutionConfigT", bound=SolutionConfig)


def _type_arguments(cls: type, generic: type) -> tuple[Any, ...]:
    """The arguments ``cls`` gave ``generic`` in its bases (``Connector[MyConfig, MyPoint]``), or ()."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        if get_origin(base) is generic:
            return get_args(base)
    return ()


class Connector(_Supervised, Generic[ConfigT, PointT]):
    """Owns the link to one device entry of the site file.

    Declare the config and point models once, as type arguments::

        class ModbusConnector(Connector[ModbusConfig, ModbusPoint]): ...

    which sets ``Config`` (a :class:`DeviceConfig` subclass with the link fields) and ``Point``
    (a :class:`PointSpec` subclass with the address fields) and types ``self.config``. (Setting
    ``Config`` and ``Point`` as class attributes still works.) Publish readings with
    :meth:`publish`; implement :meth:`write` if the device accepts commands.
    """

    Config: ClassVar[type[DeviceConfig]] = DeviceConfig
    Point: ClassVar[type[PointSpec]] = PointSpec

    config: ConfigT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arguments = _type_arguments(cls, Connector)
        if arguments and isinstance(arguments[0], type) and "Config" not in cls.__dict__:
            cls.Config = arguments[0]
        if len(arguments) > 1 and isinstance(arguments[1], type) and "Point" not in cls.__dict__:
            cls.Point = arguments[1]

    def topic(self, point: str) -> str:
        return f"{self.name}/{point}"

    def point_specs(self) -> Mapping[str, PointSpec]:
        """Every point of this device, as the command guard and the console see it: the config's
        points, and those a connector discovers on the device at start (SunSpec models), which
        it returns by overriding this. Never add a point by changing the config."""
        return self.config.points

    async def publish(self, point: str, ts: Any, values: Any, quality: Any = None) -> None:
        """Publish readings of one of this device's points (arrays or scalars)."""
        spec = self.config.points.get(point)
        batch = Batch.of(self.topic(point), ts, values, quality, unit=spec.unit if spec else None)
        await self.context.bus.publish(batch)

    async def publish_bad(self, point: str, ts: float) -> None:
        """Publish one reading of bad quality (NaN), so consumers see the point went bad."""
        await self.context.bus.publish(
            Batch(self.topic(point), np.array([ts]), np.array([np.nan]), np.array([Quality.BAD], dtype=np.uint8))
        )

    async def write(self, point: str, value: Any) -> Any:
        """Write ``value`` (an engineering value) to ``point`` and return the value read back.

        Called only by the command guard, after the point's limits have been checked.
        Return None if the device offers no way to read the point back.
        """
        raise NotImplementedError(f"connector of device {self.name!r} does not support writes")


class Solution(_Supervised, Generic[SolutionConfigT]):
    """Domain logic: subscribes to topics, computes, emits events and commands.

    Declare the config model as the type argument (``class Forecast(Solution[ForecastConfig])``,
    which sets ``Config`` and types ``self.config``; a ``Config`` class attribute still works) and
    implement :meth:`subscriptions` and :meth:`on_batch` (and :meth:`on_event` for events).
    """

    Config: ClassVar[type[SolutionConfig]] = SolutionConfig
    #: queue bound and overflow policy of this solution's subscription. A solution that falls
    #: behind loses its oldest batches (counted in edgeplane_bus_dropped_total) rather than
    #: stalling the connectors that feed every other consumer; set BLOCK for one that must see
    #: every reading and is sure to keep up.
    queue_size: ClassVar[int] = 1000
    overflow: ClassVar[Overflow] = Overflow.DROP_OLDEST
    #: True: :meth:`on_batch` receives multi-point batches as connectors publish them (one per
    #: block read, holding the rows of the subscribed points: iterate ``batch.split()`` or read
    #: ``batch.point_ids``), one queue entry per read instead of one per point. False: one
    #: single-point batch per point, as before.
    multipoint: ClassVar[bool] = False

    config: SolutionConfigT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arguments = _type_arguments(cls, Solution)
        if arguments and isinstance(arguments[0], type) and "Config" not in cls.__dict__:
            cls.Config = arguments[0]

    def subscriptions(self) -> list[str]:
        """Topic patterns whose batches and events go to :meth:`on_batch` / :meth:`on_event`."""
        return []

    async def on_batch(self, batch: Batch) -> None:
        """Handle one batch of readings."""

    async def on_event(self, event: Event) -> None:
        """Handle one event from another solution."""


AnyConnector = Connector[Any, Any]
"""Any connector class, whatever its config and point models (what the registry holds)."""
AnySolution = Solution[Any]
"""Any solution class, whatever its config model."""
