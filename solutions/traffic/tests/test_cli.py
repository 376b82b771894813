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


def evaluate(*args: str) -> tuple[int, str]:
    """``edgeplane traffic evaluate`` in this process (SUMO runs one simulation at a time here)."""
    result = CliRunner().invoke(edgeplane_cli, ["traffic", "evaluate", *args], catch_exceptions=False)
    return result.exit_code, result.output


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # a subprocess: libsumo allows one simulation per process, and training imports torch
    return subprocess.run([sys.executable, "-m", "edgeplane.cli", "traffic", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "LIBSUMO_AS_TRACI": "1"})


def test_smoke_training_exports_onnx_that_agrees_with_sb3_and_the_metadata(tmp_path) -> None:
    out = tmp_path / "policy"
    done = run_cli("train", "--net", "single-intersection", "--algo", "ppo", "--steps", "256", "--episode-seconds", "400",
                   "--seed", "7", "--checkpoints", "2", "--validation-patterns", "1", "--decision-period", "2", "--out", str(out),
                   "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["episodes"] >= 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["algo"] == "ppo" and meta["seed"] == 7 and meta["onnx_agreement"] == 1.0
    assert meta["observation"][:4] == ["phase_0", "phase_1", "min_green", "green_time"] and len(meta["phases"]) == 2
    assert meta["observation_kind"] == "detectors" and not any(n.startswith(("density", "queue")) for n in meta["observation"])
    assert meta["timing"]["yellow"] == 3.0 and meta["timing"]["all_red"] == 2.0
    # the cadence it was trained at, for the host and evaluate: every 2 s, counts over the last 5 s
    assert meta["timing"]["decision_period"] == 2.0 and meta["timing"]["detector_window"] == 5
    # model selection saw validation demand only, and picked the checkpoint with the lowest delay
    assert [v["timestep"] for v in meta["validation"]] == [128, 256]
    best = min(meta["validation"], key=lambda v: v["validation_avg_delay_s"])
    assert meta["selected_timestep"] == best["timestep"] and "validation patterns 0..0" in meta["demand"]
    assert meta["training_curve"] and "timestep" in meta["training_curve"][0]
    assert meta["command"].startswith("edgeplane traffic train --net single-intersection")
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"obs": np.zeros((3, len(meta["observation"])), dtype=np.float32)})[0]
    assert scores.shape == (3, 2)
    assert (out / "model.onnx").stat().st_size < 2_000_000


@pytest.mark.parametrize("controller", ["fixed", "webster", "actuated", "max-pressure", "rl"])
def test_evaluate_prints_a_table_and_the_json_keys(controller: str) -> None:
    code, output = evaluate("--net", "single-intersection", "--controller", controller, "--seconds", "400", "--warmup", "200", "--json")
    assert code == 0, output[-2000:]
    assert "avg delay per vehicle" in output
    figures = json.loads(output.strip().splitlines()[-1])
    for key in ("avg_delay_s", "undeparted", "mean_waiting_s", "throughput", "shield_interventions", "fallbacks", "decision_p99_ms"):
        assert key in figures
    assert figures["avg_delay_s"] > 0 and figures["throughput"] > 50
    assert figures["yellow_s"] == 3.0 and figures["all_red_s"] == 2.0
    if controller == "webster":
        assert figures["plans"]["t"]["from"] == "200 s warm-up counts" and figures["plans"]["t"]["cycle_s"] >= 40
    if controller in ("fixed", "webster", "actuated"):
        assert figures["decision_p99_ms"] is None
    else:
        assert figures["decision_p99_ms"] > 0 and figures["fallbacks"] == 0


def test_evaluate_accepts_another_route_file_and_rejects_bad_input(tmp_path) -> None:
    from edgeplane_traffic.nets import resolve

    route = tmp_path / "heavy.rou.xml"
    route.write_text(resolve("single-intersection").route.read_text().replace('probability="0.2"', 'probability="0.4"'))
    code, output = evaluate("--net", "single-intersection", "--route", str(route), "--controller", "rl", "--seconds", "300", "--json")
    assert code == 0, output[-2000:]
    assert json.loads(output.strip().splitlines()[-1])["throughput"] > 50
    runner = CliRunner()
    bad = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "atlantis", "--controller", "fixed"])
    assert bad.exit_code != 0 and "neither a known scenario" in bad.output
    wrong = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "cologne1", "--controller", "rl",
                                          "--model", str(tmp_path)])
    assert wrong.exit_code != 0 and "model.onnx and metadata.json" in wrong.output
    # departures outside the run window: a clear error naming the file and the window, exit 2
    late = tmp_path / "late.rou.xml"
    late.write_text('<routes><trip id="a" depart="90000" from="n_t" to="t_s"/></routes>')
    outside = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "single-intersection", "--route", str(late),
                                            "--controller", "fixed", "--seconds", "100"])
    assert outside.exit_code == 2 and "outside the run 0..100 s" in outside.output and "late.rou.xml" in outside.output
    bad_timing = runner.invoke(edgeplane_cli, ["traffic", "evaluate", "--net", "single-intersection", "--controller", "fixed",
                                               "--min-green", "20", "--max-green", "10"])
    assert bad_timing.exit_code == 2 and "max_green" in bad_timing.output
