"""Live forecasting (``type: solar.forecast``): P10/P50/P90 from 15 min to 4 h, beside the baselines.

Plant power (the sum of the inverters' AC power) is averaged over 15-minute steps of plant time
(the weather station's clock when ``plant.weather.time`` is set, else the readings' time stamps).
At the end of each step the solution builds the same features as training
(:mod:`edgeplane_solar.features`), asks the shared inference service for the model's quantiles
and emits a ``forecast`` event on ``forecast/<name>`` with, per horizon, P10/P50/P90 (W),
persistence and smart persistence. Without an inference service, or when the model fails, the
event carries the baselines only (and the failure is counted). Once a day, at 00:00 UTC of plant
time, the day-ahead model (:mod:`edgeplane_solar.day_ahead`) forecasts each 15-min step of that UTC
day from the previous day's steps, on ``forecast/<name>/day-ahead``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from edgeplane import Batch, Context, Solution, SolutionConfig

from edgeplane_solar import day_ahead, features
from edgeplane_solar.controls import CONTROLS_DESCRIPTION, DER, ControlsChoice, family_for, is_der_point
from edgeplane_solar.plant import PlantConfig, PlantModel

STEP_S = features.STEP.total_seconds()
DAY_S = 86400.0


class ForecastConfig(SolutionConfig):
    plant: PlantConfig
    model: str | None = Field("solar-forecast", description="model name in the inference registry; null: baselines only")
    capacity_kw: float | None = Field(None, gt=0, description="capacity the model's output is scaled by (default: AC nameplate)")
    report: list[str] = Field(default_factory=lambda: ["15min", "1h", "4h"], description="horizons in the log line")
    day_ahead_model: str | None = Field("solar-day-ahead", description="day-ahead model in the inference registry, "
                                        "run once a day at 00:00 UTC of plant time; null: no day-ahead forecast")
    controls: ControlsChoice = Field("auto", description="which AC power point an inverter is read from; "
                                     + CONTROLS_DESCRIPTION + " (set it as dispatch's and diagnosis' is set)")


class ForecastSolution(Solution[ForecastConfig]):
    """See the module doc."""

    multipoint = True  # on_batch takes a connector's block reads whole

    def __init__(self, name: str, config: ForecastConfig, context: Context):
        super().__init__(name, config, context)
        self.model = PlantModel(config.plant)
        self.capacity_w = (config.capacity_kw or config.plant.ac_capacity_w / 1000.0) * 1000.0
        self.power: dict[str, float] = {}
        # "der" once an inverter published a 701 point: its power is then read from 701.W, as dispatch does
        self.families: dict[str, str | None] = {dev: None for dev in config.plant.inverters}
        # the latest irradiance reading and the plant time it was taken at
        self.irradiance: tuple[float, float] | None = None
        self.plant_now: float | None = None
        self.bucket: int | None = None
        self.samples: list[float] = []
        self.history: deque[tuple[float, float]] = deque(maxlen=features.LAGS)
        # two UTC days of 15-min steps: the day-ahead model's inputs
        self.day_history: deque[tuple[float, float]] = deque(maxlen=2 * day_ahead.DAY)
        self.latest_day_ahead: dict[str, Any] | None = None
        self.latest: dict[str, Any] | None = None
        self.issued = 0
        self.failures = context.metrics.counter("edgeplane_solar_forecast_model_failures_total",
                                                "forecasts issued with baselines only because the model failed",
                                                ["reason"])

    def subscriptions(self) -> list[str]:
        pts = self.config.plant.points
        topics = [f"{dev}/{pts.power}" for dev in self.config.plant.inverters]
        if self.config.controls != "legacy":  # an IEEE 1547-2018 DER inverter reports its AC power in 701
            topics += [f"{dev}/{DER.power}" for dev in self.config.plant.inverters]
        weather = self.config.plant.weather
        if weather is not None:
            topics += [t for t in (weather.ghi or weather.poa, weather.time) if t]
        return topics

    async def on_batch(self, batch: Batch) -> None:
        # subscribed multi-point (class attribute multipoint): one batch per block read, its points in turn
        for topic, newest in batch.newest_numbers():
            if newest is not None:
                await self._on_reading(topic, *newest)

    async def _on_reading(self, topic: str, ts: float, value: float) -> None:
        weather = self.config.plant.weather
        if weather is not None and topic == weather.time:
            await self._advance(value)
            return
        if weather is not None and topic == (weather.ghi or weather.poa):
            # a simulated plant's readings are stamped in host time: take the plant clock then
            taken = self.plant_now if weather.time and self.plant_now is not None else ts
            self.irradiance = (value, taken)
            return
        device, _, point = topic.partition("/")
        if device not in self.families:
            return
        if is_der_point(point):
            self.families[device] = "der"
        if point != self.power_point_for(device):
            return
        self.power[device] = value
        if weather is None or weather.time is None:
            await self._advance(ts)
        if len(self.power) == len(self.config.plant.inverters):
            self.samples.append(sum(self.power.values()))

    def power_point_for(self, device: str) -> str:
        """The AC power point of an inverter, by the family rule dispatch and diagnosis use
        (:func:`edgeplane_solar.controls.family_for`)."""
        return DER.power if family_for(self.config.controls, self.families[device]) == "der" else \
            self.config.plant.points.power

    async def _advance(self, now: float) -> None:
        """Plant time moved to ``now``: close finished 15-min steps."""
        self.plant_now = now
        index = int(now // STEP_S)
        if self.bucket is None:
            self.bucket = index
            return
        if index <= self.bucket:
            return
        mean = float(np.mean(self.samples)) if self.samples else math.nan
        self.samples = []
        end = (self.bucket + 1) * STEP_S
        # steps with no reading at all are gaps, as in the training data
        for missing in range(self.bucket + 1, index):
            self.history.append(((missing) * STEP_S, math.nan))
            self.day_history.append(((missing) * STEP_S, math.nan))
        self.history.append((end, mean))
        self.day_history.append((end, mean))
        self.bucket = index
        await self.issue(end)
        if self.config.day_ahead_model and end % DAY_S == 0:
            await self.issue_day_ahead(end)

    def features_at(self, issue_ts: float) -> tuple[np.ndarray, features.FeatureFrame]:
        """The feature row for an issue time, from the last steps' plant power and the latest irradiance reading."""
        n = features.LAGS
        hist = list(self.history)
        values = [math.nan] * (n - len(hist)) + [v for _, v in hist]
        times = pd.date_range(end=pd.Timestamp(issue_ts, unit="s", tz="UTC"), periods=n, freq=features.STEP)
        p = np.array(values) / self.capacity_w
        # a step is averaged over the 15 min before its end: its clear-sky power is that of its middle
        cs_steps = self.model.clearsky_ac(pd.date_range(times[0] - features.STEP / 2, periods=n + features.HORIZONS,
                                                        freq=features.STEP)) / self.capacity_w
        future_cs = np.stack([cs_steps[i + 1:i + 1 + features.HORIZONS] for i in range(n)])
        solpos = self.model.solar_position(times)
        cos_z = np.cos(np.radians(solpos["zenith"].to_numpy()))
        w_index = w_age = None
        if self.irradiance is not None:
            value, taken = self.irradiance
            at = pd.DatetimeIndex([pd.Timestamp(taken, unit="s", tz="UTC")])
            weather = self.config.plant.weather
            if weather is not None and weather.ghi is None:
                clear = float(self.model.clearsky_poa(at, next(iter(self.config.plant.inverters)))[0])
            else:
                clear = float(self.model.location.get_clearsky(at)["ghi"].iloc[0])
            index = value / clear if clear > 50 else math.nan
            age_h = (times.as_unit("s").asi8 - taken) / 3600.0
            w_index = np.where(age_h >= 0, index, math.nan)  # a reading from after a row's time is unknown there
            w_age = age_h
        frame = features.build(times, p, cs_steps[:n], future_cs, cos_z, w_index, w_age, self.config.plant.location.lon)
        return frame.x[-1:], frame

    async def issue(self, issue_ts: float) -> dict[str, Any]:
        x, frame = await self.context.run_blocking(self.features_at, issue_ts)
        quantiles = None
        if self.config.model and self.context.inference is not None and frame.valid[-1]:
            try:
                out = await self.context.inference.infer(self.config.model, {"features": x}, priority="bulk")
                quantiles = np.asarray(out["quantiles"])[0]
            except Exception as e:  # noqa: BLE001 - any model failure falls back to the baselines, counted
                self.failures.labels(reason=type(e).__name__).inc()
                self.log.warning("forecast: model %s failed (%s); baselines only", self.config.model, e)
        elif self.config.model and self.context.inference is None:
            self.failures.labels(reason="no_inference_service").inc()
        horizons = []
        for h in range(features.HORIZONS):
            entry = {"horizon_s": (h + 1) * STEP_S, "ts": issue_ts + (h + 1) * STEP_S,
                     "persistence_w": float(frame.persistence[-1, h] * self.capacity_w),
                     "smart_persistence_w": float(frame.smart_persistence[-1, h] * self.capacity_w),
                     "clearsky_w": float(frame.clearsky[-1, h] * self.capacity_w)}
            if quantiles is not None:
                entry.update(p10_w=float(quantiles[h, 0] * self.capacity_w), p50_w=float(quantiles[h, 1] * self.capacity_w),
                             p90_w=float(quantiles[h, 2] * self.capacity_w))
            horizons.append(entry)
        data = {"issued_at": issue_ts, "capacity_w": self.capacity_w, "model": self.config.model if quantiles is not None else None,
                "complete_inputs": bool(frame.valid[-1]), "horizons": horizons}
        self.latest = data
        self.issued += 1
        await self.context.emit(f"forecast/{self.name}", "forecast", data)
        return data

    def day_ahead_at(self, issue_ts: float) -> day_ahead.DayAheadData:
        """Day-ahead feature rows for the UTC day starting at ``issue_ts`` from the last two days' steps."""
        day0 = pd.Timestamp(issue_ts, unit="s", tz="UTC").normalize()
        times = pd.date_range(day0 - pd.Timedelta(days=2), periods=3 * day_ahead.DAY, freq=features.STEP)
        by_label = {ts: v for ts, v in self.day_history}
        first = times[0].timestamp()
        # a step labelled at its end: label t is the average of (t - 15 min, t], known at t
        p = np.array([by_label.get(first + i * STEP_S, math.nan) if i < 2 * day_ahead.DAY else math.nan
                      for i in range(len(times))]) / self.capacity_w
        cs = self.model.clearsky_ac(times) / self.capacity_w
        elevation = 90 - self.model.solar_position(times)["zenith"].to_numpy()
        return day_ahead.build(times, p, cs, elevation, self.config.plant.location.lon)

    async def issue_day_ahead(self, issue_ts: float) -> dict[str, Any] | None:
        """P10/P50/P90 for each 15-min step of the UTC day starting at ``issue_ts``, on ``forecast/<name>/day-ahead``.

        Needs the previous day's power (half a day of steps at least) and the inference service;
        otherwise nothing is emitted and the reason is counted.
        """
        data = await self.context.run_blocking(self.day_ahead_at, issue_ts)
        if not data.valid.all():
            self.failures.labels(reason="day_ahead_no_history").inc()
            return None
        if self.context.inference is None:
            self.failures.labels(reason="no_inference_service").inc()
            return None
        try:
            out = await self.context.inference.infer(self.config.day_ahead_model, {"features": data.x}, priority="bulk")
            q = np.asarray(out["quantiles"])
        except Exception as e:  # noqa: BLE001 - a failed day-ahead forecast is skipped, counted
            self.failures.labels(reason=f"day_ahead_{type(e).__name__}").inc()
            self.log.warning("forecast: day-ahead model %s failed (%s)", self.config.day_ahead_model, e)
            return None
        steps = [{"ts": float(t.timestamp()), "p10_w": float(q[i, 0] * self.capacity_w),
                  "p50_w": float(q[i, 1] * self.capacity_w), "p90_w": float(q[i, 2] * self.capacity_w),
                  "clearsky_w": float(data.x[i, day_ahead.CLEARSKY_COLUMN] * self.capacity_w)}
                 for i, t in enumerate(data.times)]
        result = {"issued_at": issue_ts, "capacity_w": self.capacity_w, "model": self.config.day_ahead_model,
                  "steps": steps}
        self.latest_day_ahead = result
        await self.context.emit(f"forecast/{self.name}/day-ahead", "forecast", result)
        return result

    @property
    def state(self) -> dict[str, Any]:
        if self.latest is None:
            return {"issued": 0}
        summary = {}
        for label in self.config.report:
            h = self.latest["horizons"][features.horizon_steps(label) - 1]
            summary[label] = {k: round(v) for k, v in h.items() if k.endswith("_w")}
        return {"issued": self.issued, "issued_at": self.latest["issued_at"], "model": self.latest["model"], **summary}
