"""One multi-point batch per SUMO step: what multi-point and single-point subscribers receive, and
the traffic-signal solution reading the step's rows in place."""

from __future__ import annotations

import edgeplane_traffic.plugin as plugin
from edgeplane_traffic.layout import point_name

from edgeplane import Batch
from edgeplane.testing import wait_for

SECONDS = 20


async def test_a_step_is_one_batch_and_single_point_readers_get_the_same_readings(edgeplane_host, tmp_path) -> None:
    site = {
        "site": {"id": "step-batches"},
        "clock": {"mode": "simulated"},
        "devices": {"sumo": {"connector": "sumo", "net": "single-intersection", "seconds": SECONDS, "seed": 2,
                             "lockstep": ["signal/ack"], "lockstep_timeout": 30}},
        "solutions": {"signal": {"type": "traffic-signal", "device": "sumo", "net": "single-intersection",
                                 "controller": "max-pressure", "decision_period": 1.0}},
    }
    async with edgeplane_host(site, plugins=[plugin]) as host:
        whole = host.bus.subscribe("sumo/#", multipoint=True, maxsize=100_000)
        pointwise = host.bus.subscribe("sumo/#", maxsize=100_000)
        device, solution = host.device("sumo"), host.solution("signal")
        await wait_for(lambda: device.health.state.value == "finished", timeout=60)
        await wait_for(lambda: (host.bus.latest("signal/ack") or (0, 0))[1] >= SECONDS, timeout=30)
        steps: list[Batch] = []
        while (message := whole.get_nowait()) is not None:
            steps.append(message)
        pieces: list[Batch] = []
        while (message := pointwise.get_nowait()) is not None:
            pieces.append(message)

        assert steps and all(isinstance(s, Batch) and s.multipoint for s in steps)
        table = steps[-1].table
        assert all(s.table is table and len(s) == len(table) for s in steps)  # every point, every step
        # the signal points close a step: a controller may take <tls>.phase as "this step is complete"
        assert [steps[-1].topic_at(i) for i in (-3, -2, -1)] == ["sumo/t.native_phase", "sumo/t.phase_time", "sumo/t.phase"]
        sim_time = [steps[-1].topic_at(i) for i in range(len(table))].index("sumo/sim.time")
        assert [float(s.values[sim_time]) for s in steps] == sorted({float(s.values[sim_time]) for s in steps})

        # a single-point subscriber gets one batch per point, in the same order, with the same values
        assert all(not p.multipoint and len(p) == 1 for p in pieces) and len(pieces) == len(steps) * len(table)
        last = pieces[-len(table):]
        assert [p.topic for p in last] == list(table.topics)
        assert [float(p.values[0]) for p in last] == steps[-1].values.tolist()
        assert last[-1].topic == "sumo/t.phase"

        # the solution read the last step's rows without splitting them: its readings are the bus's
        assert solution._sim_time == float(host.bus.latest("sumo/sim.time")[1]) == float(SECONDS)
        assert solution._phase_time == float(host.bus.latest("sumo/t.phase_time")[1])
        for lane, reading in solution._readings.items():
            for metric in ("vehicles", "halting", "vehicle_length"):
                assert getattr(reading, metric) == float(host.bus.latest(f"sumo/lane.{point_name(lane)}.{metric}")[1])
        assert sum(reading.vehicles for reading in solution._readings.values()) > 0
        for k, lane in enumerate(solution.layout.lanes):
            assert solution._det_now["stop_bar_occupancy"][k] == float(
                host.bus.latest(f"sumo/det.{point_name(lane)}.stop_bar_occupancy")[1])
        assert solution.controller.decisions.get("max-pressure", 0) >= SECONDS // 2
