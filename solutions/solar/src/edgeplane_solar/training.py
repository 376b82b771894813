"""Training the quantile forecaster (torch, training-only) and exporting it to ONNX.

The network is a small MLP that corrects smart persistence: for each horizon it outputs a
median offset from the smart-persistence forecast and two positive widths, so P10 <= P50 <= P90
by construction. It is trained with the pinball loss on daylight targets and exported with its
input normalisation inside the graph: input ``features`` (N, 50) float32, output ``quantiles``
(N, 16, 3) float32, power over capacity.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_solar import features
from edgeplane_solar.dataset import Prepared, Timed, prepare

#: weather latencies mixed into training rows, so the model learns what an old value is worth
TRAIN_DELAYS = ("0min", "15min", "30min", "1h", "2h")
#: the settings model selection chooses among (hidden units, epochs)
CANDIDATES = ((16, 15), (32, 30), (64, 30))

MODEL_NAME = "solar-forecast"
SMART_COLUMNS = slice(features.N_FEATURES - features.HORIZONS, features.N_FEATURES)
CLEARSKY_COLUMNS = slice(features.N_FEATURES - 2 * features.HORIZONS, features.N_FEATURES - features.HORIZONS)


def _network(mean: np.ndarray, std: np.ndarray, hidden: int) -> Any:
    import torch
    from torch import nn

    class QuantileForecaster(nn.Module):
        mean: torch.Tensor  # buffers (register_buffer), typed for the checker
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
            self.body = nn.Sequential(nn.Linear(features.N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                      nn.ReLU(), nn.Linear(hidden, features.HORIZONS * 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.body((x - self.mean) / self.std).reshape(-1, features.HORIZONS, 3)
            smart = x[:, SMART_COLUMNS]
            clearsky = x[:, CLEARSKY_COLUMNS]
            p50 = smart + out[:, :, 1]
            p10 = p50 - nn.functional.softplus(out[:, :, 0])
            p90 = p50 + nn.functional.softplus(out[:, :, 2])
            # no power without sun, and never below zero
            sun = (clearsky > 0).to(x.dtype)
            return torch.relu(torch.stack([p10, p50, p90], dim=-1)) * sun.unsqueeze(-1)

    return QuantileForecaster()


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


def validation_rows(times: Any, weeks: tuple[int, int]) -> np.ndarray:
    """Rows whose issue time falls in an ISO week ``w`` with ``w % weeks[0] == weeks[1]``."""
    return (np.asarray(times.isocalendar().week) % weeks[0]) == weeks[1]


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
    held = validation_rows(train.frame.times, weeks)
    candidates = [(hidden, epochs)] if hidden and epochs else \
        [c for c in CANDIDATES if (hidden is None or c[0] == hidden) and (epochs is None or c[1] == epochs)] or \
        [(hidden or 32, epochs or 30)]
    report: list[dict[str, Any]] = []
    if len(candidates) > 1:
        checks = [prepare(power, weather, plant, capacity_w, start, end, weather_delay=pd.Timedelta(d))
                  for d in (("0min", "1h") if weather is not None else ("0min",))]
        labels = [f"{15 * h}min" for h in range(1, features.HORIZONS + 1)]
        for h_units, n_epochs in candidates:
            net = fit(train, epochs=n_epochs, hidden=h_units, seed=seed, log=log, rows=~held)
            scores = []
            for check in checks:
                q = _predict(net, check.frame.x)
                keep = _subset(check, held)
                results = evaluation.score(keep, q[held], labels)
                scores.append(float(np.mean([r["nrmse"] for r in results.values()])))
                skill_1h = results["60min"]["skill_smart_persistence"]
            entry = {"hidden": h_units, "epochs": n_epochs, "val_nrmse_mean": round(float(np.mean(scores)), 5),
                     "val_skill_1h_late_weather": round(float(skill_1h), 4)}
            log(f"candidate {entry}")
            report.append(entry)
        best = min(report, key=lambda r: r["val_nrmse_mean"])
        h_units, n_epochs = best["hidden"], best["epochs"]
    else:
        h_units, n_epochs = candidates[0]
    net = fit(train, epochs=n_epochs, hidden=h_units, seed=seed, log=log)
    return {"hidden": h_units, "epochs": n_epochs, "validation_weeks": f"ISO week % {weeks[0]} == {weeks[1]}",
            "train_delays": list(TRAIN_DELAYS)}, net, report


def _predict(net: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.tensor(x, dtype=torch.float32)).numpy()


def _subset(data: Prepared, rows: np.ndarray) -> Prepared:
    f = data.frame
    frame = features.FeatureFrame(f.times[rows], f.x[rows], f.persistence[rows], f.smart_persistence[rows],
                                  f.clearsky[rows], f.valid[rows])
    return Prepared(frame, data.targets[rows], data.daylight[rows], data.capacity_w)


def fit(data: Prepared, *, epochs: int = 30, hidden: int = 32, seed: int = 0, log: Any = print,
        rows: np.ndarray | None = None) -> Any:
    """Train on the rows of ``data`` (optionally only ``rows``) whose inputs are complete; returns the torch module."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    frame = data.frame
    y = data.targets.copy()
    mask = np.isfinite(y) & data.daylight
    rows = frame.valid & mask.any(axis=1) & (True if rows is None else rows)
    x, y, mask = frame.x[rows], np.nan_to_num(y[rows]), mask[rows]
    if len(x) < 100:
        raise ValueError(f"only {len(x)} usable training rows: give a longer period with power data")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    net = _network(mean, std, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-5)
    q = torch.tensor(features.QUANTILES, dtype=torch.float32)
    xt, yt, mt = (torch.tensor(a, dtype=torch.float32) for a in (x, y, mask))
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), 256):
            b = perm[i:i + 256]
            pred = net(xt[b])
            err = yt[b].unsqueeze(-1) - pred
            loss = (torch.maximum(q * err, (q - 1) * err) * mt[b].unsqueeze(-1)).sum() / mt[b].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        if epoch % 10 == 0 or epoch == epochs - 1:
            log(f"epoch {epoch + 1}/{epochs}: pinball {total / len(xt):.5f}")
    net.eval()
    return net


def export_onnx(net: Any, path: Path, n_features: int = features.N_FEATURES) -> Path:
    """Write ``net`` (``features`` in, ``quantiles`` out) as ONNX with IR version 9
    (onnxruntime 1.31 refuses newer)."""
    import onnx
    import torch

    dummy = torch.zeros(2, n_features)
    torch.onnx.export(net, (dummy,), str(path), input_names=["features"], output_names=["quantiles"],
                      dynamic_axes={"features": {0: "batch"}, "quantiles": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    model = onnx.load(str(path))
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def save(net: Any, registry_root: Path, version: str, provenance: dict[str, Any], replace: bool = True, *,
         name: str = MODEL_NAME, n_features: int = features.N_FEATURES) -> Path:
    """Export and add to the model registry at ``registry_root`` as ``<name>/<version>``."""
    from edgeplane.inference.manifest import Provenance
    from edgeplane.inference.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(net, Path(tmp) / "model.onnx", n_features)
        ModelRegistry(registry_root).add(onnx_path, name, version, Provenance(**provenance), replace=replace)
    return registry_root / name / version


def read_provenance(folder: Path) -> dict[str, Any]:
    """The manifest's provenance of a model version folder (holds the plant and capacity it was trained for)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest.get("provenance") or {}


def resolve_model_folder(path: Path, name: str = MODEL_NAME) -> Path:
    """``path`` may be a version folder, a model folder (newest version) or a registry root holding ``name``."""
    from edgeplane.inference.registry import version_key

    if (path / "manifest.json").exists():
        return path
    if (path / name).is_dir():
        path = path / name
    versions = sorted((p for p in path.iterdir() if (p / "manifest.json").exists()), key=lambda p: version_key(p.name)) \
        if path.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"{path}: no {name} model here; give a folder with manifest.json and model.onnx")
    return versions[-1]
