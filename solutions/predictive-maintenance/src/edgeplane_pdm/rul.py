"""Remaining useful life on C-MAPSS: windowed sensor-history features -> gradient-boosted trees -> ONNX.

Features of one engine at one cycle, from the 14 informative sensors (the other 7 are constant
in FD001), after per-sensor standardisation: over the last 10, H/2 and H cycles (``WINDOWS``) the
mean and the slope of a linear fit, the mean of the last 3 cycles, and the cycle count. Targets
are the usual piecewise-linear RUL capped at ``RUL_CAP`` (degradation is invisible early in life).

The history length H is a model choice and is made on engine-grouped validation only
(:func:`nested_cross_validate`): inside every outer fold, H is picked among ``CANDIDATE_HISTORIES``
on a split of that fold's *training* engines, and the outer fold's held-out engines score the
whole procedure (selection included). The shipped H is the one the inner selections picked most
often; the model's manifest carries it (``provenance.windows``) and so does ``WINDOWS`` below, which
the edge solution computes its features with.

Validation is grouped by engine: the engines of a fold are never in its training set. Each
held-out engine is cut at random points, as the official test set is (a history that ends some
time before failure), and scored on the true (uncapped) RUL at the cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SENSORS", "HISTORY", "RUL_CAP", "features_at", "training_set", "phm08_score", "cross_validate", "nested_cross_validate", "windows_for", "fit", "to_onnx", "test_set"]

SENSORS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
#: history lengths H (cycles) the engine-grouped selection chooses from; the official FD001 test
#: engines have at least 31 cycles of history, shorter histories use what there is
CANDIDATE_HISTORIES = (30, 60, 90)


def windows_for(history: int) -> tuple[int, int, int]:
    """The three feature windows of a history length H: 10, H/2 and H cycles."""
    return (10, history // 2, history)


#: the shipped model's windows (its manifest's ``provenance.windows``; a test holds the two equal);
#: the solution's ``rul.windows`` overrides them for a model trained with another history
WINDOWS = windows_for(90)
#: every 2nd cycle of every engine trains a model (neighbouring cycles are nearly the same row;
#: this halves the cost of the nested validation on a 2-core machine), every 5th in the inner selection
TRAIN_STRIDE, SELECT_STRIDE = 2, 5
HISTORY = max(WINDOWS)
RUL_CAP = 125.0
N_FEATURES = (2 * len(WINDOWS) + 1) * len(SENSORS) + 1


def _sensor_columns(data: np.ndarray) -> np.ndarray:
    return data[:, [4 + s for s in SENSORS]]


def features_at(history: np.ndarray, cycle: float, mean: np.ndarray, std: np.ndarray,
                windows: tuple[int, ...] = WINDOWS) -> np.ndarray:
    """Features of an engine whose sensor history (cycles x 14 sensors, oldest first) ends at ``cycle``."""
    h = (np.asarray(history, dtype=np.float64)[-max(windows):] - mean) / std
    parts = []
    for w in windows:
        hw = h[-w:]
        n = len(hw)
        t = np.arange(n) - (n - 1) / 2
        slope = (t @ (hw - hw.mean(axis=0))) / (t @ t) if n > 1 else np.zeros(h.shape[1])
        parts += [hw.mean(axis=0), slope * 10]
    parts += [h[-3:].mean(axis=0), [cycle / 100.0]]
    return np.concatenate(parts).astype(np.float32)


def _affine(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with features(standardised) = features(raw) * scale + shift: means shift, slopes only scale."""
    scale: list[np.ndarray | list[float]] = []
    shift: list[np.ndarray | list[float]] = []
    for _ in WINDOWS:
        scale += [1 / std, 1 / std]
        shift += [-mean / std, np.zeros(len(SENSORS))]
    scale += [1 / std, [1.0]]
    shift += [-mean / std, [0.0]]
    return np.concatenate(scale).astype(np.float32), np.concatenate(shift).astype(np.float32)


def normaliser(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = _sensor_columns(data)
    return s.mean(axis=0), s.std(axis=0) + 1e-9


def training_set(data: np.ndarray, mean: np.ndarray, std: np.ndarray, min_cycles: int = 5, windows: tuple[int, ...] = WINDOWS,
                 stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, capped RUL target, engine id) for every ``stride``-th cycle >= min_cycles of every engine."""
    xs, ys, groups = [], [], []
    sensors = _sensor_columns(data)
    for unit in np.unique(data[:, 0]):
        rows = data[:, 0] == unit
        s, cycles = sensors[rows], data[rows, 1]
        last = cycles.max()
        for i in range(min_cycles - 1, len(s), stride):
            xs.append(features_at(s[: i + 1], cycles[i], mean, std, windows))
            ys.append(min(last - cycles[i], RUL_CAP))
            groups.append(unit)
    return np.array(xs), np.array(ys, dtype=np.float32), np.array(groups)


def phm08_score(true: np.ndarray, pred: np.ndarray) -> float:
    """The PHM08 challenge score: late predictions cost more (exp(d/10)-1) than early ones (exp(-d/13)-1)."""
    d = np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1)))


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    # not HistGradientBoosting: skl2onnx 1.20 cannot export it with onnx 1.23 (bool attribute bug)
    model = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.08, subsample=0.8, random_state=seed)
    model.fit(x, y)
    return model


def cut_points(data: np.ndarray, rng: np.random.Generator, per_engine: int = 5) -> list[tuple[float, int]]:
    """(unit, cut index) pairs shaped like the official FD001 test set: the true RUL at the cut is
    uniform in 7..145 cycles (the range of RUL_FD001.txt) and the history is at least 31 cycles."""
    cuts = []
    for unit in np.unique(data[:, 0]):
        n = int(np.sum(data[:, 0] == unit))
        for _ in range(per_engine):
            rul = int(rng.integers(7, 146))
            cuts.append((unit, int(np.clip(n - 1 - rul, min(30, n - 1), n - 1))))
    return cuts


def _score_cuts(model: Any, test: np.ndarray, mean: np.ndarray, std: np.ndarray, windows: tuple[int, ...],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(true RUL, prediction) at random official-test-shaped cuts of the engines in ``test``."""
    xt, yt = [], []
    sensors = _sensor_columns(test)
    for unit, cut in cut_points(test, rng):
        rows = np.flatnonzero(test[:, 0] == unit)
        xt.append(features_at(sensors[rows[: cut + 1]], test[rows[cut], 1], mean, std, windows))
        yt.append(len(rows) - 1 - cut)
    return np.array(yt, dtype=float), np.clip(model.predict(np.array(xt)), 0, RUL_CAP)


def _summary(true_all: list[np.ndarray], pred_all: list[np.ndarray]) -> dict[str, Any]:
    true, pred = np.concatenate(true_all), np.concatenate(pred_all)
    capped = np.minimum(true, RUL_CAP)
    return {
        "rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "rmse_capped_truth": float(np.sqrt(np.mean((pred - capped) ** 2))),
        # PHM08 sums over engines: report it per 100 engines so it compares with the 100-engine test set
        "score": phm08_score(true, pred) * 100 / len(true),
        "folds": [float(np.sqrt(np.mean((p - t) ** 2))) for t, p in zip(true_all, pred_all)],
        "cuts": len(true),
    }


def _engine_folds(data: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    units = np.unique(data[:, 0])
    rng.shuffle(units)
    return np.array_split(units, folds)


def cross_validate(data: np.ndarray, folds: int = 5, seed: int = 0, windows: tuple[int, ...] = WINDOWS) -> dict[str, Any]:
    """Engine-grouped k-fold with fixed ``windows``: RMSE and PHM08 score at random cut points of held-out engines."""
    rng = np.random.default_rng(seed)
    true_all, pred_all = [], []
    for test_units in _engine_folds(data, folds, rng):
        train = data[~np.isin(data[:, 0], test_units)]
        test = data[np.isin(data[:, 0], test_units)]
        mean, std = normaliser(train)
        x, y, _ = training_set(train, mean, std, windows=windows)
        t, p = _score_cuts(fit(x, y, seed), test, mean, std, windows, rng)
        true_all.append(t)
        pred_all.append(p)
    return _summary(true_all, pred_all)


def select_history(train: np.ndarray, seed: int = 0, stride: int = SELECT_STRIDE, log: Any = None) -> tuple[int, dict[int, float]]:
    """Pick H among CANDIDATE_HISTORIES on ``train`` alone: a quarter of its engines are held out
    (grouped), models are fitted on the rest (every ``stride``-th cycle, to keep this affordable) and
    the H with the lowest RMSE at official-test-shaped cuts wins (ties: the shorter history)."""
    rng = np.random.default_rng(seed + 1)
    units = np.unique(train[:, 0])
    rng.shuffle(units)
    held = units[: len(units) // 4]
    inner_train, inner_val = train[~np.isin(train[:, 0], held)], train[np.isin(train[:, 0], held)]
    mean, std = normaliser(inner_train)
    rmse: dict[int, float] = {}
    for h in CANDIDATE_HISTORIES:
        w = windows_for(h)
        x, y, _ = training_set(inner_train, mean, std, windows=w, stride=stride)
        t, p = _score_cuts(fit(x, y, seed), inner_val, mean, std, w, np.random.default_rng(seed + 2))
        rmse[h] = float(np.sqrt(np.mean((p - t) ** 2)))
        if log:
            log(f"  inner selection: H={h} RMSE {rmse[h]:.2f}")
    return min(CANDIDATE_HISTORIES, key=lambda h: (rmse[h], h)), rmse


def nested_cross_validate(data: np.ndarray, folds: int = 5, seed: int = 0, log: Any = None) -> dict[str, Any]:
    """Engine-grouped k-fold of the whole procedure (choose H on the fold's training engines, fit,
    score the held-out engines). Adds ``chosen`` (H per fold), ``inner_rmse`` and ``history`` (the majority H)."""
    rng = np.random.default_rng(seed)
    true_all, pred_all, chosen, inner = [], [], [], []
    for k, test_units in enumerate(_engine_folds(data, folds, rng)):
        train = data[~np.isin(data[:, 0], test_units)]
        test = data[np.isin(data[:, 0], test_units)]
        h, rmse = select_history(train, seed, log=log)
        chosen.append(h)
        inner.append(rmse)
        w = windows_for(h)
        mean, std = normaliser(train)
        x, y, _ = training_set(train, mean, std, windows=w, stride=TRAIN_STRIDE)
        t, p = _score_cuts(fit(x, y, seed), test, mean, std, w, rng)
        true_all.append(t)
        pred_all.append(p)
        if log:
            log(f"outer fold {k}: chose H={h}, held-out RMSE {float(np.sqrt(np.mean((p - t) ** 2))):.2f}")
    out = _summary(true_all, pred_all)
    counts = {h: chosen.count(h) for h in CANDIDATE_HISTORIES}
    out.update(chosen=chosen, inner_rmse=inner, history=max(CANDIDATE_HISTORIES, key=lambda h: (counts[h], -h)))
    return out


def test_set(test: np.ndarray, truth: np.ndarray, mean: np.ndarray, std: np.ndarray,
             windows: tuple[int, ...] = WINDOWS) -> tuple[np.ndarray, np.ndarray]:
    """The official format: features at the last cycle of every test engine, and the true RUL."""
    sensors = _sensor_columns(test)
    xs = []
    units = np.unique(test[:, 0])
    if len(units) != len(truth):
        raise ValueError(f"the test file has {len(units)} engines but the RUL file has {len(truth)} values: pass matching files")
    for unit in units:
        rows = np.flatnonzero(test[:, 0] == unit)
        xs.append(features_at(sensors[rows], test[rows[-1], 1], mean, std, windows))
    return np.array(xs), np.asarray(truth, dtype=float)


def to_onnx(model: Any, mean: np.ndarray, std: np.ndarray) -> bytes:
    """The regressor with the sensor standardisation folded in: its input is
    ``features_at(history, cycle, RAW_MEAN, RAW_STD)`` of the raw sensor values (the features are
    affine in the sensors, so standardising them is one Mul and one Add in front of the trees)."""
    from onnx import helper, numpy_helper
    from skl2onnx import to_onnx as sk_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = sk_to_onnx(model, initial_types=[("features", FloatTensorType([None, N_FEATURES]))], target_opset=17)
    graph = onx.graph
    for node in graph.node:
        node.input[:] = ["features_std" if name == "features" else name for name in node.input]
    scale, shift = _affine(mean, std)
    graph.initializer.extend([numpy_helper.from_array(scale, "std_scale"), numpy_helper.from_array(shift, "std_shift")])
    prologue = [helper.make_node("Mul", ["features", "std_scale"], ["features_scaled"]),
                helper.make_node("Add", ["features_scaled", "std_shift"], ["features_std"])]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onx.ir_version = 9  # onnxruntime 1.31 refuses IR 14 (onnx 1.23's default)
    return onx.SerializeToString()


def model_windows(provenance: dict[str, Any]) -> tuple[int, ...]:
    """The feature windows a ``pdm-rul`` model was trained with (its manifest's ``provenance.windows``)."""
    windows = provenance.get("windows")
    return tuple(int(w) for w in windows) if windows else WINDOWS


#: features of raw sensor values (the exported model standardises them itself)
RAW_MEAN = np.zeros(len(SENSORS))
RAW_STD = np.ones(len(SENSORS))
