"""Whole episodes through a host: SUMO connector -> bus -> traffic-signal solution (RL via the
shared inference service, shield, fallback) -> guarded commands -> SUMO, in simulated time."""

from __future__ import annotations

import asyncio

import numpy as np

import edgeplane_traffic.plugin as plugin
from edgeplane import Batch, Event
from edgeplane.testing import wait_for
from edgeplane_traffic.evaluate import run_episode
from edgeplane_traffic.models import shipped_policy
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.shield import unsafe_transitions

SECONDS = 300


def site(tmp_path, lockstep: list[str], **solution) -> dict:
    return {
        "site": {"id": "e2e"},
        "clock": {"mode": "simulated"},
        "inference": {"providers": ["cpu"], "models": str(tmp_path / "models"), "preload": ["traffic-single-intersection"]},
        "devices": {"sumo": {"connector": "sumo", "net": "single-intersection", "seconds": SECONDS, "seed": 4,
                             "lockstep": lockstep, "lockstep_timeout": 30}},
        "solutions": {"signal": {"type": "traffic-signal", "device": "sumo", "net": "single-intersection",
                                 "controller": "rl", "deadline": 2.0, **solution}},
    }


async def test_rl_episode_through_the_host_equals_the_offline_evaluation(edgeplane_host, tmp_path) -> None:
    assert shipped_policy("single-intersection") is not None, "the plugin ships a single-intersection policy"
    async with edgeplane_host(site(tmp_path, ["signal/ack"]), plugins=[plugin]) as host:
        device, solution = host.device("sumo"), host.solution("signal")
        await wait_for(lambda: device.health.state.value == "finished", timeout=120)
        await wait_for(lambda: (host.bus.latest("signal/ack") or (0, 0))[1] >= SECONDS - 1, timeout=30)
        ctl = solution.controller
        assert ctl.fallbacks == {} and ctl.decisions["rl"] >= SECONDS // 10
        host_decisions = ctl.decisions["rl"]
        assert device.steps == SECONDS
        audit = await host.store.audit(10_000)
        commands = [a for a in audit if a["point"] == "t.phase"]
        assert commands and all(a["status"] == "ok" and a["source"] == "signal" for a in commands)
        assert all(a["reason"] for a in commands)
        assert unsafe_transitions(solution.layout, [0, *[int(a["value"]) for a in commands]], all_red=True) == []
        host_delay = float(host.bus.latest("sumo/sim.avg_delay")[1])
        host_commands = [int(a["value"]) for a in commands]
    # the same seed offline: the host must make the very same commands
    offline: list[int] = []
    result = await asyncio.to_thread(
        run_episode, resolve("single-intersection", seconds=SECONDS), "rl", seed=4, model=shipped_policy("single-intersection"),
        deadline=2.0, on_step=lambda t, o: offline.append(o.command) if o.command is not None else None)
    assert host_commands == offline
    assert result.fallbacks == 0 and result.decisions == host_decisions
    assert host_delay > 0 and result.avg_delay_s > 0


async def test_model_fault_falls_back_without_an_unsafe_transition_and_recovers(edgeplane_host, tmp_path) -> None:
    async with edgeplane_host(site(tmp_path, ["signal/ack", "test/go"]), plugins=[plugin]) as host:
        device, solution = host.device("sumo"), host.solution("signal")
        events = host.bus.subscribe(["signal/fallback"], name="test-events", maxsize=1000)
        await wait_for(lambda: host.bus.latest("sumo/sim.time") is not None, timeout=60)
        while device.health.state.value != "finished":
            now = float(host.bus.latest("sumo/sim.time")[1])
            if now == 100:
                solution.inject_fault("missing")
            if now == 200:
                solution.inject_fault(None)
            await host.bus.publish(Batch("test/go", np.array([0.0]), np.array([now])))
            await wait_for(lambda: float(host.bus.latest("sumo/sim.time")[1]) > now or device.health.state.value == "finished",
                           timeout=30)
        ctl = solution.controller
        assert ctl.fallbacks == {"model": 1} and ctl.recoveries == 1 and not ctl.in_fallback
        assert 15 <= ctl.decisions["max-pressure"] <= 21  # 100 s of 5 s decisions while the model was gone
        kinds = []
        while (message := events.get_nowait()) is not None:
            if isinstance(message, Event):
                kinds.append(message.kind)
        assert kinds == ["fallback", "recovered"]
        audit = await host.store.audit(10_000)
        commands = [a for a in audit if a["point"] == "t.phase"]
        assert any("fallback (model missing" in a["reason"] for a in commands)
        assert unsafe_transitions(solution.layout, [0, *[int(a["value"]) for a in commands]], all_red=True) == []
        metrics = host.metrics.exposition().decode()
        assert 'edgeplane_traffic_fallbacks_total{reason="model",solution="signal"} 1.0' in metrics


async def test_a_model_absent_from_the_registry_runs_the_fixed_time_fallback(edgeplane_host, tmp_path) -> None:
    config = site(tmp_path, ["signal/ack"], model="traffic-nowhere", fallback="fixed")
    config["inference"]["preload"] = []
    config["devices"]["sumo"]["seconds"] = 120
    async with edgeplane_host(config, plugins=[plugin]) as host:
        device, solution = host.device("sumo"), host.solution("signal")
        await wait_for(lambda: device.health.state.value == "finished", timeout=120)
        ctl = solution.controller
        assert ctl.fallbacks == {"model": 1} and ctl.decisions["rl"] == 0 and ctl.decisions["fixed"] >= 20
        assert "traffic-nowhere" in solution.health.detail and solution.health.state.value == "degraded"
        audit = await host.store.audit(1000)
        assert all("fallback (model missing" in a["reason"] for a in audit if a["point"] == "t.phase" and "clearance" not in a["reason"])
