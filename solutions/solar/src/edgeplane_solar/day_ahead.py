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
Training (torch) is training-only, like :mod:`edgeplane_solar.training`.

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgeplane_solar import features
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
    n = (days - 2) * DAY
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
    solar_hour = (tt.hour + tt.minute / 60.0 + lon / 15.0).to_numpy() % 24
    doy = tt.day_of_year.to_numpy()
    persistence = np.nan_to_num(p[y_])
    smart = k_y * cs_t
    baseline = k_day0 * cs_t
    x = np.column_stack([
        cs_t, np.sin(np.radians(elevation[t])),
        np.sin(2 * np.pi * solar_hour / 24), np.cos(2 * np.pi * solar_hour / 24),
        np.sin(2 * np.pi * doy / 365.25), np.cos(2 * np.pi * doy / 365.25),
        persistence, k_y, k_day0, k_dby, np.nan_to_num(yday[:, 1]), np.nan_to_num(yday[:, 2], nan=1.0),
        np.nan_to_num(yday[:, 3], nan=0.5), baseline, smart,
    ]).astype(np.float32)
    assert x.shape[1] == N_FEATURES
    return DayAheadData(tt, x, p[t], persistence, smart, baseline, elevation[t] > 5, valid)


def prepare(power: pd.Series, plant: PlantConfig, capacity_w: float, start: str | pd.Timestamp,
            end: str | pd.Timestamp) -> DayAheadData:
    """Day-ahead rows for target days in [start, end) (UTC midnights); reads the two days before ``start``."""
    start = _utc(start).normalize()
    end = _utc(end).normalize()
    model = PlantModel(plant)
    times = pd.date_range(start - pd.Timedelta(days=2), end, freq=features.STEP, inclusive="left")
    p = power[~power.index.duplicated()].reindex(times).to_numpy() / capacity_w
    cs = model.clearsky_ac(times) / capacity_w
    elevation = 90 - model.solar_position(times)["zenith"].to_numpy()
    return build(times, p, cs, elevation, plant.location.lon)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _network(mean: np.ndarray, std: np.ndarray, hidden: int) -> Any:
    import torch
    from torch import nn

    class DayAheadForecaster(nn.Module):
        mean: torch.Tensor  # buffers (register_buffer), typed for the checker
        std: torch.Tensor
        cap_p50: torch.Tensor
        cap_p90: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
            self.register_buffer("cap_p50", torch.tensor(NO_CAP, dtype=torch.float32))
            self.register_buffer("cap_p90", torch.tensor(NO_CAP, dtype=torch.float32))
            self.body = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.body((x - self.mean) / self.std)
            clearsky = x[:, CLEARSKY_COLUMN:CLEARSKY_COLUMN + 1]
            # a clear-sky index in clear-sky units keeps the output in scale across seasons
            p50 = torch.minimum(clearsky * out[:, 1:2] + x[:, BASELINE_COLUMN:BASELINE_COLUMN + 1],
                                self.cap_p50 * clearsky)
            p10 = p50 - clearsky * nn.functional.softplus(out[:, 0:1])
            # cap_p90 >= cap_p50 >= P50's index, so the cap keeps P50 <= P90
            p90 = torch.minimum(p50 + clearsky * nn.functional.softplus(out[:, 2:3]), self.cap_p90 * clearsky)
            sun = (clearsky > 0).to(x.dtype)
            return torch.relu(torch.cat([p10, p50, p90], dim=1)) * sun

    return DayAheadForecaster()


def fit(data: DayAheadData, *, epochs: int = 30, hidden: int = 8, seed: int = 0, log: Any = print) -> Any:
    """Train with the pinball loss on daylight rows whose inputs are complete; returns the torch module."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    rows = data.valid & data.daylight & np.isfinite(data.target)
    x, y = data.x[rows], data.target[rows]
    if len(x) < 100:
        raise ValueError(f"only {len(x)} usable day-ahead training rows: give a longer period with power data")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    net = _network(mean, std, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-5)
    q = torch.tensor(features.QUANTILES, dtype=torch.float32)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), 256):
            b = perm[i:i + 256]
            err = yt[b].unsqueeze(-1) - net(xt[b])
            loss = torch.maximum(q * err, (q - 1) * err).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        if epoch % 10 == 0 or epoch == epochs - 1:
            log(f"day-ahead epoch {epoch + 1}/{epochs}: pinball {total / len(xt):.5f}")
    net.eval()
    return net


def select_and_fit(data: DayAheadData, *, seed: int = 0, epochs: int | None = None, hidden: int | None = None,
                   log: Any = print, weeks: tuple[int, int] = (4, 3)) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """Choose (hidden, epochs) and the caps on the intraday model's validation weeks of the span, then train
    the chosen size on all of it and give it the chosen caps.

    The split is :func:`edgeplane_solar.training.validation_rows` on the target day (issued at its
    00:00 UTC, so the issue time is in the same ISO week). Each setting (or the one fixed by
    ``hidden``/``epochs``) is trained on the other weeks; on the validation weeks' daylight rows
    its caps are chosen (:func:`choose_caps`) and it is scored by the capped P50's nRMSE; the
    lowest wins. Validation targets are never trained on while choosing.
    """
    from edgeplane_solar import training

    held = training.validation_rows(data.times, weeks)
    check = _subset(data, held)
    if not (check.valid & check.daylight & np.isfinite(check.target)).any():
        raise ValueError(f"no usable validation rows (ISO week % {weeks[0]} == {weeks[1]}) in the span: the caps and "
                         "the size are chosen on them; give a span of a month or more")
    candidates = [(hidden, epochs)] if hidden and epochs else \
        [c for c in CANDIDATES if (hidden is None or c[0] == hidden) and (epochs is None or c[1] == epochs)] or \
        [(hidden or 8, epochs or 30)]
    report: list[dict[str, Any]] = []
    for h_units, n_epochs in candidates:
        net = fit(_subset(data, ~held), epochs=n_epochs, hidden=h_units, seed=seed, log=log)
        uncapped = score(check, _predict(net, check.x))["nrmse"]
        cap_p50, cap_p90, cap_scores = choose_caps(net, check)
        r = score(check, _predict(net, check.x))
        entry = {"hidden": h_units, "epochs": n_epochs, "cap_p50": cap_p50, "cap_p90": cap_p90,
                 "val_nrmse": round(r["nrmse"], 5), "val_nrmse_uncapped": round(uncapped, 5),
                 "val_nmae": round(r["nmae"], 5), "val_coverage_p10_p90": round(r["coverage_p10_p90"], 4),
                 "val_nrmse_daily_index": round(r["nrmse_daily_index"], 5), "val_n": r["n"], "caps": cap_scores}
        log(f"candidate { {k: v for k, v in entry.items() if k != 'caps'} }")
        report.append(entry)
    best = min(report, key=lambda r: r["val_nrmse"])
    net = fit(data, epochs=best["epochs"], hidden=best["hidden"], seed=seed, log=log)
    set_caps(net, best["cap_p50"], best["cap_p90"])
    chosen: dict[str, Any] = {"hidden": best["hidden"], "epochs": best["epochs"], "cap_p50": best["cap_p50"],
                              "cap_p90": best["cap_p90"], "validation_weeks": f"ISO week % {weeks[0]} == {weeks[1]}"}
    return chosen, net, report


def choose_caps(net: Any, data: DayAheadData) -> tuple[float, float, dict[str, dict[str, float]]]:
    """Give ``net`` the P50 cap with the lowest pinball loss at 0.5 on ``data``'s daylight rows, then the
    P90 cap with the lowest at 0.9; returns both caps and every cap's loss."""
    rows = data.valid & data.daylight & np.isfinite(data.target)
    x, y = data.x[rows], data.target[rows]

    def pinball(cap_p50: float, cap_p90: float, column: int, tau: float) -> float:
        set_caps(net, cap_p50, cap_p90)
        e = y - _predict(net, x)[:, column]
        return float(np.mean(np.maximum(tau * e, (tau - 1) * e)))

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


def _subset(data: DayAheadData, rows: np.ndarray) -> DayAheadData:
    return DayAheadData(data.times[rows], data.x[rows], data.target[rows], data.persistence[rows],
                        data.smart_persistence[rows], data.baseline[rows], data.daylight[rows], data.valid[rows])


def _predict(net: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.tensor(x, dtype=torch.float32)).numpy()


def save(net: Any, registry_root: Path, version: str, provenance: dict[str, Any], replace: bool = True) -> Path:
    """Export and add to the model registry at ``registry_root`` as ``solar-day-ahead/<version>``."""
    from edgeplane_solar import training

    return training.save(net, registry_root, version, provenance, replace, name=MODEL_NAME, n_features=N_FEATURES)


def run_onnx(model_file: Path, x: np.ndarray) -> np.ndarray:
    """Quantiles (n, 3) for feature rows ``x`` on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    out = [session.run(["quantiles"], {"features": x[i:i + 8192]})[0] for i in range(0, len(x), 8192)]
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def score(data: DayAheadData, quantiles: np.ndarray | None) -> dict[str, float]:
    """nRMSE/nMAE of P50 (or of the daily-index baseline without a model), against 24 h persistence and
    smart persistence (yesterday's index at the same time), P10-P90 coverage; all on the same daylight rows."""
    rows = data.valid & data.daylight & np.isfinite(data.target)
    y = data.target[rows]

    def errors(pred: np.ndarray) -> tuple[float, float]:
        e = pred[rows] - y
        return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))

    rmse_p, mae_p = errors(data.persistence)
    rmse_sp, mae_sp = errors(data.smart_persistence)
    rmse_b, mae_b = errors(data.baseline)
    out = {"n": int(rows.sum()), "nrmse_persistence": rmse_p, "nmae_persistence": mae_p,
           "nrmse_smart_persistence": rmse_sp, "nmae_smart_persistence": mae_sp,
           "nrmse_daily_index": rmse_b, "nmae_daily_index": mae_b}
    if quantiles is not None:
        rmse, mae = errors(quantiles[:, 1])
        inside = (quantiles[rows, 0] <= y) & (y <= quantiles[rows, 2])
        out.update(nrmse=rmse, nmae=mae, coverage_p10_p90=float(inside.mean()))
    else:
        rmse, mae = rmse_b, mae_b
        out.update(nrmse=rmse, nmae=mae)
    out.update(skill_persistence=1 - rmse / rmse_p, skill_smart_persistence=1 - rmse / rmse_sp,
               skill_daily_index=1 - rmse / rmse_b)
    return out
