"""``edgeplane traffic evaluate``: one controller on a SUMO scenario, RESCO's delay measure.

SUMO runs in this process (libsumo when available) and the same
:class:`~edgeplane_traffic.control.IntersectionController` the host runs makes the decisions,
with the policy in ONNX Runtime. ``fixed`` leaves the network's own program running untouched
(the baseline RESCO reports). Average delay per vehicle is RESCO's: ``timeLoss + departDelay``
from SUMO's tripinfo, with vehicles still driving at the end written as unfinished and counted.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeplane_traffic.control import IntersectionController, LaneReading
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.shield import ShieldConfig
from edgeplane_traffic.sumo_runtime import binding_name, sumo_binary, traci_module

__all__ = ["EpisodeResult", "run_episode", "tripinfo_delays", "onnx_infer"]


@dataclass
class EpisodeResult:
    controller: str
    seed: int
    avg_delay_s: float
    mean_waiting_s: float
    mean_queue: float
    throughput: int
    vehicles: int
    shield_interventions: int
    fallbacks: int
    decisions: int
    decision_p50_ms: float
    decision_p99_ms: float
    binding: str
    sim_seconds: float


def tripinfo_delays(path: Path) -> tuple[list[float], int]:
    """Per-vehicle ``timeLoss + departDelay`` from a tripinfo file, and how many arrived."""
    delays: list[float] = []
    arrived = 0
    for _, element in ET.iterparse(str(path)):
        if element.tag == "tripinfo":
            delays.append(float(element.get("timeLoss", 0.0)) + max(0.0, float(element.get("departDelay", 0.0))))
            if float(element.get("arrival", -1)) >= 0:
                arrived += 1
            element.clear()
    return delays, arrived


def onnx_infer(model_path: Path) -> Callable[[np.ndarray], Any]:
    """An async ``infer(obs) -> scores`` on a local ONNX Runtime session (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    async def infer(obs: np.ndarray) -> np.ndarray:
        return session.run(None, {"obs": obs.reshape(1, -1).astype(np.float32)})[0][0]

    return infer


def run_episode(
    spec: NetSpec,
    controller: str,
    *,
    seed: int = 0,
    model: Path | None = None,
    shield: ShieldConfig | None = None,
    deadline: float = 0.05,
    infer: Callable[[np.ndarray], Any] | None = None,
    on_step: Callable[[float, Any], None] | None = None,
) -> EpisodeResult:
    """Run ``spec.seconds`` of simulation under one controller and measure it."""
    traci = traci_module()
    layout = layout_from_net(spec.net, spec.tls)
    if controller == "rl" and infer is None and model is not None:
        infer = onnx_infer(model / "model.onnx" if model.is_dir() else model)
    ctl = IntersectionController(layout, "max-pressure" if controller == "fixed" else controller,  # type: ignore[arg-type]
                                 shield=shield, deadline=deadline, infer=infer)
    with tempfile.TemporaryDirectory(prefix="edgeplane-traffic-") as tmp:
        tripinfo = Path(tmp) / "tripinfo.xml"
        cmd = [
            sumo_binary(), "-n", str(spec.net), "-r", str(spec.route), "-b", str(spec.begin),
            "--seed", str(seed), "--no-step-log", "--no-warnings", "--time-to-teleport", "-1",
            "--waiting-time-memory", "1000", "--max-depart-delay", "-1",
            "--tripinfo-output", str(tripinfo), "--tripinfo-output.write-unfinished",
        ]
        label = f"eval-{os.getpid()}-{seed}"
        if binding_name(traci) == "libsumo":
            traci.start(cmd)
            conn = traci
        else:
            traci.start(cmd, label=label)
            conn = traci.getConnection(label)
        waiting_sum = queue_sum = 0.0
        steps = 0
        try:
            lanes_all = list(dict.fromkeys([*layout.lanes, *layout.out_lanes]))
            phase, elapsed = 0, 0.0
            commanded = controller != "fixed"
            if commanded:
                conn.trafficlight.setRedYellowGreenState(layout.tls, layout.phase_states[0])
            end = spec.begin + spec.seconds
            loop = asyncio.new_event_loop()
            try:
                while conn.simulation.getTime() < end:
                    conn.simulationStep()
                    elapsed += 1.0
                    steps += 1
                    now = conn.simulation.getTime()
                    readings = {
                        lane: LaneReading(conn.lane.getLastStepVehicleNumber(lane), conn.lane.getLastStepHaltingNumber(lane),
                                          conn.lane.getLastStepLength(lane))
                        for lane in lanes_all
                    }
                    vehicles = conn.vehicle.getIDList()
                    waiting_sum += float(np.mean([conn.vehicle.getWaitingTime(v) for v in vehicles])) if vehicles else 0.0
                    queue_sum += sum(readings[lane].halting for lane in layout.lanes)
                    if commanded:
                        outcome = loop.run_until_complete(ctl.tick(now, phase, elapsed, readings))
                        if outcome.command is not None and outcome.command != phase:
                            phase, elapsed = outcome.command, 0.0
                            conn.trafficlight.setRedYellowGreenState(layout.tls, layout.phase_states[phase])
                        if on_step is not None:
                            on_step(now, outcome)
            finally:
                loop.close()
        finally:
            conn.close()
        delays, arrived = tripinfo_delays(tripinfo)
    p50, p99 = ctl.latency_percentiles_ms() if controller != "fixed" else (float("nan"), float("nan"))
    return EpisodeResult(
        controller=controller, seed=seed,
        avg_delay_s=float(np.mean(delays)) if delays else float("nan"),
        mean_waiting_s=waiting_sum / max(1, steps),
        mean_queue=queue_sum / max(1, steps),
        throughput=arrived, vehicles=len(delays),
        shield_interventions=ctl.interventions if controller != "fixed" else 0,
        fallbacks=sum(ctl.fallbacks.values()) if controller != "fixed" else 0,
        decisions=sum(ctl.decisions.values()) if controller != "fixed" else 0,
        decision_p50_ms=p50, decision_p99_ms=p99, binding=binding_name(traci), sim_seconds=float(spec.seconds),
    )


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Means over seeds, under the JSON keys the issue names."""
    def mean(attr: str) -> float:
        values = [getattr(r, attr) for r in results]
        values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
        return float(np.mean(values)) if values else float("nan")

    def clean(value: float) -> float | None:
        return None if isinstance(value, float) and math.isnan(value) else value

    return {k: clean(v) if isinstance(v, float) else v for k, v in {
        "controller": results[0].controller,
        "seeds": len(results),
        "avg_delay_s": round(mean("avg_delay_s"), 2),
        "mean_waiting_s": round(mean("mean_waiting_s"), 2),
        "mean_queue": round(mean("mean_queue"), 2),
        "throughput": round(mean("throughput"), 1),
        "shield_interventions": int(sum(r.shield_interventions for r in results)),
        "fallbacks": int(sum(r.fallbacks for r in results)),
        "decision_p50_ms": round(mean("decision_p50_ms"), 3),
        "decision_p99_ms": round(mean("decision_p99_ms"), 3),
        "binding": results[0].binding,
    }.items()}
