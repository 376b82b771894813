"""The intraday quantile forecaster (15 min .. 4 h): its head, its training rows and its selection.

The network is a small MLP that corrects smart persistence: for each horizon it outputs a
median offset from the smart-persistence forecast and two positive widths, so P10 <= P50 <= P90
by construction. It is trained with the pinball loss on daylight targets and exported with its
input normalisation inside the graph: input ``features`` (N, features.N_FEATURES) float32, output
``quantiles`` (N, 16, 3) float32, power over capacity. The network, fit loop, export, registry and
scoring are :mod:`edgeplane_solar.forecasting`'s, shared with the day-ahead forecaster; this module
configures them (:data:`INTRADAY`). torch is imported by training commands only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeplane_solar import features, forecasting
from edgeplane_solar.dataset import Prepared, Timed, prepare

#: weather latencies mixed into training rows, so the model learns what an old value is worth
TRAIN_DELAYS = ("0min", "15min", "30min", "1h", "2h")
#: the settings model selection chooses among (hidden units, epochs)
CANDIDATES = ((16, 15), (32, 30), (64, 30))

MODEL_NAME = "solar-forecast"
SMART_COLUMNS = slice(features.N_FEATURES - features.HORIZONS, features.N_FEATURES)
CLEARSKY_COLUMNS = slice(features.N_FEATURES - 2 * features.HORIZONS, features.N_FEATURES - features.HORIZONS)


def _quantiles(net: Any, x: Any, out: Any) -> Any:
    """Per horizon: a median offset from smart persistence and two positive widths, no power without sun."""
    import torch
    from torch import nn

    out = out.reshape(-1, features.HORIZONS, 3)
    smart = x[:, SMART_COLUMNS]
    clearsky = x[:, CLEARSKY_COLUMNS]
    p50 = smart + out[:, :, 1]
    p10 = p50 - nn.functional.softplus(out[:, :, 0])
    p90 = p50 + nn.functional.softplus(out[:, :, 2])
    # no power without sun, and never below zero
    sun = (clearsky > 0).to(x.dtype)
    return torch.relu(torch.stack([p10, p50, p90], dim=-1)) * sun.unsqueeze(-1)


#: the intraday forecaster: ``features`` (N, N_FEATURES) in, ``quantiles`` (N, HORIZONS, 3) out
INTRADAY = forecasting.Forecaster(
    name=MODEL_NAME, outputs=features.HORIZONS * 3, quantiles_shape=(features.HORIZONS, 3), head=_quantiles,
    candidates=CANDIDATES, default=(32, 30), train_command="edgeplane solar train")


def mixed_delays(power: Timed, weather: Timed | None, plant: Any, capacity_w: float, start: Any, end: Any,
                 seed: int = 0) -> Prepared:
    """Training rows whose weather inputs arrived with a latency drawn from :data:`TRAIN_DELAYS` (one per row)."""
    import pandas as pd

    base = prepare(power, weather, plant, capacity_w, start, end)
    if weather is None:
        return base
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(TRAIN_DELAYS), len(base.frame.times))
    cols = [features.WEATHER_INDEX_COLUMN, features.WEATHER_AGE_COLUMN]
    for i, delay in enumerate(TRAIN_DELAYS):
        if i == 0:
            continue
        other = prepare(power, weather, plant, capacity_w, start, end, weather_delay=pd.Timedelta(delay))
        rows = pick == i
        base.frame.x[np.ix_(rows, cols)] = other.frame.x[np.ix_(rows, cols)]
    return base


def select_and_fit(power: Timed, weather: Timed | None, plant: Any, capacity_w: float, start: Any, end: Any, *,
                   seed: int = 0, epochs: int | None = None, hidden: int | None = None, log: Any = print,
                   weeks: tuple[int, int] = (4, 3)) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """Choose (hidden, epochs) on held-out weeks of [start, end), then train the choice on the whole span.

    The score is the mean over horizons of validation nRMSE, averaged over weather on time and
    an hour late; the rows of a validation week are never trained on while choosing.
    """
    import pandas as pd

    from edgeplane_solar import evaluation

    train = mixed_delays(power, weather, plant, capacity_w, start, end, seed)
    held = forecasting.validation_rows(train.frame.times, weeks)
    settings = INTRADAY.settings(hidden, epochs)
    report: list[dict[str, Any]] = []
    if len(settings) > 1:
        checks = [prepare(power, weather, plant, capacity_w, start, end, weather_delay=pd.Timedelta(d))
                  for d in (("0min", "1h") if weather is not None else ("0min",))]
        labels = [f"{15 * h}min" for h in range(1, features.HORIZONS + 1)]

        def trial(h_units: int, n_epochs: int) -> dict[str, Any]:
            net = fit(train, epochs=n_epochs, hidden=h_units, seed=seed, log=log, rows=~held)
            scores = []
            for check in checks:
                q = forecasting.predict(net, check.frame.x)
                results = evaluation.score(forecasting.subset(check, held), q[held], labels)
                scores.append(float(np.mean([r["nrmse"] for r in results.values()])))
            return {"val_nrmse_mean": round(float(np.mean(scores)), 5),
                    "val_skill_1h_late_weather": round(float(results["60min"]["skill_smart_persistence"]), 4)}

        best, report = forecasting.select(settings, trial, "val_nrmse_mean", log)
        h_units, n_epochs = best["hidden"], best["epochs"]
    else:
        h_units, n_epochs = settings[0]
    net = fit(train, epochs=n_epochs, hidden=h_units, seed=seed, log=log)
    return {"hidden": h_units, "epochs": n_epochs, "validation_weeks": forecasting.weeks_label(weeks),
            "train_delays": list(TRAIN_DELAYS)}, net, report


def fit(data: Prepared, *, epochs: int = INTRADAY.default[1], hidden: int = INTRADAY.default[0], seed: int = 0,
        log: Any = print, rows: np.ndarray | None = None) -> Any:
    """Train on the rows of ``data`` (optionally only ``rows``) whose inputs are complete, each target masked to
    measured daylight steps; returns the torch module."""
    frame = data.frame
    mask = np.isfinite(data.targets) & data.daylight
    rows = frame.valid & mask.any(axis=1) & (True if rows is None else rows)
    return INTRADAY.fit(frame.x[rows], np.nan_to_num(data.targets[rows]), mask[rows], hidden=hidden, epochs=epochs,
                        seed=seed, log=log)
