"""The forecast solution in a host: plant time from the station, the shipped ONNX model served by
the shared inference service, P10 <= P50 <= P90 beside persistence and smart persistence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd

from edgeplane_modbus import plugin as modbus_plugin
from edgeplane.testing import wait_for

from edgeplane_solar import plugin as solar_plugin
from edgeplane_solar.simulator import TMY_LOCATION, TmyWeather
from edgeplane_solar.sites import plant_site
from edgeplane_solar.testing import running_plant

PLUGINS = [modbus_plugin, solar_plugin]
FAILURES = "edgeplane_solar_forecast_model_failures_total"  # forecasts issued with baselines only, by reason


@contextlib.asynccontextmanager
async def _host_with_inference(edgeplane_host: Any, tmy: TmyWeather, models: Path, start: float,
                               speed: float) -> AsyncIterator[Any]:
    """The reference plant from ``start`` (plant time, ``speed`` times real time) and a host polling it whose
    inference service keeps its models in ``models``."""
    async with running_plant(weather=tmy, start=start, speed=speed) as (_, ports):
        site = plant_site(ports, poll="200ms")
        site["inference"] = {"providers": ["cpu"], "models": str(models)}
        async with edgeplane_host(site, plugins=PLUGINS) as host:
            yield host


async def test_forecasts_with_the_shipped_model_through_the_inference_service(edgeplane_host, tmp_path, tmy):
    start = pd.Timestamp("2021-06-10 08:00", tz=TMY_LOCATION["timezone"]).timestamp()
    # 15 minutes of plant time per second: a forecast each second once 5 steps of history exist
    async with _host_with_inference(edgeplane_host, tmy, tmp_path / "models", start, speed=900) as host:
        forecast = host.solution("forecast")
        events = host.bus.subscribe("forecast/#", name="test-forecast", overflow="drop_oldest")
        await wait_for(lambda: forecast.latest is not None and forecast.latest["model"] == "solar-forecast",
                       timeout=40)
        data = forecast.latest
        assert data["complete_inputs"] and len(data["horizons"]) == 16
        for h in data["horizons"]:
            assert 0 <= h["p10_w"] <= h["p50_w"] <= h["p90_w"] <= 1.5 * data["capacity_w"], h
            assert h["persistence_w"] >= 0 and h["smart_persistence_w"] >= 0
        # mid-morning on a June day the plant makes power and the 1 h P50 is in a sane range
        hour = data["horizons"][3]
        assert hour["clearsky_w"] > 5_000 and 0.2 * hour["clearsky_w"] < hour["p50_w"] < 1.3 * hour["clearsky_w"]
        message = await asyncio.wait_for(events.get(), 5)
        assert message.kind == "forecast" and message.topic == "forecast/forecast"
        assert host.metrics.value(FAILURES, reason="no_inference_service") == 0


async def test_without_inference_the_baselines_still_come(edgeplane_host, tmy):
    """Also: inv3 is an IEEE 1547-2018 DER inverter (701-704), whose AC power is 701.W, not 103.W."""
    start = pd.Timestamp("2021-06-10 09:00", tz=TMY_LOCATION["timezone"]).timestamp()
    async with running_plant(weather=tmy, start=start, speed=900, families={"inv3": "der"}) as (plant, ports):
        site = plant_site(ports, poll="200ms")
        site["devices"]["inv3"]["sunspec"]["models"] = [1, 701, 702, 704, 160]
        del site["solutions"]["diagnosis"]
        async with edgeplane_host(site, plugins=PLUGINS) as host:
            forecast = host.solution("forecast")
            await wait_for(lambda: forecast.issued >= 2, timeout=30)
            # five whole steps of all three inverters' power: complete inputs (never, without inv3's 701.W)
            await wait_for(lambda: forecast.latest["complete_inputs"], timeout=30)
            assert set(forecast.power) == {"inv1", "inv2", "inv3"}
            # one family rule for every solution: the forecast reads power where dispatch would
            dispatch = host.solution("dispatch")
            for dev in ("inv1", "inv2", "inv3"):
                assert forecast.power_point_for(dev) == dispatch.controls_for(dev).power
            assert forecast.power_point_for("inv3") == "701.W" and forecast.power_point_for("inv1") == "103.W"
            assert forecast.latest["model"] is None
            assert all("p50_w" not in h and "smart_persistence_w" in h for h in forecast.latest["horizons"])


async def test_day_ahead_through_the_inference_service_once_a_utc_day(edgeplane_host, tmp_path, tmy):
    start = pd.Timestamp("2021-06-10 08:00", tz=TMY_LOCATION["timezone"]).timestamp()
    async with _host_with_inference(edgeplane_host, tmy, tmp_path / "models", start, speed=1) as host:
        forecast = host.solution("forecast")
        events = host.bus.subscribe("forecast/forecast/day-ahead", name="test-day-ahead", overflow="drop_oldest")
        midnight = pd.Timestamp("2021-06-12 00:00", tz="UTC").timestamp()
        assert await forecast.issue_day_ahead(midnight) is None  # no history yet: nothing, counted
        assert host.metrics.value(FAILURES, reason="day_ahead_no_history") == 1
        # two days of a plant at 60 % of its clear-sky power, as the 15-min steps would hold them
        times = pd.date_range(end=pd.Timestamp(midnight, unit="s", tz="UTC"), periods=192, freq="15min")
        clear = forecast.model.clearsky_ac(times)
        for t, c in zip(times, clear):
            forecast.day_history.append((t.timestamp(), 0.6 * float(c)))
        data = await forecast.issue_day_ahead(midnight)
        assert data is not None and data["model"] == "solar-day-ahead" and len(data["steps"]) == 96
        assert data["steps"][0]["ts"] == midnight
        for s in data["steps"]:
            assert 0 <= s["p10_w"] <= s["p50_w"] + 1e-3 and s["p50_w"] <= s["p90_w"] + 1e-3, s
        noon = max(data["steps"], key=lambda s: s["clearsky_w"])
        # a steady 60 % day: tomorrow's median near 60 % of clear sky, inside the band
        assert 0.3 * noon["clearsky_w"] < noon["p50_w"] < 1.0 * noon["clearsky_w"], noon
        message = await asyncio.wait_for(events.get(), 5)
        assert message.kind == "forecast" and message.topic == "forecast/forecast/day-ahead"


async def test_the_day_ahead_forecast_is_attempted_at_utc_midnight_of_plant_time(edgeplane_host, tmp_path, tmy):
    # 20 minutes of plant time before 00:00 UTC, 15 minutes of plant time per second
    start = pd.Timestamp("2021-06-11 23:40", tz="UTC").timestamp()
    async with _host_with_inference(edgeplane_host, tmy, tmp_path / "models", start, speed=900) as host:
        forecast = host.solution("forecast")
        # the plant's history starts minutes before midnight: the attempt is made, and counted as lacking history
        await wait_for(lambda: host.metrics.value(FAILURES, reason="day_ahead_no_history") >= 1, timeout=30)
        assert forecast.latest_day_ahead is None and forecast.plant_now >= start + 20 * 60
