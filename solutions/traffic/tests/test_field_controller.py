"""The solution drives any device with the right points: here a memory device standing in for a
real signal controller (no SUMO), whose phase_time lags its phase as a field device's may."""

from __future__ import annotations

import edgeplane_traffic.plugin as plugin
from edgeplane import SimulatedClock
from edgeplane.testing import wait_for
from edgeplane_traffic.layout import layout_from_net, point_name
from edgeplane_traffic.nets import resolve

LAYOUT = layout_from_net(resolve("single-intersection").net)


async def test_max_pressure_drives_a_field_controller_safely(edgeplane_host) -> None:
    points = {f"lane.{point_name(lane)}.{m}": {"value": 0.0} for lane in [*LAYOUT.lanes, *LAYOUT.out_lanes]
              for m in ("vehicles", "halting", "vehicle_length")}
    points["t.phase_time"] = {"value": 30.0}
    points["t.phase"] = {"access": "rw", "type": "int32", "limits": {"min": 0, "max": LAYOUT.all_red_phase}}
    site = {
        "site": {"id": "field"},
        "devices": {"ctl": {"connector": "memory", "points": points}},
        "solutions": {"signal": {"type": "traffic-signal", "device": "ctl", "net": "single-intersection",
                                 "controller": "max-pressure"}},
    }
    clock = SimulatedClock(1_700_000_000.0)
    async with edgeplane_host(site, plugins=[plugin], clock=clock) as host:
        ctl, solution = host.device("ctl"), host.solution("signal")
        for lane in ("w_t_0", "w_t_1"):  # west-east queues, served by green 1
            await ctl.set(f"lane.{lane}.vehicles", 12.0)
            await ctl.set(f"lane.{lane}.halting", 12.0)
        await ctl.set("t.phase", 0)  # the controller reports green 0, held 30 s
        yellow = LAYOUT.yellow_phase(0, 1)
        await wait_for(lambda: ("t.phase", yellow) in ctl.writes, timeout=10)
        # the write's read-back reports the yellow at once, while phase_time still says 30 s:
        # the solution must not end the yellow on that stale count
        for _ in range(3):
            await ctl.set("t.phase", yellow)
        assert ctl.writes == [("t.phase", yellow)]
        clock.advance(3.0)  # the default yellow: 3 s, then 2 s all-red
        await ctl.set("t.phase", yellow)
        red = LAYOUT.all_red_phase
        await wait_for(lambda: ("t.phase", red) in ctl.writes, timeout=10)
        await ctl.set("t.phase", red)
        assert ctl.writes == [("t.phase", yellow), ("t.phase", red)]
        clock.advance(2.0)
        await ctl.set("t.phase", red)
        await wait_for(lambda: ("t.phase", 1) in ctl.writes, timeout=10)
        assert ctl.writes == [("t.phase", yellow), ("t.phase", red), ("t.phase", 1)]
        audit = await host.store.audit(10)
        assert [a["reason"].split(" (")[0] for a in audit] == [f"yellow {yellow}", f"all-red {red}", "green 1"]
        # one decision changed the green; the next, 5 s later on green 1, keeps it (no further write)
        assert solution.controller.decisions["max-pressure"] == 2
