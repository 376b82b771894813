"""PPO fine-tuning of per-signal policies in one simulation of the net (train --per-signal --fine-tune-from)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from edgeplane_traffic.demand import SPLIT_SEED_BASE
from edgeplane_traffic.layout import signal_layouts
from edgeplane_traffic.models import MODELS_DIR, PolicyFiles
from edgeplane_traffic.nets import resolve


def _scores(onnx_path, obs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"obs": obs})[0]


def test_the_ppo_actor_starts_as_the_shipped_policy() -> None:
    from edgeplane_traffic.training_per_signal_rl import _copy_actor, _Spaces
    from stable_baselines3 import PPO

    layout = signal_layouts(resolve("cologne8").net)[0]
    shipped = MODELS_DIR / f"traffic-cologne8-{layout.tls}" / "1" / "model.onnx"
    model = PPO("MlpPolicy", _Spaces(layout), policy_kwargs={"net_arch": [64, 64]}, device="cpu", seed=0)
    obs = np.random.default_rng(0).random((500, layout.observation_size_detectors), dtype=np.float32)
    before, _ = model.predict(obs, deterministic=True)
    expected = _scores(shipped, obs).argmax(axis=1)
    assert (before != expected).any()  # a fresh network decides otherwise: the copy is what makes them equal
    _copy_actor(model, shipped)
    after, _ = model.predict(obs, deterministic=True)
    assert (after == expected).all()


def test_fine_tuning_updates_every_signal_and_selects_on_validation(tmp_path) -> None:
    from edgeplane_traffic.training_per_signal_rl import fine_tune_per_signal

    spec = replace(resolve("cologne8"), seconds=120)
    summary = fine_tune_per_signal(spec, tmp_path, steps=240, checkpoints=1, n_steps=64, validation_patterns=1,
                                   critic_epochs=2, learning_rate=1e-3, progress=False)
    layouts = signal_layouts(spec.net)
    assert [row["round"] for row in summary["rounds"]] == [0, 1]
    trained = summary["rounds"][1]
    # every signal's own PPO updated from its own buffer, its own reward
    assert all(trained["updates"][x.tls] >= 1 for x in layouts)
    assert summary["selected_round"] == min(summary["rounds"], key=lambda r: r["validation_avg_delay_s"])["round"]
    moved = 0
    for layout in layouts:
        policy = PolicyFiles(tmp_path / layout.tls)
        meta = policy.metadata
        assert meta["layout_fingerprint"] == layout.fingerprint() and meta["per_signal"] is True
        assert (policy.decision_period, policy.detector_window) == (1.0, 8)  # the starting policies' cadence
        assert all(SPLIT_SEED_BASE["train"] <= s < SPLIT_SEED_BASE["validation"] for s in meta["training_demand_seeds"])
        assert meta["validation_demand_seeds"] == [SPLIT_SEED_BASE["validation"]]
        assert meta["selected_timestep"] == summary["selected_round"]
        obs = np.random.default_rng(1).random((256, layout.observation_size_detectors), dtype=np.float32)
        start = _scores(MODELS_DIR / f"traffic-cologne8-{layout.tls}" / "1" / "model.onnx", obs)
        mine = _scores(policy.onnx, obs)
        assert mine.shape == (256, layout.num_greens)
        moved += int(not np.allclose(start, mine, atol=1e-6))
    # round 0 is the shipped policies byte for byte: a selected round 1 must differ from them
    assert (moved > 0) == (summary["selected_round"] == 1)
    assert json.loads((tmp_path / "summary.json").read_text())["from_version"] == "1"


def test_a_missing_starting_version_names_the_signal_and_the_fix() -> None:
    from edgeplane_traffic.training_per_signal_rl import starting_policies

    spec = resolve("cologne8")
    with pytest.raises(ValueError, match=r"traffic-cologne8-.*/99.*--fine-tune-from"):
        starting_policies(spec, "99", signal_layouts(spec.net))


@pytest.mark.parametrize(("args", "names"), [
    (["--fine-tune-from", "1"], "--per-signal"),
    (["--per-signal", "--fine-tune-from", "99"], "traffic-cologne8-"),
])
def test_the_cli_refuses_a_fine_tuning_it_cannot_run_with_exit_2(tmp_path, args: list[str], names: str) -> None:
    from click.testing import CliRunner

    from edgeplane.cli import main as edgeplane_cli

    result = CliRunner().invoke(edgeplane_cli, ["traffic", "train", "--net", "cologne8", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert names in result.output and "--fine-tune-from" in result.output
