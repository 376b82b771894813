"""Fault-class features that transfer across loads, and validation that holds out whole recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeplane_pdm import faults
from edgeplane_pdm.datasets import load_cwru, shared_data
from edgeplane_pdm.features import (CWRU_DRIVE_END, FAULT_FEATURE_NAMES, fault_features, fault_frequencies,
                                    synthetic_bearing_signal, window_and_fault_features, window_features)
from edgeplane_pdm.sample import load as load_sample

CWRU = shared_data("cwru")
FS = 12_000.0


def test_fault_features_do_not_depend_on_the_vibration_level():
    x = synthetic_bearing_signal(FS, 0.35, 29.95, 107.0, seed=1)[:4096]
    a = fault_features(x, FS, 29.95, CWRU_DRIVE_END)
    b = fault_features(25.0 * x, FS, 29.95, CWRU_DRIVE_END)
    assert a.shape == (len(FAULT_FEATURE_NAMES),)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rpm", [1797.0, 1730.0, 1500.0])
def test_an_outer_race_defect_shows_at_the_bpfo_order_whatever_the_speed(rpm: float):
    shaft = rpm / 60
    bpfo = fault_frequencies(CWRU_DRIVE_END, shaft)["bpfo"]
    x = synthetic_bearing_signal(FS, 0.35, shaft, bpfo, seed=2)[:4096]
    f = dict(zip(FAULT_FEATURE_NAMES, fault_features(x, FS, shaft, CWRU_DRIVE_END)))
    assert f["env_bpfo_h1_db"] > 12
    assert f["env_bpfo_h1_db"] > f["env_bpfi_h1_db"] + 6 and f["env_bpfo_h1_db"] > f["env_2bsf_h1_db"] + 6


def test_shared_envelope_gives_the_same_features():
    x = synthetic_bearing_signal(FS, 0.35, 29.95, 162.0, seed=3)[:4096]
    both, fault = window_and_fault_features(x, FS, 29.95, CWRU_DRIVE_END)
    np.testing.assert_allclose(both.vector(), window_features(x, FS, 29.95, CWRU_DRIVE_END).vector(), rtol=1e-6)
    np.testing.assert_allclose(fault, fault_features(x, FS, 29.95, CWRU_DRIVE_END), rtol=1e-6)


def test_leave_one_load_out_never_trains_on_a_held_out_recording(tmp_path: Path):
    folder = tmp_path / "cwru"
    folder.mkdir()
    for name in ("Normal_0", "IR021_0", "IR021_1", "OR021@6_0", "OR021@6_1"):
        (folder / f"{name}.mat").symlink_to(CWRU / f"{name}.mat")
    data = faults.featurize(load_cwru(folder))
    folds = {f["load"]: f for f in faults.leave_one_load_out(data)}
    assert set(folds) == {0, 1}
    for load, fold in folds.items():
        assert all(r.endswith(f"_{load}") for r in fold["test_records"])
        assert not set(fold["train_records"]) & set(fold["test_records"])
        assert fold["accuracy"] >= 0.9
    # Normal exists at load 0 only: that fold trains on its first segments and scores the rest, and says so
    assert folds[0]["split_records"] == ["Normal_0"] and folds[1]["split_records"] == []
    assert "Normal_0" in folds[1]["train_records"]


def test_the_demo_replays_the_segment_the_shipped_classifier_never_saw(tmp_path: Path):
    sample = load_sample()
    assert int(sample["segment"]) == faults.SEGMENTS - 1
    (tmp_path / "OR007@6_0.mat").symlink_to(CWRU / "OR007@6_0.mat")
    signal = load_cwru(tmp_path)[0].signal
    start = int(np.linspace(0, len(signal), faults.SEGMENTS + 1)[faults.SEGMENTS - 1])
    np.testing.assert_allclose(sample["outer_race_007"][:64], signal[start:start + 64].astype(np.float16), rtol=1e-3)


def test_a_mat_file_without_a_drive_end_key_is_exit_2(tmp_path: Path):
    from click.testing import CliRunner
    from scipy import io

    from edgeplane_pdm.cli import pdm

    io.savemat(tmp_path / "B007_0.mat", {"X118_FE_time": np.zeros((5000, 1)), "X118RPM": np.array([[1797]])})
    result = CliRunner().invoke(pdm, ["evaluate", "faults", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "B007_0.mat: no '*_DE_time' variable" in result.output
