"""Controllers and the fallback: missing, late, failing and malformed policies, and recovery."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgeplane_traffic.control import IntersectionController, LaneReading, max_pressure_choice
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.nets import resolve

LAYOUT = layout_from_net(resolve("single-intersection").net)


def readings(ns: float, we: float) -> dict[str, LaneReading]:
    # greens: 0 serves the n_t lanes (north-south), 1 the w_t lanes (west-east)
    out = {}
    for lane in LAYOUT.lanes:
        count = ns if lane.startswith("n_t") else we
        out[lane] = LaneReading(count, count, 5.0)
    return out


def test_max_pressure_picks_the_green_with_the_largest_queue_difference() -> None:
    assert LAYOUT.green_movements(0)[0].in_lane.startswith("n_t")
    assert max_pressure_choice(LAYOUT, readings(ns=9, we=1)) == 0
    assert max_pressure_choice(LAYOUT, readings(ns=1, we=9)) == 1
    # vehicles on the exits reduce a movement's pressure
    lanes = readings(ns=5, we=4)
    for m in LAYOUT.green_movements(0):
        lanes[m.out_lane] = LaneReading(10, 0, 5)
    assert max_pressure_choice(LAYOUT, lanes) == 1


async def run_ticks(ctl: IntersectionController, seconds: int, lanes, start: float = 0.0):
    phase, held = 0, 0.0
    outcomes = []
    for t in range(int(start), int(start) + seconds):
        held += 1
        outcome = await ctl.tick(float(t), phase, held, lanes)
        outcomes.append(outcome)
        if outcome.command is not None and outcome.command != phase:
            phase, held = outcome.command, 0.0
    return outcomes


async def test_missing_model_falls_back_to_max_pressure_and_is_counted() -> None:
    ctl = IntersectionController(LAYOUT, "rl", infer=None)
    outcomes = await run_ticks(ctl, 60, readings(ns=1, we=9))
    assert ctl.in_fallback and ctl.fallbacks == {"model": 1}
    assert ctl.decisions["max-pressure"] == 12 and ctl.decisions["rl"] == 0
    assert [o.fallback_reason for o in outcomes if o.fallback_reason] == ["model missing"]
    # max-pressure switched to the loaded west-east green, through its yellow
    commands = [o.command for o in outcomes if o.command is not None]
    assert commands[:3] == [LAYOUT.yellow_phase(0, 1), LAYOUT.all_red_phase, 1]
    assert any("fallback (model missing)" in o.reason for o in outcomes if o.command is not None)


async def test_late_answers_fall_back_and_recovery_switches_back() -> None:
    slow = {"on": True}

    async def infer(obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (LAYOUT.observation_size,) and obs.dtype == np.float32
        if slow["on"]:
            await asyncio.sleep(0.2)
        return np.array([0.0, 1.0], dtype=np.float32)

    ctl = IntersectionController(LAYOUT, "rl", infer=infer, deadline=0.02)
    await run_ticks(ctl, 20, readings(ns=9, we=1))
    assert ctl.in_fallback and ctl.fallbacks == {"late": 1}
    assert ctl.decisions["max-pressure"] == 4
    slow["on"] = False
    outcomes = await run_ticks(ctl, 20, readings(ns=9, we=1), start=20)
    assert not ctl.in_fallback and ctl.recoveries == 1
    assert sum(o.recovered for o in outcomes) == 1
    assert ctl.decisions["rl"] == 4
    assert max(ctl.latencies_s) < 5.0  # late answers are cut at the deadline, not awaited


async def test_a_policy_deciding_every_second_falls_back_to_a_controller_deciding_every_5_s() -> None:
    answers = {"ok": False}

    async def infer(obs: np.ndarray) -> np.ndarray:
        if not answers["ok"]:
            raise RuntimeError("session exploded")
        return np.array([1.0, 0.0], dtype=np.float32)

    ctl = IntersectionController(LAYOUT, "rl", infer=infer, decision_period=1.0)
    assert ctl.fallback_period == 5.0
    await run_ticks(ctl, 20, readings(ns=9, we=1))  # green 0 throughout: max-pressure keeps it
    assert ctl.fallbacks == {"error": 1} and ctl.decisions["max-pressure"] == 4  # t = 0, 5, 10, 15
    answers["ok"] = True
    await run_ticks(ctl, 10, readings(ns=9, we=1), start=20)
    assert ctl.recoveries == 1 and ctl.decisions["rl"] == 10  # back to one decision a second


@pytest.mark.parametrize(
    "answer, reason",
    [
        (RuntimeError("session exploded"), "error"),
        (np.array([1.0, 2.0, 3.0]), "error"),  # three scores for two greens
        (np.array([np.nan, 1.0]), "error"),
    ],
)
async def test_failing_or_malformed_policies_fall_back(answer, reason: str) -> None:
    async def infer(obs: np.ndarray) -> np.ndarray:
        if isinstance(answer, Exception):
            raise answer
        return answer

    ctl = IntersectionController(LAYOUT, "rl", infer=infer)
    outcomes = await run_ticks(ctl, 30, readings(ns=1, we=9))
    assert ctl.fallbacks == {reason: 1}
    assert ctl.decisions["rl"] == 0 and ctl.decisions["max-pressure"] == 6
    assert outcomes[0].fallback_reason.startswith(reason)


async def test_fixed_time_follows_the_nets_own_green_durations() -> None:
    ctl = IntersectionController(LAYOUT, "fixed")
    outcomes = await run_ticks(ctl, 200, readings(0, 0))
    greens = [o.command for o in outcomes if o.command is not None and LAYOUT.phase_kind(o.command) == "green"]
    assert greens[:3] == [1, 0, 1]
    first_yellow = next(i for i, o in enumerate(outcomes) if o.command is not None)
    assert 42 <= first_yellow + 1 <= 47  # 42 s green, decided every 5 s


async def test_rl_policy_is_obeyed_when_it_answers_in_time() -> None:
    async def infer(obs: np.ndarray) -> np.ndarray:
        return np.array([0.0, 1.0], dtype=np.float32)  # always west-east

    ctl = IntersectionController(LAYOUT, "rl", infer=infer)
    outcomes = await run_ticks(ctl, 40, readings(ns=9, we=1))
    assert ctl.fallbacks == {} and ctl.decisions["rl"] == 8
    assert outcomes[0].command is None  # min green holds the first green
    assert ctl.shield.interventions["min_green"] >= 1
    assert 1 in [o.command for o in outcomes]
    p50, p99 = ctl.latency_percentiles_ms()
    assert 0 <= p50 <= p99


async def test_the_policy_is_asked_from_the_deciding_task_itself_under_its_deadline() -> None:
    """No task of its own per decision (it would start a loop pass late, behind every other signal's work);
    the deadline still holds: a policy that answers too late is the fallback's turn."""
    asked_from: list[asyncio.Task | None] = []
    delay = {"s": 0.0}

    async def infer(obs: np.ndarray) -> np.ndarray:
        asked_from.append(asyncio.current_task())
        await asyncio.sleep(delay["s"])
        return np.array([0.0, 1.0], dtype=np.float32)

    ctl = IntersectionController(LAYOUT, "rl", infer=infer, decision_period=1.0, deadline=0.05)
    outcome = await ctl.tick(0.0, 0, 10.0, readings(ns=1, we=9))
    assert outcome.decided and outcome.source == "rl" and asked_from == [asyncio.current_task()]
    delay["s"] = 0.2
    late = await ctl.tick(1.0, 0, 11.0, readings(ns=1, we=9))
    assert late.decided and late.fallback_reason == "late (> 50 ms)" and ctl.fallbacks == {"late": 1}
