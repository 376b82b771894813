"""The training and evaluation commands on the real public data (small runs), and the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from edgeplane_pdm.cli import MODELS, pdm
from edgeplane_pdm.datasets import shared_data

CWRU = shared_data("cwru")
IMS = shared_data("ims", "merged_dataset_BearingTest_2.csv")
CMAPSS = shared_data("cmapss", "train_FD001.txt")


def run(*args: str) -> dict:
    result = CliRunner().invoke(pdm, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_shipped_models_are_small_and_load_in_onnxruntime_131():
    import onnxruntime as ort

    for name in ("pdm-faults", "pdm-rul", "pdm-anomaly"):
        files = sorted((MODELS / name).glob("*/model.onnx"))
        assert files, f"{name} is not shipped in {MODELS}"
        path = files[-1]
        assert path.stat().st_size < 2_000_000
        assert onnx.load(str(path)).ir_version <= 9
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        manifest = json.loads((path.parent / "manifest.json").read_text())
        assert manifest["provenance"]["command"].startswith("edgeplane pdm train")


def test_shipped_rul_model_and_the_edge_use_the_same_feature_windows():
    from edgeplane_pdm import rul

    (path,) = sorted((MODELS / "pdm-rul").glob("*/manifest.json"))[-1:]
    provenance = json.loads(path.read_text())["provenance"]
    # chosen by the nested engine-grouped validation; the solution computes features with rul.WINDOWS
    assert tuple(provenance["windows"]) == rul.WINDOWS == rul.windows_for(provenance["history"])
    assert provenance["history"] in rul.CANDIDATE_HISTORIES


def test_shipped_fault_classifier_on_held_out_segments():
    # the shipped model saw segments 0..3 of every load-0 and load-1 record: this scores segment 4
    # (the transfer to an unseen load is train faults' leave-one-load-out figure, in the README)
    out = run("evaluate", "faults", "--data", str(CWRU))
    assert set(out["accuracy_by_load"]) == {"0", "1"}
    assert min(out["accuracy_by_load"].values()) >= 0.85


def test_train_faults_smoke_then_evaluate_it(tmp_path: Path):
    data = tmp_path / "cwru"
    data.mkdir()
    for name in ("Normal_0.mat", "IR007_0.mat", "OR007@6_0.mat"):
        (data / name).symlink_to(CWRU / name)
    trained = run("train", "faults", "--data", str(data), "--out", str(tmp_path / "models"))
    assert trained["accuracy"] >= 0.9 and trained["version"] == "1"
    evaluated = run("evaluate", "faults", "--model", str(tmp_path / "models"), "--data", str(data))
    assert evaluated["accuracy"] >= 0.9
    # the held-out segment only: about a fifth of each record's windows
    assert evaluated["windows"] < trained["windows"] / 3


def test_rul_official_format(tmp_path: Path):
    # an official-format test set cut from training engines (the shipped model saw them: this checks
    # the format and the plumbing, not the accuracy, which the README reports from grouped CV)
    data = np.loadtxt(CMAPSS)
    rows, truth = [], []
    for unit in range(1, 11):
        engine = data[data[:, 0] == unit]
        cut = len(engine) - 20 - 5 * unit
        rows.append(engine[:cut])
        truth.append(len(engine) - cut)
    np.savetxt(tmp_path / "test.txt", np.vstack(rows), fmt="%g")
    np.savetxt(tmp_path / "rul.txt", np.array(truth), fmt="%d")
    out = run("evaluate", "rul", "--test", str(tmp_path / "test.txt"), "--rul", str(tmp_path / "rul.txt"))
    assert out["engines"] == 10
    assert 0 <= out["rmse"] < 40 and out["score"] >= 0


def test_rul_refuses_mismatched_files(tmp_path: Path):
    data = np.loadtxt(CMAPSS)
    np.savetxt(tmp_path / "test.txt", data[data[:, 0] <= 2], fmt="%g")
    np.savetxt(tmp_path / "rul.txt", np.array([10, 20, 30]), fmt="%d")
    result = CliRunner().invoke(pdm, ["evaluate", "rul", "--test", str(tmp_path / "test.txt"), "--rul", str(tmp_path / "rul.txt")])
    assert result.exit_code != 0
    assert "2 engines but the RUL file has 3" in str(result.exception) + result.output


def test_missing_data_is_a_one_line_error(tmp_path: Path):
    result = CliRunner().invoke(pdm, ["evaluate", "faults", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "no CWRU .mat files" in result.output and "--data" in result.output
    result = CliRunner().invoke(pdm, ["evaluate", "anomaly", "--data", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "no such IMS CSV" in result.output
