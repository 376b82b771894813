"""Validation-only trials of extra forecast inputs for system 50 (issue 16, item 2). Reads 2011 only.

Each trial trains the shipped network shape on 2011 without its validation weeks (ISO week % 4 == 3,
the weeks ``edgeplane solar train`` selects on) and scores those weeks, with weather on time and an
hour late. Extra inputs are put in front of the shipped 51 (the network reads smart persistence and
clear-sky power from the last columns). Every extra input is known at issue time: it is built from
rows at or before the row's own time, under that row's weather latency.

    python solutions/solar/experiments/validation_features.py        # about 5 min on 2 busy cores
    python solutions/solar/experiments/validation_features.py --paired-seeds 3 4 5 6   # none vs the 30-min change

Prints one JSON line per trial. Nothing here is shipped: the shipped model changes only when a
trial beats it on validation by more than the spread between seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Iterator

import numpy as np
import pandas as pd

from edgeplane_solar import dataset, evaluation, features, forecasting, reference, training
from edgeplane_solar.cli import _load_inputs

LABELS = [f"{15 * h}min" for h in range(1, features.HORIZONS + 1)]


def k_window(frame: features.FeatureFrame, steps: int) -> np.ndarray:
    """Mean and standard deviation of the power's clear-sky index over the last ``steps`` known steps."""
    k = frame.x[:, features.LAGS].astype(float)  # the index of the latest known step
    lags = np.stack([np.concatenate([np.full(j, 1.0), k[:len(k) - j]]) for j in range(steps)], axis=1)
    return np.column_stack([lags.mean(1), lags.std(1)])


def weather_change(frame: features.FeatureFrame) -> np.ndarray:
    """The station's clear-sky index now minus the one known 30 min ago (same latency)."""
    wi = frame.x[:, features.WEATHER_INDEX_COLUMN].astype(float)
    return (wi - np.concatenate([np.full(2, 1.0), wi[:-2]]))[:, None]


EXTRAS = {"none": lambda f: np.zeros((len(f.times), 0)),
          "k_3h_6h": lambda f: np.column_stack([k_window(f, 12), k_window(f, 24)]),
          "k_3h": lambda f: k_window(f, 12),
          "weather_change_30min": weather_change}


def extend(prep: dataset.Prepared, cols: np.ndarray) -> dataset.Prepared:
    f = prep.frame
    frame = features.FeatureFrame(f.times, np.concatenate([cols.astype(np.float32), f.x], axis=1), f.persistence,
                                  f.smart_persistence, f.clearsky, f.valid)
    return dataset.Prepared(frame, prep.targets, prep.daylight, prep.capacity_w)


@contextlib.contextmanager
def n_features(n: int) -> Iterator[None]:
    saved = features.N_FEATURES, training.SMART_COLUMNS, training.CLEARSKY_COLUMNS
    features.N_FEATURES = n
    training.SMART_COLUMNS = slice(n - features.HORIZONS, n)
    training.CLEARSKY_COLUMNS = slice(n - 2 * features.HORIZONS, n - features.HORIZONS)
    try:
        yield
    finally:
        features.N_FEATURES, training.SMART_COLUMNS, training.CLEARSKY_COLUMNS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paired-seeds", type=int, nargs="*", default=None,
                        help="only the shipped inputs and the station's 30-min change, on these seeds")
    args = parser.parse_args()
    t0 = time.time()
    described = reference.system50()
    p, w = _load_inputs(described, None, None, None, None, None, None, None, False)
    plant, cap = described.plant, described.capacity_w
    start, end = reference.TRAIN
    assert pd.Timestamp(end) <= pd.Timestamp("2012-01-01"), "validation trials never read the test year"
    by_delay = {d: dataset.prepare(p, w, plant, cap, start, end, weather_delay=pd.Timedelta(d))
                for d in training.TRAIN_DELAYS}
    train = training.mixed_delays(p, w, plant, cap, start, end, seed=0)
    # the latency mixed_delays drew for each row (same generator and seed), so extras follow the same latency
    pick = np.random.default_rng(0).integers(0, len(training.TRAIN_DELAYS), len(train.frame.times))
    drawn = np.choose(pick, [by_delay[d].frame.x[:, features.WEATHER_INDEX_COLUMN] for d in training.TRAIN_DELAYS])
    assert np.array_equal(drawn, train.frame.x[:, features.WEATHER_INDEX_COLUMN]), "mixed_delays draws differently now"
    held = forecasting.validation_rows(train.frame.times, (4, 3))
    checks = {"on_time": by_delay["0min"], "1h_late": by_delay["1h"]}
    trials = [("none", 16, 15, (0, 1, 2)), ("k_3h_6h", 16, 15, (0,)), ("k_3h_6h", 32, 30, (0,)),
              ("k_3h", 16, 15, (0, 1, 2)), ("weather_change_30min", 16, 15, (0, 1, 2))]
    if args.paired_seeds:
        seeds = tuple(args.paired_seeds)
        trials = [("none", 16, 15, seeds), ("weather_change_30min", 16, 15, seeds)]
    for extra, hidden, epochs, seeds in trials:
        make = EXTRAS[extra]
        cols = np.choose(pick[:, None], [make(by_delay[d].frame) for d in training.TRAIN_DELAYS]) \
            if make(train.frame).shape[1] else make(train.frame)
        data = extend(train, cols)
        with n_features(data.frame.x.shape[1]):
            nets = [training.fit(data, epochs=epochs, hidden=hidden, seed=s, log=lambda m: None, rows=~held)
                    for s in seeds]
            predictions = {name: [forecasting.predict(net, extend(c, make(c.frame)).frame.x) for net in nets]
                           for name, c in checks.items()}
        members = [(f"seed {s}", [i]) for i, s in enumerate(seeds)] + ([("mean of seeds", list(range(len(seeds))))]
                                                                         if len(seeds) > 1 else [])
        for label, idx in members:
            row = {"extra": extra, "hidden": hidden, "epochs": epochs, "model": label}
            nrmse = []
            for name, c in checks.items():
                q = np.mean([predictions[name][i] for i in idx], axis=0)
                r = evaluation.score(forecasting.subset(c, held), q[held], LABELS)
                nrmse.append(float(np.mean([v["nrmse"] for v in r.values()])))
                row[f"skill_1h_{name}"] = round(r["60min"]["skill_smart_persistence"], 4)
            row["val_nrmse_mean"] = round(float(np.mean(nrmse)), 5)
            row["elapsed_s"] = round(time.time() - t0)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
