"""Fitting a plant's orientation and size to its measured power (``edgeplane solar fit``).

Clear steps are found in the power itself, so no weather is needed and nothing about the sky
is assumed: a day is clear when its power curve is smooth (the second difference of at least
90 % of its daylight steps under 3 % of the day's peak) and reaches at least 60 % of the best
day's peak. On the clear days, for each candidate tilt and azimuth the ratio of measured power
to the plant's clear-sky plane-of-array irradiance (at the middle of each step, in UTC) should be
constant through the day; the candidate with the smallest coefficient of variation wins (5-degree
grid, then 1 degree around the best). The DC size reproduces the median ratio (with the
description's loss and efficiency); the AC size is the largest measured power unless given.

Only the span given is read: fit on the training span, never on the data you report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeplane_solar import features
from edgeplane_solar.dataset import DataError, Timed, grid, on_grid_average
from edgeplane_solar.plant import PlantConfig, PlantModel

SMOOTH = 0.03
CLEAR_SHARE = 0.9
MIN_PEAK = 0.6
DC_LOSSES = 0.08
EFFICIENCY = 0.96


@dataclass
class Fit:
    tilt: float
    azimuth: float
    dc_kw: float
    ac_kw: float
    capacity_w: float
    clear_days: int
    cv: float  # coefficient of variation of power / clear-sky POA on clear steps at the best orientation
    steps: int
    selection: str = "clear days"


def smooth_steps(power: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Boolean per step: a smooth, bright stretch (the step and both neighbours have small second differences
    and at least half the day's peak): clear moments on partly cloudy days, for short records."""
    days = len(power) // 96
    p = power[: days * 96].reshape(days, 96)
    up = elevation[: days * 96].reshape(days, 96) > 10
    out = np.zeros((days, 96), bool)
    for d in range(days):
        peak = np.nanmax(np.where(up[d], p[d], np.nan), initial=0)
        if not peak:
            continue
        second = np.full(96, np.inf)
        second[1:-1] = np.abs(p[d, 2:] - 2 * p[d, 1:-1] + p[d, :-2]) / peak
        calm = np.nan_to_num(second, nan=np.inf) < SMOOTH
        calm3 = calm & np.roll(calm, 1) & np.roll(calm, -1)
        out[d] = calm3 & up[d] & (np.nan_to_num(p[d]) > 0.5 * peak)
    result = np.zeros(len(power), bool)
    result[: days * 96] = out.ravel()
    return result


def clear_days(power: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Boolean per step: the step belongs to a clear day (``power`` and ``elevation`` on whole UTC days of 96 steps)."""
    days = len(power) // 96
    p = power[: days * 96].reshape(days, 96)
    up = elevation[: days * 96].reshape(days, 96) > 10
    peak = np.nanmax(np.where(up, p, np.nan), axis=1, initial=0) if days else np.zeros(0)
    best = np.nanmax(peak) if days else 0
    out = np.zeros((days, 96), bool)
    for d in range(days):
        s = up[d] & np.isfinite(p[d])
        if s.sum() < 8 or not peak[d] or peak[d] < MIN_PEAK * best:
            continue
        second = np.abs(p[d, 2:] - 2 * p[d, 1:-1] + p[d, :-2]) / peak[d]
        inner = s[1:-1] & s[2:] & s[:-2]
        if inner.sum() < 6:
            continue
        if (second[inner] < SMOOTH).mean() >= CLEAR_SHARE and up[d].sum() - s.sum() <= 2:
            out[d] = s
    result = np.zeros(len(power), bool)
    result[: days * 96] = out.ravel()
    return result


def _usable(series: Timed, ends: pd.DatetimeIndex, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Values on the grid, the clear steps to fit on, the number of clear days, and how they were chosen."""
    v = on_grid_average(series, ends)
    if not np.isfinite(v).any():
        raise DataError(f"{series.source}: no values between {ends[0]} and {ends[-1]} UTC; give a span the file covers")
    top = float(np.nanmax(v))
    clear = clear_days(v, elevation)
    # leave out clipped steps (the inverter's AC limit) and low sun, where the ratio is noise
    use = clear & (elevation > 15) & (v < 0.97 * top) & np.isfinite(v)
    n_days = int(clear.reshape(-1, 96).any(axis=1).sum()) if len(clear) >= 96 else 0
    how = "clear days"
    if use.sum() < 20:  # a short record: clear moments of partly cloudy days
        use = smooth_steps(v, elevation) & (elevation > 15) & (v < 0.97 * top) & np.isfinite(v)
        how = "smooth bright steps (too few clear days)"
    return v, use, n_days, how


def fit(power: Timed, lat: float, lon: float, alt: float, start: pd.Timestamp, end: pd.Timestamp, *,
        ac_kw: float | None = None, timezone: str = "UTC", orientation_sensor: Timed | None = None,
        tilt: float | None = None, azimuth: float | None = None) -> Fit:
    """Tilt, azimuth, DC and AC size from power in [start, end).

    ``orientation_sensor``: a plane-of-array irradiance sensor (mounted in the array's plane) to fit
    the orientation on instead of power (it does not clip, and has no inverter in between).
    ``tilt``/``azimuth``: fix the orientation (fit the size only).
    """
    start, end = start.floor("D"), end.ceil("D")
    ends = grid(start, end)
    mids = ends - features.STEP / 2
    probe = PlantModel(_plant(lat, lon, alt, timezone, 0, 180, 1.0, 1.0))
    solpos = probe.solar_position(mids)
    elevation = 90 - solpos["zenith"].to_numpy()
    cs = probe.location.get_clearsky(mids, model="ineichen", solar_position=solpos)
    p, p_use, n_days, how = _usable(power, ends, elevation)
    shape_series = orientation_sensor or power
    shape, use, shape_days, shape_how = (p, p_use, n_days, how) if orientation_sensor is None else \
        _usable(orientation_sensor, ends, elevation)
    if use.sum() < 20 and (tilt is None or azimuth is None):
        raise DataError(f"{shape_series.source}: only {shape_days} clear days between {start.date()} and {end.date()} "
                        f"({int(use.sum())} usable steps); the orientation cannot be fitted: give a longer span, a "
                        "plane-of-array sensor (--orientation-column), or --tilt and --azimuth")

    def clear_poa(t: float, a: float, rows: np.ndarray) -> np.ndarray:
        import pvlib

        sp = solpos[rows]
        poa = pvlib.irradiance.get_total_irradiance(t, a, sp["apparent_zenith"].to_numpy(), sp["azimuth"].to_numpy(),
                                                    cs["dni"].to_numpy()[rows], cs["ghi"].to_numpy()[rows],
                                                    cs["dhi"].to_numpy()[rows], model="isotropic")["poa_global"]
        return np.asarray(poa, float)

    def cv(t: float, a: float) -> float:
        poa = clear_poa(t, a, use)
        ok = poa > 200
        if ok.sum() < 10:
            return np.inf
        r = shape[use][ok] / poa[ok]
        return float(np.std(r) / np.mean(r))

    if tilt is not None and azimuth is not None:
        best = (cv(tilt, azimuth) if use.sum() >= 20 else float("nan"), float(tilt), float(azimuth))
        shape_how = "given orientation"
    else:
        best = (np.inf, 0.0, 180.0)
        for t in range(0, 91, 5) if tilt is None else [tilt]:
            for a in range(60, 301, 5) if azimuth is None else [azimuth]:
                c = cv(t, a)
                if c < best[0]:
                    best = (c, t, a)
        _, t0, a0 = best
        for t in np.arange(max(0, t0 - 5), min(90, t0 + 5) + 1) if tilt is None else [tilt]:
            for a in np.arange(a0 - 5, a0 + 6) if azimuth is None else [azimuth]:
                c = cv(float(t), float(a))
                if c < best[0]:
                    best = (c, float(t), float(a))
    c, t_best, a_best = best
    # the size from power on its own clear steps (or, for a short record, the sensor's)
    rows = p_use if p_use.sum() >= 10 else use & np.isfinite(p)
    poa = clear_poa(t_best, a_best, rows)
    ok = poa > 200
    if ok.sum() < 5:
        raise DataError(f"{power.source}: too few clear steps between {start.date()} and {end.date()} to size the "
                        "plant; give a longer span")
    ratio = float(np.median(p[rows][ok] / poa[ok]))
    dc_kw = ratio * 1000 / ((1 - DC_LOSSES) * EFFICIENCY) / 1000  # W per W/m2 -> kW at 1000 W/m2
    top = float(np.nanmax(p))
    return Fit(float(t_best), float(a_best), round(float(dc_kw), 3), ac_kw or round(top / 1000, 3), top,
               shape_days, round(float(c), 4), int(use.sum()),
               shape_how + (f" of {orientation_sensor.source}" if orientation_sensor is not None else ""))


def _plant(lat: float, lon: float, alt: float, timezone: str, tilt: float, azimuth: float, dc_kw: float,
           ac_kw: float, name: str = "plant") -> PlantConfig:
    return PlantConfig.model_validate({
        "location": {"lat": lat, "lon": lon, "alt": alt, "timezone": timezone},
        "inverters": {name: {"ac_kw": ac_kw, "dc_kw": dc_kw, "tilt": tilt, "azimuth": azimuth % 360,
                             "dc_losses": DC_LOSSES, "inverter_efficiency": EFFICIENCY}},
    })


def plant_from_fit(result: Fit, lat: float, lon: float, alt: float, timezone: str, name: str) -> PlantConfig:
    return _plant(lat, lon, alt, timezone, result.tilt, result.azimuth, result.dc_kw, result.ac_kw, name)


def centroid_offsets(power: Timed, plant: PlantConfig, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per solar day in [start, end): the centroid (power-weighted mean time) of measured power minus that of
    the plant's clear-sky power, in minutes, and whether the day is clear (smooth) or at least bright.

    A time base read wrong shows here as a jump at each clock change (about 60 min with daylight
    saving read as standard time); a wrong orientation as a slow seasonal drift.
    """
    ends = grid(start.floor("D"), end.ceil("D"))
    p = on_grid_average(power, ends)
    mids = ends - features.STEP / 2
    model = PlantModel(plant)
    cs = model.clearsky_ac(mids)
    elevation = 90 - model.solar_position(mids)["zenith"].to_numpy()
    clear = clear_days(p, elevation)
    solar_day = (mids + pd.Timedelta(hours=plant.location.lon / 15)).floor("D")
    minutes = (mids - mids[0]).total_seconds().to_numpy() / 60
    frame = pd.DataFrame({"day": solar_day, "t": minutes, "p": p, "cs": cs, "clear": clear})
    rows = []
    for day, g in frame.groupby("day"):
        have = np.isfinite(g.p.to_numpy())
        up = g.cs.to_numpy() > 0.02 * cs.max()
        if up.sum() < 8 or (have & up).sum() < 0.9 * up.sum():
            continue
        pp, cc, tt = np.nan_to_num(g.p.to_numpy()), g.cs.to_numpy(), g.t.to_numpy()
        if pp.sum() <= 0:
            continue
        offset = (tt * pp).sum() / pp.sum() - (tt * cc).sum() / cc.sum()
        rows.append({"day": day, "offset_min": offset, "clear": bool(g.clear.any()),
                     "energy_ratio": pp.sum() / cc.sum()})
    return pd.DataFrame(rows)


def clock_change_jumps(offsets: pd.DataFrame, zone: str) -> list[tuple[pd.Timestamp, float]]:
    """For each daylight-saving change of ``zone`` inside the days of ``offsets`` (from :func:`centroid_offsets`):
    how far the median daily centre of the bright days of the four weeks after it moved from the four weeks before.
    About 60 minutes means the power file's clock keeps daylight saving and is read as if it did not, or the reverse."""
    from edgeplane_solar.timebase import zone_info

    if offsets.empty:
        return []
    days = pd.DatetimeIndex(offsets["day"])
    bright = offsets[(offsets.energy_ratio > 0.9) & (offsets.energy_ratio < 1.15)].set_index("day").offset_min
    span = pd.date_range(days.min(), days.max(), freq="D")
    utc_offset = pd.Series([d.tz_convert(zone_info(zone)).utcoffset() for d in span], index=span)
    changes = utc_offset.index[1:][utc_offset.to_numpy()[1:] != utc_offset.to_numpy()[:-1]]
    out = []
    for change in changes:
        before = bright[(bright.index >= change - pd.Timedelta(weeks=4)) & (bright.index < change)]
        after = bright[(bright.index >= change) & (bright.index < change + pd.Timedelta(weeks=4))]
        if len(before) >= 2 and len(after) >= 2:
            out.append((change, float(after.median() - before.median())))
    return out
