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
from edgeplane_solar.dataset import Prepared

MODEL_NAME = "solar-forecast"
SMART_COLUMNS = slice(features.N_FEATURES - features.HORIZONS, features.N_FEATURES)
CLEARSKY_COLUMNS = slice(features.N_FEATURES - 2 * features.HORIZONS, features.N_FEATURES - features.HORIZONS)


def _network(mean: np.ndarray, std: np.ndarray, hidden: int) -> Any:
    import torch
    from torch import nn

    class QuantileForecaster(nn.Module):
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


def fit(data: Prepared, *, epochs: int = 40, hidden: int = 64, seed: int = 0, log: Any = print) -> Any:
    """Train on the rows of ``data`` whose inputs are complete; returns the torch module."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    frame = data.frame
    y = data.targets.copy()
    mask = np.isfinite(y) & data.daylight
    rows = frame.valid & mask.any(axis=1)
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
