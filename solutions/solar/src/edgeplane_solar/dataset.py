"""Reading power and weather files into UTC known-at series, and onto the forecast grid.

A file is parquet or CSV with a time column (or a datetime index). The time column is the first
one whose values parse as datetimes (pandas 3 stores text as ``str``, not ``object``, so this
tries to parse rather than asking the dtype). Its time base is declared
(:class:`~edgeplane_solar.timebase.TimeBase`): every timestamp becomes a UTC *known-at* time
here, and nothing above this module sees wall-clock time.

Checks, each a :class:`DataError` naming the file, the column and the fix: no time column,
an unknown zone, naive times without a declared zone, duplicate timestamps, a power column in kW
read as W (its name says kW, or its values are 1000x off the plant's capacity), no irradiance
column, no overlap between power and weather. Gaps are reported (:attr:`Timed.notes`), never
filled: a step without data is not scored and does not feed a feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgeplane.errors import EdgeplaneError
from edgeplane_solar import features
from edgeplane_solar.plant import PlantConfig, PlantModel
from edgeplane_solar.timebase import TimeBase, TimeBaseError, to_known_at

#: how stale the latest weather value may be before it counts as missing
WEATHER_MAX_AGE = pd.Timedelta(hours=3)


class DataError(EdgeplaneError, ValueError):
    """A data file that cannot be used; the message names the file, the column and the fix."""


@dataclass
class Timed:
    """A series on UTC known-at times, with what it averages over and what was noticed reading it."""

    values: pd.Series  # index: UTC known-at times, sorted, unique
    interval: pd.Timedelta  # 0 for instants; else the averaged interval that ends at each known-at time
    source: str  # "file: column"
    notes: list[str] = field(default_factory=list)

    @property
    def representative(self) -> pd.DatetimeIndex:
        """The instant each value stands for: the middle of its interval (or the instant itself)."""
        return pd.DatetimeIndex(self.values.index - self.interval / 2)

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        v = self.values.dropna()
        if v.empty:
            raise DataError(f"{self.source}: no values")
        return v.index[0], v.index[-1]


def _time_column(df: pd.DataFrame, path: Path) -> str | None:
    """The first column whose first values all parse as datetimes (numbers do not count)."""
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            return str(c)
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        head = col.dropna().head(50)
        if head.empty:
            continue
        try:
            parsed = pd.to_datetime(head.astype(str), errors="coerce", format="mixed")
        except (ValueError, TypeError):
            continue
        if parsed.notna().all():
            return str(c)
    return None


def read_table(path: str | Path) -> tuple[pd.DataFrame, pd.Series]:
    """A file's columns and its parsed timestamps (not yet in a time base)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's problem, said with its name
        raise DataError(f"{path}: cannot be read as {'parquet' if path.suffix in ('.parquet', '.pq') else 'CSV'} ({e})") from None
    if isinstance(df.index, pd.DatetimeIndex):
        return df.reset_index(drop=True), pd.Series(df.index)
    column = _time_column(df, path)
    if column is None:
        raise DataError(f"{path}: no column of timestamps found (columns: {', '.join(map(str, df.columns))}); "
                        "add one in ISO 8601, e.g. 2012-06-01T12:00")
    raw = df[column]
    times = raw if pd.api.types.is_datetime64_any_dtype(raw) else pd.to_datetime(raw.astype(str), format="mixed")
    return df.drop(columns=[column]), times.reset_index(drop=True)


def _timed(path: Path, column: str, values: pd.Series, times: pd.Series, base: TimeBase) -> Timed:
    where = f"{path}: column {column!r}"
    try:
        known_at, interval = to_known_at(times, base, where=f"{path}: time column")
    except TimeBaseError as e:
        raise DataError(str(e)) from None
    series = pd.Series(np.asarray(values, dtype=float), index=known_at)
    notes = []
    dropped = int(series.index.isna().sum())
    if dropped:
        notes.append(f"{where}: {dropped} timestamps do not exist or are ambiguous in {base.zone} (clock changes); "
                     "left out")
        series = series[series.index.notna()]
    if series.index.has_duplicates:
        dups = series.index[series.index.duplicated()].unique()[:3]
        raise DataError(f"{where}: duplicate timestamps after conversion to UTC ({', '.join(map(str, dups))} ...); "
                        "remove the duplicates, or declare the zone the clock keeps (a repeated hour in autumn "
                        "means wall time with daylight saving, e.g. America/Denver)")
    series = series.sort_index()
    steps = series.index.to_series().diff().dropna()
    if len(steps):
        step = steps.median()
        big = steps[steps > 1.5 * step]
        if len(big):
            missing = int((big / step).round().sum() - len(big))
            notes.append(f"{where}: {len(big)} gaps ({missing} missing steps of {step}, the longest "
                         f"{big.max()} ending {big.idxmax()}); steps without data are not scored")
    nan = int(series.isna().sum())
    if nan:
        notes.append(f"{where}: {nan} empty values; not scored")
    return Timed(series, interval, where, notes)


def load_power(path: str | Path, column: str | None = None, time: TimeBase | None = None,
               unit: str | None = None) -> Timed:
    """AC power in W on UTC known-at times. ``unit``: 'W' or 'kW' (None: W, refused if the name says kW)."""
    path = Path(path)
    df, times = read_table(path)
    if column is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        preferred = [c for c in numeric if "ac_power" in str(c).lower()] or [c for c in numeric if "power" in str(c).lower()]
        if not (preferred or numeric):
            raise DataError(f"{path}: no numeric power column; name one with --power-column")
        column = str((preferred or numeric)[0])
    elif column not in df.columns:
        raise DataError(f"{path}: no column {column!r}; columns are {', '.join(map(str, df.columns))}")
    if unit is None:
        if "kw" in column.lower().replace("kwh", ""):
            raise DataError(f"{path}: column {column!r} looks like kW (its name says so) and power is read in W; "
                            "declare --power-unit kW (or choose a W column with --power-column)")
        unit = "W"
    if unit not in ("W", "kW"):
        raise DataError(f"{path}: column {column!r}: power unit {unit!r}; use W or kW")
    values = pd.to_numeric(df[column], errors="coerce") * (1000.0 if unit == "kW" else 1.0)
    timed = _timed(path, column, values, times, time or TimeBase())
    timed.values = timed.values.clip(lower=0)
    return timed


def check_capacity(power: Timed, capacity_w: float) -> None:
    """Refuse power whose scale is 1000x off the plant's capacity (a kW column read as W, or the reverse)."""
    top = float(np.nanpercentile(power.values.to_numpy(), 99.5)) if power.values.notna().any() else 0.0
    if top > 0 and top < capacity_w / 200:
        raise DataError(f"{power.source}: its largest values (~{top:.4g}) are under 0.5 % of the plant's capacity "
                        f"({capacity_w:.0f} W): the column looks like kW; declare --power-unit kW")
    if top > capacity_w * 50:
        raise DataError(f"{power.source}: its largest values (~{top:.4g}) are over 50x the plant's capacity "
                        f"({capacity_w:.0f} W): check the capacity, or --power-unit (the column may be W read as kW)")


def load_weather(path: str | Path, time: TimeBase | None = None, irradiance: str | None = None) -> Timed:
    """Measured irradiance (W/m2) on UTC known-at times, named ``ghi`` or ``poa`` by what it measures.

    ``irradiance``: a column name; default ``ghi``, else the first column whose name has ``poa``.
    A name with ``poa`` in it is plane-of-array irradiance (what a plant's own sensor measures).
    """
    path = Path(path)
    df, times = read_table(path)
    if irradiance is None:
        candidates = [c for c in df.columns if str(c).lower() == "ghi"] or \
                     [c for c in df.columns if "poa" in str(c).lower() and "ref" not in str(c).lower()]
        if not candidates:
            raise DataError(f"{path}: weather needs an irradiance column ('ghi', or one with 'poa' in its name, in "
                            f"W/m2); columns are {', '.join(map(str, df.columns))}; or name it with --irradiance-column")
        irradiance = str(candidates[0])
    elif irradiance not in df.columns:
        raise DataError(f"{path}: no column {irradiance!r}; columns are {', '.join(map(str, df.columns))}")
    values = pd.to_numeric(df[irradiance], errors="coerce")
    timed = _timed(path, irradiance, values, times, time or TimeBase())
    timed.values = timed.values.rename("poa" if "poa" in irradiance.lower() else "ghi")
    return timed


def overlap(power: Timed, weather: Timed | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The UTC span both inputs cover; a clear error when they do not meet."""
    p0, p1 = power.span()
    if weather is None:
        return p0, p1
    w0, w1 = weather.span()
    start, end = max(p0, w0), min(p1, w1)
    if start >= end:
        raise DataError(f"{power.source} covers {p0} .. {p1} UTC and {weather.source} covers {w0} .. {w1} UTC: no "
                        "overlap; give files of the same period (or check their declared time zones)")
    return start, end


@dataclass
class Prepared:
    frame: features.FeatureFrame
    targets: np.ndarray  # (n, HORIZONS) measured normalised power over the step ending t + h
    daylight: np.ndarray  # (n, HORIZONS) sun above 5 degrees in the middle of that step
    capacity_w: float
    power: np.ndarray | None = None  # (n,) latest normalised power known at t
    clearsky: np.ndarray | None = None  # (n,) normalised clear-sky power of the step ending t
    sun_up: np.ndarray | None = None  # (n,) sun above 5 degrees at t


def grid(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Issue times: the 15-min UTC grid in [start, end)."""
    first = start.ceil(features.STEP)
    return pd.date_range(first, end, freq=features.STEP, inclusive="left")


def latest_known(series: pd.Series, at: pd.DatetimeIndex, max_age: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """For each time in ``at``: the latest value of ``series`` (indexed by known-at time) known then, and its known-at time.

    NaN (and NaT) where nothing was known within ``max_age``.
    """
    s = series.dropna()
    if s.empty:
        return np.full(len(at), np.nan), np.full(len(at), np.datetime64("NaT"), "datetime64[ns]")
    known = s.index.as_unit("ns").asi8
    pos = np.searchsorted(known, at.as_unit("ns").asi8, side="right") - 1
    ok = pos >= 0
    value = np.where(ok, s.to_numpy()[np.maximum(pos, 0)], np.nan)
    when = np.where(ok, known[np.maximum(pos, 0)], np.iinfo(np.int64).min)
    stale = ~ok | (at.as_unit("ns").asi8 - when > max_age.value)
    value[stale] = np.nan
    return value, np.where(stale, np.datetime64("NaT"), when.astype("datetime64[ns]"))


def on_grid_average(power: Timed, step_ends: pd.DatetimeIndex) -> np.ndarray:
    """Power over each 15-min step ending at ``step_ends``: the value itself when the file is on the grid,
    else interpolated between the neighbouring values' representative times (for scoring only: it may
    use a value known a few minutes after the step's end)."""
    values = power.values
    on_grid = (values.index.as_unit("ns").asi8 % features.STEP.value == 0).mean() >= 0.9
    if on_grid and power.interval == features.STEP:
        return values.reindex(step_ends).to_numpy()
    rep = pd.Series(values.to_numpy(), index=power.representative).dropna()
    mids = step_ends - features.STEP / 2
    x = rep.index.as_unit("ns").asi8.astype(float)
    y = np.interp(mids.as_unit("ns").asi8.astype(float), x, rep.to_numpy(), left=np.nan, right=np.nan)
    # no interpolation across a gap: both neighbours within 1.5 steps of the middle
    pos = np.searchsorted(x, mids.as_unit("ns").asi8.astype(float))
    lo = np.clip(pos - 1, 0, len(x) - 1)
    hi = np.clip(pos, 0, len(x) - 1)
    limit = 1.5 * features.STEP.value
    near = (np.abs(x[lo] - mids.as_unit("ns").asi8) <= limit) & (np.abs(x[hi] - mids.as_unit("ns").asi8) <= limit)
    return np.where(near, y, np.nan)


def prepare(power: Timed, weather: Timed | None, plant: PlantConfig, capacity_w: float,
            start: str | pd.Timestamp, end: str | pd.Timestamp, *,
            weather_delay: pd.Timedelta = pd.Timedelta(0)) -> Prepared:
    """Features, targets and daylight for issue times on the 15-min UTC grid in [start, end).

    At issue time t the features see power known at t (the latest step that ended by t) and the
    weather value known at t: its known-at time plus ``weather_delay`` (the weather link's latency)
    no later than t. Targets are the steps ending t + 15 min .. t + 4 h.
    """
    model = PlantModel(plant)
    times = grid(_utc(start), _utc(end))
    n = len(times)
    extended = pd.date_range(times[0], periods=n + features.HORIZONS, freq=features.STEP) if n else times
    # power known at t: the latest value whose interval ended by t, not older than one step
    p_known, p_when = latest_known(power.values, times, features.STEP)
    p_known = p_known / capacity_w
    # the clear-sky power of the interval each known value stands for (a gap: any time will do, its power is NaN)
    p_rep = (pd.DatetimeIndex(p_when).tz_localize("UTC") - power.interval / 2).fillna(times[0]) if n else times
    cs_at_power = model.clearsky_ac(p_rep) / capacity_w
    # clear-sky power of each step ending at t + h, at the step's middle
    mids = extended - features.STEP / 2
    cs_steps = model.clearsky_ac(mids) / capacity_w
    future_cs = np.stack([cs_steps[h:h + n] for h in range(1, features.HORIZONS + 1)], axis=1) if n else \
        np.zeros((0, features.HORIZONS))
    solpos = model.solar_position(times)
    cos_z = np.cos(np.radians(solpos["zenith"].to_numpy()))
    w_index, w_age = weather_index(model, weather, times, weather_delay)
    frame = features.build(times, p_known, cs_at_power, future_cs, cos_z, w_index, w_age, plant.location.lon)
    p_steps = on_grid_average(power, extended) / capacity_w
    tgt = features.targets(p_steps, n)
    elevation = 90 - model.solar_position(mids)["zenith"].to_numpy()
    daylight = np.stack([elevation[h:h + n] > 5 for h in range(1, features.HORIZONS + 1)], axis=1) if n else \
        np.zeros((0, features.HORIZONS), bool)
    sun_up = (90 - solpos["zenith"].to_numpy()) > 5
    return Prepared(frame, tgt, daylight, capacity_w, p_known, cs_steps[:n], sun_up)


def weather_index(model: PlantModel, weather: Timed | None, times: pd.DatetimeIndex,
                  delay: pd.Timedelta = pd.Timedelta(0)) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The clear-sky index of the latest irradiance value known at each time, and its age in hours.

    Known = its known-at time plus ``delay`` no later than the issue time. GHI is divided by
    Ineichen clear-sky GHI, plane-of-array irradiance by the plant's clear-sky POA, each at the
    instant the value stands for.
    """
    if weather is None or not len(times):
        return None, None
    arrived = weather.values.copy()
    arrived.index = arrived.index + delay
    value, when = latest_known(arrived, times, WEATHER_MAX_AGE)
    have = ~np.isnat(when)
    known_ns = np.where(have, when.astype(np.int64), times.as_unit("ns").asi8)
    stands_for = pd.DatetimeIndex(known_ns.astype("datetime64[ns]")).tz_localize("UTC") - delay - weather.interval / 2
    solpos = model.solar_position(stands_for)
    if weather.values.name == "poa":
        first = next(iter(model.config.inverters))
        clear = model.clearsky_poa(stands_for, first, solpos)
    else:
        clear = model.location.get_clearsky(stands_for, solar_position=solpos)["ghi"].to_numpy()
    index = np.where(have & (clear > 50), value / np.maximum(clear, 1.0), np.nan)
    # the age of what the value describes (a late value is old on arrival, and its timestamp says so)
    age_h = np.where(have, (times.as_unit("ns").asi8 - stands_for.as_unit("ns").asi8) / 3.6e12, np.nan)
    return index, age_h


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
