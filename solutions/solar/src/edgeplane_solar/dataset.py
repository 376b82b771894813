"""Reading power and weather files (the formats of ``shared/data/pv``) into forecast features.

A file is parquet or CSV with a time column (or a datetime index): the first column whose name
looks like time (``measured_on``, ``index``, ``time``, ``timestamp``, ``datetime``) or that parses
as datetimes. Naive times are taken as UTC. Power is the first other numeric column (or
``--power-column``), in W; weather needs ``ghi`` (W/m2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeplane_solar import features
from edgeplane_solar.plant import PlantConfig, PlantModel

_TIME_NAMES = ("measured_on", "index", "time", "timestamp", "datetime", "date", "ts")


class DataError(ValueError):
    """A data file that cannot be used; the message names the file and the fix."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A file as a DataFrame indexed by UTC time."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    if not isinstance(df.index, pd.DatetimeIndex):
        column = next((c for c in df.columns if str(c).lower() in _TIME_NAMES), None)
        if column is None:
            for c in df.columns:
                if df[c].dtype == object or "datetime" in str(df[c].dtype):
                    try:
                        pd.to_datetime(df[c].head(20), utc=True)
                    except (ValueError, TypeError):
                        continue
                    column = c
                    break
        if column is None:
            raise DataError(f"{path}: no time column found; name one of {', '.join(_TIME_NAMES)} or use a datetime index")
        df = df.set_index(pd.to_datetime(df[column], utc=True)).drop(columns=[column])
    index = df.index
    df.index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return df.sort_index()


def load_power(path: str | Path, column: str | None = None) -> pd.Series:
    df = read_table(path)
    if column is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        if not numeric:
            raise DataError(f"{path}: no numeric power column; pass --power-column")
        column = numeric[0]
    elif column not in df.columns:
        raise DataError(f"{path}: no column {column!r}; columns are {', '.join(map(str, df.columns))}")
    return df[column].astype(float).clip(lower=0)


def load_weather(path: str | Path) -> pd.DataFrame:
    df = read_table(path)
    if "ghi" not in df.columns:
        raise DataError(f"{path}: weather needs a 'ghi' column (W/m2); columns are {', '.join(map(str, df.columns))}")
    return df


@dataclass
class Prepared:
    frame: features.FeatureFrame
    targets: np.ndarray  # (n, HORIZONS) measured normalised power at t + h
    daylight: np.ndarray  # (n, HORIZONS) sun above 5 degrees at t + h
    capacity_w: float
    power: np.ndarray | None = None  # (n,) measured normalised power at t
    clearsky: np.ndarray | None = None  # (n,) normalised clear-sky power at t
    sun_up: np.ndarray | None = None  # (n,) sun above 5 degrees at t


def prepare(power: pd.Series, weather: pd.DataFrame | None, plant: PlantConfig, capacity_w: float,
            start: str | pd.Timestamp, end: str | pd.Timestamp) -> Prepared:
    """Features, targets and daylight for issue times in [start, end) (UTC, 15-min grid)."""
    model = PlantModel(plant)
    start, end = _utc(start), _utc(end)
    times = pd.date_range(start, end, freq=features.STEP, inclusive="left")
    extended = pd.date_range(start, periods=len(times) + features.HORIZONS, freq=features.STEP)
    # a 15-min average labelled at its end is the freshest value known at its label
    p = power[~power.index.duplicated()].reindex(extended).to_numpy() / capacity_w
    cs = model.clearsky_ac(extended) / capacity_w
    solpos = model.solar_position(extended)
    cos_z = np.cos(np.radians(solpos["zenith"].to_numpy()))
    ghi_index = None
    if weather is not None:
        ghi = weather["ghi"][~weather.index.duplicated()].reindex(extended, method="ffill", limit=2).to_numpy()
        cs_ghi = model.location.get_clearsky(extended, solar_position=solpos)["ghi"].to_numpy()
        ghi_index = np.where(cs_ghi > 50, ghi / np.maximum(cs_ghi, 1.0), 1.0)[: len(times)]
    frame = features.build(times, p, cs, cos_z[: len(times)], ghi_index, plant.location.lon)
    tgt = features.targets(p, len(times))
    elevation = 90 - solpos["zenith"].to_numpy()
    daylight = np.stack([elevation[h:h + len(times)] > 5 for h in range(1, features.HORIZONS + 1)], axis=1)
    n = len(times)
    return Prepared(frame, tgt, daylight, capacity_w, p[:n], cs[:n], elevation[:n] > 5)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
