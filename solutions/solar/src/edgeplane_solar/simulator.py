"""A simulated PV plant on Modbus TCP: SunSpec inverters and a weather station, driven by real TMY3 weather.

It composes the Modbus plugin's :class:`~edgeplane_modbus.simulator.SunSpecInverterSimulator` (one per
inverter, each on its own port) with a weather station (plain holding registers, float32):

=========  ================================================
register   point
=========  ================================================
0          plane-of-array irradiance, W/m2 (``poa``)
2          global horizontal irradiance, W/m2 (``ghi``)
4          air temperature, degC (``air_temp``)
6          module temperature, degC (``module_temp``)
8          the plant's clock, seconds since the epoch (float64, ``time``)
100..103   fault injection (write 4 registers: inverter number, action, argument, 0)
=========  ================================================

Weather comes from pvlib's bundled TMY3 file for Greensboro, NC (``723170TYA.CSV``: a typical year of
hourly measured-and-modelled irradiance, so it runs without ``shared/``), transposed to the array
plane by pvlib and interpolated in time. The plant's clock may run faster than the wall clock
(``speed``), so that a demo sees a morning in minutes; every part reads plant time from the station.

Fault actions (register 101): 1 trip, 2 restore, 3 lose string (argument: string number),
4 clip (argument: watts / 10), 5 freeze AC power, 6 unfreeze, 7 freeze the station's irradiance,
8 unfreeze it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

TMY_FILE = "723170TYA.CSV"
TMY_LOCATION = {"lat": 36.1, "lon": -79.95, "alt": 273.0, "timezone": "America/New_York"}
ACTIONS = {"trip": 1, "restore": 2, "lose-string": 3, "clip": 4, "freeze": 5, "unfreeze": 6, "freeze-irradiance": 7,
           "unfreeze-irradiance": 8}


class TmyWeather:
    """Irradiance and temperature at any instant of a typical year (pvlib's bundled TMY3)."""

    def __init__(self, tilt: float = 25.0, azimuth: float = 180.0, file: str | Path | None = None):
        import pvlib

        path = Path(file) if file else Path(pvlib.__file__).parent / "data" / TMY_FILE
        df, meta = pvlib.iotools.read_tmy3(path, map_variables=True, coerce_year=2021)
        # TMY3 values are averages of the hour that ends at the label: centre them
        df.index = df.index.tz_convert("UTC") - pd.Timedelta(minutes=30)
        df = df.sort_index()  # coerce_year wraps the last hour of the year to its start
        self.lat, self.lon, self.alt = meta["latitude"], meta["longitude"], meta["altitude"]
        loc = pvlib.location.Location(self.lat, self.lon, altitude=self.alt)
        solpos = loc.get_solarposition(df.index)
        poa = pvlib.irradiance.get_total_irradiance(tilt, azimuth, solpos["apparent_zenith"], solpos["azimuth"],
                                                    df["dni"], df["ghi"], df["dhi"], model="isotropic")
        self._t = ((df.index - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
        self._year0 = float(pd.Timestamp("2021-01-01", tz="UTC").timestamp())
        self._poa = poa["poa_global"].fillna(0).clip(lower=0).to_numpy()
        self._ghi = df["ghi"].to_numpy(dtype=float)
        self._air = df["temp_air"].to_numpy(dtype=float)

    def _fold(self, t: float) -> float:
        """Any instant mapped onto the typical year (same day of year and time of day)."""
        year = 365 * 86400.0
        return self._year0 + (t - self._year0) % year

    def at(self, t: float) -> dict[str, float]:
        x = self._fold(t)
        poa = float(np.interp(x, self._t, self._poa))
        air = float(np.interp(x, self._t, self._air))
        return {"poa": poa, "ghi": float(np.interp(x, self._t, self._ghi)), "air_temp": air,
                "module_temp": air + poa / 800.0 * 25.0}


class PlantClock:
    """Plant time: ``start`` at the moment of creation, running ``speed`` times faster than the wall clock."""

    def __init__(self, start: float | None = None, speed: float = 1.0, wall: Callable[[], float] = time.time):
        self.wall = wall
        self.wall0 = wall()
        self.start = self.wall0 if start is None else start
        self.speed = speed

    def __call__(self) -> float:
        return self.start + (self.wall() - self.wall0) * self.speed


@dataclass
class InverterSpec:
    name: str
    rating_w: float = 10_000.0
    strings: int = 2
    shade: float = 1.0  # fraction of the station's irradiance this array sees
    family: str | None = None  # SunSpec models served: None (legacy + 704), "legacy", "der" (701-704, 160) or "der714" (701-704, 714)


class WeatherStation:
    """The weather station's Modbus server (see module doc) with fault injection registers."""

    def __init__(self, weather: TmyWeather, clock: Callable[[], float], plant: PlantSimulator | None = None):
        self.weather = weather
        self.clock = clock
        self.plant = plant
        self.frozen = False
        self.values = weather.at(clock())
        self.image = [0] * 120
        self.server: Any = None
        self.port: int | None = None
        self.update()

    def update(self) -> None:
        now = self.clock()
        if not self.frozen:
            self.values = self.weather.at(now)
        for i, key in enumerate(("poa", "ghi", "air_temp", "module_temp")):
            self.image[2 * i:2 * i + 2] = struct.unpack(">2H", struct.pack(">f", self.values[key]))
        self.image[8:12] = struct.unpack(">4H", struct.pack(">d", now))

    async def _action(self, function_code: int, start_address: int, address: int, count: int, registers: list[int],
                      set_values: Any) -> Any:
        from pymodbus.constants import ExcCodes

        if set_values:
            values = list(set_values) if isinstance(set_values, (list, tuple)) else [set_values]
            if address != 100 or len(values) < 2 or self.plant is None:
                return ExcCodes.ILLEGAL_ADDRESS
            try:
                self.plant.inject(int(values[0]), int(values[1]), int(values[2]) if len(values) > 2 else 0)
            except (ValueError, IndexError, KeyError):
                return ExcCodes.ILLEGAL_VALUE
        self.update()
        registers[0:len(self.image)] = self.image
        return None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        from edgeplane_modbus.simulator import SimServer
        from pymodbus.simulator import DataType, SimData

        self.server = SimServer(self._action)
        self.port = await self.server.start({1: [SimData(0, values=list(self.image), datatype=DataType.REGISTERS)]},
                                            host, port)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


class PlantSimulator:
    """Several SunSpec inverters and a weather station, on consecutive or free ports."""

    def __init__(self, inverters: list[InverterSpec], *, clock: Callable[[], float] | None = None,
                 weather: TmyWeather | None = None, interval: float | None = 0.25):
        from edgeplane_modbus.simulator import SunSpecInverterSimulator

        self.clock = clock or PlantClock()
        self.weather = weather or TmyWeather()
        self.station = WeatherStation(self.weather, self.clock, self)
        self.specs = inverters
        self.inverters = {
            spec.name: SunSpecInverterSimulator(rating_w=spec.rating_w, strings=spec.strings, interval=interval,
                                                irradiance=self._irradiance_of(spec), clock=self.clock,
                                                serial=f"SIM-{spec.name}", family=spec.family)
            for spec in inverters}
        self.ports: dict[str, int] = {}

    def _irradiance_of(self, spec: InverterSpec) -> Callable[[float], float]:
        # the station's reading, so that a frozen station sensor does not freeze the inverters
        return lambda now: self.weather.at(now)["poa"] * spec.shade

    def inverter(self, number: int) -> Any:
        return self.inverters[self.specs[number - 1].name]

    def inject(self, number: int, action: int, argument: int = 0) -> None:
        """Apply fault ``action`` (see module doc) to inverter ``number`` (1-based)."""
        if action in (7, 8):
            self.station.frozen = action == 7
            return
        sim = self.inverter(number)
        if action == 1:
            sim.trip()
        elif action == 2:
            sim.restore()
            sim.lost_strings.clear()
            sim.clip(None)
            sim.unfreeze("103.W")
        elif action == 3:
            sim.lose_string(argument or 1)
        elif action == 4:
            sim.clip(argument * 10.0 if argument else None)
        elif action == 5:
            sim.freeze("103.W")
        elif action == 6:
            sim.unfreeze("103.W")
        else:
            raise ValueError(f"unknown fault action {action}")

    async def start(self, host: str = "127.0.0.1", station_port: int = 0, base_port: int | None = None) -> dict[str, int]:
        for i, (name, sim) in enumerate(self.inverters.items()):
            self.ports[name] = await sim.start(host, 0 if base_port is None else base_port + i)
        # the station last: a site waits for its port, so when it answers every inverter does
        self.ports["station"] = await self.station.start(host, station_port)
        return dict(self.ports)

    async def run_station(self, interval: float = 0.25) -> None:
        while True:
            self.station.update()
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        await self.station.stop()
        for sim in self.inverters.values():
            await sim.stop()


def _parse_start(text: str | None, tz: str) -> float | None:
    if not text:
        return None
    ts = pd.Timestamp(text)
    ts = ts.tz_localize(tz) if ts.tz is None else ts
    return float(ts.timestamp())


def main(argv: list[str] | None = None) -> None:
    """``python -m edgeplane_solar.simulator``: serve a simulated plant until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inverters", type=int, default=3)
    parser.add_argument("--rating", type=float, default=10_000.0, help="W per inverter")
    parser.add_argument("--strings", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=15021, help="first inverter's port; the next ones follow")
    parser.add_argument("--station-port", type=int, default=15020)
    parser.add_argument("--start", default="2021-06-10T09:00", help="plant start time (local time at the TMY site)")
    parser.add_argument("--speed", type=float, default=60.0, help="plant seconds per wall second")
    parser.add_argument("--tilt", type=float, default=25.0)
    args = parser.parse_args(argv)
    clock = PlantClock(_parse_start(args.start, TMY_LOCATION["timezone"]), args.speed)
    shades = [1.0, 0.97, 1.02, 0.99, 1.01]
    specs = [InverterSpec(f"inv{i + 1}", args.rating, args.strings, shades[i % len(shades)]) for i in range(args.inverters)]

    async def serve() -> None:
        plant = PlantSimulator(specs, clock=clock, weather=TmyWeather(tilt=args.tilt))
        ports = await plant.start(station_port=args.station_port, base_port=args.base_port)
        print(f"solar plant simulator: {ports} at {args.speed:g}x from {args.start}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        station = loop.create_task(plant.run_station())
        await stop.wait()
        station.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await station
        await plant.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
