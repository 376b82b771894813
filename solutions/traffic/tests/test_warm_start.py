"""train --warm-start: clone a detector controller on train demand, fine-tune, select on validation demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.observation import build_detector_observation
from edgeplane_traffic.warm_start import DetectorTeacher

pytest.importorskip("stable_baselines3")


def _obs(layout: Any, green: int, min_green: bool, green_time: float, counts: list[float], stop_bar: list[float]) -> np.ndarray:
    n = len(layout.lanes)
    detectors = {"stop_bar_presence": np.asarray(stop_bar), "stop_bar_occupancy": np.asarray(stop_bar) / 2,
                 "advance_occupancy": np.zeros(n), "advance_count": np.asarray(counts, dtype=float)}
    return build_detector_observation(layout, green, min_green, green_time, detectors)


def test_the_actuated_teacher_extends_on_arrivals_and_gaps_out_to_waiting_traffic() -> None:
    layout = layout_from_net(resolve("single-intersection").net)
    teacher = DetectorTeacher(layout, "actuated", gap=1.0)
    served = [{layout.lanes.index(m.in_lane) for m in layout.green_movements(g)} for g in range(2)]
    arrivals_on_0 = [2.0 if k in served[0] else 0.0 for k in range(len(layout.lanes))]
    waiting_on_1 = [1.0 if k in served[1] else 0.0 for k in range(len(layout.lanes))]
    assert teacher(_obs(layout, 0, False, 0.05, [0.0] * len(layout.lanes), waiting_on_1)) == 0  # minimum green first
    assert teacher(_obs(layout, 0, True, 0.3, arrivals_on_0, waiting_on_1)) == 0  # vehicles still arriving: extend
    assert teacher(_obs(layout, 0, True, 1.0, arrivals_on_0, waiting_on_1)) == 1  # maximum green reached
    assert teacher(_obs(layout, 0, True, 0.3, [0.0] * len(layout.lanes), waiting_on_1)) == 1  # gap: serve the waiting
    assert teacher(_obs(layout, 0, True, 0.3, [0.0] * len(layout.lanes), [0.0] * len(layout.lanes))) == 0  # rest in green
    with pytest.raises(ValueError, match="warm-start teacher 'webster'"):
        DetectorTeacher(layout, "webster", 1.0)


class _RecordingSumo:
    """libsumo/TraCI with every ``start`` recorded: which route file SUMO opened, in which stage."""

    def __init__(self, module: Any, opened: list[tuple[str, str]], stage: list[str]):
        self._module, self._opened, self._stage = module, opened, stage
        self.__name__ = module.__name__

    def start(self, cmd: list[str], *args: Any, **kwargs: Any) -> Any:
        self._opened.append((self._stage[0], cmd[cmd.index("-r") + 1]))
        return self._module.start(cmd, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def test_demonstrations_use_train_demand_and_selection_validation_demand_only(tmp_path: Path, monkeypatch) -> None:
    import edgeplane_traffic.evaluate as evaluate
    import edgeplane_traffic.sumo_runtime as sumo_runtime
    import edgeplane_traffic.training as training
    import edgeplane_traffic.warm_start as warm_start

    stage = ["training"]
    opened: list[tuple[str, str]] = []  # (stage, route file SUMO opened)
    generated: dict[str, int] = {}  # route file -> demand seed it was generated with
    real_generate, real_traci = training.generate_demand, sumo_runtime.traci_module

    def generate(*args: Any, **kwargs: Any) -> Any:
        generated[str(args[2])] = kwargs["seed"]
        return real_generate(*args, **kwargs)

    def in_stage(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            stage[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                stage[0] = "training"
        return wrapped

    monkeypatch.setattr(training, "generate_demand", generate)
    monkeypatch.setattr(sumo_runtime, "traci_module", lambda *a, **k: _RecordingSumo(real_traci(*a, **k), opened, stage))
    monkeypatch.setattr(evaluate, "traci_module", sumo_runtime.traci_module)
    monkeypatch.setattr(warm_start, "record_demonstrations", in_stage("demonstrations", warm_start.record_demonstrations))
    monkeypatch.setattr(training, "validation_delay", in_stage("validation", training.validation_delay))

    meta = training.train(resolve("single-intersection"), "ppo", 64, tmp_path / "policy", seed=3, episode_seconds=150,
                          checkpoints=1, validation_patterns=2, progress=False, warm_start="actuated", teacher_gap=1.5,
                          demonstrations=1, bc_epochs=2, dagger=1)

    def split(seed: int) -> str:
        return {0: "train", 1: "validation"}.get(seed // 1_000_000, "evaluation")

    seen: dict[str, set[str]] = {}
    for where, route in opened:
        seen.setdefault(where, set()).add(split(generated[route]))
    # what SUMO opened: demonstrations and PPO on train demand, checkpoint selection on validation demand, nothing else
    assert seen == {"demonstrations": {"train"}, "training": {"train"}, "validation": {"validation"}}
    validation_routes = [generated[r] for where, r in opened if where == "validation"]
    assert sorted(set(validation_routes)) == meta["validation_demand_seeds"] == [1_000_000, 1_000_001]
    warm = meta["warm_start"]
    assert warm["teacher"] == "actuated" and warm["episodes"] == 2 and len(warm["dagger_rounds"]) == 2
    assert all(split(s) == "train" for s in warm["demand_seeds"])
    assert not set(warm["demand_seeds"]) & set(meta["training_demand_seeds"])  # demonstrations on their own train patterns
    # the clone is checkpoint 0: selection keeps it unless a fine-tuned checkpoint does better on validation
    steps = [row["timestep"] for row in meta["validation"]]
    assert steps[0] == 0 and len(steps) == 2
    best = min(meta["validation"], key=lambda row: row["validation_avg_delay_s"])
    assert meta["selected_timestep"] == best["timestep"] and meta["onnx_agreement"] == 1.0
