"""The in-memory connector: a device whose points live in the host's memory.

For tests (a twin of a real device, with failure injection) and for virtual devices in a site
(a setpoint that solutions command and others read). Writes are kept and read back; with
``poll`` set, every point is republished each period.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgeplane.bus import Quality
from edgeplane.components import Connector, Context, HealthState
from edgeplane.config import DeviceConfig, Duration, PointSpec


class MemoryPoint(PointSpec):
    value: float | str | bool | None = Field(None, description="initial value, published at start")


class MemoryConfig(DeviceConfig):
    points: dict[str, MemoryPoint] = Field(default_factory=dict)  # type: ignore[assignment]  # each connector narrows its points' model
    write_delay: Duration = Field(0.0, description="simulated time a write takes")


class MemoryConnector(Connector[MemoryConfig, MemoryPoint]):
    """Points held in memory. Tests drive it with :meth:`set` and the ``fail_*`` switches."""

    def __init__(self, name: str, config: MemoryConfig, context: Context):
        super().__init__(name, config, context)
        self.values: dict[str, Any] = {p: spec.value for p, spec in config.points.items()}
        self.writes: list[tuple[str, Any]] = []
        self.fail_writes: Exception | None = None  # raise this from write()
        self.readback_offset: float = 0.0  # make read-back disagree, to test confirmation
        self.fail_start: Exception | None = None  # raise this from start()

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        now = self.context.clock.now()
        for point, value in self.values.items():
            if value is not None:
                await self.publish(point, now, value)

    async def run(self) -> None:
        if self.config.poll is None:
            await super().run()
            return
        while True:
            await self.context.clock.sleep(self.config.poll)
            now = self.context.clock.now()
            for point, value in self.values.items():
                if value is not None:
                    await self.publish(point, now, value)

    async def set(self, point: str, value: Any, quality: Quality = Quality.GOOD, ts: float | None = None) -> None:
        """Change a point as if the device had measured it, and publish it."""
        self.values[point] = value
        await self.publish(point, self.context.clock.now() if ts is None else ts, value, quality)

    def disconnect(self, reason: str = "link down (simulated)") -> None:
        self.health.set(HealthState.DEGRADED, reason)

    async def write(self, point: str, value: Any) -> Any:
        if self.config.write_delay:
            await self.context.clock.sleep(self.config.write_delay)
        if self.fail_writes is not None:
            raise self.fail_writes
        self.writes.append((point, value))
        self.values[point] = value
        await self.publish(point, self.context.clock.now(), value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value + self.readback_offset
        return value
