"""The traffic commands: a smoke training (ONNX + metadata) and evaluations with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeplane.cli import main as edgeplane_cli

REPO = Path(__file__).resolve().parents[3]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # a subprocess: libsumo allows one simulation per process, and training imports torch
    return subprocess.run([sys.executable, "-m", "edgeplane.cli", "traffic", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "LIBSUMO_AS_TRACI": "1"})


def test_smoke_training_exports_onnx_that_agrees_with_sb3_and_the_metadata(tmp_path) -> None:
    out = tmp_path / "policy"
    done = run_cli("train", "--net", "single-intersection", "--algo", "ppo", "--steps", "256", "--episode-seconds", "640",
                   "--seed", "7", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["episodes"] >= 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["algo"] == "ppo" and meta["seed"] == 7 and meta["onnx_agreement"] == 1.0
    assert meta["observation"][:3] == ["phase_0", "phase_1", "min_green"] and len(meta["phases"]) == 2
    assert meta["training_curve"] and "timestep" in meta["training_curve"][0]
    assert meta["command"].startswith("edgeplane traffic train --net single-intersection")
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"obs": np.zeros((3, len(meta["observation"])), dtype=np.float32)})[0]
    assert scores.shape == (3, 2)
    assert (out / "model.onnx").stat().st_size < 2_000_000


@pytest.mark.parametrize("controller", ["fixed", "max-pressure", "rl"])
def test_evaluate_prints_a_table_and_the_json_keys(controller: str) -> None:
    done = run_cli("evaluate", "--net", "single-intersection", "--controller", controller, "--seconds", "400", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "avg delay per vehicle" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("avg_delay_s", "mean_waiting_s", "throughput", "shield_interventions", "fallbacks", "decision_p99_ms"):
        assert key in figures
    assert figures["avg_delay_s"] > 0 and figures["throughput"] > 50
    if controller == "fixed":
        assert figures["decision_p99_ms"] is None
    else:
        assert figures["decision_p99_ms"] > 0 and figures["fallbacks"] == 0


def test_evaluate_accepts_another_route_file_and_rejects_bad_input(tmp_path) -> None:
    from edgeplane_traffic.nets import resolve

    route = tmp_path / "heavy.rou.xml"
    route.write_text(resolve("single-intersection").route.read_text().replace('probability="0.2"', 'probability="0.4"'))
    done = run_cli("evaluate", "--net", "single-intersection", "--route", str(route), "--controller", "rl", "--seconds", "300", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["throughput"] > 50
    runner = CliRunner()
    bad = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "atlantis", "--controller", "fixed"])
    assert bad.exit_code != 0 and "neither a known scenario" in bad.output
    wrong = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "cologne1", "--controller", "rl",
                                          "--model", str(tmp_path)])
    assert wrong.exit_code != 0 and "model.onnx and metadata.json" in wrong.output
