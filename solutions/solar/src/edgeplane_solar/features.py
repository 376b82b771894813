"""Forecast features on the clear-sky index: one function shared by training, backtest and the live solution.

Time runs in 15-minute steps on UTC issue times. Every input is known at the issue time ``t``:

* power: the latest 15-min step that *ended* by ``t`` and the 4 steps before it (a measured
  interval is known at its end), normalised by capacity and as a clear-sky index against the
  clear-sky power of the same interval; the last hour's mean and variability of the index;
* weather: the clear-sky index of the latest irradiance value that had *arrived* by ``t`` (the
  plant's own sensor or station, live), and its age in hours (a late value says it is late);
* astronomy, known for any time in advance: the sun's position at ``t``, time of day and year,
  and for each horizon ``h`` (1..16 steps: 15 min to 4 h) the plant's clear-sky power over the
  step ending ``t + h`` and the smart-persistence forecast for it.

The model answers, per horizon, P10/P50/P90 of the power over the step ending ``t + h``, divided
by capacity. A property test (``tests/test_known_at_issue_time.py``) changes values that become
known after ``t`` and checks that the features and the forecast at ``t`` do not move.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

STEP = pd.Timedelta(minutes=15)
HORIZONS = 16  # steps of 15 min: 15 min .. 4 h
LAGS = 5  # power at t, t-15min, ..., t-60min
QUANTILES = (0.1, 0.5, 0.9)
K_MAX = 1.5
LOW_SUN = 0.02  # clear-sky power below this fraction of capacity: the index means nothing
MAX_WEATHER_AGE_H = 3.0  # weather older than this (or none) is 'unknown': index 1, age 3 h
WEATHER_INDEX_COLUMN = LAGS * 2 + 2
WEATHER_AGE_COLUMN = WEATHER_INDEX_COLUMN + 1


@dataclass
class FeatureFrame:
    """Features (one row per issue time), the baselines, and what is needed to score them."""

    times: pd.DatetimeIndex
    x: np.ndarray  # (n, n_features) float32
    persistence: np.ndarray  # (n, HORIZONS) normalised power
    smart_persistence: np.ndarray  # (n, HORIZONS)
    clearsky: np.ndarray  # (n, HORIZONS) clear-sky power at t + h, normalised
    valid: np.ndarray  # (n,) the issue-time inputs are complete


def clear_sky_index(power: np.ndarray, clearsky: np.ndarray) -> np.ndarray:
    """P / P_clear, clipped to 0..1.5; 1.0 where the sun is too low for the ratio to mean anything."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(clearsky > LOW_SUN, power / np.where(clearsky > 0, clearsky, 1.0), 1.0)
    return np.clip(np.nan_to_num(k, nan=np.nan), 0.0, K_MAX)


def calendar(times: pd.DatetimeIndex, lon: float) -> np.ndarray:
    """Time of day (local solar time at longitude ``lon``) and of year as sine and cosine: (n, 4), known in advance."""
    solar_hour = (times.hour + times.minute / 60.0 + lon / 15.0).to_numpy() % 24
    doy = times.day_of_year.to_numpy()
    return np.column_stack([np.sin(2 * np.pi * solar_hour / 24), np.cos(2 * np.pi * solar_hour / 24),
                            np.sin(2 * np.pi * doy / 365.25), np.cos(2 * np.pi * doy / 365.25)])


def build(times: pd.DatetimeIndex, power_norm: np.ndarray, power_clearsky: np.ndarray, future_clearsky: np.ndarray,
          cos_zenith: np.ndarray, weather_index: np.ndarray | None, weather_age_h: np.ndarray | None,
          lon: float) -> FeatureFrame:
    """Features for every time of a regular 15-min UTC grid ``times`` (issue times).

    On ``times``: ``power_norm`` (the latest step known at t, over capacity; NaN: a gap),
    ``power_clearsky`` (clear-sky power of that same step), ``cos_zenith``, ``weather_index`` and
    ``weather_age_h`` (None or NaN: no weather known). ``future_clearsky`` (n, HORIZONS): clear-sky
    power of the steps ending t + h. Row i's lags are rows i-1 .. i-4, so a row depends on nothing
    after its own time.
    """
    n = len(times)
    p = np.asarray(power_norm, dtype=float)[:n]
    cs_p = np.asarray(power_clearsky, dtype=float)[:n]
    k = clear_sky_index(p, cs_p)

    def lagged(a: np.ndarray, lag: int) -> np.ndarray:
        out = np.full(n, np.nan)
        out[lag:] = a[: n - lag] if lag else a[:n]
        return out

    p_lags = np.stack([lagged(p, j) for j in range(LAGS)], axis=1)
    k_lags = np.stack([lagged(k, j) for j in range(LAGS)], axis=1)
    valid = np.isfinite(p_lags).all(axis=1)
    with warnings.catch_warnings():  # an all-gap hour is expected; it becomes the neutral value below
        warnings.simplefilter("ignore", RuntimeWarning)
        k_mean = np.nanmean(k_lags, axis=1) if n else np.zeros(0)
        k_std = np.nanstd(k_lags, axis=1) if n else np.zeros(0)
    future_cs = np.asarray(future_clearsky, dtype=float).reshape(n, HORIZONS)
    k0 = np.nan_to_num(k, nan=1.0)
    smart = k0[:, None] * future_cs
    persistence = np.repeat(np.nan_to_num(p)[:, None], HORIZONS, axis=1)
    if weather_index is None:
        wi, age = np.full(n, 1.0), np.full(n, MAX_WEATHER_AGE_H)
    else:
        wi_raw = np.asarray(weather_index, float)
        known = np.isfinite(wi_raw)
        wi = np.clip(np.where(known, wi_raw, 1.0), 0, K_MAX)
        age_raw = np.asarray(weather_age_h, float) if weather_age_h is not None else np.zeros(n)
        age = np.where(known, np.clip(np.nan_to_num(age_raw, nan=MAX_WEATHER_AGE_H), 0, MAX_WEATHER_AGE_H),
                       MAX_WEATHER_AGE_H)
    x = np.column_stack([
        np.nan_to_num(p_lags), np.nan_to_num(k_lags, nan=1.0), np.nan_to_num(k_mean, nan=1.0),
        np.nan_to_num(k_std), wi, age, np.asarray(cos_zenith, float)[:n], calendar(times, lon), future_cs, smart,
    ]).astype(np.float32)
    return FeatureFrame(times, x, persistence, smart, future_cs, valid)


N_FEATURES = LAGS * 2 + 2 + 2 + 1 + 4 + 2 * HORIZONS


def targets(power_norm: np.ndarray, n: int) -> np.ndarray:
    """Measured normalised power of the steps ending ``t + h`` (``power_norm`` on the grid extended by
    HORIZONS steps) for each issue time: (n, HORIZONS), NaN where unknown."""
    p = np.asarray(power_norm, dtype=float)
    return np.stack([p[h:h + n] for h in range(1, HORIZONS + 1)], axis=1)


def horizon_steps(label: str) -> int:
    """'15min' -> 1, '1h' -> 4, '4h' -> 16; a clear error for anything else."""
    td = pd.Timedelta(label)
    steps = td / STEP
    if steps != int(steps) or not 1 <= steps <= HORIZONS:
        raise ValueError(f"horizon {label!r}: use multiples of 15min from 15min to 4h, e.g. 15min,1h,4h")
    return int(steps)
