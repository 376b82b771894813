"""The bearing fault classifier: CWRU windows -> level-free, order-normalised features -> a small classifier -> ONNX.

The features (:func:`edgeplane_pdm.features.fault_features`) are the envelope spectrum at the
bearing's defect orders, kurtosis and crest factor: nothing hinges on the vibration level or on
one shaft speed, so that a model trained at one motor load can be judged at another.

Validation holds out **whole recordings**. CWRU has one recording per class and load, so holding
out recordings means holding out a load: :func:`leave_one_load_out` trains on every other load and
scores every recording of the held-out load, none of which it saw. The one exception is a class
recorded only at the held-out load (``Normal`` exists at load 0 only): its first
``SEGMENTS // 2`` segments train, the rest are scored, and the result says so. With a single load
there is nothing to hold out, and :func:`cross_validate` falls back to segment-held-out folds
(a weaker test: it mostly measures recognising the recording).

Splits never leak: every record is cut into ``SEGMENTS`` contiguous segments and windows are
taken inside one segment only. The shipped model is trained on the first ``SEGMENTS - 1``
segments of every record; its manifest names the held-out last segment, which ``evaluate`` and
the demo's replayed sample use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_pdm.datasets import CWRU_FS, CwruRecord
from edgeplane_pdm.features import CWRU_DRIVE_END, fault_features

__all__ = ["SEGMENTS", "WINDOW", "FaultData", "windows_of", "featurize", "window_feature_data", "fit", "cross_validate", "leave_one_load_out",
           "family", "predict_onnx"]

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
            xs.append(fault_features(w, CWRU_FS, shaft_hz, CWRU_DRIVE_END))
            labels.append(rec.label)
            names.append(rec.name)
            segs.append(k)
            loads.append(rec.load)
    return FaultData(np.array(xs, dtype=np.float32), np.array(labels), np.array(names), np.array(segs), np.array(loads))


def window_feature_data(records: list[CwruRecord], data: FaultData) -> FaultData:
    """``data`` with the anomaly model's 18 window features (absolute level included) as inputs:
    the practitioners' baseline the level-free features are compared with, on the same windows."""
    from edgeplane_pdm.features import window_features

    xs = [window_features(w, CWRU_FS, rec.rpm / 60.0, CWRU_DRIVE_END).vector() for rec in records for _, w in windows_of(rec.signal)]
    return FaultData(np.array(xs, dtype=np.float32), data.label, data.record, data.segment, data.load)


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A standardising MLP: small (a few kB as ONNX), and it converts to ONNX without custom ops."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), alpha=1e-3, max_iter=2000, random_state=seed))
    model.fit(x, y)
    return model


def family(label: str) -> str:
    """The defect location of a CWRU class: Normal, B (ball), IR (inner race), OR (outer race)."""
    return "Normal" if label == "Normal" else label.rstrip("0123456789@").rstrip("0123456789")


def leave_one_load_out(data: FaultData, seed: int = 0) -> list[dict[str, Any]]:
    """One fold per motor load: train on the other loads' recordings, score the held-out load's.

    Each fold: ``load``, ``accuracy``, ``family_accuracy`` (defect location only), ``windows``,
    ``train_records``, ``test_records``, ``split_records`` (classes recorded only at the held-out
    load: their first segments trained, the others scored), ``confusion`` [(true, predicted, n)]."""
    folds = []
    for load in sorted(set(data.load.tolist())):
        trained_classes = set(data.label[data.load != load].tolist())
        only_here = data.load == load
        split = only_here & ~np.isin(data.label, list(trained_classes))
        train = ~only_here | (split & (data.segment < SEGMENTS // 2))
        test = only_here & ~(split & (data.segment < SEGMENTS // 2))
        model = fit(data.x[train], data.label[train], seed)
        pred = model.predict(data.x[test])
        truth = data.label[test]
        pairs: dict[tuple[str, str], int] = {}
        for t, p in zip(truth, pred):
            pairs[(str(t), str(p))] = pairs.get((str(t), str(p)), 0) + 1
        folds.append({
            "load": int(load),
            "accuracy": float(np.mean(pred == truth)),
            "family_accuracy": float(np.mean([family(a) == family(b) for a, b in zip(pred, truth)])),
            "windows": int(test.sum()),
            "train_records": sorted(set(data.record[train & ~split].tolist())),
            "test_records": sorted(set(data.record[test].tolist())),
            "split_records": sorted(set(data.record[split].tolist())),
            "confusion": sorted([[t, p, n] for (t, p), n in pairs.items() if t != p], key=lambda r: -r[2]),
        })
    return folds


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

