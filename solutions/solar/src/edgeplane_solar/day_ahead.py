"""The learned day-ahead forecast: P10/P50/P90 of every 15-min step of a UTC day, issued at its start.

The forecast for UTC day ``D`` is issued at ``D 00:00 UTC`` (17:00 in Golden CO, after most of
the day's sun) from what is known then: the previous UTC day's measured power. No weather
forecast is an input (the data holds none), so the model learns how a day's clear-sky index
follows from yesterday's: the plant's clear-sky power and the sun's position at the target time,
the time of year, yesterday's power and clear-sky index at the same time, yesterday's and the day
before's daily index, yesterday's variability, its last daylight hours and its share of clear
steps, plus the two baselines (yesterday's daily index and yesterday's index at the same time,
each times the target's clear-sky power).

The ONNX model takes ``features`` (N, N_FEATURES) float32, one row per target step, and returns
``quantiles`` (N, 3) float32 (P10, P50, P90 of power over capacity, ordered by construction).
The network, fit loop, export and scoring are :mod:`edgeplane_solar.forecasting`'s, configured
by :data:`DAY_AHEAD`; torch is imported by training commands only.

**Physical bounds are part of the model.** Its P50 and P90 are clear-sky indices capped in the
graph: P50 <= ``cap_p50`` x clear-sky power and P90 <= ``cap_p90`` x clear-sky power, for any input.
Without them a network extrapolates freely on days unlike its training year (a perfectly steady
day at 60 % of clear sky, as a plant with a lost string or a standing curtailment makes, gave a noon
median 108-121 % of clear sky). The caps come from short grids of physically sensible values
(:data:`CAPS_P50`, :data:`CAPS_P90`) and are chosen on the validation weeks, each by its quantile's
own proper score (the pinball loss at 0.5 and at 0.9), so a cap is never picked to shrink the
median towards the mean for a better RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from edgeplane_solar import dataset, features, forecasting
from edgeplane_solar.plant import PlantConfig, PlantModel

MODEL_NAME = "solar-day-ahead"
DAY = 96  # 15-min steps in a day
N_FEATURES = 15
BASELINE_COLUMN = 13  # yesterday's daily index x clear-sky power
SMART_COLUMN = 14  # yesterday's index at the same time x clear-sky power
CLEARSKY_COLUMN = 0
#: the settings model selection chooses among (hidden units, epochs)
CANDIDATES = ((4, 15), (4, 30), (8, 15), (8, 30), (16, 15), (16, 30))
#: caps on the P50's clear-sky index chosen among: a 15-min median a little above clear sky is
#: possible (the clear-sky model is not exact), far above it is not
CAPS_P50 = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1)
#: caps on the P90's clear-sky index: cloud enhancement lifts 15-min means above clear sky (2011's
#: 99.9th percentile of system 50's index at noon-ish sun is 1.24), rarely beyond
CAPS_P90 = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3)
#: the caps while fitting: ten times clear sky bounds nothing (and stays finite, so 0 x cap is 0 at night)
NO_CAP = 10.0


@dataclass
class DayAheadData:
    times: pd.DatetimeIndex  # target times (UTC, whole days)
    x: np.ndarray  # (n, N_FEATURES) float32
    target: np.ndarray  # (n,) measured normalised power, NaN where unknown
    persistence: np.ndarray  # (n,) yesterday's power at the same time
    smart_persistence: np.ndarray  # (n,) yesterday's index at the same time x clear-sky power
    baseline: np.ndarray  # (n,) yesterday's daily index x clear-sky power
    daylight: np.ndarray  # (n,) sun above 5 degrees at the target
    valid: np.ndarray  # (n,) yesterday's inputs are complete enough (half a day of data)


def _day_stats(p: np.ndarray, cs: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per day (rows of DAY steps): daily index, index std, last 3 daylight hours' index, clear share, data share."""
    days = len(p) // DAY
    out = np.full((days, 5), np.nan)
    for d in range(days):
        s = slice(d * DAY, (d + 1) * DAY)
        pd_, cs_, k_ = p[s], cs[s], k[s]
        have = np.isfinite(pd_)
        sun = (cs_ > features.LOW_SUN) & have
        share = have.sum() / DAY
        if share < 0.5 or sun.sum() < 4:
            out[d, 4] = share
            continue
        k_day = np.nansum(pd_[have]) / max(cs_[have].sum(), 1e-6)
        ks = k_[sun]
        out[d] = (np.clip(k_day, 0, features.K_MAX), ks.std(), ks[-12:].mean(), (ks > 0.8).mean(), share)
    return out


def build(times: pd.DatetimeIndex, power_norm: np.ndarray, clearsky_norm: np.ndarray, elevation: np.ndarray,
          lon: float) -> DayAheadData:
    """Rows for every target in ``times`` after its first two days.

    ``times`` is a regular 15-min UTC grid starting at midnight, whole days; ``power_norm``,
    ``clearsky_norm`` and ``elevation`` (degrees) are on it. The first two days are history only.
    """
    p = np.asarray(power_norm, float)
    cs = np.asarray(clearsky_norm, float)
    k = features.clear_sky_index(p, cs)
    stats = _day_stats(p, cs, k)
    days = len(p) // DAY
    t = slice(2 * DAY, days * DAY)
    y_ = slice(DAY, (days - 1) * DAY)  # yesterday, same time
    day_index = np.arange(2, days).repeat(DAY)
    yday, dby = stats[day_index - 1], stats[day_index - 2]
    k_day = yday[:, 0]
    valid = np.isfinite(k_day)
    k_day0 = np.nan_to_num(k_day, nan=1.0)
    k_dby = np.where(np.isfinite(dby[:, 0]), dby[:, 0], k_day0)
    k_y = np.where(np.isfinite(p[y_]), k[y_], k_day0)
    cs_t = cs[t]
    tt = times[t]
    persistence = np.nan_to_num(p[y_])
    smart = k_y * cs_t
    baseline = k_day0 * cs_t
    x = np.column_stack([
        cs_t, np.sin(np.radians(elevation[t])), features.calendar(tt, lon),
        persistence, k_y, k_day0, k_dby, np.nan_to_num(yday[:, 1]), np.nan_to_num(yday[:, 2], nan=1.0),
        np.nan_to_num(yday[:, 3], nan=0.5), baseline, smart,
    ]).astype(np.float32)
    assert x.shape[1] == N_FEATURES
    return DayAheadData(tt, x, p[t], persistence, smart, baseline, elevation[t] > 5, valid)


def prepare(power: pd.Series, plant: PlantConfig, capacity_w: float, start: str | pd.Timestamp,
            end: str | pd.Timestamp) -> DayAheadData:
    """Day-ahead rows for target days in [start, end) (UTC midnights); reads the two days before ``start``."""
    start = dataset._utc(start).normalize()
    end = dataset._utc(end).normalize()
    model = PlantModel(plant)
    times = pd.date_range(start - pd.Timedelta(days=2), end, freq=features.STEP, inclusive="left")
    p = power[~power.index.duplicated()].reindex(times).to_numpy() / capacity_w
    cs = model.clearsky_ac(times) / capacity_w
    elevation = 90 - model.solar_position(times)["zenith"].to_numpy()
    return build(times, p, cs, elevation, plant.location.lon)


def _quantiles(net: Any, x: Any, out: Any) -> Any:
    """P50 as a clear-sky index around the daily-index baseline, two positive widths, the caps, no power without sun."""
    import torch
    from torch import nn

    clearsky = x[:, CLEARSKY_COLUMN:CLEARSKY_COLUMN + 1]
    # a clear-sky index in clear-sky units keeps the output in scale across seasons
    p50 = torch.minimum(clearsky * out[:, 1:2] + x[:, BASELINE_COLUMN:BASELINE_COLUMN + 1], net.cap_p50 * clearsky)
    p10 = p50 - clearsky * nn.functional.softplus(out[:, 0:1])
    # cap_p90 >= cap_p50 >= P50's index, so the cap keeps P50 <= P90
    p90 = torch.minimum(p50 + clearsky * nn.functional.softplus(out[:, 2:3]), net.cap_p90 * clearsky)
    sun = (clearsky > 0).to(x.dtype)
    return torch.relu(torch.cat([p10, p50, p90], dim=1)) * sun


#: the day-ahead forecaster: ``features`` (N, N_FEATURES) in, ``quantiles`` (N, 3) out, capped by clear sky
DAY_AHEAD = forecasting.Forecaster(
    name=MODEL_NAME, outputs=3, quantiles_shape=(3,), head=_quantiles, candidates=CANDIDATES, default=(8, 30),
    train_command="edgeplane solar train --day-ahead", label="day-ahead ",
    buffers=(("cap_p50", NO_CAP), ("cap_p90", NO_CAP)))


def _usable(data: DayAheadData) -> np.ndarray:
    """The rows that are trained on and scored: daylight targets, measured, with complete inputs."""
    return np.asarray(data.valid & data.daylight & np.isfinite(data.target))


def fit(data: DayAheadData, *, epochs: int = DAY_AHEAD.default[1], hidden: int = DAY_AHEAD.default[0], seed: int = 0,
        log: Any = print) -> Any:
    """Train with the pinball loss on daylight rows whose inputs are complete; returns the torch module."""
    rows = _usable(data)
    return DAY_AHEAD.fit(data.x[rows], data.target[rows], hidden=hidden, epochs=epochs, seed=seed, log=log)


def select_and_fit(data: DayAheadData, *, seed: int = 0, epochs: int | None = None, hidden: int | None = None,
                   log: Any = print, weeks: tuple[int, int] = (4, 3)) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """Choose (hidden, epochs) and the caps on the intraday model's validation weeks of the span, then train
    the chosen size on all of it and give it the chosen caps.

    The split is :func:`edgeplane_solar.forecasting.validation_rows` on the target day (issued at its
    00:00 UTC, so the issue time is in the same ISO week). Each setting (or the one fixed by
    ``hidden``/``epochs``) is trained on the other weeks; on the validation weeks' daylight rows
    its caps are chosen (:func:`choose_caps`) and it is scored by the capped P50's nRMSE; the
    lowest wins. Validation targets are never trained on while choosing.
    """
    held = forecasting.validation_rows(data.times, weeks)
    check = forecasting.subset(data, held)
    if not _usable(check).any():
        raise ValueError(f"no usable validation rows ({forecasting.weeks_label(weeks)}) in the span: the caps and "
                         "the size are chosen on them; give a span of a month or more")

    def trial(h_units: int, n_epochs: int) -> dict[str, Any]:
        net = fit(forecasting.subset(data, ~held), epochs=n_epochs, hidden=h_units, seed=seed, log=log)
        uncapped = score(check, forecasting.predict(net, check.x))["nrmse"]
        cap_p50, cap_p90, cap_scores = choose_caps(net, check)
        r = score(check, forecasting.predict(net, check.x))
        return {"cap_p50": cap_p50, "cap_p90": cap_p90, "val_nrmse": round(r["nrmse"], 5),
                "val_nrmse_uncapped": round(uncapped, 5), "val_nmae": round(r["nmae"], 5),
                "val_coverage_p10_p90": round(r["coverage_p10_p90"], 4),
                "val_nrmse_daily_index": round(r["nrmse_daily_index"], 5), "val_n": r["n"], "caps": cap_scores}

    best, report = forecasting.select(DAY_AHEAD.settings(hidden, epochs), trial, "val_nrmse", log)
    net = fit(data, epochs=best["epochs"], hidden=best["hidden"], seed=seed, log=log)
    set_caps(net, best["cap_p50"], best["cap_p90"])
    chosen: dict[str, Any] = {"hidden": best["hidden"], "epochs": best["epochs"], "cap_p50": best["cap_p50"],
                              "cap_p90": best["cap_p90"], "validation_weeks": forecasting.weeks_label(weeks)}
    return chosen, net, report


def choose_caps(net: Any, data: DayAheadData) -> tuple[float, float, dict[str, dict[str, float]]]:
    """Give ``net`` the P50 cap with the lowest pinball loss at 0.5 on ``data``'s daylight rows, then the
    P90 cap with the lowest at 0.9; returns both caps and every cap's loss."""
    rows = _usable(data)
    x, y = data.x[rows], data.target[rows]

    def pinball(cap_p50: float, cap_p90: float, column: int, tau: float) -> float:
        set_caps(net, cap_p50, cap_p90)
        return forecasting.pinball(y, forecasting.predict(net, x)[:, column], tau)

    p50_loss = {c: pinball(c, NO_CAP, 1, 0.5) for c in CAPS_P50}
    cap_p50 = min(p50_loss, key=lambda c: p50_loss[c])
    p90_loss = {c: pinball(cap_p50, c, 2, 0.9) for c in CAPS_P90}
    cap_p90 = min(p90_loss, key=lambda c: p90_loss[c])
    set_caps(net, cap_p50, cap_p90)
    return cap_p50, cap_p90, {"pinball_p50": {str(c): round(v, 6) for c, v in p50_loss.items()},
                              "pinball_p90": {str(c): round(v, 6) for c, v in p90_loss.items()}}


def set_caps(net: Any, cap_p50: float, cap_p90: float) -> None:
    """Give a fitted network its caps (clear-sky indices); they become constants of its ONNX graph."""
    if not 0 < cap_p50 <= cap_p90:
        raise ValueError(f"caps P50 {cap_p50}, P90 {cap_p90}: need 0 < P50 cap <= P90 cap")
    net.cap_p50.fill_(cap_p50)
    net.cap_p90.fill_(cap_p90)


def score(data: DayAheadData, quantiles: np.ndarray | None) -> dict[str, float]:
    """nRMSE/nMAE of P50 (or of the daily-index baseline without a model), against 24 h persistence and
    smart persistence (yesterday's index at the same time), P10-P90 coverage; all on the same daylight rows."""
    baselines = {"persistence": data.persistence, "smart_persistence": data.smart_persistence,
                 "daily_index": data.baseline}
    return forecasting.point_scores(data.target, _usable(data), baselines, quantiles, fallback="daily_index")
