"""The anomaly scorer (ONNX against numpy), baselines, and alert hysteresis."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgeplane_pdm.anomaly import AlertState, Baseline, score_numpy, scorer_onnx


def test_onnx_scorer_matches_numpy_and_loads_in_onnxruntime():
    rng = np.random.default_rng(0)
    base = Baseline.fit(rng.normal(size=(50, 18)).astype(np.float32))
    x = rng.normal(size=(7, 18)).astype(np.float32) * 3
    sess = ort.InferenceSession(scorer_onnx(), providers=["CPUExecutionProvider"])
    z, score = sess.run(None, {"features": x, "center": np.repeat(base.center[None], 7, 0), "scale": np.repeat(base.scale[None], 7, 0)})
    z_np, score_np = score_numpy(x, base)
    np.testing.assert_allclose(z, z_np, rtol=1e-5)
    np.testing.assert_allclose(score, score_np, rtol=1e-5)


def test_baseline_is_robust_and_floored():
    x = np.ones((20, 2), dtype=np.float32)
    x[0, 0] = 1000  # one outlier during commissioning does not move the median
    base = Baseline.fit(x, floor=np.array([0.1, 0.5]))
    assert base.center.tolist() == [1.0, 1.0]
    assert base.scale.tolist() == [pytest.approx(0.1), pytest.approx(0.5)]
    assert Baseline.from_dict(base.as_dict()).center.tolist() == base.center.tolist()
    with pytest.raises(ValueError, match="at least 3"):
        Baseline.fit(x[:2])


def test_hysteresis_persistence_and_deduplication():
    state = AlertState(high=6, clear=3, critical=12, persist=3)
    seq = [7, 7, 2, 7, 7, 7, 8, 5, 4, 13, 13, 2, 2, 5, 2, 2, 2]
    changes = [state.update(s, i) for i, s in enumerate(seq)]
    # a 2-window excursion is ignored; the third consecutive window raises; more highs add nothing;
    # values between clear and high hold it; above critical escalates once; three lows clear
    assert changes.index("raise") == 5
    assert changes.count("raise") == 1
    assert changes.count("escalate") == 1 and changes[9] == "escalate"
    assert changes.index("clear") == 16
    assert state.raised == 1 and not state.active
