"""The sumo connector in a real host: points, simulated time, guarded phase commands, bindings."""

from __future__ import annotations


import numpy as np
import pytest

import edgeplane_traffic.plugin as plugin
from edgeplane import Batch, SimulatedClock
from edgeplane.testing import wait_for
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.nets import resolve

LAYOUT = layout_from_net(resolve("single-intersection").net)


def value(host, topic: str) -> float:
    latest = host.bus.latest(topic)
    assert latest is not None, f"nothing published on {topic}"
    return float(latest[1])


async def step_to(host, sim_time: float) -> None:
    """Let the lockstepped connector run until sim.time reaches ``sim_time``."""
    while True:
        now = host.bus.latest("sumo/sim.time")
        current = float(now[1]) if now else 0.0
        if current >= sim_time:
            return
        await host.bus.publish(Batch("test/ack", np.array([0.0]), np.array([current])))
        await wait_for(lambda: (host.bus.latest("sumo/sim.time") or (0, -1))[1] > current, timeout=10)


async def test_points_clock_and_guarded_phase_commands(edgeplane_host) -> None:
    clock = SimulatedClock(1_700_000_000.0)
    site = {
        "site": {"id": "sumo-test"},
        "devices": {"sumo": {"connector": "sumo", "net": "single-intersection", "seconds": 120, "lockstep": ["test/ack"],
                             "lockstep_timeout": 30}},
    }
    async with edgeplane_host(site, plugins=[plugin], clock=clock) as host:
        device = host.device("sumo")
        await wait_for(lambda: host.bus.latest("sumo/t.phase") is not None, timeout=30)
        assert device.binding == "libsumo"
        await step_to(host, 30)
        assert clock.now() == pytest.approx(1_700_000_000.0 + 30, abs=1.0)  # the host's clock is SUMO's
        lane = "lane.w_t_0"
        for metric in ("vehicles", "halting", "vehicle_length", "occupancy", "speed", "waiting"):
            assert not np.isnan(value(host, f"sumo/{lane}.{metric}"))
        assert value(host, "sumo/t.phase") == 0 and value(host, "sumo/t.phase_time") >= 29
        # west-east traffic queues at red (green 0 serves north-south)
        assert value(host, "sumo/lane.w_t_0.halting") + value(host, "sumo/lane.w_t_1.halting") > 0

        yellow = LAYOUT.yellow_phase(0, 1)
        result = await host.commands.execute("sumo", "t.phase", yellow, source="test", reason="drill")
        assert result.ok and result.readback == yellow
        await step_to(host, 33)
        assert value(host, "sumo/t.phase") == yellow and value(host, "sumo/t.phase_time") <= 3
        rejected = await host.commands.execute("sumo", "t.phase", LAYOUT.all_red_phase + 1, source="test")
        assert rejected.status.value == "rejected" and "max" in rejected.message
        failed = await host.commands.execute("sumo", "t.phase", 1.5, source="test")
        assert failed.status.value in ("rejected", "failed")
        audit = await host.store.audit(10)
        assert [(a["value"], a["status"], a["reason"]) for a in audit][0] == (yellow, "ok", "drill")
        # the stop-bar and advance loops see the west-east traffic (crossing or standing on them)
        seen = 0.0
        for t in range(40, 60):
            await step_to(host, t)
            for loop in ("advance_count", "advance_occupancy", "stop_bar_occupancy"):
                seen += value(host, f"sumo/det.w_t_0.{loop}") + value(host, f"sumo/det.w_t_1.{loop}")
            assert 0.0 <= value(host, "sumo/det.w_t_0.stop_bar_occupancy") <= 100.0
        assert seen > 0
        await step_to(host, 120)
        await wait_for(lambda: device.health.state.value == "finished", timeout=30)
        assert value(host, "sumo/sim.arrived") > 0 and value(host, "sumo/sim.avg_delay") > 0


async def test_two_simulations_in_one_host_use_libsumo_and_traci(edgeplane_host) -> None:
    site = {
        "site": {"id": "sumo-two"},
        "clock": {"mode": "simulated"},
        "devices": {
            "a": {"connector": "sumo", "net": "single-intersection", "seconds": 100},
            "b": {"connector": "sumo", "net": "single-intersection", "seconds": 100, "binding": "traci", "control": "native"},
        },
    }
    async with edgeplane_host(site, plugins=[plugin]) as host:
        a, b = host.device("a"), host.device("b")
        native = host.bus.subscribe("b/t.native_phase", name="test", maxsize=10_000)
        await wait_for(lambda: a.health.state.value == "finished" and b.health.state.value == "finished", timeout=60)
        assert {a.binding, b.binding} == {"libsumo", "traci"}
        assert value(host, "b/t.phase") == -1  # the net's own program runs
        seen = set()
        while (message := native.get_nowait()) is not None:
            seen.add(int(message.values[-1]))
        assert seen == {0, 1, 2, 3}  # 42 s green, 2 s yellow, 42 s green, 2 s yellow within 100 s
        assert a.steps == b.steps == 100


async def test_unknown_points_and_nets_are_reported_with_the_fix(edgeplane_host) -> None:
    site = {
        "site": {"id": "sumo-bad"},
        "clock": {"mode": "simulated"},
        "devices": {"x": {"connector": "sumo", "net": "single-intersection", "seconds": 10,
                          "points": {"t.phse": {"access": "rw"}}},
                    "y": {"connector": "sumo", "net": "nowhere.net.xml", "seconds": 10}},
        "supervision": {"backoff_initial": 60, "stop_timeout": 1},
    }
    async with edgeplane_host(site, plugins=[plugin]) as host:
        x, y = host.device("x"), host.device("y")
        await wait_for(lambda: "t.phse" in x.health.detail and "nowhere" in y.health.detail, timeout=30)
        assert "not offered by the sumo connector" in x.health.detail
        assert "neither a known scenario" in y.health.detail
