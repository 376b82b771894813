"""The one forecasting pipeline that the intraday and the day-ahead forecasters configure.

A :class:`Forecaster` says what differs between the two: the model's name in the registry, the
size of the network's output and the quantile head that turns it into ordered P10/P50/P90
(:mod:`edgeplane_solar.training`: 16 horizons around smart persistence; :mod:`edgeplane_solar.day_ahead`:
one step around the daily-index baseline, capped by clear sky), the constants the head reads
(the day-ahead caps), the settings selection chooses among and the command that trains it.
Everything else is here, once:

* the network: input normalisation inside the graph, two hidden ReLU layers, the head;
* the fit loop: seeded Adam on the pinball loss at :data:`features.QUANTILES` (optionally masked);
* the choice of (hidden, epochs) on validation weeks (ISO week ``w % 4 == 3`` of the training span);
* ONNX export (IR 9) into the model registry with provenance, and running the exported model;
* scoring: nRMSE/nMAE by capacity against the baselines on the same rows, skill, P10-P90 coverage,
  and the pinball loss.

torch is imported only inside the functions that train (training commands only).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from edgeplane_solar import features

#: the rows per ONNX Runtime call when running a model over a long span
ONNX_BATCH = 8192

Setting = tuple[int, int]  # (hidden units, epochs)
Data = TypeVar("Data")


@dataclass(frozen=True)
class Forecaster:
    """One forecasting model: what the shared pipeline needs to build, fit, save and run it."""

    name: str  # the model's name in the registry (``<name>/<version>``)
    outputs: int  # the network body's outputs per row
    quantiles_shape: tuple[int, ...]  # a row's quantiles as the model returns them, e.g. (HORIZONS, 3)
    head: Callable[[Any, Any, Any], Any]  # (network, input rows, body output) -> quantiles, torch ops
    candidates: tuple[Setting, ...]  # the settings selection chooses among
    default: Setting  # the setting when a fixed --hidden/--epochs matches no candidate
    train_command: str  # what makes a model of this kind
    label: str = ""  # put before "epoch" and "training rows" in logs and errors
    buffers: tuple[tuple[str, float], ...] = ()  # constants the head reads (become constants of the graph)

    def network(self, mean: np.ndarray, std: np.ndarray, hidden: int) -> Any:
        """An untrained torch module: (x - mean) / std, two hidden ReLU layers of ``hidden`` units, the head."""
        import torch
        from torch import nn

        spec = self

        class QuantileNetwork(nn.Module):
            mean: torch.Tensor  # buffers (register_buffer), typed for the checker
            std: torch.Tensor

            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
                for buffer, value in spec.buffers:
                    self.register_buffer(buffer, torch.tensor(value, dtype=torch.float32))
                self.body = nn.Sequential(nn.Linear(len(mean), hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                          nn.ReLU(), nn.Linear(hidden, spec.outputs))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return spec.head(self, x, self.body((x - self.mean) / self.std))

        return QuantileNetwork()

    def fit(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, *, hidden: int, epochs: int,
            seed: int = 0, log: Any = print) -> Any:
        """Train on rows ``x`` against targets ``y`` (shaped like the P50 output) with the pinball loss, its mean
        over ``mask`` (True: a target to learn) or over everything; returns the torch module in eval mode."""
        import torch

        torch.manual_seed(seed)
        np.random.seed(seed)
        if len(x) < 100:
            raise ValueError(f"only {len(x)} usable {self.label}training rows: give a longer period with power data")
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
        net = self.network(mean, std, hidden)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-5)
        q = torch.tensor(features.QUANTILES, dtype=torch.float32)
        xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        mt = None if mask is None else torch.tensor(mask, dtype=torch.float32)
        for epoch in range(epochs):
            perm = torch.randperm(len(xt))
            total = 0.0
            for i in range(0, len(xt), 256):
                b = perm[i:i + 256]
                err = yt[b].unsqueeze(-1) - net(xt[b])
                pinball = torch.maximum(q * err, (q - 1) * err)
                if mt is None:
                    loss = pinball.mean()
                else:
                    loss = (pinball * mt[b].unsqueeze(-1)).sum() / mt[b].sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            if epoch % 10 == 0 or epoch == epochs - 1:
                log(f"{self.label}epoch {epoch + 1}/{epochs}: pinball {total / len(xt):.5f}")
        net.eval()
        return net

    def settings(self, hidden: int | None, epochs: int | None) -> list[Setting]:
        """The candidates selection tries: both fixed, the candidates matching what is fixed, or the default."""
        if hidden and epochs:
            return [(hidden, epochs)]
        return [c for c in self.candidates if (hidden is None or c[0] == hidden) and (epochs is None or c[1] == epochs)] \
            or [(hidden or self.default[0], epochs or self.default[1])]

    def save(self, net: Any, registry_root: Path, version: str, provenance: dict[str, Any],
             replace: bool = True) -> Path:
        """Export ``net`` and add it to the model registry at ``registry_root`` as ``<name>/<version>``."""
        from edgeplane.inference.manifest import Provenance
        from edgeplane.inference.registry import ModelRegistry

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(net, Path(tmp) / "model.onnx")
            ModelRegistry(registry_root).add(onnx_path, self.name, version, Provenance(**provenance), replace=replace)
        return registry_root / self.name / version

    def resolve(self, path: Path) -> Path:
        """``path`` may be a version folder, a model folder (newest version) or a registry root holding this model."""
        return resolve_model_folder(path, self.name)

    def run_onnx(self, model_file: Path, x: np.ndarray) -> np.ndarray:
        """Quantiles (n, *quantiles_shape) for feature rows ``x``, in batches, on CPU."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        expected = session.get_inputs()[0].shape[1]
        if x.ndim != 2 or expected != x.shape[1]:
            raise ValueError(f"{model_file}: the model takes {expected} features, this version of edgeplane-solar "
                             f"builds {x.shape[1] if x.ndim == 2 else x.shape}; retrain it with "
                             f"'{self.train_command}'")
        out = [session.run(["quantiles"], {"features": x[i:i + ONNX_BATCH]})[0] for i in range(0, len(x), ONNX_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, *self.quantiles_shape), np.float32)


def select(settings: Sequence[Setting], trial: Callable[[int, int], dict[str, Any]], key: str,
           log: Any = print) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``trial(hidden, epochs)`` (train on the other weeks, score on the validation weeks) for each setting;
    returns the entry with the lowest ``key`` and the report of all of them."""
    report: list[dict[str, Any]] = []
    for hidden, epochs in settings:
        entry = {"hidden": hidden, "epochs": epochs, **trial(hidden, epochs)}
        log(f"candidate { {k: v for k, v in entry.items() if not isinstance(v, dict)} }")
        report.append(entry)
    return min(report, key=lambda r: r[key]), report


def validation_rows(times: pd.DatetimeIndex, weeks: tuple[int, int]) -> np.ndarray:
    """Rows whose issue time falls in an ISO week ``w`` with ``w % weeks[0] == weeks[1]``."""
    return np.asarray((np.asarray(times.isocalendar().week) % weeks[0]) == weeks[1])


def weeks_label(weeks: tuple[int, int]) -> str:
    """How the validation weeks are recorded in a model's provenance."""
    return f"ISO week % {weeks[0]} == {weeks[1]}"


def subset(data: Data, rows: np.ndarray) -> Data:
    """``data`` (a dataclass of per-row arrays, nested dataclasses followed) restricted to ``rows``; other fields,
    such as a capacity, are kept."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(data):  # type: ignore[arg-type]
        value = getattr(data, field.name)
        if dataclasses.is_dataclass(value):
            changes[field.name] = subset(value, rows)
        elif isinstance(value, (np.ndarray, pd.Index)):
            changes[field.name] = value[rows]
    return dataclasses.replace(data, **changes)  # type: ignore[type-var]


def predict(net: Any, x: np.ndarray) -> np.ndarray:
    """The torch module's quantiles for feature rows ``x``."""
    import torch

    with torch.no_grad():
        return np.asarray(net(torch.tensor(x, dtype=torch.float32)).numpy())


def export_onnx(net: Any, path: Path) -> Path:
    """Write ``net`` (``features`` in, ``quantiles`` out) as ONNX with IR version 9
    (onnxruntime 1.31 refuses newer)."""
    import onnx
    import torch

    dummy = torch.zeros(2, net.mean.shape[0])
    torch.onnx.export(net, (dummy,), str(path), input_names=["features"], output_names=["quantiles"],
                      dynamic_axes={"features": {0: "batch"}, "quantiles": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    model = onnx.load(str(path))
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def read_provenance(folder: Path) -> dict[str, Any]:
    """The manifest's provenance of a model version folder (holds the plant and capacity it was trained for)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest.get("provenance") or {}


def resolve_model_folder(path: Path, name: str) -> Path:
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


def pinball(y: np.ndarray, pred: np.ndarray, tau: float) -> float:
    """The mean pinball loss of ``pred`` as the ``tau`` quantile of ``y``."""
    e = y - pred
    return float(np.mean(np.maximum(tau * e, (tau - 1) * e)))


def point_scores(y: np.ndarray, rows: np.ndarray, baselines: dict[str, np.ndarray], quantiles: np.ndarray | None,
                 fallback: str) -> dict[str, float]:
    """Errors of the P50 of ``quantiles`` (n, 3), or without a model of the baseline ``fallback``, and of each
    baseline (n,), on the same ``rows``: n, nrmse_/nmae_<baseline>, nrmse, nmae, skill_<baseline> and, with a
    model, coverage_p10_p90. Values are over capacity when ``y`` is."""
    yt = y[rows]

    def errors(pred: np.ndarray) -> tuple[float, float]:
        e = pred[rows] - yt
        return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))

    out: dict[str, float] = {"n": int(rows.sum())}
    for name, pred in baselines.items():
        out[f"nrmse_{name}"], out[f"nmae_{name}"] = errors(pred)
    if quantiles is not None:
        rmse, mae = errors(quantiles[:, 1])
    else:  # no model: the baseline is the forecast
        rmse, mae = out[f"nrmse_{fallback}"], out[f"nmae_{fallback}"]
    out.update(nrmse=rmse, nmae=mae)
    out.update({f"skill_{name}": 0.0 if quantiles is None and name == fallback else 1 - rmse / out[f"nrmse_{name}"]
                for name in baselines})
    if quantiles is not None:
        out["coverage_p10_p90"] = float(((quantiles[rows, 0] <= yt) & (yt <= quantiles[rows, 2])).mean())
    return out
