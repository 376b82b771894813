"""Anomaly detection against each asset's own healthy baseline, and the alert state machine.

At commissioning an asset's features are recorded for a while; their median and robust spread
(1.4826 x MAD, floored so a very steady feature cannot make noise look like a fault) are that
asset's baseline. After that every window is scored by the shipped ONNX model ``pdm-anomaly``:
per-feature z-scores against the baseline and their root mean square. Run-to-failure trend files
(IMS) have one averaged value per snapshot rather than waveforms: :mod:`edgeplane_pdm.onset`
detects their onset with the same robust-baseline idea, per bearing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Baseline", "AlertState", "scorer_onnx", "score_numpy"]


@dataclass
class Baseline:
    """An asset's healthy feature distribution: centre and scale per feature."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, floor: np.ndarray | float = 1e-3) -> Baseline:
        x = np.asarray(x, dtype=np.float64)
        if len(x) < 3:
            raise ValueError(f"a baseline needs at least 3 healthy windows, got {len(x)}")
        center = np.median(x, axis=0)
        scale = 1.4826 * np.median(np.abs(x - center), axis=0)
        return cls(center.astype(np.float32), np.maximum(scale, floor).astype(np.float32))

    def as_dict(self) -> dict[str, list[float]]:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        return cls(np.asarray(data["center"], dtype=np.float32), np.asarray(data["scale"], dtype=np.float32))


def scorer_onnx() -> bytes:
    """The ``pdm-anomaly`` model: inputs ``features``, ``center``, ``scale`` (batch x features);
    outputs ``z`` (per-feature z-scores) and ``score`` (batch x 1, their root mean square)."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch", "features"]
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["features", "center"], ["diff"]),
            helper.make_node("Div", ["diff", "scale"], ["z"]),
            helper.make_node("Mul", ["z", "z"], ["z2"]),
            helper.make_node("ReduceMean", ["z2"], ["mean2"], axes=[1], keepdims=1),
            helper.make_node("Sqrt", ["mean2"], ["score"]),
        ],
        "pdm_anomaly",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("features", "center", "scale")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, dims), helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeplane-pdm")
    model.ir_version = 9  # onnxruntime 1.31 refuses IR 14 (onnx 1.23's default)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def score_numpy(x: np.ndarray, baseline: Baseline) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX scorer computes, in numpy (for tests that compare the two)."""
    z = (np.asarray(x, dtype=np.float32) - baseline.center) / baseline.scale
    return z, np.sqrt(np.mean(z**2, axis=-1, keepdims=True))


@dataclass
class AlertState:
    """Hysteresis and de-duplication for one asset's alert.

    Raised after ``persist`` consecutive scores above ``high``; cleared after ``persist``
    consecutive scores below ``clear``; while raised, a new notice only when the severity rises
    (warning -> critical at ``critical``). :meth:`update` returns "raise", "escalate", "clear" or None.
    """

    high: float = 6.0
    clear: float = 3.0
    critical: float = 12.0
    persist: int = 3
    active: bool = False
    severity: str | None = None
    _run: int = 0
    raised: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)

    def update(self, score: float, ts: float = 0.0) -> str | None:
        if not self.active:
            self._run = self._run + 1 if score > self.high else 0
            if self._run >= self.persist:
                self.active, self._run, self.raised = True, 0, self.raised + 1
                self.severity = "critical" if score > self.critical else "warning"
                self.history.append((ts, "raise"))
                return "raise"
            return None
        if score > self.critical and self.severity != "critical":
            self.severity = "critical"
            self.history.append((ts, "escalate"))
            return "escalate"
        self._run = self._run + 1 if score < self.clear else 0
        if self._run >= self.persist:
            self.active, self.severity, self._run = False, None, 0
            self.history.append((ts, "clear"))
            return "clear"
        return None
