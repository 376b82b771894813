"""Test helpers: a simulated plant on free loopback ports, with weather a test controls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

import pandas as pd

from edgeplane_solar.simulator import TMY_LOCATION, InverterSpec, PlantClock, PlantSimulator

NOON = pd.Timestamp("2021-06-10 12:30", tz=TMY_LOCATION["timezone"]).timestamp()


class SteadySun:
    """Constant plane-of-array irradiance (clear noon), so plant output holds still."""

    def __init__(self, poa: float = 800.0):
        self.poa = poa

    def at(self, t: float) -> dict[str, float]:
        return {"poa": self.poa, "ghi": self.poa * 0.95, "air_temp": 25.0, "module_temp": 25.0 + self.poa / 800 * 25}


class RampSun(SteadySun):
    """Irradiance rising 60 W/m2 per wall second from 300 to 900, then again: always moving, never
    by less than a few percent between two polls, so a value that stands still is frozen."""

    def at(self, t: float) -> dict[str, float]:
        self.poa = 300.0 + (time.monotonic() * 60.0) % 600.0
        return super().at(t)


@contextlib.asynccontextmanager
async def running_plant(n: int = 3, weather: Any = None, start: float = NOON, speed: float = 1.0,
                        families: dict[str, str] | None = None) -> AsyncIterator[tuple[PlantSimulator, dict[str, int]]]:
    """A started PlantSimulator (n inverters of 10 kW, 2 strings; ``families``: name -> SunSpec family) and its ports."""
    specs = [InverterSpec(f"inv{i + 1}", family=(families or {}).get(f"inv{i + 1}")) for i in range(n)]
    plant = PlantSimulator(specs, clock=PlantClock(start, speed), weather=weather or SteadySun(), interval=0.1)
    ports = await plant.start()
    task = asyncio.get_running_loop().create_task(plant.run_station(0.1))
    try:
        yield plant, ports
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await plant.stop()


