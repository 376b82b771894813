"""A policy's decision period and detector window: trained with one, run with the same everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import edgeplane_traffic.plugin as plugin
import edgeplane_traffic.solution as solution_module
import numpy as np
import pytest
from click.testing import CliRunner
from edgeplane_traffic.detectors import DetectorWindow, detector_layout
from edgeplane_traffic.evaluate import run_episode
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.models import MODELS_DIR, PolicyFiles, policy_cadence, shipped_policy
from edgeplane_traffic.nets import resolve

from edgeplane import HealthState
from edgeplane.cli import main as edgeplane_cli
from edgeplane.host import PartKey

LAYOUT = layout_from_net(resolve("single-intersection").net)


def test_a_sliding_detector_window_spans_its_last_readings_whatever_the_decisions() -> None:
    n = len(LAYOUT.lanes)
    since_decision, sliding = DetectorWindow(detector_layout(LAYOUT)), DetectorWindow(detector_layout(LAYOUT), span=3)
    counts = np.zeros(n)  # one buffer refilled every step, as the host solution does
    for second in range(5):  # 1, 2, ... 5 vehicles over lane 0's advance loop, lane 1's stop bar half occupied
        counts[:] = np.eye(n)[0] * (second + 1)
        for window in (since_decision, sliding):
            window.add(np.eye(n)[1] * 50.0, np.zeros(n), np.zeros(n), counts)
    # counts of the last 3 readings: 3 + 4 + 5; since the decision: all five
    assert sliding.snapshot()["advance_count"][0] == 12.0 and since_decision.snapshot()["advance_count"][0] == 15.0
    assert sliding.snapshot()["stop_bar_occupancy"][1] == pytest.approx(0.5)
    since_decision.reset()
    sliding.reset()  # a decision: the sliding window keeps what it saw
    assert since_decision.snapshot()["advance_count"][0] == 0.0 and sliding.snapshot()["advance_count"][0] == 12.0
    with pytest.raises(ValueError, match="span 0 readings"):
        DetectorWindow(detector_layout(LAYOUT), span=0)


def test_every_shipped_policy_carries_its_cadence_and_older_ones_keep_5_s() -> None:
    assert policy_cadence({"timing": {"yellow": 3.0}}) == (5.0, None)  # metadata from before the period was configurable
    assert policy_cadence({"timing": {"decision_period": 1.0, "detector_window": 5}}) == (1.0, 5)
    for meta in MODELS_DIR.glob("*/*/metadata.json"):
        timing = json.loads(meta.read_text())["timing"]
        period, window = PolicyFiles(meta.parent).decision_period, PolicyFiles(meta.parent).detector_window
        assert period == timing["decision_period"] and window == timing.get("detector_window"), meta
        assert window is None or period < 5.0  # a short period sees the last seconds of counts, not one reading


def _green_lengths(states: list[str]) -> list[int]:
    runs: list[list[int]] = []
    for state in states:
        green = "y" not in state and "G" in state or "g" in state
        if runs and runs[-1][0] == int(green):
            runs[-1][1] += 1
        else:
            runs.append([int(green), 1])
    return [length for green, length in runs[1:-1] if green]


@pytest.mark.parametrize(("period", "expected"), [(1.0, {7}), (5.0, {11})])
def test_a_short_period_ends_a_green_on_the_second_the_policy_asks(period: float, expected: set[int]) -> None:
    """A policy that wants each green for 7 s: deciding every second it gets 7 s; every 5 s its wish
    waits for the next decision (the decision clock runs on through the 5 s clearance, so 11 s)."""

    async def seven_seconds(obs: np.ndarray) -> np.ndarray:
        green = int(np.argmax(obs[:LAYOUT.num_greens]))
        held = obs[LAYOUT.num_greens + 1] * 50.0  # green time / maximum green
        return np.eye(LAYOUT.num_greens)[green if held < 7 - 1e-6 else 1 - green]

    result = run_episode(resolve("single-intersection", seconds=120), "rl", seed=1, infer=seven_seconds, deadline=5.0,
                         decision_period=period, record_states=True)
    assert set(_green_lengths(result.states)) == expected
    assert result.fallbacks == 0


def _policy_with_cadence(folder: Path, period: float, window: int | None) -> Path:
    source = shipped_policy("single-intersection")
    assert source is not None
    folder.mkdir(parents=True)
    shutil.copyfile(source / "model.onnx", folder / "model.onnx")
    meta = json.loads((source / "metadata.json").read_text())
    meta["timing"] |= {"decision_period": period, "detector_window": window}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_evaluate_runs_a_policy_at_its_trained_period_and_refuses_another(tmp_path: Path) -> None:
    model = _policy_with_cadence(tmp_path / "two-seconds", 2.0, 5)
    args = ["traffic", "evaluate", "--net", "single-intersection", "--controller", "rl", "--model", str(model), "--seconds", "200"]
    done = CliRunner().invoke(edgeplane_cli, [*args, "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.strip().splitlines()[-1])["decision_period_s"] == 2.0
    refused = CliRunner().invoke(edgeplane_cli, [*args, "--decision-period", "5"], catch_exceptions=False)
    assert refused.exit_code == 2 and "decides every 2 s" in refused.output and "drop --decision-period" in refused.output


async def test_the_host_solution_runs_a_policy_at_its_own_cadence(edgeplane_host, tmp_path: Path, monkeypatch) -> None:
    _policy_with_cadence(tmp_path / "models" / "traffic-single-intersection" / "1", 2.0, 4)
    monkeypatch.setattr(solution_module, "MODELS_DIR", tmp_path / "models")
    signal = {"type": "traffic-signal", "device": "ctl", "net": "single-intersection", "controller": "rl", "fallback": "fixed"}
    site = {"site": {"id": "cadence"}, "devices": {"ctl": {"connector": "memory", "points": {"t.phase": {"value": 0}}}},
            "solutions": {"signal": signal, "twin": {**signal, "controller": "max-pressure"}}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        rl, twin = host.solution("signal"), host.solution("twin")
        assert rl.controller.decision_period == 2.0 and rl._detectors.span == 4
        assert twin.controller.decision_period == 5.0 and twin._detectors.span is None  # not a policy: 5 s, as configured
    # a site that asks for a period no version was trained for: that part fails with the fix, the host runs on
    site["solutions"] = {"signal": {**signal, "decision_period": "5s"}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        part = host.parts[PartKey.solution("signal")]
        assert part.obj is None and part.health.state == HealthState.FAILED
        assert ("no version of model traffic-single-intersection decides every 5 s (decision_period); it has version 1 "
                "every 2 s. Remove decision_period to run version 1 every 2 s, or train one with 'edgeplane traffic train "
                "--net single-intersection --decision-period 5'") in part.health.detail


async def test_a_site_that_decides_every_5_s_gets_the_newest_5_s_version(edgeplane_host, tmp_path: Path, monkeypatch,
                                                                          caplog) -> None:
    """A cabinet that cannot poll and command every second sets decision_period: 5s; the newest version is
    a 1 s policy, so the solution runs the newest 5 s one instead, says so, and the service serves it."""
    models = tmp_path / "models"
    for version, period, window in (("3", 5.0, None), ("4", 5.0, None), ("5", 2.0, 4), ("6", 1.0, 4)):
        _policy_with_cadence(models / "traffic-single-intersection" / version, period, window)
    monkeypatch.setattr(solution_module, "MODELS_DIR", models)
    signal = {"type": "traffic-signal", "device": "ctl", "net": "single-intersection", "controller": "rl", "fallback": "fixed"}
    site = {"site": {"id": "fallback-period"}, "devices": {"ctl": {"connector": "memory", "points": {"t.phase": {"value": 0}}}},
            "solutions": {"slow": {**signal, "decision_period": "5s"}, "two": {**signal, "decision_period": 2},
                          "newest": signal}}
    with caplog.at_level("INFO"):
        async with edgeplane_host(site, plugins=[plugin]) as host:
            picked = {name: (host.solution(name).model_version, host.solution(name).controller.decision_period,
                             host.solution(name)._detectors.span) for name in ("slow", "two", "newest")}
            assert picked == {"slow": ("4", 5.0, None), "two": ("5", 2.0, 4), "newest": ("6", 1.0, 4)}
    assert ("solution slow: model traffic-single-intersection version 4, the newest that decides every 5 s "
            "(decision_period); the newest, version 6, decides every 1 s") in caplog.text


async def test_the_inference_service_serves_the_chosen_version_and_never_swaps_another_away(edgeplane_host, tmp_path: Path,
                                                                                             caplog) -> None:
    """With a real inference service: the shipped single-intersection versions are read from its registry;
    a 5 s site gets a 5 s version served. A second solution on the same host wanting another version of the
    same model cannot have it swapped in under the first: it is refused, named, and its fallback decides."""
    from edgeplane_traffic.models import MODELS_DIR as shipped

    periods = {p.parent.name: PolicyFiles(p.parent).decision_period
               for p in (shipped / "traffic-single-intersection").glob("*/metadata.json")}
    five = max((v for v, period in periods.items() if period == 5.0), key=int)
    newest = max(periods, key=int)
    assert periods[newest] != 5.0, "the newest shipped single-intersection policy is expected to decide faster than 5 s"
    signal = {"type": "traffic-signal", "device": "ctl", "net": "single-intersection", "controller": "rl", "fallback": "fixed"}
    site = {"site": {"id": "served"}, "inference": {"providers": ["cpu"], "models": str(tmp_path / "models")},
            "devices": {"ctl": {"connector": "memory", "points": {"t.phase": {"value": 0}}}},
            "solutions": {"slow": {**signal, "decision_period": "5s"}}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        slow = host.solution("slow")
        assert slow.model_version == five and slow.health.state == HealthState.OK, slow.health.detail
        assert host.inference.loaded()["traffic-single-intersection"].version == five
    site["solutions"]["fast"] = signal  # starts after slow's version is served
    async with edgeplane_host(site, plugins=[plugin]) as host:
        served = host.inference.loaded()["traffic-single-intersection"].version
        first, second = ("slow", "fast") if served == five else ("fast", "slow")
        assert host.solution(first).health.state == HealthState.OK
        refused = host.solution(second)
        assert refused.health.state == HealthState.DEGRADED
        assert f"model traffic-single-intersection version {served} is already served on this host" in refused.health.detail
        assert host.inference.loaded()["traffic-single-intersection"].version == served  # not swapped away
    assert "give this solution its own copy under another model: name" in caplog.text


def test_train_refuses_a_period_below_a_simulation_step(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    done = CliRunner().invoke(edgeplane_cli, ["traffic", "train", "--net", "single-intersection", "--algo", "ppo",
                                              "--decision-period", "0.5", "--out", str(tmp_path)])
    assert done.exit_code == 2 and "give 1 s (SUMO's step) up to the maximum green" in done.output


async def test_readings_slower_than_the_policy_decides_are_named_once_with_the_fix(edgeplane_host, tmp_path: Path, monkeypatch,
                                                                                  caplog) -> None:
    from edgeplane import Batch
    from edgeplane.testing import wait_for

    _policy_with_cadence(tmp_path / "models" / "traffic-single-intersection" / "1", 1.0, 4)
    monkeypatch.setattr(solution_module, "MODELS_DIR", tmp_path / "models")
    site = {"site": {"id": "slow-poll"}, "devices": {"ctl": {"connector": "memory", "points": {"t.phase": {"value": 0}}}},
            "solutions": {"signal": {"type": "traffic-signal", "device": "ctl", "net": "single-intersection",
                                     "controller": "rl", "fallback": "fixed"}}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        for k in range(8):  # a cabinet read every 3 s
            await host.bus.publish(Batch("ctl/t.phase", np.array([1000.0 + 3 * k]), np.array([0.0])))
        await wait_for(lambda: (host.bus.latest("signal/ack") or (0, 0))[1] == 1021.0, timeout=10)
    said = [r.getMessage() for r in caplog.records if "arrive every" in r.getMessage()]
    assert said == ["solution signal: readings of ctl arrive every 3 s, but model traffic-single-intersection version 1 "
                    "decides every 1 s: set decision_period to the period this connector can poll at (e.g. 5s) to run a "
                    "version trained for it"]
