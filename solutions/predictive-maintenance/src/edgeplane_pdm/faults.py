"""The bearing fault classifier: CWRU windows -> features -> a small classifier -> ONNX.

Splits never leak: every record is cut into ``SEGMENTS`` contiguous segments and windows are
taken inside one segment only, so the windows of a test segment share no sample with any
training window. ``cross_validate`` holds out segment k of every record in fold k; the shipped
model is trained on the first ``SEGMENTS - 1`` segments of every record and its manifest names
the held-out last segment, which ``evaluate`` then uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_pdm.datasets import CWRU_FS, CwruRecord
from edgeplane_pdm.features import CWRU_DRIVE_END, FEATURE_NAMES, window_features

__all__ = ["SEGMENTS", "WINDOW", "FaultData", "windows_of", "featurize", "fit", "cross_validate", "predict_onnx"]

SEGMENTS = 5
WINDOW = 4096
HOP = 2048


@dataclass
class FaultData:
    x: np.ndarray  # (n, features) float32
    label: np.ndarray  # (n,) str
    record: np.ndarray  # (n,) record name
    segment: np.ndarray  # (n,) segment index
    load: np.ndarray  # (n,) motor load (hp)


def windows_of(signal: np.ndarray, segments: int = SEGMENTS) -> list[tuple[int, np.ndarray]]:
    """(segment, window) pairs: windows of WINDOW samples, HOP apart, never crossing a segment border."""
    out = []
    bounds = np.linspace(0, len(signal), segments + 1).astype(int)
    for k in range(segments):
        seg = signal[bounds[k]:bounds[k + 1]]
        for start in range(0, len(seg) - WINDOW + 1, HOP):
            out.append((k, seg[start:start + WINDOW]))
    return out


def featurize(records: list[CwruRecord]) -> FaultData:
    xs, labels, names, segs, loads = [], [], [], [], []
    for rec in records:
        shaft_hz = rec.rpm / 60.0
        for k, w in windows_of(rec.signal):
            xs.append(window_features(w, CWRU_FS, shaft_hz, CWRU_DRIVE_END).vector())
            labels.append(rec.label)
            names.append(rec.name)
            segs.append(k)
            loads.append(rec.load)
    return FaultData(np.array(xs, dtype=np.float32), np.array(labels), np.array(names), np.array(segs), np.array(loads))


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A standardising MLP: small (a few kB as ONNX), and it converts to ONNX without custom ops."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), alpha=1e-3, max_iter=2000, random_state=seed))
    model.fit(x, y)
    return model


def cross_validate(data: FaultData, seed: int = 0) -> tuple[float, list[str], np.ndarray, list[float]]:
    """Segment-held-out accuracy over SEGMENTS folds: (accuracy, classes, confusion, per-fold accuracy)."""
    classes = sorted(set(data.label.tolist()))
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    folds = []
    index = {c: i for i, c in enumerate(classes)}
    for k in range(SEGMENTS):
        test = data.segment == k
        model = fit(data.x[~test], data.label[~test], seed)
        pred = model.predict(data.x[test])
        folds.append(float(np.mean(pred == data.label[test])))
        for t, p in zip(data.label[test], pred):
            confusion[index[t], index[p]] += 1
    return float(np.trace(confusion) / confusion.sum()), classes, confusion, folds


def to_onnx(model: Any, n_features: int) -> bytes:
    from skl2onnx import to_onnx as sk_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = sk_to_onnx(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                     options={id(model): {"zipmap": False}}, target_opset=17)
    onx.ir_version = 9  # onnxruntime 1.31 refuses IR 14 (onnx 1.23's default)
    return onx.SerializeToString()


def predict_onnx(model_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from an exported classifier, run by onnxruntime on CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"features": x.astype(np.float32)})
    return np.asarray(label), np.asarray(proba)


assert len(FEATURE_NAMES) == 18
