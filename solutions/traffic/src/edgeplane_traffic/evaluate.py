"""``edgeplane traffic evaluate``: one controller on a SUMO scenario, every controller under the same timing.

SUMO runs in this process (libsumo when available). Controllers:

* ``fixed``: the net's own green durations, cycled with the shared clearances (:mod:`.programs`);
* ``webster``: Webster's cycle and splits from advance-loop counts in a warm-up window run under
  ``fixed`` (or from given per-lane counts, then from the start);
* ``actuated``: SUMO's gap-based actuated control (max-gap 3 s, detectors ``detector-gap`` 2 s of
  travel upstream, minimum and maximum green from the timing), the same clearances;
* ``max-pressure`` and ``rl``: the :class:`~edgeplane_traffic.control.IntersectionController` the
  host runs, behind the :class:`~edgeplane_traffic.shield.SafetyShield` with the same timing.

Delay: every vehicle due to depart in the run counts, ``timeLoss + departDelay`` from SUMO's
tripinfo; vehicles still driving at the end are written as unfinished, vehicles still waiting to
enter as undeparted (their delay is the time they waited). ``undeparted`` is reported.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgeplane_traffic.control import IntersectionController, LaneReading
from edgeplane_traffic.demand import INCIDENT_VTYPE, check_route_window
from edgeplane_traffic.detectors import DetectorLayout, DetectorWindow, detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, tls_ids
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.programs import actuated_phases, cycle_phases, fixed_greens, webster_plan, write_programs
from edgeplane_traffic.shield import ShieldConfig
from edgeplane_traffic.sumo_runtime import binding_name, sumo_binary, traci_module

__all__ = ["CONTROLLERS", "PROGRAM_CONTROLLERS", "EpisodeResult", "TripStats", "onnx_infer", "run_episode", "summarize",
           "tripinfo_delays"]

CONTROLLERS = ("fixed", "webster", "actuated", "max-pressure", "rl")
PROGRAM_CONTROLLERS = ("fixed", "webster", "actuated")  # SUMO runs the program; nothing is decided per step


@dataclass
class TripStats:
    delays: list[float] = field(default_factory=list)  # one per vehicle due to depart in the run
    arrived: int = 0
    undeparted: int = 0


@dataclass
class EpisodeResult:
    controller: str
    seed: int
    avg_delay_s: float
    undeparted: int
    due: int
    mean_waiting_s: float
    mean_queue: float
    throughput: int
    shield_interventions: int
    fallbacks: int
    decisions: int
    decision_p50_ms: float
    decision_p99_ms: float
    binding: str
    sim_seconds: float
    signals: int = 1
    cpu_s_per_signal_hour: float = float("nan")  # controller CPU per signal per simulated hour
    plans: dict[str, Any] = field(default_factory=dict)
    states: list[str] = field(default_factory=list)  # the signal's state per step (record_states=True)


def tripinfo_delays(path: Path) -> TripStats:
    """Per vehicle due to depart: ``timeLoss + departDelay``; how many arrived, how many never entered.

    SUMO writes undeparted vehicles with ``depart="-1"`` and ``departDelay`` = end - wanted depart;
    a vehicle loaded ahead of a depart after the end has a negative delay there: not due, skipped.
    The incident vehicle of a generated demand (a stalled car) is not traffic and is skipped.
    """
    stats = TripStats()
    for _, element in ET.iterparse(str(path)):
        if element.tag == "tripinfo":
            depart_delay = float(element.get("departDelay", 0.0))
            if element.get("vType") != INCIDENT_VTYPE and depart_delay >= 0:
                stats.delays.append(float(element.get("timeLoss", 0.0)) + depart_delay)
                if float(element.get("depart", 0)) < 0:
                    stats.undeparted += 1
                elif float(element.get("arrival", -1)) >= 0:
                    stats.arrived += 1
            element.clear()
    return stats


def onnx_infer(model_path: Path) -> Callable[[np.ndarray], Any]:
    """An async ``infer(obs) -> scores`` on a local ONNX Runtime session (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    async def infer(obs: np.ndarray) -> np.ndarray:
        return session.run(None, {"obs": obs.reshape(1, -1).astype(np.float32)})[0][0]

    return infer


@dataclass
class _Signal:
    layout: IntersectionLayout
    detectors: DetectorLayout
    window: DetectorWindow
    controller: IntersectionController | None
    phase: int = 0
    elapsed: float = 0.0
    warmup_counts: np.ndarray | None = None


def run_episode(
    spec: NetSpec,
    controller: str,
    *,
    seed: int = 0,
    model: Path | None = None,
    timing: ShieldConfig | None = None,
    deadline: float = 0.05,
    infer: Callable[[np.ndarray], Any] | None = None,
    infer_for: Mapping[str, Callable[[np.ndarray], Any]] | None = None,
    observation: str = "detectors",
    decision_period: float = 5.0,
    detector_window: int | None = None,
    warmup: float = 900.0,
    counts: Mapping[str, float] | None = None,
    all_signals: bool = False,
    record_states: bool = False,
    on_step: Callable[[float, Any], None] | None = None,
) -> EpisodeResult:
    """Run ``spec.seconds`` of simulation from ``spec.begin`` under one controller and measure it.

    ``all_signals``: one controller instance per signal of the net (``infer_for`` maps a signal id
    to its policy); otherwise only ``spec.tls`` (default: the first signal) is controlled and the
    others run the net's program. ``counts``: per-lane flows (veh/h) for Webster instead of a warm-up.
    ``decision_period`` and ``detector_window`` (readings the detector counts span; None: since the
    previous decision) must be the policy's own (:func:`~edgeplane_traffic.models.policy_cadence`);
    with ``model`` they are read from its metadata.
    """
    if controller not in CONTROLLERS:
        raise ValueError(f"controller {controller!r}: use one of {', '.join(CONTROLLERS)}")
    timing = timing or ShieldConfig()
    if model is not None:
        import json

        meta_file = (model if model.is_dir() else model.parent) / "metadata.json"
        if meta_file.is_file():
            from edgeplane_traffic.models import policy_cadence

            meta = json.loads(meta_file.read_text())
            observation = meta.get("observation_kind", "lanes")
            decision_period, detector_window = policy_cadence(meta)
    check_route_window(spec.route, spec.begin, spec.begin + spec.seconds)
    traci = traci_module()
    ids = tls_ids(spec.net) if all_signals else [layout_from_net(spec.net, spec.tls).tls]
    signals: dict[str, _Signal] = {}
    for k, tls in enumerate(ids):
        try:
            layout = layout_from_net(spec.net, tls)
        except ValueError:
            continue  # a signal with fewer than two greens has nothing to decide: it keeps its program
        policy = None
        if controller == "rl":
            policy = (infer_for or {}).get(tls, infer)
            if policy is None and model is not None:
                policy = onnx_infer(model / "model.onnx" if model.is_dir() else model)
        ctl = None
        if controller in ("max-pressure", "rl"):
            ctl = IntersectionController(layout, controller, shield=timing, deadline=deadline, infer=policy,  # type: ignore[arg-type]
                                         decision_period=decision_period, observation=observation)  # type: ignore[arg-type]
        dets = detector_layout(layout, f"ep{k}")
        signals[tls] = _Signal(layout, dets, DetectorWindow(dets, detector_window), ctl)
    if not signals:
        raise ValueError(f"net {spec.net} has no signal with two or more greens to control")
    plans: dict[str, Any] = {}
    cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="edgeplane-traffic-") as tmp:
        tripinfo = Path(tmp) / "tripinfo.xml"
        additional = [Path(tmp) / "detectors.add.xml"]
        write_detectors(additional[0], [s.detectors for s in signals.values()])
        for tls, sig in signals.items():
            path = Path(tmp) / f"programs-{len(additional)}.add.xml"
            programs = {"edgeplane-fixed": cycle_phases(sig.layout, fixed_greens(sig.layout), timing),
                        "edgeplane-actuated": actuated_phases(sig.layout, timing)}
            if controller == "webster" and counts is not None:
                plan = webster_plan(sig.layout, counts, timing)
                plans[tls] = {"cycle_s": plan.cycle_s, "greens_s": plan.greens_s, "from": "given counts"}
                programs["edgeplane-webster"] = cycle_phases(sig.layout, plan.greens_s, timing)
            write_programs(path, sig.layout, programs, actuated={"edgeplane-actuated"})
            additional.append(path)
        cmd = [
            sumo_binary(), "-n", str(spec.net), "-r", str(spec.route), "-b", str(spec.begin),
            "-a", ",".join(str(p) for p in additional),
            "--seed", str(seed), "--no-step-log", "--no-warnings", "--time-to-teleport", "-1",
            "--waiting-time-memory", "1000", "--max-depart-delay", "-1",
            "--tripinfo-output", str(tripinfo), "--tripinfo-output.write-unfinished",
            "--tripinfo-output.write-undeparted",
        ]
        if binding_name(traci) == "libsumo":
            traci.start(cmd)
            conn = traci
        else:
            label = f"eval-{os.getpid()}-{seed}"
            traci.start(cmd, label=label)
            conn = traci.getConnection(label)
        waiting_sum = queue_sum = 0.0
        steps = 0
        states: list[str] = []
        try:
            end = spec.begin + spec.seconds
            program = {"fixed": "edgeplane-fixed", "actuated": "edgeplane-actuated",
                       "webster": "edgeplane-webster" if counts is not None else "edgeplane-fixed"}.get(controller)
            for tls, sig in signals.items():
                if program is not None:
                    conn.trafficlight.setProgram(tls, program)
                    conn.trafficlight.setPhase(tls, 0)
                else:
                    conn.trafficlight.setRedYellowGreenState(tls, sig.layout.phase_states[0])
            webster_at = spec.begin + warmup if controller == "webster" and counts is None else None
            first_tls = next(iter(signals))
            loop = asyncio.new_event_loop()
            try:
                while conn.simulation.getTime() < end:
                    conn.simulationStep()
                    steps += 1
                    now = conn.simulation.getTime()
                    vehicles = conn.vehicle.getIDList()
                    waiting_sum += float(np.mean([conn.vehicle.getWaitingTime(v) for v in vehicles])) if vehicles else 0.0
                    if record_states:
                        states.append(conn.trafficlight.getRedYellowGreenState(first_tls))
                    for tls, sig in signals.items():
                        started = time.process_time()
                        sig.window.read(conn)
                        halting = [conn.lane.getLastStepHaltingNumber(lane) for lane in sig.layout.lanes]
                        queue_sum += sum(halting)
                        if webster_at is not None:
                            if sig.warmup_counts is None:
                                sig.warmup_counts = np.zeros(len(sig.layout.lanes))
                            if now <= webster_at:
                                sig.warmup_counts += [conn.inductionloop.getLastStepVehicleNumber(d) for d in sig.detectors.advance_ids]
                            if abs(now - webster_at) < 0.5:
                                flows = {lane: c * 3600.0 / warmup for lane, c in zip(sig.layout.lanes, sig.warmup_counts)}
                                plan = webster_plan(sig.layout, flows, timing)
                                plans[tls] = {"cycle_s": plan.cycle_s, "greens_s": plan.greens_s, "from": f"{warmup:g} s warm-up counts"}
                                _install_static(conn, traci, tls, "edgeplane-webster", cycle_phases(sig.layout, plan.greens_s, timing))
                        if sig.controller is not None:
                            sig.elapsed += 1.0
                            lanes_all = dict.fromkeys([*sig.layout.lanes, *sig.layout.out_lanes])
                            readings = {lane: LaneReading(conn.lane.getLastStepVehicleNumber(lane), 0.0,
                                                          conn.lane.getLastStepLength(lane)) for lane in lanes_all}
                            for lane, h in zip(sig.layout.lanes, halting):
                                readings[lane].halting = h
                            snapshot = sig.window.snapshot()
                            outcome = loop.run_until_complete(sig.controller.tick(now, sig.phase, sig.elapsed, readings, snapshot))
                            if outcome.decided:
                                sig.window.reset()
                            if outcome.command is not None and outcome.command != sig.phase:
                                sig.phase, sig.elapsed = outcome.command, 0.0
                                conn.trafficlight.setRedYellowGreenState(tls, sig.layout.phase_states[sig.phase])
                            if on_step is not None and tls == first_tls:
                                on_step(now, outcome)
                        cpu += time.process_time() - started
            finally:
                loop.close()
        finally:
            conn.close()
        stats = tripinfo_delays(tripinfo)
    ctls = [s.controller for s in signals.values() if s.controller is not None]
    latencies = np.concatenate([np.asarray(c.latencies_s) for c in ctls]) * 1000 if ctls else np.array([])
    p50, p99 = (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))) if latencies.size else (float("nan"), float("nan"))
    return EpisodeResult(
        controller=controller, seed=seed,
        avg_delay_s=float(np.mean(stats.delays)) if stats.delays else float("nan"),
        undeparted=stats.undeparted, due=len(stats.delays),
        mean_waiting_s=waiting_sum / max(1, steps),
        mean_queue=queue_sum / max(1, steps) / len(signals),
        throughput=stats.arrived,
        shield_interventions=sum(c.interventions for c in ctls),
        fallbacks=sum(sum(c.fallbacks.values()) for c in ctls),
        decisions=sum(sum(c.decisions.values()) for c in ctls),
        decision_p50_ms=p50, decision_p99_ms=p99, binding=binding_name(traci), sim_seconds=float(spec.seconds),
        signals=len(signals), cpu_s_per_signal_hour=cpu / len(signals) * 3600.0 / max(1.0, float(spec.seconds)),
        plans=plans, states=states,
    )


def _install_static(conn: Any, traci: Any, tls: str, program_id: str, phases: list[Any]) -> None:
    """Load a static program into a running SUMO and switch to it at its first phase."""
    logic = traci.trafficlight.Logic(program_id, 0, 0, [traci.trafficlight.Phase(p.duration, p.state) for p in phases])
    conn.trafficlight.setProgramLogic(tls, logic)
    conn.trafficlight.setProgram(tls, program_id)
    conn.trafficlight.setPhase(tls, 0)


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
        "undeparted": round(mean("undeparted"), 1),
        "due": round(mean("due"), 1),
        "mean_waiting_s": round(mean("mean_waiting_s"), 2),
        "mean_queue": round(mean("mean_queue"), 2),
        "throughput": round(mean("throughput"), 1),
        "shield_interventions": int(sum(r.shield_interventions for r in results)),
        "fallbacks": int(sum(r.fallbacks for r in results)),
        "decision_p50_ms": round(mean("decision_p50_ms"), 3),
        "decision_p99_ms": round(mean("decision_p99_ms"), 3),
        "signals": results[0].signals,
        "cpu_s_per_signal_hour": round(mean("cpu_s_per_signal_hour"), 3),
        "binding": results[0].binding,
    }.items()}
