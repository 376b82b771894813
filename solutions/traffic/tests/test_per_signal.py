"""One policy per signal on a net whose signals differ (train --per-signal): the teacher, the training, the shipped files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from edgeplane_traffic.demand import SPLIT_SEED_BASE
from edgeplane_traffic.layout import IntersectionLayout, signal_layouts
from edgeplane_traffic.models import PolicyFiles, shipped_policy
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.observation import DETECTOR_COUNT_SCALE
from edgeplane_traffic.training_per_signal import GapOutPressureTeacher, per_signal_model_name


def _observation(layout: IntersectionLayout, green: int, *, min_green_passed: bool = True, green_time: float = 0.2,
                 presence: dict[str, float] | None = None, advance_count: dict[str, float] | None = None) -> np.ndarray:
    n = len(layout.lanes)
    obs = np.zeros(layout.num_greens + 2 + 4 * n, dtype=np.float32)
    obs[green] = 1.0
    obs[layout.num_greens] = float(min_green_passed)
    obs[layout.num_greens + 1] = green_time
    base = layout.num_greens + 2
    for lane, value in (presence or {}).items():
        obs[base + layout.lanes.index(lane)] = value
    for lane, value in (advance_count or {}).items():
        obs[base + 3 * n + layout.lanes.index(lane)] = value / DETECTOR_COUNT_SCALE
    return obs


def _served(layout: IntersectionLayout, green: int) -> set[str]:
    return {m.in_lane for m in layout.green_movements(green)}


def test_the_teacher_extends_on_arrivals_and_calls_only_for_lanes_the_green_does_not_serve() -> None:
    layouts = signal_layouts(resolve("cologne8").net)
    assert len({(len(x.lanes), x.num_greens) for x in layouts}) > 1  # signals of different structure
    # a signal whose greens overlap: some lane is served by green 0 and by another green
    layout = next(x for x in layouts if any(_served(x, 0) & _served(x, g) for g in range(1, x.num_greens)))
    teacher = GapOutPressureTeacher(layout, gap=2)
    mine = sorted(_served(layout, 0))
    other = next(g for g in range(1, layout.num_greens) if _served(layout, g) - _served(layout, 0))
    theirs = sorted(_served(layout, other) - _served(layout, 0))
    shared = sorted(_served(layout, 0) & set().union(*(_served(layout, g) for g in range(1, layout.num_greens))))
    busy = {lane: 1.0 for lane in theirs}
    # minimum green not passed: hold, whatever waits
    assert teacher(_observation(layout, 0, min_green_passed=False, presence=busy)) == 0
    # enough vehicles crossing its advance loops (2 in the window): extend
    assert teacher(_observation(layout, 0, presence=busy, advance_count={mine[0]: 2})) == 0
    # ... but not past the maximum green
    assert teacher(_observation(layout, 0, green_time=1.0, presence=busy, advance_count={mine[0]: 2})) == other
    # gap-out: one vehicle is below the gap, the waiting green is called
    assert teacher(_observation(layout, 0, presence=busy, advance_count={mine[0]: 1})) == other
    # vehicles on a lane the current green serves are no call for another green: rest
    assert teacher(_observation(layout, 0, presence={lane: 1.0 for lane in shared})) == 0
    with pytest.raises(ValueError, match="gap"):
        GapOutPressureTeacher(layout, gap=0)


def test_per_signal_training_writes_a_policy_for_every_signal_from_train_and_validation_demand(tmp_path) -> None:
    import onnxruntime as ort
    from edgeplane_traffic.training_per_signal import train_per_signal

    spec = replace(resolve("cologne8"), seconds=60)
    summary = train_per_signal(spec, tmp_path, demonstrations=1, dagger=1, epochs=2, validation_patterns=1,
                               decision_period=2.0, detector_window=4, progress=False)
    layouts = signal_layouts(spec.net)
    assert summary["signals"] == [x.tls for x in layouts]
    assert [row["round"] for row in summary["rounds"]] == [0, 1]
    assert summary["selected_round"] in (0, 1)
    for layout in layouts:
        policy = PolicyFiles(tmp_path / layout.tls)
        meta = policy.metadata
        assert meta["layout_fingerprint"] == layout.fingerprint() and meta["per_signal"] is True
        assert (policy.decision_period, policy.detector_window) == (2.0, 4)
        # demonstrations and DAgger on train patterns, selection on validation patterns; evaluation never
        assert all(SPLIT_SEED_BASE["train"] <= s < SPLIT_SEED_BASE["validation"] for s in meta["training_demand_seeds"])
        assert meta["validation_demand_seeds"] == [SPLIT_SEED_BASE["validation"]]
        session = ort.InferenceSession(str(policy.onnx), providers=["CPUExecutionProvider"])
        scores = session.run(None, {"obs": np.zeros((3, layout.observation_size_detectors), dtype=np.float32)})[0]
        assert scores.shape == (3, layout.num_greens)
    assert json.loads((tmp_path / "summary.json").read_text())["net"] == "cologne8"



@pytest.mark.parametrize("net", ["cologne8", "grid4x4"])
async def test_every_signal_loads_its_own_shipped_policy(edgeplane_host, net: str) -> None:
    import edgeplane_traffic.plugin as plugin
    from edgeplane_traffic.models import model_name_for

    layouts = signal_layouts(resolve(net).net)
    for layout in layouts:
        folder = shipped_policy(per_signal_model_name(net, layout.tls))
        assert folder is not None, f"signal {layout.tls} of {net} has no policy: ship one for every signal"
        policy = PolicyFiles(folder)
        assert policy.metadata["layout_fingerprint"] == layout.fingerprint()
        assert policy.metadata["observation_kind"] == "detectors" and policy.metadata["algo"] in ("dagger", "ppo")
    site = {"site": {"id": net}, "devices": {"ctl": {"connector": "memory", "points": {}}},
            "solutions": {f"s{k}": {"type": "traffic-signal", "device": "ctl", "net": net, "tls": x.tls, "controller": "rl",
                                    "model": model_name_for(per_signal_model_name(net, x.tls)), "fallback": "fixed"}
                          for k, x in enumerate(layouts)}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        for k, layout in enumerate(layouts):
            solution = host.solution(f"s{k}")
            assert solution.layout.tls == layout.tls
            # each solution runs its policy's own cadence and passed the layout check; only the missing
            # inference section holds it back
            assert solution.controller.decision_period == 1.0
            assert "no inference section" in solution.health.detail
