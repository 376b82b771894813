"""The traffic-signal solution controls a SUMO intersection through NTCIP 1202 end to end:
SUMO <-> controller simulator (own timing, conflict monitor) <-> SNMP on the loopback <-> ntcip
connector <-> traffic-signal solution (RL through the inference service, shield) <-> guarded commands."""

from __future__ import annotations

import edgeplane_ntcip.plugin as ntcip_plugin
import edgeplane_traffic.plugin as plugin
from edgeplane import Quality, SimulatedClock
from edgeplane.testing import wait_for
from edgeplane_ntcip.testing import SIM_START
from edgeplane_traffic.cabinet import SumoCabinet
from edgeplane_traffic.layout import point_name
from edgeplane_traffic.shield import unsafe_transitions

SECONDS = 60
SPEED = 8.0  # simulated seconds per wall second: each poll of ~25 objects fits well inside a period


async def test_rl_controls_a_sumo_intersection_through_ntcip(edgeplane_host, tmp_path) -> None:
    cabinet = SumoCabinet("single-intersection", seconds=SECONDS, speed=SPEED, seed=3, start_time=SIM_START)
    await cabinet.start()
    try:
        layout = cabinet.layout
        site = {
            "site": {"id": "cabinet"},
            "inference": {"providers": ["cpu"], "models": str(tmp_path / "models"), "preload": ["traffic-single-intersection"]},
            "devices": {"ctl": cabinet.device_config()},
            "solutions": {"signal": {"type": "traffic-signal", "device": "ctl", "net": "single-intersection",
                                     "controller": "rl", "fallback": "fixed", "deadline": 1.0, "command_timeout": 3.0}},
        }
        async with edgeplane_host(site, plugins=[plugin, ntcip_plugin], clock=SimulatedClock(SIM_START)) as host:
            await wait_for(cabinet.finished.is_set, timeout=SECONDS / SPEED + 30)
            solution = host.solution("signal")
            audit = [a for a in await host.store.audit(10_000) if a["point"] == f"{point_name(layout.tls)}.phase"]
            det = f"ctl/det.{point_name(layout.lanes[0])}.advance_count"
            latest_det = host.bus.latest(det)
        model = cabinet.model
        # the solution decided with the policy, from detector readings that came over SNMP
        assert solution.controller.decisions["rl"] >= SECONDS // 10 and solution.controller.fallbacks == {}
        assert latest_det is not None and latest_det[2] == Quality.GOOD
        # it changed the green through NTCIP phase control: the solution commands the yellow (a force-off and a
        # call), the controller times its own yellow and red clearance and brings the new green, which the
        # shield then sees arrive (so it commands no all-red or green itself)
        commanded = [int(a["value"]) for a in audit]
        assert commanded and all(layout.phase_kind(c) == "yellow" for c in commanded), (audit, cabinet.model.intervals())
        assert all(a["status"] == "ok" and a["readback"] == a["value"] for a in audit), audit
        assert cabinet.agent.sets > 0
        # the controller kept its own timing and the conflict monitor saw nothing wrong
        assert model.monitor.faults == [] and not model.flashing
        finished = model.intervals()
        greens = [s for _, i, s in model.history if i == "G"]  # the last may still be showing
        assert len(greens) >= 2 and greens[1] != 0, model.history
        for interval, stage, seconds in finished:
            minimum = {"G": 5.0, "Y": 3.0, "R": 2.0}[interval] if (interval, stage) != ("G", 0) else 0.0
            assert seconds >= minimum, finished
        # and SUMO showed exactly the controller's states: its yellows and all-reds, nothing else
        shown = [layout.phase_states.index(state) for _, state in cabinet.shown]
        assert unsafe_transitions(layout, shown, all_red=True) == [] and layout.all_red_phase in shown
        assert cabinet.arrived > 0
    finally:
        await cabinet.stop()


def _impatient_policy(path, layout) -> None:
    """An ONNX policy that always wants the other green at once: its scores are the green one-hot
    (the observation's head) reversed. Every wish it makes while a green is young is unsafe."""
    import onnx
    from onnx import TensorProto, helper

    order = helper.make_tensor("order", TensorProto.INT64, [2], [1, 0])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["obs", "order"], ["scores"], axis=1)], "impatient",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, layout.observation_size_detectors])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])], initializer=[order])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


async def test_the_shield_refuses_unsafe_wishes_before_they_reach_the_controller(edgeplane_host, tmp_path) -> None:
    from edgeplane.inference.registry import ModelRegistry

    seconds, shield_min_green = 45, 10.0
    cabinet = SumoCabinet("single-intersection", seconds=seconds, speed=10.0, seed=4, start_time=SIM_START)
    layout = cabinet.layout
    assert layout.num_greens == 2
    _impatient_policy(tmp_path / "impatient.onnx", layout)
    ModelRegistry(tmp_path / "models").add(tmp_path / "impatient.onnx", "traffic-impatient", "1")
    await cabinet.start()
    try:
        site = {
            "site": {"id": "cabinet-shield"},
            "inference": {"providers": ["cpu"], "models": str(tmp_path / "models"), "preload": ["traffic-impatient"]},
            "devices": {"ctl": cabinet.device_config()},
            "solutions": {"signal": {"type": "traffic-signal", "device": "ctl", "net": "single-intersection",
                                     "controller": "rl", "model": "traffic-impatient", "observation": "detectors",
                                     "decision_period": 2.0, "min_green": shield_min_green, "fallback": "fixed",
                                     "deadline": 1.0, "command_timeout": 3.0}},
        }
        async with edgeplane_host(site, plugins=[plugin, ntcip_plugin], clock=SimulatedClock(SIM_START)) as host:
            await wait_for(cabinet.finished.is_set, timeout=seconds / 10 + 30)
            solution = host.solution("signal")
            audit = [a for a in await host.store.audit(10_000) if a["point"] == f"{point_name(layout.tls)}.phase"]
        controller = solution.controller
        # the policy decided (no fallback) and wanted a change at every decision; the shield refused the
        # ones made before its minimum green, so they never reached the controller
        assert controller.decisions["rl"] >= 8 and controller.fallbacks == {}
        assert controller.shield.interventions["min_green"] >= 2, controller.shield.interventions
        assert audit and all(a["status"] == "ok" for a in audit), audit
        # the controller would allow a 5 s green; every green the host ended lasted the shield's 10 s
        model = cabinet.model
        greens = [seconds for interval, _, seconds in model.intervals() if interval == "G"]
        assert len(greens) >= 2 and all(g >= shield_min_green for g in greens), model.intervals()
        assert model.timing[1].min_green < shield_min_green
        assert model.monitor.faults == [] and cabinet.agent.sets > 0
    finally:
        await cabinet.stop()


def test_the_cabinet_command_refuses_bad_input_with_exit_2() -> None:
    from click.testing import CliRunner

    from edgeplane.cli import main as edgeplane_cli

    runner = CliRunner()
    unknown = runner.invoke(edgeplane_cli, ["traffic", "cabinet", "--net", "atlantis"])
    assert unknown.exit_code == 2 and "neither a known scenario" in unknown.output
    stopped = runner.invoke(edgeplane_cli, ["traffic", "cabinet", "--net", "single-intersection", "--speed", "0"])
    assert stopped.exit_code == 2 and "speed > 0" in stopped.output
    wrong_signal = runner.invoke(edgeplane_cli, ["traffic", "cabinet", "--net", "single-intersection", "--tls", "nope"])
    assert wrong_signal.exit_code == 2 and "--tls" in wrong_signal.output
